//! The API types weft reads: Kubernetes' own (cut to what weft uses) and Istio's CRDs.
pub mod common;
pub mod crds;
pub mod gateway;
pub mod gateway_api;
pub mod gateway_routes;
mod kind;
pub mod kubernetes;
pub mod mesh;
pub mod mesh_access_log;
pub mod mesh_tracing;
pub mod networking;
mod object;
pub mod security;
pub mod telemetry;

pub use kind::DEFAULT_NAMESPACE;
pub use kind::{
    Kind, NETWORKING_GROUP, NETWORKING_VERSIONS, ObjectRef, SECURITY_GROUP, SECURITY_VERSIONS,
    TELEMETRY_GROUP, TELEMETRY_VERSIONS, UNSUPPORTED_KINDS, unsupported,
};
pub use object::{Object, labels, unknown_fields};
