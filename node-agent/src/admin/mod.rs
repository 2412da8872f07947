//! The agent's HTTP endpoints for the kubelet and operators.
pub mod readiness;
