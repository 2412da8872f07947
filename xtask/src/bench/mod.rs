//! `cargo xtask bench`: what weft costs, measured on the lab against baselines in the same
//! run, interleaved (every repetition runs every path back to back) to resist machine noise.
mod report;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use weft_lab::{Lab, LabOptions, Runtime};

use crate::build::cargo;
use crate::workspace_root;
use stats::{Summary, summarize};

/// A way from a client pod to a server pod.
#[derive(Clone, Copy, Debug)]
struct Route {
    name: &'static str,
    client: &'static str,
    server: &'static str,
    /// Node whose agent serves the client (for CPU accounting), if in the mesh.
    mesh: bool,
}

/// The baseline comes first: ratios are against it.
const ROUTES: [Route; 3] = [
    Route {
        name: "no mesh",
        client: "plain/client",
        server: "plain/server",
        mesh: false,
    },
    Route {
        name: "weft",
        client: "mesh/client",
        server: "mesh/server",
        mesh: true,
    },
    Route {
        name: "weft same-node",
        client: "mesh/client",
        server: "mesh/server-local",
        mesh: true,
    },
];

#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// TCP throughput with N streams (Gbit/s).
    Throughput(u32),
    /// 1 KB HTTP/1.1 keep-alive requests at a fixed offered rate, open loop (latency µs).
    Latency(u32),
    /// The same requests at saturation (requests/s).
    Saturation,
    /// New connections per second, one request each.
    ConnectionRate,
}

impl Scenario {
    fn name(&self) -> String {
        match self {
            Scenario::Throughput(n) => {
                format!("throughput, {n} stream{}", if *n == 1 { "" } else { "s" })
            }
            Scenario::Latency(rate) => format!("latency at {rate} req/s"),
            Scenario::Saturation => "requests at saturation".into(),
            Scenario::ConnectionRate => "new connections".into(),
        }
    }
}

pub struct Settings {
    reps: usize,
    duration: Duration,
    warmup: Duration,
    rate: u32,
}

impl Settings {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                duration: Duration::from_millis(1500),
                warmup: Duration::from_millis(300),
                rate: 1000,
            }
        } else {
            Self {
                reps: 7,
                duration: Duration::from_secs(5),
                warmup: Duration::from_secs(1),
                rate: 2000,
            }
        }
    }
}

/// One metric of one scenario on one route, over the repetitions.
#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub route: String,
    pub summary: Summary,
    /// Median over the baseline route's median, for the same metric.
    pub ratio_to_baseline: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub quick: bool,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "--bin",
        "weft-agent",
        "--bin",
        "weft-ca",
        "--bin",
        "weft-testapp",
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
    let lab = Lab::up_from_dir(
        &LabOptions::new("bench").nodes(2),
        &workspace_root().join("xtask/bench/l4"),
        &runtime,
    )
    .context("bringing up the benchmark lab")?;
    let testapp = bins.join("weft-testapp");

    let scenarios = [
        Scenario::Throughput(1),
        Scenario::Throughput(4),
        Scenario::Latency(settings.rate),
        Scenario::Saturation,
        Scenario::ConnectionRate,
    ];
    // (scenario, metric, unit, route) → values
    let mut samples: BTreeMap<(String, String, String, usize), Vec<f64>> = BTreeMap::new();
    let started = Instant::now();
    // Round 0 warms every path up (connections, page cache, CPU frequency) and is discarded.
    for rep in 0..=settings.reps {
        for scenario in &scenarios {
            for (index, route) in ROUTES.iter().enumerate() {
                let cpu_before = cpu_usage(&lab, route);
                let metrics = measure(&lab, &testapp, *scenario, route, &settings)
                    .with_context(|| format!("{} over {}", scenario.name(), route.name))?;
                let cpu = cpu_usage(&lab, route) - cpu_before;
                if rep == 0 {
                    continue;
                }
                for (metric, unit, value) in metrics.values {
                    samples
                        .entry((scenario.name(), metric.to_string(), unit.to_string(), index))
                        .or_default()
                        .push(value);
                }
                if let (Some(requests), true) = (metrics.requests, requests_counted(*scenario))
                    && requests > 0.0
                {
                    samples
                        .entry((
                            scenario.name(),
                            "CPU per 1000 requests (all pods + agents)".into(),
                            "ms".into(),
                            index,
                        ))
                        .or_default()
                        .push(cpu.as_secs_f64() * 1000.0 / requests * 1000.0);
                }
            }
        }
        eprintln!(
            "bench: repetition {rep}/{} done after {:.0}s",
            settings.reps,
            started.elapsed().as_secs_f64()
        );
    }
    let mut rows = rows_with_ratios(samples);
    rows.extend(agent_memory_rows(&lab)?);
    drop(lab);
    rows.extend(rss_by_pod_count(&runtime)?);

    let results = Results {
        date: crate::bench::report::today(),
        machine: report::machine(),
        quick,
        rows,
        notes: vec![
            "\"weft\" is eBPF capture in the client and server pods, the agents' proxies on both nodes, and HBONE (HTTP/2 CONNECT over TLS 1.3 mutual TLS) between them; \"weft same-node\" the same with both pods on one node.".into(),
            "Not measured yet: capture cost against an in-pod iptables REDIRECT, L7 through a waypoint, control-plane convergence (they need the waypoint and the iptables baseline).".into(),
        ],
    };
    let out = workspace_root().join("target/bench");
    report::write(&results, &out)?;
    println!("{}", report::markdown(&results));
    println!("Written to {}", out.display());
    Ok(())
}

fn requests_counted(scenario: Scenario) -> bool {
    matches!(scenario, Scenario::Saturation)
}

struct Metrics {
    values: Vec<(&'static str, &'static str, f64)>,
    requests: Option<f64>,
}

fn testapp_json(lab: &Lab, testapp: &Path, pod: &str, args: &[String]) -> anyhow::Result<Value> {
    let output = lab.pod_command(pod, testapp)?.args(args).output()?;
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
    testapp: &Path,
    scenario: Scenario,
    route: &Route,
    s: &Settings,
) -> anyhow::Result<Metrics> {
    let server = lab.plan.pod(route.server).context("no such server pod")?.ip;
    let ms = |d: Duration| d.as_millis().to_string();
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    Ok(match scenario {
        Scenario::Throughput(streams) => {
            let v = testapp_json(
                lab,
                testapp,
                route.client,
                &[
                    "throughput".into(),
                    format!("{server}:5001"),
                    "--streams".into(),
                    streams.to_string(),
                    "--duration-ms".into(),
                    ms(s.duration),
                    "--warmup-ms".into(),
                    ms(s.warmup),
                ],
            )?;
            Metrics {
                values: vec![("throughput", "Gbit/s", f(&v, "gbit_per_s"))],
                requests: None,
            }
        }
        Scenario::Latency(rate) => {
            let v = testapp_json(
                lab,
                testapp,
                route.client,
                &[
                    "load".into(),
                    format!("http://{server}:8080/bytes?n=1024"),
                    "--rate".into(),
                    rate.to_string(),
                    "--duration-ms".into(),
                    ms(s.duration),
                    "--warmup-ms".into(),
                    ms(s.warmup),
                ],
            )?;
            let lat = &v["latency_us"];
            Metrics {
                values: vec![
                    ("latency p50", "µs", f(lat, "p50")),
                    ("latency p90", "µs", f(lat, "p90")),
                    ("latency p99", "µs", f(lat, "p99")),
                ],
                requests: Some(f(&v, "ok")),
            }
        }
        Scenario::Saturation => {
            let v = testapp_json(
                lab,
                testapp,
                route.client,
                &[
                    "load".into(),
                    format!("http://{server}:8080/bytes?n=1024"),
                    "--rate".into(),
                    "0".into(),
                    "--duration-ms".into(),
                    ms(s.duration),
                    "--warmup-ms".into(),
                    ms(s.warmup),
                ],
            )?;
            Metrics {
                values: vec![("requests", "req/s", f(&v, "achieved_rps"))],
                requests: Some(f(&v, "ok")),
            }
        }
        Scenario::ConnectionRate => {
            let v = testapp_json(
                lab,
                testapp,
                route.client,
                &[
                    "connrate".into(),
                    format!("{server}:8080"),
                    "--http".into(),
                    "--duration-ms".into(),
                    ms(s.duration),
                ],
            )?;
            Metrics {
                values: vec![
                    ("connections", "conn/s", f(&v, "per_second")),
                    ("connection p99", "µs", f(&v["connect_us"], "p99")),
                ],
                requests: None,
            }
        }
    })
}

/// CPU time used so far by everything a route involves: its client and server pods and,
/// for mesh routes, every agent.
fn cpu_usage(lab: &Lab, route: &Route) -> Duration {
    let mut cgroups: Vec<PathBuf> = [route.client, route.server]
        .iter()
        .filter_map(|pod| lab.pod_cgroup_dir(pod).ok())
        .collect();
    if route.mesh {
        cgroups.extend(lab.plan.nodes.iter().map(|n| lab.agent_cgroup_dir(&n.name)));
    }
    cgroups.iter().map(|c| cgroup_cpu(c)).sum()
}

fn cgroup_cpu(cgroup: &Path) -> Duration {
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

/// The sum of a `/proc/<pid>/status` memory field (`VmHWM`, `VmRSS`, in kB) over the
/// processes of a cgroup.
fn status_kb(cgroup: &Path, field: &str) -> f64 {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    procs
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok())
        .filter_map(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.strip_prefix(':'))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .sum()
}

fn rows_with_ratios(samples: BTreeMap<(String, String, String, usize), Vec<f64>>) -> Vec<Row> {
    let mut rows = Vec::new();
    for ((scenario, metric, unit, route), values) in &samples {
        let Some(summary) = summarize(values) else {
            continue;
        };
        let baseline = samples
            .get(&(scenario.clone(), metric.clone(), unit.clone(), 0))
            .and_then(|v| summarize(v))
            .map(|b| b.median);
        rows.push(Row {
            scenario: scenario.clone(),
            metric: metric.clone(),
            unit: unit.clone(),
            route: ROUTES[*route].name.into(),
            summary,
            ratio_to_baseline: baseline.filter(|b| *b > 0.0).map(|b| summary.median / b),
        });
    }
    rows
}

fn agent_memory_rows(lab: &Lab) -> anyhow::Result<Vec<Row>> {
    Ok(lab
        .plan
        .nodes
        .iter()
        .map(|node| {
            let kb = status_kb(&lab.agent_cgroup_dir(&node.name), "VmHWM");
            Row {
                scenario: "after the whole run".into(),
                metric: format!("agent peak RSS ({})", node.name),
                unit: "MiB".into(),
                route: "weft".into(),
                summary: Summary {
                    median: kb / 1024.0,
                    min: kb / 1024.0,
                    max: kb / 1024.0,
                    runs: 1,
                },
                ratio_to_baseline: None,
            }
        })
        .collect())
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
        manifests.add_yaml(&yaml, Path::new("generated"))?;
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
            scenario: "agent memory by enrolled pods".into(),
            metric: format!("agent RSS, {pods} pods"),
            unit: "MiB".into(),
            route: "weft".into(),
            summary: Summary {
                median: mib,
                min: mib,
                max: mib,
                runs: 1,
            },
            ratio_to_baseline: (base > 0.0).then(|| mib / base),
        });
        lab.down()?;
    }
    Ok(rows)
}
