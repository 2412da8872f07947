//! weft-core: the pieces both weft binaries share.
#![forbid(unsafe_code)]
pub mod access_log;
pub mod audit;
pub mod ca;
pub mod dns;
pub mod ext_authz;
pub mod grpc;
pub mod hardening;
pub mod hbone;
pub mod identity;
pub mod io;
pub mod lifecycle;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod sync;
pub mod telemetry;
