//! When to replace a certificate, and when to try again after a failed request.
use std::time::{Duration, SystemTime};

/// How certificates are rotated. Istio's agents replace a certificate at half its lifetime;
/// a little jitter keeps the agents of a cluster from all asking the CA in the same second
/// when their certificates were issued together (after a CA restart, say).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationPolicy {
    /// Fraction of the lifetime after which a certificate is replaced.
    pub refresh_ratio: f64,
    /// The replacement point moves by up to this fraction of the lifetime, either way.
    pub jitter_ratio: f64,
    /// A floor under every delay, so that a tiny or already-spent lifetime cannot spin.
    pub min_delay: Duration,
    /// First wait after a failed request; doubles on each further failure.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            refresh_ratio: 0.5,
            jitter_ratio: 0.05,
            min_delay: Duration::from_millis(100),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl RotationPolicy {
    /// How long from `now` until the certificate valid over `[not_before, not_after)` is
    /// replaced. `unit` is a random number in `[0, 1)` that places the point in the jitter
    /// window.
    pub fn refresh_delay(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        now: SystemTime,
        unit: f64,
    ) -> Duration {
        let Ok(lifetime) = not_after.duration_since(not_before) else {
            // A certificate valid for no time at all: nothing to wait for.
            return self.min_delay;
        };
        let fraction =
            (self.refresh_ratio + self.jitter_ratio * (2.0 * unit - 1.0)).clamp(0.0, 1.0);
        let refresh_at = not_before + lifetime.mul_f64(fraction);
        refresh_at
            .duration_since(now)
            .unwrap_or_default()
            .max(self.min_delay)
    }

    /// How long to wait before the next request after `failures` failed ones in a row.
    /// While a certificate is still valid for `remaining`, retries come often enough to get
    /// several tries in before it runs out. Once it has expired (`remaining` zero, or no
    /// certificate at all) there is nothing left to save by hurrying: the back-off goes on
    /// doubling up to `retry_max`, so a CA that is away longer than a certificate's
    /// lifetime is not asked ten times a second by every identity of every node.
    pub fn retry_delay(&self, failures: u32, remaining: Option<Duration>) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let mut delay = self
            .retry_initial
            .saturating_mul(factor)
            .min(self.retry_max);
        if let Some(remaining) = remaining.filter(|r| !r.is_zero()) {
            delay = delay.min(remaining / 4);
        }
        delay.max(self.min_delay)
    }
}

/// A uniformly distributed number in `[0, 1)` from the crypto provider's generator (the
/// same one keys come from, so no other source of randomness is needed).
pub(crate) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if super::crypto::crypto_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        // Jitter is a nicety; without randomness, rotate at the middle of the window.
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn refreshes_at_half_the_lifetime_without_jitter() {
        let policy = RotationPolicy {
            jitter_ratio: 0.0,
            ..RotationPolicy::default()
        };
        // 24 h certificate issued at t=1000, looked at 100 s later: 12 h minus 100 s.
        let delay = policy.refresh_delay(at(1000), at(1000 + 86_400), at(1100), 0.9);
        assert_eq!(delay, Duration::from_secs(43_200 - 100));
    }

    #[test]
    fn jitter_stays_inside_its_window() {
        let policy = RotationPolicy::default();
        let (nb, na, now) = (at(0), at(1000), at(0));
        let earliest = policy.refresh_delay(nb, na, now, 0.0);
        let latest = policy.refresh_delay(nb, na, now, 0.999_999);
        let middle = policy.refresh_delay(nb, na, now, 0.5);
        assert_eq!(earliest, Duration::from_secs(450));
        assert_eq!(middle, Duration::from_secs(500));
        assert!(latest > Duration::from_millis(549_900) && latest < Duration::from_secs(550));
    }

    #[test]
    fn spent_or_broken_lifetimes_wait_the_floor_only() {
        let policy = RotationPolicy::default();
        // Past the refresh point already.
        assert_eq!(
            policy.refresh_delay(at(0), at(10), at(9), 0.5),
            policy.min_delay
        );
        // not_after before not_before.
        assert_eq!(
            policy.refresh_delay(at(10), at(0), at(0), 0.5),
            policy.min_delay
        );
    }

    #[test]
    fn short_lifetimes_rotate_within_the_certificate() {
        let policy = RotationPolicy::default();
        let delay = policy.refresh_delay(at(100), at(103), at(100), random_unit());
        assert!(delay >= Duration::from_millis(1350) && delay <= Duration::from_millis(1650));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let policy = RotationPolicy::default();
        let delays: Vec<_> = (1..=10).map(|n| policy.retry_delay(n, None)).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[2], Duration::from_secs(1));
        assert_eq!(delays[9], Duration::from_secs(30));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(policy.retry_delay(u32::MAX, None), Duration::from_secs(30));
    }

    #[test]
    fn retries_come_sooner_when_the_certificate_is_about_to_expire() {
        let policy = RotationPolicy::default();
        assert_eq!(
            policy.retry_delay(10, Some(Duration::from_secs(8))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.retry_delay(3, Some(Duration::from_millis(200))),
            policy.min_delay
        );
    }

    #[test]
    fn retries_keep_backing_off_once_the_certificate_has_expired() {
        // The CA away longer than the certificate's lifetime: an expired certificate (zero
        // remaining) backs off as having none does, up to the cap, never at the floor.
        let policy = RotationPolicy::default();
        let expired: Vec<_> = (1..=12)
            .map(|n| policy.retry_delay(n, Some(Duration::ZERO)))
            .collect();
        let none: Vec<_> = (1..=12).map(|n| policy.retry_delay(n, None)).collect();
        assert_eq!(expired, none);
        assert_eq!(expired[11], policy.retry_max);
        // Over a 90 s outage after expiry: a dozen requests, not nine hundred.
        let mut waited = Duration::ZERO;
        let mut requests = 0;
        while waited < Duration::from_secs(90) {
            requests += 1;
            waited += policy.retry_delay(requests, Some(Duration::ZERO));
        }
        assert!(requests <= 12, "{requests} requests in 90 s");
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(
            samples
                .iter()
                .any(|u| (u - samples[0]).abs() > f64::EPSILON)
        );
    }
}
