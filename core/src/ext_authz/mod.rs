//! External authorization (AuthorizationPolicy `CUSTOM`): Envoy's
//! `envoy.service.auth.v3.Authorization/Check` over gRPC and Envoy's raw HTTP variant, as
//! Istio's `envoyExtAuthzGrpc` and `envoyExtAuthzHttp` extension providers configure them.
//! Shared by the waypoint (HTTP requests, TCP streams) and the node agent (connections).
//!
//! - [`proto`]: the messages, written by hand with Envoy's field numbers.
//! - [`attributes`]: what a check says about the request or connection.
//! - [`http_service`]: the HTTP service's check request and answer.
//! - [`verdict`]: answers as decisions, `failOpen` / `statusOnError`, header mutations.
//! - [`client`]: asking the service over connections the caller opens, within the timeout.
pub mod attributes;
pub mod client;
pub mod http_service;
pub mod proto;
pub mod settings;
pub mod verdict;

pub use attributes::{CheckBody, HttpAttributes, PeerInfo};
pub use client::{BoxIo, Client, Clients, Connect, Connecting};
pub use settings::{BodySettings, HttpSettings, Protocol, Settings};
pub use verdict::{Allowed, Denied, HeaderMutation, MutationAction, Verdict, apply_mutations};
