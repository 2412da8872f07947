//! The soak's bounds, stated here and nowhere else, and the pure check of a sampled series
//! against them.
//!
//! A series (one component's RSS, open fds or threads over time) is judged per epoch: the
//! whole run for the waypoint, before and after the upgrade for an agent (a new process
//! starts afresh, so a leak of the old one must show before it is replaced). In each epoch
//! the first [`WARM_UP`] of its time is left out (pools, caches and the allocator filling),
//! the rest is cut into four quarters by time, and the median of the last quarter may
//! exceed the median of the first by at most the metric's allowance. Medians, not single
//! samples: a burst of connections at one sampling instant is not growth.
use serde::Serialize;

/// What is sampled of each component (the sum over its processes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Resident memory (`VmRSS` of /proc/PID/status), in KiB.
    RssKib,
    /// Open file descriptors (entries of /proc/PID/fd): sockets, eBPF maps, files.
    Fds,
    /// Threads (entries of /proc/PID/task): tokio's workers and its blocking pool.
    Threads,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::RssKib, Metric::Fds, Metric::Threads];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RssKib => "RSS",
            Metric::Fds => "open fds",
            Metric::Threads => "threads",
        }
    }

    /// How much the last quarter's median may exceed the first's, in the metric's unit.
    pub fn allowance(self) -> f64 {
        match self {
            Metric::RssKib => RSS_GROWTH_MIB * 1024.0,
            Metric::Fds => FD_GROWTH as f64,
            Metric::Threads => THREAD_GROWTH as f64,
        }
    }
}

/// RSS growth allowed between the first and the last quarter of an epoch, in MiB. A leak of
/// one kilobyte per request at the soak's ~100 requests/s passes 24 MiB within 5 minutes.
pub const RSS_GROWTH_MIB: f64 = 24.0;
/// Open fds allowed above the first quarter's median: about the traffic's own connections
/// in flight at a sampling instant, so one leaked socket per route change or pod churned
/// fails a soak of ten minutes.
pub const FD_GROWTH: u64 = 16;
/// Threads allowed above the first quarter's median: tokio's blocking pool grows on demand
/// and shrinks after 10 s idle.
pub const THREAD_GROWTH: u64 = 8;
/// The share of an epoch left out at its start.
pub const WARM_UP: f64 = 0.2;
/// Samples a quarter needs for its median to be judged.
pub const MIN_SAMPLES_PER_QUARTER: usize = 3;

/// One sample of one metric: seconds since the soak began, and the value.
pub type Point = (f64, f64);

/// The judgement of one metric of one component over one epoch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub component: String,
    pub metric: Metric,
    /// The epoch's time span, seconds since the soak began.
    pub epoch: (f64, f64),
    /// Medians of the first and last quarter after warm-up (None: too few samples).
    pub first: Option<f64>,
    pub last: Option<f64>,
    pub allowance: f64,
    /// Within the bound (false also when the epoch was too short to judge).
    pub passed: bool,
    pub judged: bool,
}

impl Verdict {
    pub fn describe(&self) -> String {
        let unit = |v: f64| match self.metric {
            Metric::RssKib => format!("{:.1} MiB", v / 1024.0),
            _ => format!("{v:.0}"),
        };
        match (self.first, self.last) {
            (Some(first), Some(last)) => format!(
                "{} {} over {:.0}–{:.0} s: {} → {} (growth {}, allowed {}): {}",
                self.component,
                self.metric.name(),
                self.epoch.0,
                self.epoch.1,
                unit(first),
                unit(last),
                unit(last - first),
                unit(self.allowance),
                if self.passed {
                    "within"
                } else {
                    "BEYOND THE BOUND"
                }
            ),
            _ => format!(
                "{} {} over {:.0}–{:.0} s: too few samples to judge",
                self.component,
                self.metric.name(),
                self.epoch.0,
                self.epoch.1
            ),
        }
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Judges `points` of `metric` of `component` within the epoch `[from, to)` seconds.
pub fn judge(component: &str, metric: Metric, points: &[Point], from: f64, to: f64) -> Verdict {
    let start = from + (to - from) * WARM_UP;
    let quarter = (to - start) / 4.0;
    let within = |a: f64, b: f64| -> Vec<f64> {
        points
            .iter()
            .filter(|(t, _)| *t >= a && *t < b)
            .map(|(_, v)| *v)
            .collect()
    };
    let mut first = within(start, start + quarter);
    let mut last = within(to - quarter, to);
    let judged = first.len() >= MIN_SAMPLES_PER_QUARTER && last.len() >= MIN_SAMPLES_PER_QUARTER;
    let (first, last) = if judged {
        (median(&mut first), median(&mut last))
    } else {
        (None, None)
    };
    let allowance = metric.allowance();
    let passed = match (first, last) {
        (Some(f), Some(l)) => l - f <= allowance,
        _ => false,
    };
    Verdict {
        component: component.to_string(),
        metric,
        epoch: (from, to),
        first,
        last,
        allowance,
        passed,
        judged,
    }
}

/// The epochs of `[0, end)` seconds around `gaps` (spans left out: an upgrade, while the
/// old and new processes both run).
pub fn epochs(end: f64, gaps: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut gaps: Vec<(f64, f64)> = gaps.iter().copied().filter(|(a, _)| *a < end).collect();
    gaps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut from = 0.0;
    for (gap_start, gap_end) in gaps {
        if gap_start > from {
            out.push((from, gap_start));
        }
        from = gap_end.max(from);
    }
    if end > from {
        out.push((from, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample a second for `seconds`, `value(t)` each.
    fn series(seconds: u32, value: impl Fn(f64) -> f64) -> Vec<Point> {
        (0..seconds)
            .map(|s| {
                let t = f64::from(s);
                (t, value(t))
            })
            .collect()
    }

    #[test]
    fn a_flat_noisy_series_passes() {
        // RSS around 40 MiB, ±2 MiB of noise, warming up from 10 MiB in the first seconds.
        let points = series(120, |t| {
            let warm = if t < 10.0 {
                10.0 * 1024.0
            } else {
                40.0 * 1024.0
            };
            warm + if (t as u32).is_multiple_of(3) {
                2048.0
            } else {
                -2048.0
            }
        });
        let v = judge("agent", Metric::RssKib, &points, 0.0, 120.0);
        assert!(v.judged && v.passed, "{}", v.describe());
    }

    #[test]
    fn a_leaking_series_fails() {
        // 1 MiB more every 2 s: 36 MiB between the quarters' medians (at 36 s and 108 s).
        let points = series(120, |t| 40.0 * 1024.0 + t / 2.0 * 1024.0);
        let v = judge("agent", Metric::RssKib, &points, 0.0, 120.0);
        assert!(v.judged, "{v:?}");
        assert!(
            !v.passed,
            "a leak of 30 MiB a minute is caught: {}",
            v.describe()
        );
        // One fd more every 2 s.
        let fds = series(120, |t| 30.0 + (t / 2.0).floor());
        let v = judge("waypoint", Metric::Fds, &fds, 0.0, 120.0);
        assert!(!v.passed, "{}", v.describe());
    }

    #[test]
    fn spikes_at_a_few_instants_are_not_growth() {
        // 40 fds, with 3 samples of the last quarter at 200 (a burst of connections).
        let points = series(120, |t| {
            if [100.0, 105.0, 110.0].contains(&t) {
                200.0
            } else {
                40.0
            }
        });
        let v = judge("agent", Metric::Fds, &points, 0.0, 120.0);
        assert!(v.passed, "{}", v.describe());
    }

    #[test]
    fn a_series_too_short_is_not_judged_and_does_not_pass() {
        let points = series(6, |_| 1.0);
        let v = judge("agent", Metric::Threads, &points, 0.0, 6.0);
        assert!(!v.judged && !v.passed, "{v:?}");
    }

    #[test]
    fn epochs_are_cut_at_the_upgrade() {
        assert_eq!(
            epochs(120.0, &[(60.0, 75.0)]),
            vec![(0.0, 60.0), (75.0, 120.0)]
        );
        assert_eq!(epochs(120.0, &[]), vec![(0.0, 120.0)]);
        assert_eq!(epochs(120.0, &[(130.0, 140.0)]), vec![(0.0, 120.0)]);
    }

    #[test]
    fn a_restart_within_an_epoch_does_not_hide_growth_before_it() {
        // The old agent leaks until 60 s; judged on its own epoch it fails.
        let points = series(60, |t| 40.0 * 1024.0 + t * 1024.0);
        let v = judge("agent", Metric::RssKib, &points, 0.0, 60.0);
        assert!(!v.passed, "{}", v.describe());
    }
}
