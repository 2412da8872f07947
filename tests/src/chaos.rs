//! Chaos under load, shared by `tests/tests/chaos.rs` and `cargo xtask chaos` (which runs
//! that test and prints its table): the client that keeps requests flowing while a part of
//! the mesh is killed (`tests/src/chaos_client.py`, run inside a client pod so that its
//! connections are captured), what its samples say (what was lost, for how long, when
//! serving again), the agents' certificate retries read from their logs, and the table of
//! figures the README quotes.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use weft_lab::Lab;

use crate::python;

/// The client's source, run with the venv's Python (`crate::python`).
const CLIENT: &str = include_str!("chaos_client.py");

/// Where `cargo xtask chaos` asks the test to write its table (a Markdown file).
pub const REPORT_ENV: &str = "WEFT_CHAOS_REPORT";

/// Which loop of the client a sample comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A fresh connection per request.
    New,
    /// Requests on a keep-alive connection, reopened after a failure.
    Kept,
}

/// One request of the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub kind: Kind,
    /// When it started, Unix seconds.
    pub t: f64,
    pub ok: bool,
    /// "ok", "refused", "reset", "closed", "timeout", "http 503", …
    pub outcome: String,
    /// How long it took, seconds.
    pub took: f64,
    /// The keep-alive connection's number (1, 2, … as it is reopened); the request's for
    /// new connections.
    pub conn: u64,
}

impl Sample {
    /// A line of the client's output.
    pub fn parse(line: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            kind: match v["kind"].as_str()? {
                "new" => Kind::New,
                "kept" => Kind::Kept,
                _ => return None,
            },
            t: v["t"].as_f64()?,
            ok: v["ok"].as_bool()?,
            outcome: v["outcome"].as_str()?.to_string(),
            took: v["ms"].as_f64()? / 1000.0,
            conn: v["conn"].as_u64()?,
        })
    }

    /// When it ended (its outcome known), Unix seconds: a request in flight when something
    /// is killed counts as after it.
    pub fn end(&self) -> f64 {
        self.t + self.took
    }
}

/// Unix seconds now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The client running in a pod.
pub struct Load {
    child: Child,
    script: PathBuf,
}

/// How the client sends.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// How long it runs at most.
    pub seconds: f64,
    /// One request of each loop every this long.
    pub interval: Duration,
    /// A request's timeout (connect, send, whole response).
    pub timeout: Duration,
    /// Stop once this many new connections in a row succeeded after one failed (0: run
    /// the whole time).
    pub stop_after_ok: u32,
}

impl Pace {
    /// 20 requests a second on each loop, a second's timeout, for `seconds`.
    pub fn steady(seconds: f64) -> Self {
        Self {
            seconds,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            stop_after_ok: 0,
        }
    }
}

impl Load {
    /// Starts the client in `pod` towards `host:port`.
    pub fn start(lab: &Lab, pod: &str, host: &str, port: u16, pace: Pace) -> Self {
        let script = lab
            .paths
            .root
            .join(format!("chaos-client-{}.py", std::process::id()));
        std::fs::write(&script, CLIENT)
            .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        let mut command = lab
            .pod_command(pod, python())
            .unwrap_or_else(|e| panic!("preparing the client in {pod}: {e}"));
        command
            .arg(&script)
            .arg(host)
            .arg(port.to_string())
            .arg(pace.seconds.to_string())
            .arg(pace.interval.as_millis().to_string())
            .arg(pace.timeout.as_millis().to_string())
            .arg(pace.stop_after_ok.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting the client in {pod}: {e}"));
        Self { child, script }
    }

    /// Waits for the client to finish; its samples in order of start.
    pub fn finish(self) -> Vec<Sample> {
        let output = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for the chaos client: {e}"));
        let _ = std::fs::remove_file(&self.script);
        assert!(
            output.status.success(),
            "the chaos client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut samples: Vec<Sample> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(Sample::parse)
            .collect();
        samples.sort_by(|a, b| a.t.total_cmp(&b.t));
        samples
    }
}

/// What one loop's samples say about an event at `event` (Unix seconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outage {
    pub requests: usize,
    pub failed: usize,
    /// Failed requests by outcome.
    pub outcomes: BTreeMap<String, usize>,
    /// From the event to the first failure at or after it, seconds.
    pub first_failure: Option<f64>,
    /// From the event to the start of the first success after the last failure, seconds:
    /// how long until serving again. None when nothing failed, or nothing succeeded after.
    pub serving_again: Option<f64>,
    /// From the first to the last failure, seconds.
    pub failing_for: Option<f64>,
    /// Keep-alive connections that were serving and then failed (the kept loop only).
    pub connections_broken: usize,
    /// Whether the last request succeeded.
    pub ends_ok: bool,
}

/// Reads `samples` of `kind` that ended at `event` or later (earlier ones are the steady
/// state before it).
pub fn outage(samples: &[Sample], kind: Kind, event: f64) -> Outage {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind == kind && s.end() >= event)
        .collect();
    let failures: Vec<&&Sample> = mine.iter().filter(|s| !s.ok).collect();
    let mut outcomes = BTreeMap::new();
    for f in &failures {
        *outcomes.entry(f.outcome.clone()).or_insert(0) += 1;
    }
    let first = failures.first().map(|s| s.t);
    let last = failures.last().map(|s| s.t);
    let serving_again = last.and_then(|last| {
        mine.iter()
            .find(|s| s.ok && s.t > last)
            .map(|s| s.t - event)
    });
    // A kept connection broke when a request failed on it, from the event on, after one had
    // succeeded on it (before the event too).
    let mut served: BTreeMap<u64, bool> = BTreeMap::new();
    let mut broken = 0;
    if kind == Kind::Kept {
        for s in samples.iter().filter(|s| s.kind == kind) {
            let ok_before = served.get(&s.conn).copied().unwrap_or(false);
            if s.ok {
                served.insert(s.conn, true);
            } else if ok_before {
                broken += usize::from(s.end() >= event);
                served.insert(s.conn, false);
            }
        }
    }
    Outage {
        requests: mine.len(),
        failed: failures.len(),
        outcomes,
        first_failure: first.map(|t| t - event),
        serving_again,
        failing_for: first.zip(last).map(|(f, l)| l - f),
        connections_broken: broken,
        ends_ok: mine.last().is_some_and(|s| s.ok),
    }
}

/// Samples of `kind` that ended in `[from, to)`, and how many of them succeeded.
pub fn window(samples: &[Sample], kind: Kind, from: f64, to: f64) -> (usize, usize) {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind == kind && s.end() >= from && s.end() < to)
        .collect();
    (inside.len(), inside.iter().filter(|s| s.ok).count())
}

/// Milliseconds, or "—".
fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("—".into(), |s| format!("{:.0} ms", s * 1000.0))
}

fn outcomes(o: &Outage) -> String {
    if o.outcomes.is_empty() {
        return "none".into();
    }
    o.outcomes
        .iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One scenario's line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub new: Outage,
    pub kept: Outage,
    /// Anything else measured, said in words.
    pub notes: String,
}

/// The table of figures, Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | new connections failed | how | serving again after | kept connections: requests failed, connections broken | serving again after | notes |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} of {} | {} | {} | {} of {}, {} | {} | {} |",
            r.scenario,
            r.new.failed,
            r.new.requests,
            outcomes(&r.new),
            ms(r.new.serving_again),
            r.kept.failed,
            r.kept.requests,
            r.kept.connections_broken,
            ms(r.kept.serving_again),
            r.notes
        );
    }
    out
}

/// Prints the table and, when `cargo xtask chaos` asked for it, writes it where it said.
pub fn publish(rows: &[Row]) {
    let text = table(rows);
    println!("\n{text}");
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            eprintln!("writing {}: {e}", path.display());
        }
    }
}

/// A certificate an agent holds: its identity and when it expires (Unix seconds).
pub fn held_certificates(lab: &Lab, node: &str) -> Vec<(String, i64)> {
    crate::agent_admin(lab, node, "/certs")["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["identity"].as_str().unwrap_or_default().to_string(),
                c["not_after_unix"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The agent of `node`'s process id, as its admin endpoint says.
pub fn agent_pid(lab: &Lab, node: &str) -> i64 {
    crate::agent_admin(lab, node, "/status")["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("the agent of {node} says no pid"))
}

/// The agent of `node`'s log as it is now (a mark to count lines after).
pub fn agent_log(lab: &Lab, node: &str) -> String {
    std::fs::read_to_string(lab.paths.logs().join(format!("agent-{node}.log"))).unwrap_or_default()
}

/// Failed certificate requests for `identity` logged in `log` (a slice of an agent's log).
pub fn failed_requests(log: &str, identity: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("certificate request failed") && l.contains(identity))
        .count()
}

/// Certificates issued for `identity` logged in `log`.
pub fn issued(log: &str, identity: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("certificate issued") && l.contains(identity))
        .count()
}

/// SIGKILLs every process of `pod` (a crash, an OOM kill); its kubelet starts it again as
/// its `restartPolicy` says.
pub fn kill_pod(lab: &Lab, pod: &str) -> usize {
    let pids = lab
        .pod_processes(pod)
        .unwrap_or_else(|e| panic!("the processes of {pod}: {e}"));
    for pid in &pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: Kind, t: f64, outcome: &str, conn: u64) -> Sample {
        Sample {
            kind,
            t,
            ok: outcome == "ok",
            outcome: outcome.into(),
            took: 0.0,
            conn,
        }
    }

    #[test]
    fn reads_the_client_lines() {
        let line = r#"{"kind": "kept", "t": 1700000000.25, "ok": false, "outcome": "reset", "ms": 500.0, "conn": 2}"#;
        let sample = Sample::parse(line).expect("a sample");
        assert_eq!(
            sample,
            Sample {
                took: 0.5,
                ..s(Kind::Kept, 1_700_000_000.25, "reset", 2)
            }
        );
        assert_eq!(sample.end(), 1_700_000_000.75);
        assert_eq!(Sample::parse("Traceback (most recent call last):"), None);
    }

    #[test]
    fn an_outage_is_measured_from_the_event_to_the_first_success_after_the_last_failure() {
        let samples = [
            s(Kind::New, 9.0, "timeout", 0), // before the event: not counted
            s(Kind::New, 10.0, "ok", 1),
            s(Kind::New, 10.5, "refused", 2),
            s(Kind::New, 11.0, "ok", 3), // a success between failures does not end it
            s(Kind::New, 11.5, "refused", 4),
            s(Kind::New, 12.0, "reset", 5),
            s(Kind::New, 12.5, "ok", 6),
            s(Kind::New, 13.0, "ok", 7),
            s(Kind::Kept, 10.5, "refused", 1),
        ];
        let o = outage(&samples, Kind::New, 10.0);
        assert_eq!(o.requests, 7);
        assert_eq!(o.failed, 3);
        assert_eq!(o.outcomes["refused"], 2);
        assert_eq!(o.outcomes["reset"], 1);
        assert_eq!(o.first_failure, Some(0.5));
        assert_eq!(o.serving_again, Some(2.5));
        assert_eq!(o.failing_for, Some(1.5));
        assert!(o.ends_ok);
        let calm = outage(&samples[6..8], Kind::New, 10.0);
        assert_eq!((calm.failed, calm.serving_again), (0, None));
    }

    #[test]
    fn a_kept_connection_breaks_when_it_fails_after_serving() {
        let samples = [
            s(Kind::Kept, 1.0, "ok", 1),
            s(Kind::Kept, 2.0, "reset", 1),   // connection 1 broke
            s(Kind::Kept, 3.0, "refused", 2), // connection 2 never served
            s(Kind::Kept, 4.0, "ok", 3),
            s(Kind::Kept, 5.0, "ok", 3),
        ];
        let o = outage(&samples, Kind::Kept, 0.0);
        assert_eq!((o.failed, o.connections_broken), (2, 1));
        assert_eq!(o.serving_again, Some(4.0));
        // Served before the event, broken after it: still a connection broken, and so is a
        // request started before the event that ended after it.
        let o = outage(&samples, Kind::Kept, 1.5);
        assert_eq!((o.failed, o.connections_broken), (2, 1));
        let in_flight = [
            s(Kind::Kept, 1.0, "ok", 1),
            Sample {
                took: 0.7,
                ..s(Kind::Kept, 1.2, "closed", 1)
            },
        ];
        let o = outage(&in_flight, Kind::Kept, 1.5);
        assert_eq!((o.failed, o.connections_broken), (1, 1));
        assert_eq!(window(&samples, Kind::Kept, 2.0, 4.0), (2, 0));
    }

    #[test]
    fn the_table_has_a_line_per_scenario() {
        let samples = [s(Kind::New, 1.0, "refused", 1), s(Kind::New, 1.2, "ok", 2)];
        let row = Row {
            scenario: "agent SIGKILL".into(),
            new: outage(&samples, Kind::New, 1.0),
            kept: Outage::default(),
            notes: "restarted".into(),
        };
        let text = table(&[row]);
        assert!(
            text.contains(
                "| agent SIGKILL | 1 of 2 | 1 refused | 200 ms | 0 of 0, 0 | — | restarted |"
            ),
            "{text}"
        );
    }
}
