//! `fault`: Istio's `TranslateFault` and Envoy's fault filter.
use std::time::Duration;

use http::StatusCode;
use weft_config::api::common::Percent;
use weft_config::api::networking::HttpFaultInjection;
use weft_config::duration;

use super::matcher::warn_once;

/// How an aborted request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAbort {
    Http(StatusCode),
    /// A gRPC status code: Envoy answers HTTP 200 with `grpc-status` set (trailers-only).
    Grpc(u32),
}

/// What to inject into one request. Envoy delays first, then aborts; both may happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    delay: Option<(Duration, PerMillion)>,
    abort: Option<(FaultAbort, PerMillion)>,
}

/// Istio hands percentages to Envoy in millionths, truncated (`uint32(value * 10000)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PerMillion(u32);

impl PerMillion {
    pub(crate) fn from_percent(percent: f64) -> Self {
        // `as` saturates: NaN and negatives give 0, anything above 100% gives all.
        Self((percent * 10_000.0) as u32)
    }

    /// `roll` is uniform in [0, 100).
    pub(crate) fn hit(self, roll: f64) -> bool {
        roll * 10_000.0 < f64::from(self.0)
    }

    pub(crate) fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl FaultPlan {
    /// `None` when nothing Envoy can inject remains.
    pub(crate) fn compile(fault: &HttpFaultInjection, at: &str) -> Option<Self> {
        let delay = fault.delay.as_ref().and_then(|delay| {
            // An unset percentage injects nothing: pilot falls back to the deprecated
            // integer `percent`, whose default is 0.
            let share = match &delay.percentage {
                Some(Percent { value }) => PerMillion::from_percent(*value),
                None => PerMillion::from_percent(f64::from(delay.percent.unwrap_or(0))),
            };
            let Some(fixed) = &delay.fixed_delay else {
                warn_once(format!(
                    "{at}.delay: only fixedDelay is supported (as in Istio); delay ignored"
                ));
                return None;
            };
            match duration::parse(fixed) {
                Ok(fixed) => Some((fixed, share)),
                Err(error) => {
                    warn_once(format!("{at}.delay.fixedDelay: {error}; delay ignored"));
                    None
                }
            }
        });
        let abort = fault.abort.as_ref().and_then(|abort| {
            // Unset: Envoy's default percentage, 0 — no request is aborted.
            let share = PerMillion::from_percent(abort.percentage.as_ref().map_or(0.0, |p| p.value));
            let kind = if let Some(status) = abort.http_status {
                match u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()) {
                    Some(status) => FaultAbort::Http(status),
                    None => {
                        warn_once(format!("{at}.abort.httpStatus: {status} is not an HTTP status; abort ignored"));
                        return None;
                    }
                }
            } else if let Some(name) = &abort.grpc_status {
                match grpc_code(name) {
                    Some(code) => FaultAbort::Grpc(code),
                    None => {
                        warn_once(format!(
                            "{at}.abort.grpcStatus: {name:?} is not a gRPC status name (e.g. UNAVAILABLE); abort ignored"
                        ));
                        return None;
                    }
                }
            } else {
                warn_once(format!(
                    "{at}.abort: only httpStatus and grpcStatus are supported (as in Istio); abort ignored"
                ));
                return None;
            };
            Some((kind, share))
        });
        (delay.is_some() || abort.is_some()).then_some(Self { delay, abort })
    }

    /// `delay_roll` and `abort_roll` are independent, uniform in [0, 100).
    pub fn decide(&self, delay_roll: f64, abort_roll: f64) -> FaultDecision {
        FaultDecision {
            delay: self
                .delay
                .filter(|(delay, share)| !delay.is_zero() && share.hit(delay_roll))
                .map(|(delay, _)| delay),
            abort: self
                .abort
                .filter(|(_, share)| share.hit(abort_roll))
                .map(|(abort, _)| abort),
        }
    }
}

/// The names Istio accepts for `grpcStatus` (`grpc.SupportedGRPCStatus`).
fn grpc_code(name: &str) -> Option<u32> {
    Some(match name {
        "OK" => 0,
        "CANCELLED" => 1,
        "UNKNOWN" => 2,
        "INVALID_ARGUMENT" => 3,
        "DEADLINE_EXCEEDED" => 4,
        "NOT_FOUND" => 5,
        "ALREADY_EXISTS" => 6,
        "PERMISSION_DENIED" => 7,
        "RESOURCE_EXHAUSTED" => 8,
        "FAILED_PRECONDITION" => 9,
        "ABORTED" => 10,
        "OUT_OF_RANGE" => 11,
        "UNIMPLEMENTED" => 12,
        "INTERNAL" => 13,
        "UNAVAILABLE" => 14,
        "DATA_LOSS" => 15,
        "UNAUTHENTICATED" => 16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Option<FaultPlan> {
        let fault: HttpFaultInjection = serde_yaml::from_str(yaml).expect("fault yaml");
        FaultPlan::compile(&fault, "t")
    }

    /// How many of 1000 evenly spread rolls hit.
    fn hits(decide: impl Fn(f64) -> bool) -> usize {
        (0..1000).filter(|i| decide(f64::from(*i) / 10.0)).count()
    }

    #[test]
    fn percentages_select_a_share_of_requests() {
        let p = plan("delay: {fixedDelay: 5s, percentage: {value: 10}}\nabort: {httpStatus: 400, percentage: {value: 0.1}}")
            .expect("plan");
        assert_eq!(hits(|r| p.decide(r, 100.0).delay.is_some()), 100);
        assert_eq!(hits(|r| p.decide(100.0, r).abort.is_some()), 1);
        assert_eq!(
            p.decide(0.0, 0.0),
            FaultDecision {
                delay: Some(Duration::from_secs(5)),
                abort: Some(FaultAbort::Http(StatusCode::BAD_REQUEST)),
            }
        );
    }

    #[test]
    fn an_unset_percentage_injects_nothing() {
        let p = plan("delay: {fixedDelay: 1s}\nabort: {httpStatus: 503}").expect("plan");
        assert_eq!(hits(|r| p.decide(r, r) != FaultDecision::default()), 0);
        // The deprecated integer still counts.
        let p = plan("delay: {fixedDelay: 1s, percent: 50}").expect("plan");
        assert_eq!(hits(|r| p.decide(r, r).delay.is_some()), 500);
        let p = plan("abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}").expect("plan");
        assert_eq!(p.decide(99.99, 99.99).abort, Some(FaultAbort::Grpc(14)));
    }

    #[test]
    fn what_istio_cannot_translate_is_dropped() {
        assert!(plan("delay: {exponentialDelay: 1s, percentage: {value: 50}}").is_none());
        assert!(plan("abort: {http2Error: REFUSED_STREAM}").is_none());
        assert!(plan("abort: {grpcStatus: '14'}").is_none());
        let p = plan(
            "delay: {exponentialDelay: 1s}\nabort: {httpStatus: 418, percentage: {value: 100}}",
        )
        .expect("abort survives");
        assert_eq!(p.decide(0.0, 0.0).delay, None);
    }
}
