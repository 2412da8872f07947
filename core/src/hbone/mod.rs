//! HBONE: HTTP/2 CONNECT over mutual TLS 1.3 on port 15008, as Istio's ztunnel speaks it.
//!
//! - [`HbonePool`]: the client. `connect` opens a stream to an original destination
//!   through the HBONE server of the destination pod, on a pooled connection (per source
//!   identity, destination identity, address and source IP; up to 100 streams each) or on
//!   a new one made from a TCP connection the caller's connector provides.
//! - [`HboneServer`]: the server. Serves accepted TCP connections (or a listener), proves
//!   the identity [`ServerIdentities`] picks, authenticates clients by SPIFFE id, and hands
//!   each CONNECT to an [`InboundHandler`].
//!
//! Both sides read their certificate from the [`crate::identity::IdentityManager`] at each
//! handshake, so rotation takes effect on the next connection without disturbing open ones.
pub mod client;
pub mod config;
pub mod error;
pub mod headers;
pub mod pool;
pub mod server;

pub use client::{ConnectRequest, HbonePool, HboneStream, StreamInfo};
pub use config::{H2Settings, HBONE_PORT, HboneServerConfig, PoolConfig};
pub use error::HboneError;
pub use headers::{AuthorityError, WorkloadBaggage};
pub use pool::PoolKey;
pub use server::{
    Admitted, HboneServer, InboundHandler, InboundRequest, Refusal, ServerIdentities, Tunnel,
    Upstream, UpstreamIo,
};
