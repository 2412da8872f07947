//! HTTP/2 settings of HBONE connections.
use std::time::Duration;

use crate::hardening::{ConnectionTimeouts, H2Limits};

/// The port HBONE listens on in every mesh pod.
pub const HBONE_PORT: u16 = 15008;

/// Flow control and framing, on both sides. The defaults are ztunnel's: windows large
/// enough for one stream to fill a fast link (HTTP/2's default 64 KiB window caps a stream
/// at 64 KiB per round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_frame_size: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Streams one connection carries at most; the next stream opens a new connection.
    pub max_streams_per_connection: usize,
    pub h2: H2Settings,
    /// For the caller's connector to produce a TCP connection.
    pub connect_timeout: Duration,
    /// TLS and HTTP/2 handshakes, together.
    pub handshake_timeout: Duration,
    /// From sending the CONNECT to its response (the peer connects to the application
    /// in between).
    pub response_timeout: Duration,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 pings on otherwise quiet connections, so that a dead peer is noticed.
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 100,
            h2: H2Settings::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            keep_alive_interval: Some(Duration::from_secs(10)),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HboneServerConfig {
    pub h2: H2Settings,
    /// What one client connection may cost: concurrent streams (200, above a client's own
    /// limit of 100, so clients, not the server, decide when to open another connection),
    /// header list size, resets, pings.
    pub limits: H2Limits,
    /// A connection that completes no CONNECT within 10 s, or carries none for 10 minutes,
    /// is closed.
    pub timeouts: ConnectionTimeouts,
    /// Connections one source address may hold open at once; more are closed on accept.
    /// A client's agent (or a waypoint) pools its streams, 100 to a connection.
    pub max_connections_per_peer: usize,
    /// From the TCP accept to an established TLS session.
    pub handshake_timeout: Duration,
}

impl Default for HboneServerConfig {
    fn default() -> Self {
        Self {
            h2: H2Settings::default(),
            limits: H2Limits::HBONE,
            timeouts: ConnectionTimeouts::HBONE,
            max_connections_per_peer: 1024,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
