//! Sampling the agents' and the waypoint's processes from /proc: resident memory, open file
//! descriptors and threads, summed over the processes of each component's cgroup (during an
//! upgrade an agent's cgroup holds the old and the new process: the node pays for both).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::bounds::Metric;
use crate::cgroup;

/// A component whose processes are sampled: those of `cgroup` (and below it, with `below`).
#[derive(Clone, Debug)]
pub struct Target {
    pub component: String,
    pub cgroup: PathBuf,
    pub below: bool,
}

/// One sample of one component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the soak began.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub processes: u64,
}

impl Sample {
    pub fn value(&self, metric: Metric) -> f64 {
        match metric {
            Metric::RssKib => self.rss_kib as f64,
            Metric::Fds => self.fds as f64,
            Metric::Threads => self.threads as f64,
        }
    }
}

/// A component's samples over the run.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub component: String,
    pub samples: Vec<Sample>,
}

impl Series {
    pub fn points(&self, metric: Metric) -> Vec<(f64, f64)> {
        self.samples
            .iter()
            .filter(|s| s.processes > 0)
            .map(|s| (s.t, s.value(metric)))
            .collect()
    }
}

/// `VmRSS` of /proc/PID/status, in KiB (None once the process is gone).
fn rss_kib(proc_dir: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

/// The sum over `pids` at `t`.
pub fn sample(pids: &[i32], t: f64) -> Sample {
    let mut sample = Sample {
        t,
        ..Sample::default()
    };
    for pid in pids {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        // A process that exited between the listing and here counts for nothing.
        let Some(rss) = rss_kib(&dir) else { continue };
        sample.rss_kib += rss;
        sample.fds += entries(&dir.join("fd"));
        sample.threads += entries(&dir.join("task"));
        sample.processes += 1;
    }
    sample
}

/// Samples every target every `every` until `stop` is set, then once more.
pub fn run(
    targets: &[Target],
    started: Instant,
    every: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<Series> {
    let mut series: Vec<Series> = targets
        .iter()
        .map(|t| Series {
            component: t.component.clone(),
            samples: Vec::new(),
        })
        .collect();
    loop {
        let done = stop.load(Ordering::SeqCst);
        let t = started.elapsed().as_secs_f64();
        for (target, out) in targets.iter().zip(series.iter_mut()) {
            let pids = if target.below {
                cgroup::members_below(&target.cgroup)
            } else {
                cgroup::members(&target.cgroup)
            };
            out.samples.push(sample(&pids, t));
        }
        if done {
            return series;
        }
        // Bounded by `stop`, checked every 100 ms.
        let next = Instant::now() + every;
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_sampled() {
        let s = sample(&[std::process::id() as i32], 1.0);
        assert_eq!(s.processes, 1);
        assert!(s.rss_kib > 0 && s.fds >= 3 && s.threads >= 1, "{s:?}");
        let gone = sample(&[i32::MAX], 1.0);
        assert_eq!(gone.processes, 0);
    }
}
