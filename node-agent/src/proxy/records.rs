//! A bounded log of recent connections the proxy handled, for the admin endpoint: what an
//! operator (and a test) reads to see which pod went where.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// [`ConnectionRecord::protocol`] of both records (outbound and inbound) of a connection
/// between two pods of this agent that the same-node fast path carried (`proxy::same_node`);
/// `SAME_NODE` in access-log lines.
pub const SAME_NODE: &str = "same-node";

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionRecord {
    pub direction: Direction,
    /// `namespace/name` of the enrolled pod the connection was captured in.
    pub pod: String,
    /// The connection's source as the proxy saw it.
    pub source: SocketAddr,
    /// The original destination (what the client dialed).
    pub original_destination: SocketAddr,
    /// The agent's listener that received it.
    pub listener: SocketAddr,
    /// How it was carried: `hbone` (mutual TLS between agents), `tcp` (plain, for
    /// destinations outside the mesh and plaintext arriving from them), or [`SAME_NODE`].
    pub protocol: &'static str,
    /// The other side's SPIFFE id, as its certificate proved: the destination's for
    /// outbound HBONE, the client's for inbound HBONE.
    pub peer_identity: Option<String>,
    /// Where the agent connected to: the HBONE server, or the destination itself.
    pub upstream: Option<SocketAddr>,
    pub opened_unix_ms: u128,
    pub error: Option<String>,
}

impl ConnectionRecord {
    pub fn new(
        direction: Direction,
        pod: &str,
        source: SocketAddr,
        original_destination: SocketAddr,
        listener: SocketAddr,
    ) -> Self {
        Self {
            direction,
            pod: pod.to_string(),
            source,
            original_destination,
            listener,
            protocol: "tcp",
            peer_identity: None,
            upstream: None,
            opened_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            error: None,
        }
    }
}

/// The newest `capacity` records.
#[derive(Clone)]
pub struct ConnectionLog {
    inner: Arc<Mutex<VecDeque<ConnectionRecord>>>,
    capacity: usize,
}

impl ConnectionLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
        }
    }

    pub fn push(&self, record: ConnectionRecord) {
        let mut log = weft_core::sync::lock(&self.inner);
        if log.len() == self.capacity {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn snapshot(&self) -> Vec<ConnectionRecord> {
        let log = weft_core::sync::lock(&self.inner);
        log.iter().cloned().collect()
    }
}

/// Bytes and connections the proxy carried for one pod, added when a connection closes.
#[derive(Debug, Default)]
pub struct PodTraffic {
    pub outbound_connections: AtomicU64,
    pub inbound_connections: AtomicU64,
    /// From the pod's application to its peers.
    pub bytes_sent: AtomicU64,
    /// From the peers to the pod's application.
    pub bytes_received: AtomicU64,
}

impl PodTraffic {
    /// Accounts a finished connection: `from_app` and `to_app` bytes from the pod's side.
    pub fn record(&self, direction: Direction, from_app: u64, to_app: u64) {
        let connections = match direction {
            Direction::Outbound => &self.outbound_connections,
            Direction::Inbound => &self.inbound_connections,
        };
        connections.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(from_app, Ordering::Relaxed);
        self.bytes_received.fetch_add(to_app, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
