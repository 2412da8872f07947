//! `cargo xtask bench`: what weft costs, measured on the lab against baselines in the same
//! run, interleaved (every repetition runs every path of every scenario back to back) to
//! resist machine noise. The lab is `xtask/bench/lab/`; each group of paths has its own
//! baseline, its first path:
//! - L4: no mesh against weft (two nodes, and same node);
//! - capture: an nftables REDIRECT to a trivial in-pod proxy against weft's eBPF capture to
//!   the same proxy (and to weft's agent, and no capture at all) — [`capture`], [`proxy`];
//! - L7: a Service without waypoint against one behind a waypoint with ten route rules;
//! - ingress: from the lab's outside host, weft's ingress gateway against nginx (Debian's)
//!   with the same routes to the same backend, HTTP and HTTPS — [`edge`];
//! - control plane: route change on disk → first request routed by it, against the config
//!   sources' poll interval — [`convergence`];
//! - resources: agent and waypoint memory, agent memory by enrolled pods;
//! - scale: the registry at a million pods and 66,000 Services, and each agent's watch
//!   traffic at churn, without the lab — [`scale`].
mod bpf;
mod capture;
mod convergence;
mod edge;
mod plan;
mod proxy;
mod report;
mod scale;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use weft_lab::{Lab, LabOptions, Runtime};

use crate::build::cargo;
use crate::workspace_root;
use stats::{single, summarize};

pub use self::plan::{Group, Results, Row};
use self::plan::{INGRESS_PATHS, L7_PATHS, OUTSIDE, Path, Target, WAYPOINT, paths};

#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// TCP throughput with N streams (Gbit/s).
    Throughput(u32),
    /// 1 KB HTTP/1.1 keep-alive requests at a fixed offered rate, open loop (latency µs).
    Latency(u32),
    /// The same requests at saturation (requests/s).
    Saturation,
    /// `Latency` over HTTPS (an edge proxy terminating TLS).
    HttpsLatency(u32),
    /// `Saturation` over HTTPS.
    HttpsSaturation,
    /// New connections per second, one HTTP request each.
    ConnectionRate,
    /// New connections to a TCP echo, N at a time: connect, one byte there and back, close.
    EchoConnections(u32),
}

impl Scenario {
    fn name(&self) -> String {
        match self {
            Scenario::Throughput(n) => {
                format!("throughput, {n} stream{}", if *n == 1 { "" } else { "s" })
            }
            Scenario::Latency(rate) => format!("latency at {rate} req/s"),
            Scenario::Saturation => "requests at saturation".into(),
            Scenario::HttpsLatency(rate) => format!("HTTPS latency at {rate} req/s"),
            Scenario::HttpsSaturation => "HTTPS requests at saturation".into(),
            Scenario::ConnectionRate => "new connections".into(),
            Scenario::EchoConnections(1) => "connection set-up, one at a time".into(),
            Scenario::EchoConnections(n) => format!("new connections, {n} at a time"),
        }
    }
}

fn scenarios(group: Group, s: &Settings) -> Vec<Scenario> {
    match group {
        Group::L4 => vec![
            Scenario::Throughput(1),
            Scenario::Throughput(4),
            Scenario::Latency(s.rate),
            Scenario::Saturation,
            Scenario::ConnectionRate,
        ],
        Group::Capture => vec![Scenario::EchoConnections(1), Scenario::EchoConnections(4)],
        Group::L7 => vec![Scenario::Latency(s.l7_rate), Scenario::Saturation],
        Group::Ingress => vec![
            Scenario::Latency(s.l7_rate),
            Scenario::HttpsLatency(s.l7_rate),
            Scenario::Saturation,
            Scenario::HttpsSaturation,
        ],
        Group::Resources | Group::Scale => Vec::new(),
    }
}

pub struct Settings {
    reps: usize,
    duration: Duration,
    warmup: Duration,
    rate: u32,
    /// The offered rate of the L7 latency scenario: 1000 req/s in both modes, well below
    /// the waypoint path's saturation on a 2-core machine (about 4,000 req/s); latency past
    /// saturation would measure the queue.
    l7_rate: u32,
    /// Route changes timed by the control-plane scenario.
    changes: usize,
}

impl Settings {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                duration: Duration::from_millis(1500),
                warmup: Duration::from_millis(300),
                rate: 1000,
                l7_rate: 1000,
                changes: 20,
            }
        } else {
            Self {
                reps: 7,
                duration: Duration::from_secs(5),
                warmup: Duration::from_secs(1),
                rate: 2000,
                l7_rate: 1000,
                changes: 50,
            }
        }
    }
}

/// (group, scenario, metric, unit, path index in its group) → one value per repetition.
type Samples = BTreeMap<(Group, String, String, String, usize), Vec<f64>>;

/// The groups measured on the lab; `scale` needs none.
const LAB_GROUPS: [&str; 6] = [
    "l4",
    "capture",
    "l7",
    "ingress",
    "control-plane",
    "resources",
];

pub fn run(quick: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut rows, convergence, mut notes) = if LAB_GROUPS.iter().any(|g| selected(g)) {
        run_on_lab(quick, started)?
    } else {
        (Vec::new(), None, Vec::new())
    };
    if selected("scale") {
        rows.extend(scale::run(quick).context("the scale group")?);
        notes.push(scale::NOTE.into());
    }
    let results = Results {
        date: report::today(),
        machine: report::machine(),
        quick,
        run_seconds: started.elapsed().as_secs_f64(),
        rows,
        convergence,
        notes,
    };
    let out = workspace_root().join("target/bench");
    report::write(&results, &out)?;
    println!("{}", report::markdown(&results));
    println!("Written to {}", out.display());
    Ok(())
}

/// The groups on the lab: their rows, the control-plane figures, their notes.
fn run_on_lab(
    quick: bool,
    started: Instant,
) -> anyhow::Result<(Vec<Row>, Option<convergence::Convergence>, Vec<String>)> {
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "--bin",
        "weft-agent",
        // The agent installs it on its node and refuses to start without it.
        "--bin",
        "weft-cni",
        "--bin",
        "weft-ca",
        "--bin",
        "weft-testapp",
        "--bin",
        "weft-waypoint",
    ])?;
    let settings = Settings::new(quick);
    let bins = workspace_root().join("target/release");
    let runtime = Runtime {
        bin_dir: Some(bins.clone()),
        agent: Some(bins.join("weft-agent")),
        ca: Some(bins.join("weft-ca")),
        agent_log: Some("warn".into()),
        ..Runtime::default()
    };
    weft_lab::down("bench")?;
    let options = LabOptions::new("bench").nodes(2);
    let mut manifests =
        weft_lab::manifest::Manifests::load_dir(&workspace_root().join("xtask/bench/lab"))?;
    if selected("ingress") {
        edge::add_to(&mut manifests, &options).context("setting up the ingress scenario")?;
    }
    let mut lab =
        Lab::up(&options, &manifests, &runtime).context("bringing up the benchmark lab")?;
    if selected("ingress") {
        edge::apply_secret(&mut lab)?;
        let targets: Vec<(&str, &str)> = INGRESS_PATHS
            .iter()
            .filter_map(|p| match p.target {
                Target::Edge { service, host } => Some((service, host)),
                _ => None,
            })
            .collect();
        edge::wait_until_serving(&lab, &targets)?;
    }
    let testapp = bins.join("weft-testapp");
    let waypoint_node = lab
        .plan
        .pod(WAYPOINT)
        .map(|p| p.node.clone())
        .with_context(|| format!("the lab has no waypoint pod {WAYPOINT}"))?;
    let rig = if selected("capture") {
        Some(capture::set_up(&lab).context("setting up the capture scenario")?)
    } else {
        None
    };
    if selected("l7") || selected("control-plane") {
        convergence::apply_route_and_wait(&lab, &testapp, L7_PATHS[1].client, "v1")?;
    }

    let cases: Vec<(Group, Scenario, usize)> =
        [Group::L4, Group::Capture, Group::L7, Group::Ingress]
            .into_iter()
            .filter(|group| selected(group.key()))
            .flat_map(|group| {
                scenarios(group, &settings)
                    .into_iter()
                    .flat_map(move |scenario| {
                        (0..paths(group).len()).map(move |index| (group, scenario, index))
                    })
            })
            .collect();
    let mut samples = Samples::new();
    // Round 0 warms every path up (connections, page cache, CPU frequency) and is discarded.
    for rep in 0..=settings.reps {
        for &(group, scenario, index) in &cases {
            let path = &paths(group)[index];
            let values = measure_case(
                &lab,
                &testapp,
                rig.as_ref(),
                group,
                scenario,
                path,
                &settings,
            )
            .with_context(|| format!("{} over {}", scenario.name(), path.name))?;
            if rep == 0 {
                continue;
            }
            for (metric, unit, value) in values {
                samples
                    .entry((group, scenario.name(), metric, unit.to_string(), index))
                    .or_default()
                    .push(value);
            }
        }
        eprintln!(
            "bench: repetition {rep}/{} done after {:.0}s",
            settings.reps,
            started.elapsed().as_secs_f64()
        );
    }
    let convergence = if selected("control-plane") {
        let measured = convergence::measure(&lab, &testapp, L7_PATHS[1].client, settings.changes);
        eprintln!(
            "bench: control-plane scenario done after {:.0}s",
            started.elapsed().as_secs_f64()
        );
        match measured {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("bench: the control-plane scenario failed: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let mut rows = rows_with_ratios(&samples);
    rows.extend(memory_rows(&lab));
    drop(rig);
    drop(lab);
    if selected("resources") {
        rows.extend(rss_by_pod_count(&runtime)?);
    }
    Ok((rows, convergence, notes(&waypoint_node)))
}

/// `WEFT_BENCH_GROUPS=capture,l7` runs only those parts of the benchmark (of l4, capture,
/// l7, ingress, control-plane, resources, scale), for working on one; all of them by default.
fn selected(part: &str) -> bool {
    std::env::var("WEFT_BENCH_GROUPS")
        .map_or(true, |groups| groups.split(',').any(|g| g.trim() == part))
}

fn notes(waypoint_node: &str) -> Vec<String> {
    vec![
        "L4: \"weft\" is eBPF capture in the client and server pods, the agents' proxies on both nodes, and HBONE (HTTP/2 CONNECT over TLS 1.3 mutual TLS) between them; \"weft same-node\" the same with both pods on one node. CPU counts the client and server pods and both agents.".into(),
        "Capture: four client pods on node-2 connect to the same unmeshed TCP echo on node-2 (connect, one byte there and back, close). \"nft redirect + proxy\": an nftables `redirect to :15001` rule in the client pod's netns (Istio ambient's in-pod redirection) to a trivial proxy in that netns, which reads the destination with SO_ORIGINAL_DST; \"eBPF + proxy\": weft's cgroup/connect4, sock_ops and sk_lookup programs (attached by the agent) deliver to the same proxy, which reads the destination from weft's ORIG_DST_BY_CLIENT map; \"eBPF + weft agent\": the same capture to the agent's own proxy (plain TCP passthrough); \"no capture\": the floor. CPU counts client, server, and the proxy's threads or the node-2 agent; \"client pod\" is where the capture's kernel work (nftables/conntrack or the eBPF programs) is charged. All four clients get a wider ephemeral port range and tcp_tw_reuse=1, or TIME_WAIT sockets exhaust their ports.".into(),
        format!("L7: the same HTTP load from mesh/client (node-1) to a Service on node-2 without waypoint (\"L4 only\": eBPF capture, agents, HBONE) and to one bound to a waypoint ({WAYPOINT}, on {waypoint_node}) whose VirtualService has ten rules, the requests matching the last (client → agent → waypoint → agent → pod, HBONE on each hop). The waypoint's CPU is its pod cgroup's."),
        "Ingress: a weft-testapp load generator on the lab's outside host (not in the cluster) sends 1 KB GETs, over HTTP/1.1 keep-alive connections, to node-1's NodePort of an edge proxy on node-1: weft's ingress gateway (deploy/ingress, two runtime threads) or nginx (Debian's, two workers, keep-alive to the backend's pod address), with the same route (/bytes of plain.bench) to the same backend pod outside the mesh on node-2; HTTPS terminates TLS at the proxy (TLS 1.3, an RSA 2048 certificate, handshakes done before the clock starts). \"weft ingress, mesh backend\" routes to a mesh pod instead, over HBONE. \"edge proxy\" CPU is the proxy pod's cgroup; \"all\" adds the backend pod and, for the mesh backend, node-2's agent.".into(),
        "Resources: peak RSS is the largest resident set the kernel recorded (VmHWM) of the agent's or the waypoint's process over the whole run (cgroup v2 memory.peak where the memory controller is available).".into(),
    ]
}

/// Each measurement's values: (metric, unit, value).
type Values = Vec<(String, &'static str, f64)>;

fn measure_case(
    lab: &Lab,
    testapp: &FsPath,
    rig: Option<&capture::Rig>,
    group: Group,
    scenario: Scenario,
    path: &Path,
    s: &Settings,
) -> anyhow::Result<Values> {
    let proxy = match (path.proxy, rig) {
        (Some(kind), Some(rig)) => Some(rig.proxy(kind)),
        (Some(_), None) => bail!("the capture rig is not set up"),
        (None, _) => None,
    };
    let accepted_before = proxy.map(|p| (p.accepted(), p.failed()));
    let cpu_before = Cpu::now(lab, path, proxy);
    let metrics = measure(lab, testapp, scenario, path, s)?;
    let cpu = Cpu::now(lab, path, proxy).since(&cpu_before);
    if let (Some(p), Some((accepted, failed)), Some(connections)) =
        (proxy, accepted_before, metrics.connections)
    {
        // Proof the connections went through the proxy (and so through the capture).
        let (accepted, failed) = (p.accepted() - accepted, p.failed() - failed);
        if (accepted as f64) < connections || failed > 0 {
            bail!(
                "{} connections, but the proxy accepted {accepted} ({failed} failed): the capture is not in place",
                connections
            );
        }
    }
    let mut values: Values = metrics
        .values
        .into_iter()
        .map(|(metric, unit, value)| (metric.to_string(), unit, value))
        .collect();
    let per_1000 = |d: Duration, requests: f64| d.as_secs_f64() * 1000.0 / requests * 1000.0;
    match (scenario, metrics.requests) {
        (Scenario::Saturation | Scenario::HttpsSaturation, Some(requests))
            if requests > 0.0 && group == Group::Ingress =>
        {
            values.push((
                "CPU per 1000 requests (edge proxy)".into(),
                "ms",
                per_1000(cpu.gateway, requests),
            ));
            values.push((
                "CPU per 1000 requests (all: proxy, backend, agents)".into(),
                "ms",
                per_1000(cpu.total(), requests),
            ));
            let seconds = cpu.gateway.as_secs_f64();
            if seconds > 0.0 {
                values.push((
                    "requests per edge-proxy CPU-second".into(),
                    "req",
                    requests / seconds,
                ));
            }
        }
        (Scenario::Saturation, Some(requests)) if requests > 0.0 => {
            if group == Group::L7 {
                let mut parts = vec![
                    ("all", cpu.total()),
                    ("agents", cpu.agents),
                    ("client + server pods", cpu.pods),
                ];
                if path.waypoint.is_some() {
                    parts.push(("waypoint", cpu.waypoint));
                }
                for (part, time) in parts {
                    values.push((
                        format!("CPU per 1000 requests ({part})"),
                        "ms",
                        per_1000(time, requests),
                    ));
                }
            } else {
                values.push((
                    "CPU per 1000 requests (all pods + agents)".into(),
                    "ms",
                    per_1000(cpu.total(), requests),
                ));
            }
        }
        _ => {}
    }
    if let (Scenario::EchoConnections(concurrency), Some(n)) = (scenario, metrics.connections)
        && n > 0.0
    {
        let per_connection = |d: Duration| d.as_secs_f64() * 1e6 / n;
        values.push((
            "CPU per connection (all)".into(),
            "µs",
            per_connection(cpu.total()),
        ));
        if concurrency == 1 {
            values.push((
                "CPU per connection (client pod)".into(),
                "µs",
                per_connection(cpu.client),
            ));
        }
    }
    Ok(values)
}

struct Metrics {
    values: Vec<(&'static str, &'static str, f64)>,
    requests: Option<f64>,
    connections: Option<f64>,
}

fn testapp_json(lab: &Lab, testapp: &FsPath, pod: &str, args: &[String]) -> anyhow::Result<Value> {
    let mut command = if pod == OUTSIDE {
        lab.outside_command(testapp)?
    } else {
        lab.pod_command(pod, testapp)?
    };
    let output = command.args(args).output()?;
    if !output.status.success() {
        bail!(
            "weft-testapp {} in {pod}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .last()
        .context("weft-testapp printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

fn measure(
    lab: &Lab,
    testapp: &FsPath,
    scenario: Scenario,
    path: &Path,
    s: &Settings,
) -> anyhow::Result<Metrics> {
    let host = match path.target {
        Target::Pod(pod) => lab
            .plan
            .pod(pod)
            .with_context(|| format!("no pod {pod}"))?
            .ip
            .to_string(),
        Target::Service(name) => name.to_string(),
        Target::Edge { host, .. } => host.to_string(),
    };
    let ms = |d: Duration| d.as_millis().to_string();
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let run = |args: Vec<String>| testapp_json(lab, testapp, path.client, &args);
    let load_with = |rate: u32, tls: bool| -> anyhow::Result<Value> {
        let mut args = vec!["load".to_string()];
        match path.target {
            Target::Edge { service, host } => {
                let (scheme, port) = if tls { ("https", 443) } else { ("http", 80) };
                args.push(format!("{scheme}://{host}/bytes?n=1024"));
                args.extend([
                    "--connect".into(),
                    edge::node_port(lab, service, port)?,
                    "--cacert".into(),
                    edge::ca().display().to_string(),
                ]);
            }
            _ => args.push(format!("http://{host}:8080/bytes?n=1024")),
        }
        args.extend([
            "--rate".into(),
            rate.to_string(),
            "--duration-ms".into(),
            ms(s.duration),
            "--warmup-ms".into(),
            ms(s.warmup),
        ]);
        run(args)
    };
    let load = |rate: u32| load_with(rate, false);
    Ok(match scenario {
        Scenario::Throughput(streams) => {
            let v = run(vec![
                "throughput".into(),
                format!("{host}:5001"),
                "--streams".into(),
                streams.to_string(),
                "--duration-ms".into(),
                ms(s.duration),
                "--warmup-ms".into(),
                ms(s.warmup),
            ])?;
            Metrics {
                values: vec![("throughput", "Gbit/s", f(&v, "gbit_per_s"))],
                requests: None,
                connections: None,
            }
        }
        Scenario::Latency(rate) => {
            let v = load(rate)?;
            let lat = &v["latency_us"];
            Metrics {
                values: vec![
                    ("latency p50", "µs", f(lat, "p50")),
                    ("latency p90", "µs", f(lat, "p90")),
                    ("latency p99", "µs", f(lat, "p99")),
                ],
                requests: Some(f(&v, "ok")),
                connections: None,
            }
        }
        Scenario::Saturation | Scenario::HttpsSaturation => {
            let v = load_with(0, matches!(scenario, Scenario::HttpsSaturation))?;
            Metrics {
                values: vec![("requests", "req/s", f(&v, "achieved_rps"))],
                requests: Some(f(&v, "ok")),
                connections: None,
            }
        }
        Scenario::HttpsLatency(rate) => {
            let v = load_with(rate, true)?;
            let lat = &v["latency_us"];
            Metrics {
                values: vec![
                    ("latency p50", "µs", f(lat, "p50")),
                    ("latency p90", "µs", f(lat, "p90")),
                    ("latency p99", "µs", f(lat, "p99")),
                ],
                requests: Some(f(&v, "ok")),
                connections: None,
            }
        }
        Scenario::ConnectionRate => {
            let v = run(vec![
                "connrate".into(),
                format!("{host}:8080"),
                "--http".into(),
                "--duration-ms".into(),
                ms(s.duration),
            ])?;
            Metrics {
                values: vec![
                    ("connections", "conn/s", f(&v, "per_second")),
                    ("connection p99", "µs", f(&v["connect_us"], "p99")),
                ],
                requests: None,
                connections: None,
            }
        }
        Scenario::EchoConnections(concurrency) => {
            let v = run(vec![
                "connrate".into(),
                format!("{host}:9000"),
                "--concurrency".into(),
                concurrency.to_string(),
                "--duration-ms".into(),
                ms(s.duration.min(Duration::from_secs(3))),
            ])?;
            let values = if concurrency == 1 {
                vec![
                    ("set-up p50", "µs", f(&v["connect_us"], "p50")),
                    ("set-up p99", "µs", f(&v["connect_us"], "p99")),
                ]
            } else {
                vec![("connections", "conn/s", f(&v, "per_second"))]
            };
            Metrics {
                values,
                requests: None,
                connections: Some(f(&v, "connections")),
            }
        }
    })
}

/// CPU time used so far by what a path involves, by part.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    client: Duration,
    /// Client and server pods.
    pods: Duration,
    agents: Duration,
    waypoint: Duration,
    /// An edge proxy's pod (the ingress scenario's).
    gateway: Duration,
    /// The capture scenario's proxy threads.
    proxy: Duration,
}

impl Cpu {
    fn now(lab: &Lab, path: &Path, proxy: Option<&proxy::Proxy>) -> Self {
        let pod = |pod: &str| {
            lab.pod_cgroup_dir(pod)
                .map(|c| cgroup_cpu(&c))
                .unwrap_or_default()
        };
        let client = pod(path.client);
        Cpu {
            client,
            pods: client + path.servers.iter().map(|p| pod(p)).sum::<Duration>(),
            agents: path
                .agents
                .iter()
                .map(|n| cgroup_cpu(&lab.agent_cgroup_dir(n)))
                .sum(),
            waypoint: path.waypoint.map(pod).unwrap_or_default(),
            gateway: path.gateway.map(pod).unwrap_or_default(),
            proxy: proxy.map(|p| p.cpu()).unwrap_or_default(),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            client: self.client.saturating_sub(before.client),
            pods: self.pods.saturating_sub(before.pods),
            agents: self.agents.saturating_sub(before.agents),
            waypoint: self.waypoint.saturating_sub(before.waypoint),
            gateway: self.gateway.saturating_sub(before.gateway),
            proxy: self.proxy.saturating_sub(before.proxy),
        }
    }

    fn total(&self) -> Duration {
        self.pods + self.agents + self.waypoint + self.gateway + self.proxy
    }
}

fn cgroup_cpu(cgroup: &FsPath) -> Duration {
    let usec = std::fs::read_to_string(cgroup.join("cpu.stat"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    Duration::from_micros(usec)
}

/// The processes of a cgroup and of every cgroup below it (a pod's are in its containers').
fn processes_below(cgroup: &FsPath) -> Vec<String> {
    let mut procs: Vec<String> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(|pid| pid.trim().to_string())
        .collect();
    for child in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            procs.extend(processes_below(&child.path()));
        }
    }
    procs
}

/// The sum of a `/proc/<pid>/status` memory field (`VmHWM`, `VmRSS`, in kB) over the
/// processes of a cgroup and those below it.
fn status_kb(cgroup: &FsPath, field: &str) -> f64 {
    processes_below(cgroup)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.strip_prefix(':'))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .sum()
}

/// A cgroup's peak memory in MiB and how it was read: `memory.peak` where the memory
/// controller is enabled for cgroup v2, else the sum of its processes' VmHWM.
fn peak_memory_mib(cgroup: &FsPath) -> (f64, &'static str) {
    match std::fs::read_to_string(cgroup.join("memory.peak"))
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        Some(bytes) => (bytes / 1024.0 / 1024.0, "cgroup memory.peak"),
        None => (status_kb(cgroup, "VmHWM") / 1024.0, "VmHWM"),
    }
}

fn rows_with_ratios(samples: &Samples) -> Vec<Row> {
    let mut rows = Vec::new();
    for ((group, scenario, metric, unit, index), values) in samples {
        let Some(summary) = summarize(values) else {
            continue;
        };
        let baseline = samples
            .get(&(*group, scenario.clone(), metric.clone(), unit.clone(), 0))
            .and_then(|v| summarize(v))
            .map(|b| b.median);
        rows.push(Row {
            group: *group,
            scenario: scenario.clone(),
            metric: metric.clone(),
            unit: unit.clone(),
            route: paths(*group)[*index].name.into(),
            summary,
            ratio_to_baseline: baseline.filter(|b| *b > 0.0).map(|b| summary.median / b),
        });
    }
    rows
}

/// Peak memory of each agent and of the waypoint over the whole run.
fn memory_rows(lab: &Lab) -> Vec<Row> {
    let mut parts: Vec<(String, PathBuf)> = lab
        .plan
        .nodes
        .iter()
        .map(|n| (format!("agent ({})", n.name), lab.agent_cgroup_dir(&n.name)))
        .collect();
    if let Ok(dir) = lab.pod_cgroup_dir(WAYPOINT) {
        parts.push((format!("waypoint ({WAYPOINT})"), dir));
    }
    for (what, pod) in [
        ("ingress gateway", plan::INGRESS_GATEWAY),
        ("nginx", plan::NGINX),
    ] {
        if let Ok(dir) = lab.pod_cgroup_dir(pod) {
            parts.push((format!("{what} ({pod})"), dir));
        }
    }
    parts
        .into_iter()
        .map(|(what, cgroup)| {
            let (mib, how) = peak_memory_mib(&cgroup);
            Row {
                group: Group::Resources,
                scenario: "after the whole run".into(),
                metric: format!("{what} peak RSS, {how}"),
                unit: "MiB".into(),
                route: if what.starts_with("waypoint") {
                    "waypoint".into()
                } else if what.starts_with("nginx") {
                    "nginx".into()
                } else {
                    "weft".into()
                },
                summary: single(mib),
                ratio_to_baseline: None,
            }
        })
        .collect()
}

/// Agent resident memory with 0, 10 and 100 enrolled pods on its node; ratios against 0.
fn rss_by_pod_count(runtime: &Runtime) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut baseline = None;
    for pods in [0usize, 10, 100] {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: idle\n  labels: {istio.io/dataplane-mode: ambient}\n",
        );
        for i in 0..pods {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: idle-{i}, namespace: idle}}\nspec:\n  nodeName: node-1\n  containers: [{{name: app, command: [sleep, infinity]}}]\n"
            ));
        }
        let mut manifests = weft_lab::manifest::Manifests::default();
        manifests.add_yaml(&yaml, FsPath::new("generated"))?;
        weft_lab::down("benchrss")?;
        let lab = Lab::up(&LabOptions::new("benchrss").nodes(1), &manifests, runtime)?;
        let status = lab.agent_get("node-1", "/pods")?;
        let enrolled = serde_json::from_str::<Vec<Value>>(&status)?.len();
        if enrolled != pods {
            bail!("the agent enrolled {enrolled} pods, not {pods}");
        }
        let mib = status_kb(&lab.agent_cgroup_dir("node-1"), "VmRSS") / 1024.0;
        let base = *baseline.get_or_insert(mib);
        rows.push(Row {
            group: Group::Resources,
            scenario: "agent memory by enrolled pods".into(),
            metric: format!("agent RSS, {pods} pods"),
            unit: "MiB".into(),
            route: "weft".into(),
            summary: single(mib),
            ratio_to_baseline: (base > 0.0).then(|| mib / base),
        });
        lab.down()?;
    }
    Ok(rows)
}
