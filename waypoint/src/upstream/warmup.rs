//! Slow start (`loadBalancer.warmupDurationSecs`, Envoy's `slow_start_config`): an endpoint
//! that joined the cluster less than the window ago takes a share of the traffic that grows
//! linearly with its age (Envoy's aggression 1.0), from 10% of a warm endpoint's (Envoy's
//! default minimum weight) to all of it when the window has passed. Istio offers it for
//! ROUND_ROBIN and LEAST_REQUEST; validation warns about it with other policies.
//!
//! The balancer's choice stays as it is; a choice of a warming endpoint is kept with
//! probability its weight over the heaviest candidate's, and otherwise made again, so each
//! endpoint's share is proportional to its weight.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::balance::{Balancer, HashInput, Pick};

/// Envoy's default `min_weight_percent`.
const MINIMUM_WEIGHT: f64 = 0.1;
/// Choices made again at most, before the last one is kept.
const ATTEMPTS: usize = 16;

/// The weight factor of an endpoint `age` old: linear from the minimum to 1 over `window`.
pub fn factor(age: Duration, window: Duration) -> f64 {
    if window.is_zero() || age >= window {
        return 1.0;
    }
    (age.as_secs_f64() / window.as_secs_f64()).max(MINIMUM_WEIGHT)
}

/// When each member of one cluster joined it.
#[derive(Debug)]
pub struct SlowStart {
    window: Duration,
    joined: Mutex<HashMap<SocketAddr, Instant>>,
    /// Known members: the first membership seen is the cluster's start, whose endpoints are
    /// all equally new.
    started: Mutex<bool>,
}

impl SlowStart {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            joined: Mutex::new(HashMap::new()),
            started: Mutex::new(false),
        }
    }

    /// Records the cluster's members at `now` (every ready endpoint, ejected or not): new
    /// ones join now, departed ones are forgotten (one that comes back starts again).
    pub fn track(&self, members: &[SocketAddr], now: Instant) {
        let mut joined = weft_core::sync::lock(&self.joined);
        let mut started = weft_core::sync::lock(&self.started);
        if joined.len() == members.len() && members.iter().all(|m| joined.contains_key(m)) {
            return;
        }
        joined.retain(|endpoint, _| members.contains(endpoint));
        // The endpoints the cluster starts with are warm: there is no older one for them to
        // defer to.
        let since = if *started {
            now
        } else {
            now.checked_sub(self.window).unwrap_or(now)
        };
        for member in members {
            joined.entry(*member).or_insert(since);
        }
        *started = true;
    }

    /// `endpoint`'s weight factor at `now` (1 for one not tracked).
    pub fn weight(&self, endpoint: SocketAddr, now: Instant) -> f64 {
        weft_core::sync::lock(&self.joined)
            .get(&endpoint)
            .map_or(1.0, |joined| {
                factor(now.saturating_duration_since(*joined), self.window)
            })
    }

    /// The balancer's pick among `candidates`, kept with probability its weight over the
    /// heaviest candidate's; `unit` draws uniformly from [0, 1).
    pub fn pick(
        &self,
        balancer: &Balancer,
        candidates: &[SocketAddr],
        input: &HashInput<'_>,
        now: Instant,
        mut unit: impl FnMut() -> f64,
    ) -> Option<Pick> {
        let heaviest = candidates
            .iter()
            .map(|c| self.weight(*c, now))
            .fold(0.0, f64::max);
        let mut pick = balancer.pick(candidates, input)?;
        for _ in 1..ATTEMPTS {
            let weight = self.weight(pick.endpoint, now);
            if heaviest <= 0.0 || weight >= heaviest || unit() * heaviest < weight {
                break;
            }
            // Dropping the pick ends its in-flight count.
            pick = balancer.pick(candidates, input)?;
        }
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::policy::LbPolicy;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn the_factor_ramps_linearly_from_a_tenth_to_one() {
        let window = Duration::from_secs(100);
        assert_eq!(factor(Duration::ZERO, window), 0.1);
        assert_eq!(factor(Duration::from_secs(5), window), 0.1);
        assert_eq!(factor(Duration::from_secs(50), window), 0.5);
        assert_eq!(factor(Duration::from_secs(100), window), 1.0);
        assert_eq!(factor(Duration::from_secs(500), window), 1.0);
        assert_eq!(factor(Duration::ZERO, Duration::ZERO), 1.0);
    }

    /// Picks per endpoint over 4000 requests, `elapsed` after the third endpoint joined.
    fn shares(policy: LbPolicy, elapsed: Duration) -> Vec<usize> {
        let window = Duration::from_secs(60);
        let slow = SlowStart::new(window);
        let balancer = Balancer::with_seed(policy, 7);
        let all = endpoints(3);
        let start = Instant::now();
        slow.track(&all[..2], start);
        let joined = start + Duration::from_secs(1);
        slow.track(&all, joined);
        let now = joined + elapsed;
        let mut rng = fastrand::Rng::with_seed(11);
        let mut counts = vec![0; 3];
        for _ in 0..4000 {
            let pick = slow
                .pick(&balancer, &all, &HashInput::default(), now, || rng.f64())
                .expect("a pick");
            if let Some(i) = all.iter().position(|e| *e == pick.endpoint) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn a_new_endpoint_gets_fewer_requests_until_the_window_has_passed() {
        for policy in [LbPolicy::RoundRobin, LbPolicy::LeastRequest] {
            // Just joined: a tenth of a warm endpoint's share (4000 × 0.1/2.1 ≈ 190).
            let fresh = shares(policy.clone(), Duration::ZERO);
            assert!(fresh[2] < fresh[0] / 4, "{policy:?}: {fresh:?}");
            assert!(fresh[2] > 0, "{policy:?}: {fresh:?}");
            // Half way: about half.
            let half = shares(policy.clone(), Duration::from_secs(30));
            assert!(
                half[2] > fresh[2] * 2 && half[2] < half[0] * 3 / 4,
                "{policy:?}: {half:?}"
            );
            // After the window: equal.
            let warm = shares(policy.clone(), Duration::from_secs(61));
            assert!(
                warm.iter().all(|n| n.abs_diff(4000 / 3) < 150),
                "{policy:?}: {warm:?}"
            );
        }
    }

    #[test]
    fn the_first_members_and_returning_ones() {
        let slow = SlowStart::new(Duration::from_secs(60));
        let all = endpoints(2);
        let start = Instant::now();
        slow.track(&all, start);
        assert_eq!(
            slow.weight(all[0], start),
            1.0,
            "the cluster's first endpoints are warm"
        );
        slow.track(&all[..1], start + Duration::from_secs(1));
        slow.track(&all, start + Duration::from_secs(2));
        assert_eq!(
            slow.weight(all[1], start + Duration::from_secs(2)),
            0.1,
            "an endpoint that left and came back starts again"
        );
    }
}
