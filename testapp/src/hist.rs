//! Latency histogram for the load generators: log-linear buckets in microseconds, so a
//! sample costs an index computation and an increment, and memory stays constant however long
//! a closed-loop run lasts. Values below 256 µs are exact; above, every power of two is split
//! into 128 buckets, so a percentile is at most 1/128 (0.8 %) above the true sample, well
//! below run-to-run noise. `max` and `mean` are exact.

use std::time::Duration;

use serde::Serialize;

const SUB_BITS: u32 = 7;
/// Buckets per power of two above the exact range.
const SUB: u64 = 1 << SUB_BITS;
/// Values below this get a bucket each.
const EXACT: u64 = 2 * SUB;
/// Samples of 2^40 µs (12 days) and more are clamped: no run comes near that.
const MAX_BITS: u32 = 40;
const MAX_VALUE: u64 = (1 << MAX_BITS) - 1;
const BUCKETS: usize = (EXACT + (MAX_BITS as u64 - (SUB_BITS + 1) as u64) * SUB) as usize;

pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u64,
    max: u64,
}

/// The `latency_us` object of `load`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// The `connect_us` object of `connrate`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Short {
    pub p50: u64,
    pub p99: u64,
}

fn index(v: u64) -> usize {
    let v = v.min(MAX_VALUE);
    if v < EXACT {
        return v as usize;
    }
    // The top bit's position k is at least SUB_BITS + 1 here; the SUB_BITS bits below it pick
    // the bucket within [2^k, 2^(k+1)).
    let k = u64::from(63 - v.leading_zeros());
    let sub = (v >> (k - u64::from(SUB_BITS))) - SUB;
    (EXACT + (k - u64::from(SUB_BITS) - 1) * SUB + sub) as usize
}

/// The largest value that lands in bucket `i`: reporting it never understates a latency.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let j = i - EXACT;
    let k = j / SUB + u64::from(SUB_BITS) + 1;
    let shift = k - u64::from(SUB_BITS);
    ((j % SUB + SUB + 1) << shift) - 1
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(c) = self.counts.get_mut(index(us)) {
            *c += 1;
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(us);
        self.max = self.max.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// The smallest recorded value (bucket bound) with at least `pct` % of samples at or
    /// below it; 0 when empty.
    pub fn percentile(&self, pct: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((pct / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // The bucket's bound may exceed every sample in it; max is exact.
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Summary {
        let mean = if self.count == 0 {
            0.0
        } else {
            round(self.sum as f64 / self.count as f64, 1)
        };
        Summary {
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            max: self.max,
            mean,
        }
    }

    pub fn short(&self) -> Short {
        Short {
            p50: self.percentile(50.0),
            p99: self.percentile(99.0),
        }
    }
}

/// Rounds for printing: more digits than the measurement supports are noise to readers.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        assert_eq!(index(MAX_VALUE), BUCKETS - 1);
        assert_eq!(upper(BUCKETS - 1), MAX_VALUE);
        let mut prev = 0;
        for i in 0..BUCKETS {
            let hi = upper(i);
            assert_eq!(index(hi), i, "bucket {i}");
            if i > 0 {
                assert_eq!(index(prev + 1), i, "bucket {i} starts right after {prev}");
            }
            prev = hi;
        }
    }

    #[test]
    fn error_is_under_one_percent() {
        for v in (0..5_000_000u64)
            .step_by(997)
            .chain([255, 256, 257, 1 << 20])
        {
            let hi = upper(index(v));
            assert!(hi >= v);
            if v < EXACT {
                assert_eq!(hi, v);
            } else {
                assert!(
                    (hi - v) as f64 / v as f64 <= 1.0 / SUB as f64,
                    "{v} -> {hi}"
                );
            }
        }
    }

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        // Within bucket precision of the exact ranks 500, 900, 990.
        assert!((500..=504).contains(&s.p50), "{s:?}");
        assert!((900..=907).contains(&s.p90), "{s:?}");
        assert!((990..=997).contains(&s.p99), "{s:?}");
        assert_eq!(s.max, 1000);
        assert!((s.mean - 500.5).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn merge_and_empty() {
        let empty = Histogram::new();
        assert_eq!(
            empty.summary(),
            Summary {
                p50: 0,
                p90: 0,
                p99: 0,
                max: 0,
                mean: 0.0
            }
        );
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_secs(2));
        a.merge(&b);
        assert_eq!(
            a.short(),
            Short {
                p50: 10,
                p99: a.max
            }
        );
        assert_eq!(a.max, 2_000_000);
    }
}
