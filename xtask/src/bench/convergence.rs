//! The L7 route of echo-l7 (`xtask/bench/routes/echo-l7.yaml`) and the control-plane
//! scenario: how long after a VirtualService changes on disk the first request is routed by
//! it.
//!
//! A client in mesh/client sends requests one after another on one keep-alive connection
//! through the waypoint (each answer says which version served it). The bench rewrites the
//! route between subsets v1 and v2, noting the time just before the write, and takes the
//! time of the first answer from the new version. Between changes it waits a pseudo-random
//! 0–1 s: the previous change was seen just after a poll, so this spreads the next one
//! evenly over the phases of the sources' one-second poll.
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use weft_lab::Lab;

use super::stats::percentile;
use crate::workspace_root;

/// The file the route goes to in the cluster view.
const ROUTE_FILE: &str = "bench-echo-l7-route";
/// Requests the poller sends: they match the route's last rule; the server waits 1 ms before
/// answering, which bounds the poll to about 500 requests/s instead of a busy loop.
const POLL_URL: &str = "http://echo-l7:8080/bytes?n=16&delay_ms=1";
/// What the directory source that agents and waypoints read the cluster from waits between
/// scans (`weft_config::source::DirSource`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub fn route_yaml(subset: &str) -> anyhow::Result<String> {
    let path = workspace_root().join("xtask/bench/routes/echo-l7.yaml");
    let template =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(template.replace("SUBSET", subset))
}

pub fn apply_route(lab: &Lab, subset: &str) -> anyhow::Result<()> {
    Ok(lab.apply_yaml(ROUTE_FILE, &route_yaml(subset)?)?)
}

/// Applies the route to `subset` and waits until ten requests in a row are answered by it
/// (without the route, echo-l7 balances over both versions; with it, only the tenth rule
/// sends anything to a versioned pod).
pub fn apply_route_and_wait(
    lab: &Lab,
    testapp: &Path,
    client: &str,
    subset: &str,
) -> anyhow::Result<()> {
    apply_route(lab, subset)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = lab
            .pod_command(client, testapp)?
            .args(["get", POLL_URL, "--count", "10"])
            .output()?;
        let versions: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(version)
            .collect();
        if output.status.success() && versions.len() == 10 && versions.iter().all(|v| v == subset) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "echo-l7's route to {subset} did not take effect within 20 s (answers from {versions:?}; {})",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The version header of one `weft-testapp get` line ("" if none).
fn version(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| {
            v["headers"]["x-testapp-version"][0]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct Convergence {
    pub changes: usize,
    /// Change written → first request answered by the new version, in order, ms.
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// The baseline: the directory source's poll interval.
    pub poll_interval_ms: f64,
    /// How often the poller asked (its resolution), requests/s.
    pub poll_requests_per_second: f64,
}

pub fn measure(
    lab: &Lab,
    testapp: &Path,
    client: &str,
    changes: usize,
) -> anyhow::Result<Convergence> {
    let mut poller = lab
        .pod_command(client, testapp)?
        .args([
            "get",
            POLL_URL,
            "--count",
            "1000000000",
            "--timeout-ms",
            "10000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the poller")?;
    let stdout = poller.stdout.take().context("the poller's stdout")?;
    let mut stderr = poller.stderr.take().context("the poller's stderr")?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), version(&line))).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let result = changes_and_timings(lab, &rx, changes);
    let _ = poller.kill();
    let _ = poller.wait();
    let _ = reader.join();
    let stderr = errors.join().unwrap_or_default();
    let (samples_ms, poll_rate) =
        result.with_context(|| format!("the poller said: {}", stderr.trim()))?;
    let at = |q| percentile(&samples_ms, q).unwrap_or(f64::NAN);
    Ok(Convergence {
        changes,
        p50_ms: at(50.0),
        p90_ms: at(90.0),
        p99_ms: at(99.0),
        min_ms: at(0.0),
        max_ms: at(100.0),
        samples_ms,
        poll_interval_ms: POLL_INTERVAL.as_secs_f64() * 1000.0,
        poll_requests_per_second: poll_rate,
    })
}

fn changes_and_timings(
    lab: &Lab,
    answers: &mpsc::Receiver<(Instant, String)>,
    changes: usize,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let timeout = Duration::from_secs(10);
    let wait_for = |subset: &str, after: Instant| -> anyhow::Result<(Instant, u64)> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0u64;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, version) = answers.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("no answer from {subset} within {} s", timeout.as_secs())
            })?;
            seen += 1;
            if at >= after && version == subset {
                return Ok((at, seen));
            }
        }
    };
    // The route goes to v1 when the scenario starts.
    let started = Instant::now();
    wait_for("v1", started)?;
    let mut samples = Vec::with_capacity(changes);
    let mut answered = 0u64;
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    for i in 0..changes {
        let subset = if i % 2 == 0 { "v2" } else { "v1" };
        std::thread::sleep(Duration::from_millis(next_random(&mut seed) % 1000));
        answered += answers.try_iter().count() as u64;
        let written = Instant::now();
        apply_route(lab, subset)?;
        let (at, seen) = wait_for(subset, written)?;
        answered += seen;
        samples.push((at - written).as_secs_f64() * 1000.0);
    }
    let rate = answered as f64 / started.elapsed().as_secs_f64();
    Ok((samples, rate))
}

/// splitmix64: a spread of waits, not cryptography.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
