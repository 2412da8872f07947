//! weft-ca's parts that tests reach: how callers (node agents, workloads) are authenticated
//! in a cluster.
#![forbid(unsafe_code)]
pub mod token_review;
