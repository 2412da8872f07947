//! Deciding AuthorizationPolicies: Istio's semantics as pure functions over the registry's
//! policies, shared by the node agent (L4) and the waypoint (L7).
mod decision;
pub mod ext_authz;
pub mod l4;
pub mod l7;
mod rules;

pub use decision::Decision;
pub use rules::Custom;
