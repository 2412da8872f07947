//! Kubernetes and Istio objects → the registry model. Pure functions of their inputs, so
//! each rule is tested without a registry, a source or a socket.
pub mod delegate;
pub mod export;
pub mod gateway;
pub mod gateway_routes;
pub mod header_format;
pub mod hosts;
pub mod policy;
pub mod route_shadowing;
pub mod route_status;
pub mod routes;
pub mod service;
pub mod service_entry;
pub mod waypoint;
pub mod workload;

pub use hosts::MeshSettings;
