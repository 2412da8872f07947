//! weft-ca's parts that tests reach: how callers (node agents, workloads) are authenticated
//! in a cluster, and the waypoint controller the control plane runs beside the CA.
#![forbid(unsafe_code)]
pub mod controller;
pub mod token_review;
