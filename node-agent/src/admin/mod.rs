//! The agent's HTTP endpoints: readiness (:15021) for the kubelet, admin (:15000, loopback
//! by default) for operators.
pub mod http;
pub mod readiness;
pub mod server;
