//! The soak: the mesh under mixed traffic and churn for a long time, its components' resources
//! sampled and held to bounds (`cargo xtask soak`, and a 2-minute run among the e2e tests).
//!
//! On a lab of two nodes ([`MANIFESTS`]), for the whole run:
//! - traffic ([`traffic`]) from a client pod: keep-alive HTTP, a new connection per
//!   exchange, and bulk streams, each directly (the agents only) and through the waypoint;
//! - config churn: the waypoint's VirtualService rewritten every [`ROUTE_EVERY`] (weights
//!   and a header route), and a pod created, sent traffic, and deleted every [`POD_EVERY`];
//! - certificates of a short lifetime ([`Settings::cert_lifetime`]) rotating;
//! - both agents upgraded at [`UPGRADE_AT`] of the run (a successor takes the sockets over,
//!   the old one drains).
//!
//! Every failed request, connection or stream is an error: none is by design. Traffic to a
//! churned pod ends before the pod is deleted (as a Service drops an endpoint before its pod
//! stops), each round of traffic ends before the next begins so an upgrade's old agent
//! drains, and a route change only moves requests between healthy versions. The agents'
//! and the waypoint's RSS, open fds and threads are sampled ([`sample`]) and judged against
//! the bounds of [`bounds`]; [`Report::svg`] draws them.
pub mod bounds;
pub mod chart;
pub mod sample;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::manifest::Manifests;
use crate::{CniRetry, Lab, LabError, LabOptions, Runtime};
use bounds::{Metric, Verdict, epochs, judge};
use sample::{Series, Target};
use traffic::{Kind, Parse, Tally};

/// The soak's lab.
pub const MANIFESTS: &str = include_str!("lab.yaml");
/// How often the waypoint's routes change.
pub const ROUTE_EVERY: Duration = Duration::from_secs(5);
/// How often a pod is created, sent traffic, and deleted.
pub const POD_EVERY: Duration = Duration::from_secs(30);
/// The length of a round of traffic: no connection lives longer.
pub const ROUND: Duration = Duration::from_secs(15);
/// When the agents are upgraded, as a share of the run: early enough that the new agents'
/// epoch is long enough to judge.
pub const UPGRADE_AT: f64 = 0.4;
/// How long an old agent may take to exit after SIGTERM: its drain time (25 s by default)
/// and some.
const DRAIN_WAIT: Duration = Duration::from_secs(40);

const CLIENT: &str = "soak/client";
const NODES: [&str; 2] = ["node-1", "node-2"];
const WEB: &str = "web.soak.svc.cluster.local";
const ROUTED: &str = "routed.soak.svc.cluster.local";

/// What a soak run is.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The lab's name (it must not be up).
    pub lab: String,
    pub duration: Duration,
    /// Where weft-agent, weft-ca, weft-waypoint and weft-testapp are.
    pub bin_dir: PathBuf,
    /// Where the lab's logs are copied when the soak fails (the lab's own go with it).
    pub keep_logs: Option<PathBuf>,
}

impl Settings {
    /// The workload certificates' lifetime: a third of the run, between 30 s and 5 min, so
    /// that they rotate (at half their lifetime) several times in any run.
    pub fn cert_lifetime(&self) -> Duration {
        (self.duration / 3).clamp(Duration::from_secs(30), Duration::from_secs(300))
    }

    /// How often resources are sampled: 150 samples a run, between every 1 s and 10 s.
    pub fn sample_every(&self) -> Duration {
        (self.duration / 150).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// The upgrade of the agents midway.
#[derive(Clone, Debug, Serialize)]
pub struct Upgrade {
    /// When the successors started, and when the last old agent had exited (seconds since
    /// the soak began).
    pub started: f64,
    pub done: f64,
}

/// What a soak run did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub lab: String,
    pub duration_s: f64,
    pub cert_lifetime_s: u64,
    pub sample_every_s: u64,
    pub bounds: BoundsStated,
    pub traffic: Vec<Tally>,
    pub route_changes: u64,
    pub pods_churned: u64,
    /// Per node, the workload certificates the agent was seen holding (distinct serials)
    /// and how many identities they were for: more serials than identities is rotation.
    pub certificates: BTreeMap<String, (usize, usize)>,
    pub upgrade: Option<Upgrade>,
    /// Everything else that went wrong: a route not applied, a pod not started or deleted,
    /// the upgrade failing, an expired certificate held.
    pub failures: Vec<String>,
    pub verdicts: Vec<Verdict>,
    /// What weft's processes warned about (lines at WARN or ERROR in the lab's logs, by log
    /// file, the same message once with its count): to read, not judged.
    pub warnings: BTreeMap<String, Vec<(String, u64)>>,
    pub series: Vec<Series>,
}

/// Most distinct warnings kept per log.
const KEPT_WARNINGS: usize = 10;

/// A log line's message without its timestamp, for counting repeats.
fn warning_message(line: &str) -> Option<String> {
    let at = line.find(" WARN ").or_else(|| line.find(" ERROR "))?;
    let message = line[at..].trim();
    // Numbers (ports, counts, ids) vary between repeats of the same warning.
    Some(
        message
            .split_whitespace()
            .map(|w| {
                if w.chars().any(|c| c.is_ascii_digit()) {
                    "…"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The warnings of the lab's agents, CA and waypoint, from their logs.
fn warnings(logs: &Path) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(logs) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("agent-") || name.starts_with("ca") || name.contains("waypoint")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for message in text.lines().filter_map(warning_message) {
            *counts.entry(message).or_default() += 1;
        }
        let mut counted: Vec<(String, u64)> = counts.into_iter().collect();
        counted.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        counted.truncate(KEPT_WARNINGS);
        if !counted.is_empty() {
            out.insert(name, counted);
        }
    }
    out
}

/// The bounds, as the report states them.
#[derive(Clone, Debug, Serialize)]
pub struct BoundsStated {
    pub rss_growth_mib: f64,
    pub fd_growth: u64,
    pub thread_growth: u64,
    pub warm_up_share: f64,
}

impl Report {
    /// Why the soak failed; empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for tally in &self.traffic {
            if tally.failures > 0 || tally.failed_rounds > 0 {
                problems.push(format!(
                    "{}: {} of {} failed ({} rounds failed outright): {}",
                    tally.kind,
                    tally.failures,
                    tally.attempts,
                    tally.failed_rounds,
                    tally.messages.join(" | ")
                ));
            }
            if tally.attempts == 0 {
                problems.push(format!("{}: no traffic was sent", tally.kind));
            }
        }
        problems.extend(self.failures.iter().cloned());
        for verdict in &self.verdicts {
            if !verdict.passed {
                problems.push(verdict.describe());
            }
        }
        if self.upgrade.is_none() {
            problems.push("the agents were not upgraded".into());
        }
        for (node, (serials, identities)) in &self.certificates {
            if serials <= identities {
                problems.push(format!(
                    "{node}: no certificate rotated ({serials} serials for {identities} identities)"
                ));
            }
        }
        problems
    }

    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// The resources chart.
    pub fn svg(&self) -> String {
        let mut marks = Vec::new();
        if let Some(upgrade) = &self.upgrade {
            marks.push((upgrade.started, "upgrade".to_string()));
            marks.push((upgrade.done, "old agents gone".to_string()));
        }
        chart::svg(
            &format!(
                "weft soak, {:.0} s: agents' and waypoint's resources",
                self.duration_s
            ),
            &self.series,
            self.duration_s,
            &marks,
        )
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!(
            "soak of {:.0} s on lab {}: certificates of {} s, {} route changes, {} pods churned{}",
            self.duration_s,
            self.lab,
            self.cert_lifetime_s,
            self.route_changes,
            self.pods_churned,
            self.upgrade.as_ref().map_or(String::new(), |u| format!(
                ", agents upgraded at {:.0} s (old ones gone at {:.0} s)",
                u.started, u.done
            ))
        )];
        for t in &self.traffic {
            lines.push(format!(
                "  {:<40} {:>8} attempts, {} failed",
                t.kind, t.attempts, t.failures
            ));
        }
        for (node, (serials, identities)) in &self.certificates {
            lines.push(format!(
                "  {node}: {serials} certificates seen for {identities} identities"
            ));
        }
        lines.extend(self.verdicts.iter().map(|v| format!("  {}", v.describe())));
        for (log, counted) in &self.warnings {
            for (message, count) in counted {
                lines.push(format!("  {log}: {count}× {message}"));
            }
        }
        let problems = self.problems();
        lines.push(if problems.is_empty() {
            "PASSED".to_string()
        } else {
            format!("FAILED:\n  {}", problems.join("\n  "))
        });
        lines.join("\n")
    }
}

/// The traffic kinds (`{ms}`: a round's length).
fn kinds() -> Vec<Kind> {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Kind {
            name: "keep-alive HTTP, direct",
            waypoint: false,
            args: args(&[
                "load",
                &format!("http://{WEB}:8080/"),
                "--rate",
                "30",
                "--connections",
                "2",
                "--duration-ms",
                "{ms}",
            ]),
            parse: Parse::Load,
            busy: None,
        },
        Kind {
            name: "keep-alive HTTP, through the waypoint",
            waypoint: true,
            args: args(&[
                "load",
                &format!("http://{ROUTED}:8080/"),
                "--rate",
                "30",
                "--connections",
                "2",
                "--duration-ms",
                "{ms}",
            ]),
            parse: Parse::Load,
            busy: None,
        },
        Kind {
            name: "new connections, direct (TCP echo)",
            waypoint: false,
            args: args(&[
                "connrate",
                &format!("{WEB}:9000"),
                "--concurrency",
                "1",
                "--duration-ms",
                "{ms}",
            ]),
            parse: Parse::Connrate,
            busy: None,
        },
        Kind {
            name: "new connections, through the waypoint",
            waypoint: true,
            args: args(&[
                "connrate",
                &format!("{ROUTED}:8080"),
                "--http",
                "--concurrency",
                "1",
                "--duration-ms",
                "{ms}",
            ]),
            parse: Parse::Connrate,
            busy: None,
        },
        Kind {
            name: "bulk streams, direct",
            waypoint: false,
            args: args(&[
                "throughput",
                &format!("{WEB}:9100"),
                "--streams",
                "2",
                "--duration-ms",
                "{ms}",
            ]),
            parse: Parse::Throughput,
            busy: Some(Duration::from_secs(2)),
        },
        Kind {
            name: "bulk uploads, through the waypoint",
            waypoint: true,
            args: args(&[
                "get",
                &format!("http://{ROUTED}:8080/upload"),
                "--method",
                "POST",
                "--body-bytes",
                "16000000",
                "--count",
                "2",
                "--timeout-ms",
                "10000",
            ]),
            parse: Parse::Get,
            busy: Some(Duration::from_secs(2)),
        },
    ]
}

/// The `n`th version of the waypoint's routes: a header route to v2, then a split whose
/// weights move through `SPLITS`.
pub fn routes(n: u64) -> String {
    const SPLITS: [(u32, u32); 6] = [(100, 0), (80, 20), (50, 50), (20, 80), (0, 100), (50, 50)];
    let (v1, v2) = SPLITS[(n % SPLITS.len() as u64) as usize];
    let mut destinations = Vec::new();
    for (subset, weight) in [("v1", v1), ("v2", v2)] {
        if weight > 0 {
            destinations.push(format!(
                "        - {{destination: {{host: routed, subset: {subset}}}, weight: {weight}}}\n"
            ));
        }
    }
    // Every other version names the header route first, or leaves it out.
    let header = if n.is_multiple_of(2) {
        "    - name: header\n      match: [{headers: {x-soak: {exact: v2}}}]\n      route: [{destination: {host: routed, subset: v2}}]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: routed, namespace: soak, labels: {{soak-version: \"{n}\"}}}}\nspec:\n  hosts: [routed]\n  http:\n{header}    - name: split\n      route:\n{}",
        destinations.concat()
    )
}

/// A pod of the churn, on `node`.
fn churn_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: soak, labels: {{app: churn}}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: churn\n  containers:\n    - name: app\n      command: [weft-testapp, serve, --http-port, \"8080\", --tcp-echo-port, \"9000\"]\n      ports: [{{containerPort: 8080}}, {{containerPort: 9000}}]\n"
    )
}

fn write_lock(lab: &RwLock<Lab>) -> std::sync::RwLockWriteGuard<'_, Lab> {
    lab.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_lock(lab: &RwLock<Lab>) -> std::sync::RwLockReadGuard<'_, Lab> {
    lab.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the agent of `node` lists pod `name` of the soak's namespace in the mesh.
fn agent_knows(lab: &Lab, node: &str, name: &str) -> bool {
    lab.agent_get(node, "/workloads")
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|ws| {
            ws.iter()
                .any(|w| w["namespace"] == "soak" && w["name"] == name && w["in_mesh"] == true)
        })
}

/// One pod of the churn: created, started, sent requests and connections once both agents
/// know it, then deleted.
fn churn_once(
    lab: &RwLock<Lab>,
    testapp: &PathBuf,
    n: u64,
    at: f64,
    tally: &mut Tally,
) -> Result<(), String> {
    let name = format!("churn-{n}");
    let node = NODES[(n % 2) as usize];
    let key = {
        let mut lab = write_lock(lab);
        let keys = lab
            .create_pods(&churn_pod(&name, node))
            .map_err(|e| format!("creating pod {name}: {e}"))?;
        lab.start_pods(&keys, CniRetry::default())
            .map_err(|e| format!("starting pod {name}: {e}"))?;
        keys.into_iter().next().unwrap_or_default()
    };
    let ip = read_lock(lab)
        .plan
        .pod(&key)
        .map(|p| p.ip.to_string())
        .ok_or_else(|| format!("pod {key} has no address"))?;
    // The client's agent must know the new pod is in the mesh before it carries a
    // connection to it (in a cluster: an endpoint is published once the pod is ready).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !NODES
        .iter()
        .all(|node| agent_knows(&read_lock(lab), node, &name))
    {
        if Instant::now() >= deadline {
            return Err(format!("the agents did not list pod {key} within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let get: Vec<String> = ["get", &format!("http://{ip}:8080/"), "--count", "20"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    traffic::once(lab, testapp, CLIENT, &get, Parse::Get, 20, at, tally);
    let tcp: Vec<String> = ["tcp", &format!("{ip}:9000"), "--repeat", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    traffic::once(lab, testapp, CLIENT, &tcp, Parse::Echo, 5, at, tally);
    write_lock(lab)
        .delete_pod(&key, Duration::from_secs(5))
        .map_err(|e| format!("deleting pod {key}: {e}"))
}

/// The certificates the agent of `node` holds: (identity, serial, expires in seconds).
fn certificates(lab: &Lab, node: &str) -> Result<Vec<(String, String, i64)>, String> {
    let body = lab
        .agent_get(node, "/certs")
        .map_err(|e| format!("reading the certificates of {node}: {e}"))?;
    let view: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{node}'s /certs: {e}"))?;
    Ok(view["certificates"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["identity"].as_str().unwrap_or_default().to_string(),
                        c["serial"].as_str().unwrap_or_default().to_string(),
                        c["expires_in_seconds"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Upgrades both agents while traffic flows, as tests/tests/upgrade.rs does: a successor
/// for each node, then the old ones told to stop, together, and waited for (each drains what
/// it carries, for at most its drain time).
fn upgrade(lab: &RwLock<Lab>) -> Result<(), String> {
    let mut replaced = Vec::new();
    for node in NODES {
        let (old, _new) = write_lock(lab)
            .start_successor_agent(node)
            .map_err(|e| format!("starting a successor agent on {node}: {e}"))?;
        replaced.push((node, old));
    }
    let lab = read_lock(lab);
    let lab = &*lab;
    std::thread::scope(|scope| {
        let stops: Vec<_> = replaced
            .iter()
            .map(|(node, old)| {
                scope.spawn(move || {
                    lab.stop_agent_processes(node, old, DRAIN_WAIT)
                        .map_err(|e| format!("stopping the old agent of {node}: {e}"))
                })
            })
            .collect();
        stops
            .into_iter()
            .map(|s| s.join().unwrap_or_else(|_| Err("a stop panicked".into())))
            .collect::<Result<Vec<()>, String>>()
            .map(drop)
    })
}

/// Runs a soak: brings its lab up, runs for `settings.duration`, takes the lab down.
pub fn run(settings: &Settings) -> Result<Report, LabError> {
    let mut manifests = Manifests::default();
    manifests.add_yaml(MANIFESTS, Path::new("soak/lab.yaml"))?;
    let bins = &settings.bin_dir;
    let runtime = Runtime {
        bin_dir: Some(bins.clone()),
        agent: Some(bins.join("weft-agent")),
        ca: Some(bins.join("weft-ca")),
        agent_log: Some("info".into()),
        agent_args: vec![
            "--cert-lifetime".into(),
            settings.cert_lifetime().as_secs().to_string(),
        ],
        ..Runtime::default()
    };
    let lab = Lab::up(
        &LabOptions::new(&settings.lab).nodes(2),
        &manifests,
        &runtime,
    )?;
    lab.apply_yaml("soak-routes", &routes(0))?;
    let mut targets: Vec<Target> = NODES
        .iter()
        .map(|node| Target {
            component: format!("agent {node}"),
            cgroup: lab.agent_cgroup_dir(node),
            below: false,
        })
        .collect();
    let waypoint = lab
        .plan
        .pods
        .iter()
        .find(|p| p.is_waypoint())
        .map(|p| p.key())
        .ok_or_else(|| LabError::Invalid("the soak's lab has no waypoint".into()))?;
    targets.push(Target {
        component: "waypoint".into(),
        cgroup: lab.pod_cgroup_dir(&waypoint)?,
        below: true,
    });
    let lab = RwLock::new(lab);
    let mut report = soak(settings, &lab, &targets);
    let lab = lab
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.warnings = warnings(&lab.paths.logs());
    if let Some(to) = settings.keep_logs.as_deref().filter(|_| !report.passed()) {
        copy_logs(&lab.paths.logs(), to);
    }
    lab.down()?;
    Ok(report)
}

/// Copies the lab's log files to `to`, best effort: the soak's verdict stands either way.
fn copy_logs(logs: &Path, to: &Path) {
    let copied = std::fs::create_dir_all(to).and_then(|()| {
        for entry in std::fs::read_dir(logs)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(())
    });
    if let Err(error) = copied {
        tracing::warn!(%error, from = %logs.display(), to = %to.display(), "copying the soak's logs");
    }
}

/// The soak itself, on a lab that is up.
fn soak(settings: &Settings, lab: &RwLock<Lab>, targets: &[Target]) -> Report {
    let testapp = settings.bin_dir.join("weft-testapp");
    let started = Instant::now();
    let end = started + settings.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let mut failures = Vec::new();
    let mut route_changes = 0;
    let mut pods_churned = 0;
    let mut upgraded = None;
    let mut churn = Tally {
        kind: "to pods created and deleted".into(),
        ..Tally::default()
    };
    let mut serials: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    let (series, mut traffic) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample::run(targets, started, settings.sample_every(), &stop));
        let workers: Vec<_> = kinds()
            .into_iter()
            .map(|kind| {
                let testapp = &testapp;
                scope
                    .spawn(move || traffic::run(lab, testapp, CLIENT, &kind, ROUND, (started, end)))
            })
            .collect();

        let at = || started.elapsed().as_secs_f64();
        let mut next_route = started + ROUTE_EVERY;
        let mut next_pod = started + Duration::from_secs(10);
        let mut next_certs = started;
        let mut upgrade_at = Some(started + settings.duration.mul_f64(UPGRADE_AT));
        while Instant::now() < end {
            let now = Instant::now();
            if now >= next_route {
                route_changes += 1;
                if let Err(e) = read_lock(lab).apply_yaml("soak-routes", &routes(route_changes)) {
                    failures.push(format!(
                        "route change {route_changes} at {:.0} s: {e}",
                        at()
                    ));
                }
                next_route += ROUTE_EVERY;
            }
            if upgrade_at.is_some_and(|u| now >= u) {
                upgrade_at = None;
                let from = at();
                match upgrade(lab) {
                    Ok(()) => {
                        upgraded = Some(Upgrade {
                            started: from,
                            done: at(),
                        })
                    }
                    Err(e) => failures.push(format!("the upgrade at {from:.0} s: {e}")),
                }
            }
            // A pod's cycle takes a few seconds: none starts near the end.
            if now >= next_pod && now + Duration::from_secs(15) < end {
                let from = at();
                match churn_once(lab, &testapp, pods_churned, from, &mut churn) {
                    Ok(()) => {}
                    Err(e) => failures.push(format!("the churned pod at {from:.0} s: {e}")),
                }
                pods_churned += 1;
                next_pod = Instant::now() + POD_EVERY;
            }
            if now >= next_certs {
                for node in NODES {
                    match certificates(&read_lock(lab), node) {
                        Ok(held) => {
                            for (identity, serial, expires_in) in held {
                                if expires_in <= 0 {
                                    failures.push(format!(
                                        "{node} held an expired certificate of {identity} at {:.0} s",
                                        at()
                                    ));
                                }
                                serials.entry(node).or_default().insert((identity, serial));
                            }
                        }
                        Err(e) => failures.push(format!("{e} at {:.0} s", at())),
                    }
                }
                next_certs += Duration::from_secs(2);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let traffic: Vec<Tally> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect();
        stop.store(true, Ordering::SeqCst);
        let series = sampler.join().unwrap_or_default();
        (series, traffic)
    });
    traffic.push(churn);
    let duration = started.elapsed().as_secs_f64();
    let mut verdicts = Vec::new();
    for s in &series {
        // An agent's epochs: before its upgrade and after (the old process gone).
        let gaps: Vec<(f64, f64)> = match &upgraded {
            Some(u) if s.component.starts_with("agent") => vec![(u.started, u.done)],
            _ => Vec::new(),
        };
        for (from, to) in epochs(duration, &gaps) {
            for metric in Metric::ALL {
                verdicts.push(judge(&s.component, metric, &s.points(metric), from, to));
            }
        }
    }
    Report {
        lab: settings.lab.clone(),
        duration_s: duration,
        cert_lifetime_s: settings.cert_lifetime().as_secs(),
        sample_every_s: settings.sample_every().as_secs(),
        bounds: BoundsStated {
            rss_growth_mib: bounds::RSS_GROWTH_MIB,
            fd_growth: bounds::FD_GROWTH,
            thread_growth: bounds::THREAD_GROWTH,
            warm_up_share: bounds::WARM_UP,
        },
        traffic,
        route_changes,
        pods_churned,
        certificates: serials
            .into_iter()
            .map(|(node, seen)| {
                let identities = seen.iter().map(|(i, _)| i).collect::<BTreeSet<_>>().len();
                (node.to_string(), (seen.len(), identities))
            })
            .collect(),
        upgrade: upgraded,
        failures,
        verdicts,
        warnings: BTreeMap::new(),
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_describe_a_lab() {
        let mut manifests = Manifests::default();
        manifests
            .add_yaml(MANIFESTS, Path::new("soak/lab.yaml"))
            .expect("the soak's manifests parse");
        assert!(manifests.pods.iter().any(|p| p.metadata.name == "client"));
        for service in ["web", "routed"] {
            assert!(
                manifests
                    .services
                    .iter()
                    .any(|s| s.metadata.name == service)
            );
        }
    }

    #[test]
    fn routes_change_and_stay_valid() {
        let texts: Vec<String> = (0..12).map(routes).collect();
        for (n, text) in texts.iter().enumerate() {
            let value: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
            let weights: u64 = value["spec"]["http"]
                .as_sequence()
                .and_then(|rules| rules.last())
                .and_then(|split| split["route"].as_sequence())
                .map(|route| route.iter().filter_map(|d| d["weight"].as_u64()).sum())
                .unwrap_or_default();
            assert_eq!(weights, 100, "version {n}: {text}");
        }
        assert_ne!(texts[1], texts[2]);
    }

    #[test]
    fn repeated_warnings_count_once() {
        let a = "2026-12-07T17:49:23.125357Z  WARN weft: drain time is up open=3";
        let b = "2026-12-07T17:50:01.000001Z  WARN weft: drain time is up open=5";
        assert_eq!(warning_message(a), warning_message(b));
        assert_eq!(
            warning_message(a).as_deref(),
            Some("WARN weft: drain time is up …")
        );
        assert_eq!(warning_message("2026 INFO fine"), None);
    }

    #[test]
    fn short_runs_rotate_certificates_and_sample_often() {
        let settings = |secs| Settings {
            lab: "soak".into(),
            duration: Duration::from_secs(secs),
            bin_dir: PathBuf::new(),
            keep_logs: None,
        };
        assert_eq!(settings(120).cert_lifetime(), Duration::from_secs(40));
        assert_eq!(settings(1800).cert_lifetime(), Duration::from_secs(300));
        assert_eq!(settings(120).sample_every(), Duration::from_secs(1));
        assert_eq!(settings(1800).sample_every(), Duration::from_secs(10));
    }
}
