//! weft-config: the cluster as weft sees it.
//!
//! Kubernetes objects and Istio's CRDs come from a [`source`] (the Kubernetes API or a
//! directory of YAML), are checked by [`validate`] in one place, turned into the
//! [`registry`] model by [`translate`], and published as immutable snapshots that the
//! agent and the waypoint read without locks.
#![forbid(unsafe_code)]
pub mod access_log;
pub mod api;
pub mod authn;
pub mod authz;
pub mod conformance;
pub mod duration;
pub mod refusal;
pub mod registry;
pub mod source;
pub mod telemetry;
pub mod telemetry_api;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod trace_settings;
pub mod tracer;
pub mod translate;
pub mod validate;

pub use refusal::{Origin, Refusal, Warning};
