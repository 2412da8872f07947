//! DestinationRule traffic policy for the endpoints a route picked: which settings apply
//! ([`policy`]), which localities' endpoints may take the request ([`locality`]), which
//! endpoint gets it ([`balance`], with [`warmup`]'s slow start), which endpoints are left out
//! for misbehaving ([`outlier`]) and how much traffic the cluster may take ([`limits`]);
//! the TLS the waypoint originates to endpoints outside the mesh ([`tls`], which reads files).
//!
//! Everything here is a state machine without I/O; time is passed in. Per cluster (service
//! host + subset + port) the proxy keeps one [`balance::Balancer`], one
//! [`outlier::OutlierDetector`] (if the policy has outlier detection) and one
//! [`limits::CircuitBreaker`], and for each request:
//!
//! ```text
//! let policy = EffectivePolicy::resolve(dr, subset, port);          // on config change
//! let healthy = detector.filter(&ready_endpoints, now);             // [] → 503 no healthy upstream
//! let slots = locality::plan(setting, outlier, &proxy, &places);    // localityLbSetting
//! let healthy = locality::narrow(&ready_endpoints, &slots, &healthy, draw);
//! let pick = balancer.pick(&healthy, &HashInput::from_request(..))?; // slow_start.pick(..)
//! // connection and request permits from the circuit breaker, see `limits`
//! detector.record(pick.endpoint, Outcome::Response(status), now);
//! ```
pub mod balance;
mod hash;
pub mod limits;
pub mod locality;
pub mod outlier;
pub mod policy;
pub mod tls;
pub mod warmup;
