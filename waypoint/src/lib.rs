//! weft-waypoint: terminates HBONE, applies the L7 rules of the services and workloads bound
//! to it (VirtualService, DestinationRule, L7 AuthorizationPolicy) and forwards over HBONE.
//!
//! - `route/`: which VirtualService rule a request matches and what it asks for (pure).
//! - `upstream/`: DestinationRule traffic policy: load balancing, outlier detection,
//!   connection-pool limits (pure state machines, time passed in).
#![forbid(unsafe_code)]
pub mod client_hello;
pub mod context;
pub mod downstream;
pub mod ext_authz;
pub mod forward;
pub mod http;
pub mod inbound;
pub mod ingress;
pub mod jwks;
mod prefixed;
pub mod readiness;
pub mod route;
pub mod tcp;
pub mod tcp_log;
pub mod upstream;
