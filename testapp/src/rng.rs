//! Just enough randomness for `fail_rate`: a splitmix64 over a global counter. No crate needed,
//! and a counter (rather than shared mutable state) keeps it lock-free across connections.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SEED: OnceLock<u64> = OnceLock::new();

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Seeded per process (time and pid) so replicas started together don't fail in lockstep.
fn seed() -> u64 {
    *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        splitmix64(nanos ^ (u64::from(std::process::id()) << 32))
    })
}

/// Uniform in [0, 1).
fn next_f64() -> f64 {
    let x = splitmix64(seed().wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)));
    // The top 53 bits fill an f64 mantissa exactly.
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// True with probability `p`; exact at 0 and 1 so `fail_rate=0`/`1` are deterministic.
pub fn chance(p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_are_deterministic() {
        assert!((0..1000).all(|_| !chance(0.0)));
        assert!((0..1000).all(|_| chance(1.0)));
    }

    #[test]
    fn half_is_roughly_half() {
        let hits = (0..10_000).filter(|_| chance(0.5)).count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }
}
