//! From a routed request to an endpoint's response: endpoint choice, connections,
//! attempts with retries and timeouts.
pub mod cluster;
pub mod connections;
pub mod endpoints;
pub mod idle;
pub mod socket;
