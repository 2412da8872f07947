//! weft-ca's parts that tests reach: how callers (node agents, workloads) are authenticated
//! in a cluster, the waypoint controller the control plane runs beside the CA, and the
//! writer of the Gateway API routes' status.
#![forbid(unsafe_code)]
pub mod controller;
pub mod route_status;
pub mod token_review;
