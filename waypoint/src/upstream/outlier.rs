//! Outlier detection for one cluster, with Envoy's consecutive-error semantics (the only
//! kind Istio enables).
//!
//! - Errors are counted per endpoint as results arrive; reaching a threshold ejects the
//!   endpoint at once, if the ejected share of the cluster then stays within
//!   `maxEjectionPercent`. Whether or not it was ejected, that counter starts over.
//! - Ejected endpoints return at the first sweep (every `interval`, counted from the
//!   detector's creation) after their ejection time: base × a backoff multiplier, at most
//!   `max_ejection_time`. The multiplier grows by one per ejection and shrinks by one per
//!   sweep while the endpoint stays healthy, as in current Envoy (older versions used the
//!   plain number of ejections).
//!
//! Sweeps run lazily: every call brings the state up to `now` by running the sweeps that
//! fell due, each at its own scheduled time, so the result is the same as with Envoy's
//! timer and nobody has to drive one. Idle stretches are skipped in one step.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::policy::OutlierConfig;

/// The result of one attempt to an endpoint, as the proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived with this status.
    Response(u16),
    /// The connection (or HBONE stream) could not be established, or the request was reset
    /// before a response — Envoy's router reports resets as connect failures. Don't report
    /// a request refused by the circuit breaker: that says nothing about the endpoint.
    ConnectFailed,
    /// Connect timeout, or the request timed out before response headers.
    Timeout,
    /// The connection was established. Only matters with `splitExternalLocalOriginErrors`,
    /// where it ends a run of local-origin failures.
    Connected,
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
    ConsecutiveLocalOriginFailures,
}

/// An ejection that a [`OutlierDetector::record`] call caused, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub reason: EjectionReason,
    /// The endpoint returns at the first sweep after this much time.
    pub duration: Duration,
}

#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    hosts: HashMap<SocketAddr, Host>,
    ejected: usize,
    next_sweep: Instant,
    /// Marks hosts seen during a membership check without allocating.
    generation: u64,
    /// The endpoint list of the last membership check, in its order: the proxy passes the
    /// same list request after request, and an equal list needs no hash lookups.
    members: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    ejected_at: Option<Instant>,
    /// Envoy's ejection time multiplier.
    backoff: u32,
    last_unejected: Option<Instant>,
    seen: u64,
}

impl OutlierDetector {
    /// A detector whose sweeps fall at `now + k × interval`.
    pub fn new(config: OutlierConfig, now: Instant) -> Self {
        let config = OutlierConfig {
            interval: config.interval.max(Duration::from_millis(1)),
            base_ejection_time: config.base_ejection_time.max(Duration::from_millis(1)),
            ..config
        };
        Self {
            state: Mutex::new(State {
                hosts: HashMap::new(),
                ejected: 0,
                next_sweep: now.checked_add(config.interval).unwrap_or(now),
                generation: 0,
                members: Vec::new(),
            }),
            config,
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one attempt's outcome. An endpoint not seen before joins the cluster's
    /// membership until the next [`filter`](Self::filter) says otherwise.
    pub fn record(&self, endpoint: SocketAddr, outcome: Outcome, now: Instant) -> Option<Ejection> {
        let mut state = self.state();
        self.catch_up(&mut state, now);
        state.hosts.entry(endpoint).or_default();
        let code = match (outcome, self.config.split_local_origin) {
            (Outcome::Response(code), _) => code,
            (Outcome::Connected, false) => return None,
            (Outcome::ConnectFailed, false) => 503,
            (Outcome::Timeout, false) => 504,
            (Outcome::Connected, true) => {
                if let Some(host) = state.hosts.get_mut(&endpoint) {
                    host.consecutive_local = 0;
                }
                return None;
            }
            (Outcome::ConnectFailed | Outcome::Timeout, true) => {
                let host = state.hosts.get_mut(&endpoint)?;
                host.consecutive_local = host.consecutive_local.saturating_add(1);
                if host.consecutive_local != self.config.consecutive_local_origin_failures {
                    return None;
                }
                return self.trigger(
                    &mut state,
                    endpoint,
                    EjectionReason::ConsecutiveLocalOriginFailures,
                    now,
                );
            }
        };
        let host = state.hosts.get_mut(&endpoint)?;
        if !(500..600).contains(&code) {
            host.consecutive_5xx = 0;
            host.consecutive_gateway = 0;
            return None;
        }
        let mut gateway_reached = false;
        if matches!(code, 502..=504) {
            host.consecutive_gateway = host.consecutive_gateway.saturating_add(1);
            // Thresholds of 0 are disabled: a count that was incremented is never 0.
            gateway_reached = host.consecutive_gateway == self.config.consecutive_gateway_errors;
        } else {
            host.consecutive_gateway = 0;
        }
        host.consecutive_5xx = host.consecutive_5xx.saturating_add(1);
        let five_xx_reached = host.consecutive_5xx == self.config.consecutive_5xx;
        // Envoy handles the gateway threshold first; the 5xx one is still processed after
        // it (a no-op if the host is now ejected, a second try if the first was refused).
        let mut ejection = None;
        if gateway_reached {
            ejection = self.trigger(
                &mut state,
                endpoint,
                EjectionReason::ConsecutiveGatewayErrors,
                now,
            );
        }
        if five_xx_reached {
            let five_xx = self.trigger(&mut state, endpoint, EjectionReason::Consecutive5xx, now);
            ejection = ejection.or(five_xx);
        }
        ejection
    }

    /// Whether `endpoint` is ejected at `now`.
    pub fn is_ejected(&self, endpoint: SocketAddr, now: Instant) -> bool {
        let mut state = self.state();
        self.catch_up(&mut state, now);
        state
            .hosts
            .get(&endpoint)
            .is_some_and(|h| h.ejected_at.is_some())
    }

    /// The endpoints of `endpoints` that aren't ejected, in the given order. `endpoints` is
    /// the whole cluster (ready, subset-selected): it defines the membership that
    /// `maxEjectionPercent` is computed against. Below `minHealthPercent` healthy, Envoy
    /// panics and balances over all of them, ejected or not. An empty result means every
    /// endpoint is ejected (answer 503, no healthy upstream).
    pub fn filter(&self, endpoints: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        let mut state = self.state();
        self.catch_up(&mut state, now);
        Self::sync_membership(&mut state, endpoints);
        if state.ejected == 0 {
            return endpoints.to_vec();
        }
        let healthy: Vec<SocketAddr> = endpoints
            .iter()
            .copied()
            .filter(|e| state.hosts.get(e).is_none_or(|h| h.ejected_at.is_none()))
            .collect();
        let total = state.hosts.len();
        let threshold = usize::try_from(self.config.min_health_percent).unwrap_or(0);
        if healthy.len() * 100 < threshold * total {
            return endpoints.to_vec();
        }
        healthy
    }

    /// The endpoints ejected at `now`.
    pub fn ejected(&self, now: Instant) -> Vec<SocketAddr> {
        let mut state = self.state();
        self.catch_up(&mut state, now);
        let mut ejected: Vec<_> = state
            .hosts
            .iter()
            .filter(|(_, h)| h.ejected_at.is_some())
            .map(|(e, _)| *e)
            .collect();
        ejected.sort_unstable();
        ejected
    }

    /// Envoy forgets the state of hosts that leave the cluster and starts new ones clean.
    fn sync_membership(state: &mut State, endpoints: &[SocketAddr]) {
        if state.members == endpoints {
            return;
        }
        state.members = endpoints.to_vec();
        state.generation = state.generation.wrapping_add(1);
        let generation = state.generation;
        let mut distinct = 0;
        let mut unknown = false;
        for endpoint in endpoints {
            match state.hosts.get_mut(endpoint) {
                Some(host) if host.seen != generation => {
                    host.seen = generation;
                    distinct += 1;
                }
                Some(_) => {}
                None => unknown = true,
            }
        }
        if !unknown && distinct == state.hosts.len() {
            return;
        }
        state.hosts.retain(|_, host| host.seen == generation);
        for endpoint in endpoints {
            state.hosts.entry(*endpoint).or_insert_with(|| Host {
                seen: generation,
                ..Host::default()
            });
        }
        state.ejected = state
            .hosts
            .values()
            .filter(|h| h.ejected_at.is_some())
            .count();
    }

    fn ejection_time(&self, host: &Host) -> Duration {
        self.config
            .base_ejection_time
            .saturating_mul(host.backoff)
            .min(self.config.max_ejection_time)
    }

    fn trigger(
        &self,
        state: &mut State,
        endpoint: SocketAddr,
        reason: EjectionReason,
        now: Instant,
    ) -> Option<Ejection> {
        let total = state.hosts.len();
        let ejected = state.ejected;
        let max_percent = usize::try_from(self.config.max_ejection_percent.min(100)).unwrap_or(100);
        let host = state.hosts.get_mut(&endpoint)?;
        // Envoy ignores a threshold reached by an already ejected host, and doesn't reset
        // its counter then.
        if host.ejected_at.is_some() {
            return None;
        }
        let within_limit = (ejected + 1) * 100 <= max_percent * total;
        let allowed = within_limit || (self.config.always_eject_one_host && ejected == 0);
        let result = if allowed {
            host.ejected_at = Some(now);
            let base = self.config.base_ejection_time;
            if base.saturating_mul(host.backoff)
                < self.config.max_ejection_time.saturating_add(base)
            {
                host.backoff += 1;
            }
            Some(Ejection {
                reason,
                duration: self.ejection_time(host),
            })
        } else {
            None
        };
        match reason {
            EjectionReason::Consecutive5xx => host.consecutive_5xx = 0,
            EjectionReason::ConsecutiveGatewayErrors => host.consecutive_gateway = 0,
            EjectionReason::ConsecutiveLocalOriginFailures => host.consecutive_local = 0,
        }
        if result.is_some() {
            state.ejected += 1;
        }
        result
    }

    /// Runs the sweeps due up to `now`.
    fn catch_up(&self, state: &mut State, now: Instant) {
        let interval = self.config.interval;
        while state.next_sweep <= now {
            let at = state.next_sweep;
            self.sweep(state, at);
            // While a healthy host still has a multiplier to shed, every sweep changes
            // something; otherwise nothing happens before the next unejection.
            let shedding = state
                .hosts
                .values()
                .any(|h| h.ejected_at.is_none() && h.backoff > 0);
            let unejection = state
                .hosts
                .values()
                .filter_map(|h| {
                    h.ejected_at
                        .and_then(|t| t.checked_add(self.ejection_time(h)))
                })
                .min();
            let target = if shedding {
                at.checked_add(interval)
            } else {
                unejection.or_else(|| now.checked_add(Duration::from_nanos(1)))
            };
            let Some(next) =
                target.and_then(|t| at.checked_add(first_sweep_after(at, t, interval)))
            else {
                return;
            };
            state.next_sweep = next;
        }
    }

    fn sweep(&self, state: &mut State, at: Instant) {
        let mut returned = 0;
        for host in state.hosts.values_mut() {
            if let Some(ejected_at) = host.ejected_at
                && self.ejection_time(host) <= at.saturating_duration_since(ejected_at)
            {
                host.ejected_at = None;
                host.consecutive_5xx = 0;
                host.consecutive_gateway = 0;
                host.consecutive_local = 0;
                host.last_unejected = Some(at);
                returned += 1;
            }
        }
        state.ejected = state.ejected.saturating_sub(returned);
        for host in state.hosts.values_mut() {
            if host.ejected_at.is_none()
                && host.backoff > 0
                && host
                    .last_unejected
                    .is_some_and(|t| at.saturating_duration_since(t) >= self.config.interval)
            {
                host.backoff -= 1;
            }
        }
    }
}

/// The offset from `from` of the first sweep `from + k × interval` (k ≥ 1) at or after `to`.
fn first_sweep_after(from: Instant, to: Instant, interval: Duration) -> Duration {
    let gap = to.saturating_duration_since(from).as_nanos();
    let step = interval.as_nanos().max(1);
    let k = gap.div_ceil(step).max(1);
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    interval.saturating_mul(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A detector over `n` endpoints created at `t0`.
    fn new_detector(config: OutlierConfig, n: u8) -> (OutlierDetector, Vec<SocketAddr>, Instant) {
        let t0 = Instant::now();
        let detector = OutlierDetector::new(config, t0);
        let eps = endpoints(n);
        assert_eq!(detector.filter(&eps, t0), eps);
        (detector, eps, t0)
    }

    fn fail(
        detector: &OutlierDetector,
        endpoint: SocketAddr,
        times: u32,
        at: Instant,
    ) -> Option<Ejection> {
        let mut last = None;
        for _ in 0..times {
            last = detector.record(endpoint, Outcome::Response(500), at);
        }
        last
    }

    #[test]
    fn ejects_at_exactly_the_consecutive_5xx_threshold() {
        let (detector, eps, t0) = new_detector(OutlierConfig::default(), 10);
        let at = t0 + secs(1);
        assert_eq!(fail(&detector, eps[0], 4, at), None);
        assert!(!detector.is_ejected(eps[0], at));
        let ejection = detector.record(eps[0], Outcome::Response(503), at);
        assert_eq!(
            ejection,
            Some(Ejection {
                reason: EjectionReason::Consecutive5xx,
                duration: secs(30),
            })
        );
        assert!(detector.is_ejected(eps[0], at));
        assert_eq!(detector.filter(&eps, at), eps[1..]);
    }

    #[test]
    fn a_success_starts_the_count_over() {
        let (detector, eps, t0) = new_detector(OutlierConfig::default(), 10);
        fail(&detector, eps[0], 4, t0);
        detector.record(eps[0], Outcome::Response(200), t0);
        // 4xx is not an error either.
        detector.record(eps[0], Outcome::Response(404), t0);
        assert_eq!(fail(&detector, eps[0], 4, t0), None);
        assert!(fail(&detector, eps[0], 1, t0).is_some());
    }

    #[test]
    fn zero_disables_consecutive_5xx() {
        let config = OutlierConfig {
            consecutive_5xx: 0,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        assert_eq!(fail(&detector, eps[0], 100, t0), None);
        assert!(detector.ejected(t0).is_empty());
    }

    #[test]
    fn never_more_than_max_ejection_percent() {
        let config = OutlierConfig {
            max_ejection_percent: 20,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        for endpoint in &eps {
            fail(&detector, *endpoint, 5, t0);
        }
        assert_eq!(detector.ejected(t0), eps[..2]);
        // The refused host's counter started over: it takes five more errors to try again,
        // refused again while the cluster is at its limit.
        assert_eq!(fail(&detector, eps[2], 4, t0), None);
        assert_eq!(fail(&detector, eps[2], 1, t0), None);
        assert_eq!(detector.ejected(t0), eps[..2]);
    }

    #[test]
    fn small_clusters_follow_envoys_strict_limit_unless_one_host_is_always_allowed() {
        // 1 of 3 is 33% > 10%: current Envoy (and so Istio) ejects nothing.
        let (strict, eps, t0) = new_detector(OutlierConfig::default(), 3);
        assert_eq!(fail(&strict, eps[0], 5, t0), None);
        assert!(strict.ejected(t0).is_empty());

        let config = OutlierConfig {
            always_eject_one_host: true,
            ..OutlierConfig::default()
        };
        let (lenient, eps, t0) = new_detector(config, 3);
        assert!(fail(&lenient, eps[0], 5, t0).is_some());
        assert_eq!(fail(&lenient, eps[1], 5, t0), None, "but only one");
        assert_eq!(lenient.ejected(t0), eps[..1]);
    }

    #[test]
    fn returns_at_the_first_sweep_after_base_times_backoff() {
        let (detector, eps, t0) = new_detector(OutlierConfig::default(), 10);
        // Sweeps at t0+10s, +20s, …; ejected at +1s for 30s: back at the +40s sweep.
        fail(&detector, eps[0], 5, t0 + secs(1));
        assert!(detector.is_ejected(eps[0], t0 + secs(39)));
        assert!(!detector.is_ejected(eps[0], t0 + secs(40)));

        // Ejected again before the multiplier decays: 2 × 30s, back at the +110s sweep.
        let again = fail(&detector, eps[0], 5, t0 + secs(41)).expect("ejected again");
        assert_eq!(again.duration, secs(60));
        assert!(detector.is_ejected(eps[0], t0 + secs(109)));
        assert!(!detector.is_ejected(eps[0], t0 + secs(110)));
    }

    #[test]
    fn the_multiplier_decays_while_healthy() {
        let (detector, eps, t0) = new_detector(OutlierConfig::default(), 10);
        fail(&detector, eps[0], 5, t0 + secs(1));
        assert!(!detector.is_ejected(eps[0], t0 + secs(40)));
        // Healthy from +40s: the +50s sweep takes the multiplier back to 0.
        let later = fail(&detector, eps[0], 5, t0 + secs(55)).expect("ejected");
        assert_eq!(later.duration, secs(30));
        assert!(detector.is_ejected(eps[0], t0 + secs(89)));
        assert!(!detector.is_ejected(eps[0], t0 + secs(90)));
    }

    #[test]
    fn ejection_time_is_capped() {
        let config = OutlierConfig {
            base_ejection_time: secs(100),
            max_ejection_time: secs(250),
            interval: secs(1),
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        let mut at = t0;
        let mut durations = Vec::new();
        for _ in 0..5 {
            let ejection = fail(&detector, eps[0], 5, at).expect("ejected");
            durations.push(ejection.duration.as_secs());
            // Back at the first sweep after that; fail again at once.
            at += ejection.duration;
            assert!(!detector.is_ejected(eps[0], at));
        }
        assert_eq!(durations, [100, 200, 250, 250, 250]);
    }

    #[test]
    fn gateway_errors_and_connect_failures() {
        let config = OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 3,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        detector.record(eps[0], Outcome::Response(502), t0);
        detector.record(eps[0], Outcome::Response(504), t0);
        // A 500 is a 5xx but not a gateway error: the gateway count starts over.
        detector.record(eps[0], Outcome::Response(500), t0);
        detector.record(eps[0], Outcome::ConnectFailed, t0);
        detector.record(eps[0], Outcome::Timeout, t0);
        let ejection = detector.record(eps[0], Outcome::Response(503), t0);
        assert_eq!(
            ejection.map(|e| e.reason),
            Some(EjectionReason::ConsecutiveGatewayErrors)
        );
    }

    #[test]
    fn the_gateway_threshold_goes_first() {
        let config = OutlierConfig {
            consecutive_gateway_errors: 5,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        for _ in 0..4 {
            detector.record(eps[0], Outcome::Response(503), t0);
        }
        let ejection = detector.record(eps[0], Outcome::Response(503), t0);
        assert_eq!(
            ejection.map(|e| e.reason),
            Some(EjectionReason::ConsecutiveGatewayErrors)
        );
    }

    #[test]
    fn split_local_origin_failures_count_separately() {
        let config = OutlierConfig {
            split_local_origin: true,
            consecutive_local_origin_failures: 2,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        detector.record(eps[0], Outcome::ConnectFailed, t0);
        detector.record(eps[0], Outcome::Connected, t0);
        detector.record(eps[0], Outcome::Timeout, t0);
        // Local failures don't feed the 5xx count.
        assert_eq!(fail(&detector, eps[0], 4, t0), None);
        let ejection = detector.record(eps[0], Outcome::ConnectFailed, t0);
        assert_eq!(
            ejection.map(|e| e.reason),
            Some(EjectionReason::ConsecutiveLocalOriginFailures)
        );
    }

    #[test]
    fn membership_follows_filter() {
        let config = OutlierConfig {
            max_ejection_percent: 50,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 4);
        fail(&detector, eps[0], 5, t0);
        // The same set in another order, with a duplicate, changes nothing.
        let mut shuffled = eps.clone();
        shuffled.reverse();
        shuffled.push(eps[2]);
        assert_eq!(detector.filter(&shuffled, t0).len(), 4);
        assert_eq!(detector.ejected(t0), eps[..1]);
        // An endpoint that leaves is forgotten, and comes back clean.
        assert_eq!(detector.filter(&eps[1..], t0), eps[1..]);
        assert!(detector.ejected(t0).is_empty());
        assert_eq!(detector.filter(&eps, t0), eps);
        // Two endpoints left of 2: 1 of 2 is 50%, allowed; a second is not.
        assert_eq!(detector.filter(&eps[..2], t0), eps[..2]);
        assert!(fail(&detector, eps[0], 5, t0).is_some());
        assert_eq!(fail(&detector, eps[1], 5, t0), None);
    }

    #[test]
    fn below_min_health_percent_everything_is_used() {
        let config = OutlierConfig {
            max_ejection_percent: 100,
            min_health_percent: 50,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 4);
        fail(&detector, eps[0], 5, t0);
        fail(&detector, eps[1], 5, t0);
        assert_eq!(detector.filter(&eps, t0), eps[2..], "2 of 4 healthy is 50%");
        fail(&detector, eps[2], 5, t0);
        assert_eq!(detector.filter(&eps, t0), eps, "25% healthy: panic mode");

        // Without a threshold, all ejected means no endpoint at all.
        let config = OutlierConfig {
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 2);
        fail(&detector, eps[0], 5, t0);
        fail(&detector, eps[1], 5, t0);
        assert!(detector.filter(&eps, t0).is_empty());
    }

    #[test]
    fn long_idle_periods_are_skipped_quickly() {
        let config = OutlierConfig {
            interval: Duration::from_millis(1),
            base_ejection_time: secs(1),
            ..OutlierConfig::default()
        };
        let (detector, eps, t0) = new_detector(config, 10);
        fail(&detector, eps[0], 5, t0);
        let started = Instant::now();
        let much_later = t0 + secs(30 * 24 * 3600);
        assert!(!detector.is_ejected(eps[0], much_later));
        assert!(started.elapsed() < secs(1));
        // And the schedule is still on the millisecond grid.
        assert!(fail(&detector, eps[0], 5, much_later).is_some());
        assert!(detector.is_ejected(eps[0], much_later + Duration::from_millis(999)));
        assert!(!detector.is_ejected(eps[0], much_later + secs(1)));
    }
}
