//! `retries`: Istio's translation (`pilot/.../route/retry`) and Envoy's retry decisions
//! (`RetryStateImpl`).
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use weft_config::api::networking::HttpRetry;
use weft_config::duration;

use super::matcher::warn_once;

/// Envoy's `retry_on` conditions, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RetryOn(u32);

impl RetryOn {
    const FIVE_XX: u32 = 1;
    const GATEWAY_ERROR: u32 = 1 << 1;
    const RESET: u32 = 1 << 2;
    const RESET_BEFORE_REQUEST: u32 = 1 << 3;
    const CONNECT_FAILURE: u32 = 1 << 4;
    const ENVOY_RATELIMITED: u32 = 1 << 5;
    const RETRIABLE_4XX: u32 = 1 << 6;
    const REFUSED_STREAM: u32 = 1 << 7;
    const RETRIABLE_STATUS_CODES: u32 = 1 << 8;
    const GRPC_CANCELLED: u32 = 1 << 9;
    const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 10;
    const GRPC_INTERNAL: u32 = 1 << 11;
    const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 12;
    const GRPC_UNAVAILABLE: u32 = 1 << 13;
    /// Accepted and inert: `retriable-headers` needs `retriable_headers`, which Istio cannot
    /// set, and `http3-post-connect-failure` needs HTTP/3 upstreams.
    const INERT: u32 = 1 << 14;

    fn token(token: &str) -> Option<u32> {
        Some(match token {
            "5xx" => Self::FIVE_XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "reset" => Self::RESET,
            "reset-before-request" => Self::RESET_BEFORE_REQUEST,
            "connect-failure" => Self::CONNECT_FAILURE,
            "envoy-ratelimited" => Self::ENVOY_RATELIMITED,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "refused-stream" => Self::REFUSED_STREAM,
            "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            "retriable-headers" | "http3-post-connect-failure" => Self::INERT,
            _ => return None,
        })
    }

    fn has(self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The upstream answered; see [`AttemptOutcome::response`].
    Response {
        status: StatusCode,
        /// `grpc-status` in the response *headers* (a trailers-only gRPC response): Envoy
        /// decides on headers, so a status that only arrives in trailers is not retried.
        grpc_status: Option<u32>,
        /// `x-envoy-ratelimited` was present: only `envoy-ratelimited` retries such a
        /// response, whatever its status.
        envoy_ratelimited: bool,
    },
    /// No connection to the endpoint (refused, unreachable, connect timeout, TLS failure).
    ConnectFailure,
    /// The connection failed before any of the request was sent.
    ResetBeforeRequest,
    /// The stream or connection was reset after the request was (partly) sent.
    Reset,
    /// A kept-alive HTTP/1.1 connection, reused for this request, closed before any byte of
    /// the response: the server's idle close racing the request (RFC 9112 9.3.1). The
    /// forwarder sends an idempotent request once more on a new connection, outside the
    /// route's retries; for the route's policy it is a reset.
    StaleConnection,
    /// HTTP/2 `REFUSED_STREAM`: the server did not process the request.
    RefusedStream,
    /// `perTryTimeout` expired. Envoy resets the attempt and decides as for a reset.
    PerTryTimeout,
    /// A connection-pool limit (circuit breaker) refused the attempt: never retried.
    Overflow,
}

impl AttemptOutcome {
    pub fn response(status: StatusCode, headers: &HeaderMap) -> Self {
        let grpc_status = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Self::Response {
            status,
            grpc_status,
            envoy_ratelimited: headers.contains_key("x-envoy-ratelimited"),
        }
    }
}

/// A route's retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Number of *retries*: `attempts: 3` allows up to 4 tries. 0 disables retries.
    pub attempts: u32,
    /// `None`: each try is bounded only by the route's timeout.
    pub per_try_timeout: Option<Duration>,
    /// Prefer endpoints not tried yet (Envoy's `previous_hosts` predicate, which pilot
    /// adds unless the destination uses consistent hashing; that is the load balancer's
    /// call).
    pub prefer_other_hosts: bool,
    /// `retryRemoteLocalities`: retries may go to other localities.
    pub retry_remote_localities: bool,
    retry_on: RetryOn,
    retriable_status_codes: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::istio_default()
    }
}

impl RetryPolicy {
    /// Envoy's back-off base interval (Istio's `backoff` default) and its cap, 10x the base.
    const BACKOFF_BASE_MS: u64 = 25;
    const BACKOFF_MAX_MS: u64 = 250;

    /// What Istio applies when a route sets no `retries` (and MeshConfig no
    /// `defaultHttpRetryPolicy`): 2 retries on connect-failure, refused-stream, gRPC
    /// unavailable and cancelled, and HTTP 503. The API documentation omits the 503, which
    /// pilot adds (`retriable-status-codes` with 503, unless
    /// `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`).
    pub fn istio_default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            prefer_other_hosts: true,
            retry_remote_localities: false,
            retry_on: RetryOn(
                RetryOn::CONNECT_FAILURE
                    | RetryOn::REFUSED_STREAM
                    | RetryOn::GRPC_UNAVAILABLE
                    | RetryOn::GRPC_CANCELLED
                    | RetryOn::RETRIABLE_STATUS_CODES,
            ),
            retriable_status_codes: vec![503],
        }
    }

    pub fn disabled() -> Self {
        Self {
            attempts: 0,
            per_try_timeout: None,
            prefer_other_hosts: true,
            retry_remote_localities: false,
            retry_on: RetryOn::default(),
            retriable_status_codes: Vec::new(),
        }
    }

    /// pilot's `ConvertPolicy`: the default, overridden field by field by what the route
    /// sets. `retryOn` replaces both the conditions and the status codes, so
    /// `retryOn: 5xx` no longer retries a 503 through the default's status list (it does
    /// through `5xx`), and `attempts` with no `retryOn` keeps the default conditions.
    pub(crate) fn from_istio(retry: Option<&HttpRetry>, at: &str) -> Self {
        let Some(retry) = retry else {
            return Self::istio_default();
        };
        let Ok(attempts) = u32::try_from(retry.attempts) else {
            return Self::disabled();
        };
        if attempts == 0 {
            return Self::disabled();
        }
        let mut policy = Self::istio_default();
        policy.attempts = attempts;
        if let Some(retry_on) = retry.retry_on.as_deref().filter(|r| !r.is_empty()) {
            let (conditions, codes) = parse_retry_on(retry_on, at);
            policy.retry_on = conditions;
            policy.retriable_status_codes = codes;
        }
        if let Some(per_try) = &retry.per_try_timeout {
            match duration::parse(per_try) {
                // Zero is Envoy's "unset".
                Ok(per_try) => policy.per_try_timeout = Some(per_try).filter(|d| !d.is_zero()),
                Err(error) => warn_once(format!("{at}.perTryTimeout: {error}; ignored")),
            }
        }
        policy.retry_remote_localities = retry.retry_remote_localities.unwrap_or(false);
        policy
    }

    /// Whether Envoy would retry after `outcome`, retries left permitting: the caller
    /// stops after [`RetryPolicy::attempts`] retries and when the route's timeout is spent.
    /// Envoy does not look at the method: a POST is retried like a GET.
    pub fn should_retry(&self, outcome: &AttemptOutcome) -> bool {
        if self.attempts == 0 {
            return false;
        }
        let on = self.retry_on;
        // An upstream reset counts as a 5xx for `5xx` and `gateway-error` (it turns into
        // a 503 for the client).
        let any_reset = RetryOn::RESET | RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR;
        match *outcome {
            AttemptOutcome::Overflow => false,
            AttemptOutcome::ConnectFailure => {
                on.has(any_reset | RetryOn::CONNECT_FAILURE | RetryOn::RESET_BEFORE_REQUEST)
            }
            AttemptOutcome::ResetBeforeRequest => on.has(any_reset | RetryOn::RESET_BEFORE_REQUEST),
            AttemptOutcome::Reset
            | AttemptOutcome::StaleConnection
            | AttemptOutcome::PerTryTimeout => on.has(any_reset),
            AttemptOutcome::RefusedStream => on.has(any_reset | RetryOn::REFUSED_STREAM),
            AttemptOutcome::Response {
                status,
                grpc_status,
                envoy_ratelimited,
            } => {
                if envoy_ratelimited {
                    return on.has(RetryOn::ENVOY_RATELIMITED);
                }
                let code = status.as_u16();
                if on.has(RetryOn::FIVE_XX) && status.is_server_error() {
                    return true;
                }
                if on.has(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504) {
                    return true;
                }
                if on.has(RetryOn::RETRIABLE_4XX) && code == 409 {
                    return true;
                }
                if on.has(RetryOn::RETRIABLE_STATUS_CODES)
                    && self.retriable_status_codes.contains(&code)
                {
                    return true;
                }
                grpc_status.is_some_and(|grpc| match grpc {
                    1 => on.has(RetryOn::GRPC_CANCELLED),
                    4 => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
                    8 => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
                    13 => on.has(RetryOn::GRPC_INTERNAL),
                    14 => on.has(RetryOn::GRPC_UNAVAILABLE),
                    _ => false,
                })
            }
        }
    }

    /// The wait before retry number `retry` (1-based): Envoy's jittered exponential
    /// back-off, uniform in `[0, (2^retry - 1) * 25ms)` and at most 250ms. `roll` is a
    /// uniform random number.
    pub fn backoff(&self, retry: u32, roll: u64) -> Duration {
        // Envoy stops growing the window once it exceeds the cap.
        let mut window = Self::BACKOFF_BASE_MS;
        for step in 2..=retry.min(63) {
            if window > Self::BACKOFF_MAX_MS {
                break;
            }
            window = ((1u64 << step) - 1) * Self::BACKOFF_BASE_MS;
        }
        Duration::from_millis((roll % window).min(Self::BACKOFF_MAX_MS))
    }
}

/// pilot's `parseRetryOn`: numbers that are HTTP status codes (as Go's `http.StatusText`
/// knows them) become retriable status codes, adding `retriable-status-codes`; everything
/// else is an Envoy condition, and Envoy ignores the ones it does not know.
fn parse_retry_on(retry_on: &str, at: &str) -> (RetryOn, Vec<u16>) {
    let mut conditions = 0;
    let mut codes = Vec::new();
    for token in retry_on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if let Some(code) = token.parse::<u16>().ok().filter(|c| go_knows_status(*c)) {
            codes.push(code);
        } else if let Some(bits) = RetryOn::token(token) {
            conditions |= bits;
        } else {
            warn_once(format!(
                "{at}.retryOn: {token:?} is neither a retry condition nor a known HTTP status; ignored"
            ));
        }
    }
    if !codes.is_empty() {
        conditions |= RetryOn::RETRIABLE_STATUS_CODES;
    }
    (RetryOn(conditions), codes)
}

/// The codes Go's `net/http.StatusText` names; pilot passes any other number to Envoy as
/// a (meaningless) condition.
fn go_knows_status(code: u16) -> bool {
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &str) -> RetryPolicy {
        RetryPolicy::from_istio(
            Some(&HttpRetry {
                attempts: 3,
                retry_on: Some(retry_on.into()),
                ..Default::default()
            }),
            "t",
        )
    }

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome::Response {
            status: StatusCode::from_u16(code).expect("status"),
            grpc_status: None,
            envoy_ratelimited: false,
        }
    }

    fn grpc(code: u32) -> AttemptOutcome {
        AttemptOutcome::Response {
            status: StatusCode::OK,
            grpc_status: Some(code),
            envoy_ratelimited: false,
        }
    }

    const RESETS: [AttemptOutcome; 5] = [
        AttemptOutcome::ConnectFailure,
        AttemptOutcome::ResetBeforeRequest,
        AttemptOutcome::Reset,
        AttemptOutcome::RefusedStream,
        AttemptOutcome::PerTryTimeout,
    ];

    /// Which of `outcomes` `retry_on` retries.
    fn retried(retry_on: &str, outcomes: &[AttemptOutcome]) -> Vec<bool> {
        let p = policy(retry_on);
        outcomes.iter().map(|o| p.should_retry(o)).collect()
    }

    #[test]
    fn five_xx_retries_every_5xx_and_every_reset() {
        let p = policy("5xx");
        assert!(p.should_retry(&status(500)) && p.should_retry(&status(503)));
        assert!(p.should_retry(&status(599)));
        assert!(!p.should_retry(&status(404)) && !p.should_retry(&status(409)));
        assert_eq!(retried("5xx", &RESETS), [true; 5]);
        assert!(!p.should_retry(&AttemptOutcome::Overflow));
    }

    #[test]
    fn gateway_error_retries_502_to_504_and_resets() {
        let p = policy("gateway-error");
        assert!(!p.should_retry(&status(500)));
        for code in [502, 503, 504] {
            assert!(p.should_retry(&status(code)), "{code}");
        }
        assert_eq!(retried("gateway-error", &RESETS), [true; 5]);
    }

    #[test]
    fn reset_conditions_split_by_when_the_connection_failed() {
        assert_eq!(retried("reset", &RESETS), [true; 5]);
        assert!(!policy("reset").should_retry(&status(503)));
        assert_eq!(
            retried("connect-failure", &RESETS),
            [true, false, false, false, false]
        );
        assert_eq!(
            retried("reset-before-request", &RESETS),
            [true, true, false, false, false]
        );
        assert_eq!(
            retried("refused-stream", &RESETS),
            [false, false, false, true, false]
        );
    }

    #[test]
    fn status_lists_and_4xx() {
        let p = policy("retriable-4xx");
        assert!(p.should_retry(&status(409)) && !p.should_retry(&status(429)));
        // Plain codes imply retriable-status-codes.
        let p = policy("503,429");
        assert!(p.should_retry(&status(503)) && p.should_retry(&status(429)));
        assert!(!p.should_retry(&status(502)));
        assert_eq!(retried("503,429", &RESETS), [false; 5]);
        // Without codes, retriable-status-codes retries nothing.
        assert!(!policy("retriable-status-codes").should_retry(&status(503)));
        // 599 is no status Go knows: pilot hands it to Envoy as a condition, ignored.
        assert!(!policy("599").should_retry(&status(599)));
    }

    #[test]
    fn grpc_conditions_read_grpc_status() {
        for (token, code) in [
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("resource-exhausted", 8),
            ("internal", 13),
            ("unavailable", 14),
        ] {
            let p = policy(token);
            assert!(p.should_retry(&grpc(code)), "{token}");
            assert!(!p.should_retry(&grpc(2)), "{token}");
            assert!(!p.should_retry(&status(503)), "{token}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(AttemptOutcome::response(StatusCode::OK, &headers), grpc(14));
    }

    #[test]
    fn rate_limited_responses_need_envoy_ratelimited() {
        let limited = AttemptOutcome::Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            grpc_status: None,
            envoy_ratelimited: true,
        };
        assert!(!policy("429,5xx").should_retry(&limited));
        assert!(policy("envoy-ratelimited").should_retry(&limited));
    }

    #[test]
    fn istio_defaults() {
        let p = RetryPolicy::from_istio(None, "t");
        assert_eq!(p, RetryPolicy::istio_default());
        assert_eq!(p.attempts, 2);
        assert!(p.should_retry(&status(503)));
        assert!(!p.should_retry(&status(502)));
        assert!(p.should_retry(&AttemptOutcome::ConnectFailure));
        assert!(p.should_retry(&AttemptOutcome::RefusedStream));
        assert!(!p.should_retry(&AttemptOutcome::Reset));
        assert!(!p.should_retry(&AttemptOutcome::PerTryTimeout));
        assert!(p.should_retry(&grpc(14)) && p.should_retry(&grpc(1)));
        assert!(!p.should_retry(&grpc(13)));
        // attempts alone keeps the default conditions.
        let p = RetryPolicy::from_istio(
            Some(&HttpRetry {
                attempts: 5,
                per_try_timeout: Some("2s".into()),
                ..Default::default()
            }),
            "t",
        );
        assert_eq!(p.attempts, 5);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert!(p.should_retry(&status(503)));
        // attempts: 0 disables.
        let p = RetryPolicy::from_istio(
            Some(&HttpRetry {
                attempts: 0,
                retry_on: Some("5xx".into()),
                ..Default::default()
            }),
            "t",
        );
        assert_eq!(p.attempts, 0);
        assert!(!p.should_retry(&status(503)));
        assert!(!p.should_retry(&AttemptOutcome::ConnectFailure));
    }

    #[test]
    fn backoff_windows_grow_then_cap() {
        let p = RetryPolicy::istio_default();
        let max_over = |retry: u32| {
            (0..2000u64)
                .map(|roll| p.backoff(retry, roll))
                .max()
                .expect("rolls")
        };
        assert_eq!(max_over(1), Duration::from_millis(24));
        assert_eq!(max_over(2), Duration::from_millis(74));
        assert_eq!(max_over(3), Duration::from_millis(174));
        assert_eq!(max_over(4), Duration::from_millis(250));
        assert_eq!(max_over(40), Duration::from_millis(250));
        assert_eq!(p.backoff(0, 7), Duration::from_millis(7));
    }
}
