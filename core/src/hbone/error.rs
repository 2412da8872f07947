use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::tls::TlsConfigError;
use crate::identity::{Identity, IdentityError, IdentityMismatch};

use super::headers::AuthorityError;

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("no certificate for {identity}: {source}")]
    Certificate {
        identity: Identity,
        source: IdentityError,
    },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} with {address} timed out after {after:?}")]
    Timeout {
        what: &'static str,
        address: SocketAddr,
        after: Duration,
    },
    #[error("refused {address}: {mismatch}")]
    IdentityMismatch {
        address: SocketAddr,
        mismatch: IdentityMismatch,
    },
    #[error("TLS with {address}: {source}")]
    Tls {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsConfig(#[from] TlsConfigError),
    #[error("the peer {address} presented an unusable certificate: {reason}")]
    PeerCertificate { address: SocketAddr, reason: String },
    #[error("HTTP/2 with {address}: {source}")]
    Http {
        address: SocketAddr,
        source: hyper::Error,
    },
    #[error("the connection to {address} failed: {reason}")]
    ConnectionFailed { address: SocketAddr, reason: String },
    #[error("{address} answered the CONNECT to {target} with {status}")]
    Refused {
        address: SocketAddr,
        target: SocketAddr,
        status: http::StatusCode,
    },
    #[error("invalid CONNECT request: {0}")]
    Request(String),
    #[error("{address} already holds {max} connections: refused another")]
    TooManyConnections { address: SocketAddr, max: usize },
    #[error("no identity is served at {local} (SNI {sni:?})")]
    NoServerIdentity {
        local: SocketAddr,
        sni: Option<String>,
    },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}
