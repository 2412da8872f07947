//! The agent's HTTP endpoints: readiness (:15021) for the kubelet, admin (:15000, loopback
//! by default) for operators and `weftctl`.
mod certs;
mod ebpf;
pub mod http;
pub mod readiness;
mod registry;
pub mod server;
