//! The HBONE client: a pool of mutual-TLS HTTP/2 connections, each carrying many CONNECT
//! streams.
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::Instrument;

use super::config::PoolConfig;
use super::error::HboneError;
use super::headers::{BAGGAGE, FORWARDED, forwarded_for};
use super::pool::{ConnectionState, PoolKey, has_room, retire};
use crate::identity::tls::{ManagedCertResolver, identity_mismatch, spiffe_client_config};
use crate::identity::{
    CertificateInfo, CertificateSerial, Identity, IdentityManager, LiveTrust, PeerCertificate,
    WorkloadCertificate,
};
use crate::sync::lock;
use crate::telemetry::TraceContext;

/// One stream to open.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// Whose certificate this side presents: the source workload's identity.
    pub source: Identity,
    /// Who the server must prove to be: the destination workload's (or waypoint's) identity.
    pub destination: Identity,
    /// Where to dial: the destination pod's IP and port 15008.
    pub hbone_address: SocketAddr,
    /// The original destination, sent as `:authority`.
    pub target: SocketAddr,
    /// The source workload's address, sent as `Forwarded: for=`. Also the address the
    /// connector binds, so it is part of the pool key.
    pub source_ip: Option<IpAddr>,
    /// W3C `baggage` to pass along (see [`super::headers::WorkloadBaggage`]).
    pub baggage: Option<String>,
    /// The stream's place in a trace (the span of whoever opens it), sent as
    /// [`TraceContext::connect_header`] says; without one, a new trace nobody has decided
    /// to sample, so that the far side decides.
    pub trace: Option<TraceContext>,
}

/// What an open stream is running over.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub connection_id: u64,
    /// Serial of the certificate this side presented on the connection.
    pub local_serial: CertificateSerial,
    /// The server as verified in the handshake.
    pub peer: PeerCertificate,
    pub target: SocketAddr,
}

/// An open CONNECT tunnel: bytes written reach the target, bytes the target sends are read.
/// Shutting down the write side ends the request stream (the target sees EOF).
pub struct HboneStream {
    io: TokioIo<Upgraded>,
    info: StreamInfo,
    _slot: StreamSlot,
}

impl HboneStream {
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct PooledConnection {
    id: u64,
    sender: SendRequest<Empty<Bytes>>,
    active: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    local: Arc<WorkloadCertificate>,
    peer: PeerCertificate,
    address: SocketAddr,
    /// The version of the trust bundle the peer was verified under (read before the
    /// handshake).
    trust_version: u64,
    /// Why the HTTP/2 connection ended, once it has. In TLS 1.3 a server refusing the
    /// client's certificate says so only after the client's handshake completed, so this
    /// is where that reason surfaces.
    ended: tokio::sync::watch::Receiver<Option<Arc<str>>>,
}

impl PooledConnection {
    /// The reason the connection ended, waiting briefly for its driver to report it.
    async fn end_reason(&self) -> Option<Arc<str>> {
        let mut ended = self.ended.clone();
        let waited =
            tokio::time::timeout(Duration::from_secs(1), ended.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(reason)) => reason.clone(),
            _ => None,
        }
    }

    fn state(
        &self,
        current_serial: Option<&CertificateSerial>,
        trust_version: u64,
    ) -> ConnectionState {
        ConnectionState {
            active_streams: self.active.load(Ordering::Acquire),
            closed: self.sender.is_closed(),
            presented_current: current_serial == Some(self.local.serial()),
            verified_under_current_trust: trust_version == self.trust_version,
            peer_not_after: self.peer.not_after,
            local_not_after: self.local.not_after(),
            idle_since: *lock(&self.idle_since),
        }
    }

    /// Takes a stream slot. Called with the key's connection list locked, so that two
    /// streams cannot both take the last slot.
    fn reserve(self: &Arc<Self>) -> StreamSlot {
        self.active.fetch_add(1, Ordering::AcqRel);
        *lock(&self.idle_since) = None;
        StreamSlot {
            conn: Arc::clone(self),
        }
    }
}

/// One stream's claim on a connection; keeps the connection (and its HTTP/2 driver)
/// alive while the stream lives, even after the pool let go of it.
struct StreamSlot {
    conn: Arc<PooledConnection>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.conn.idle_since) = Some(Instant::now());
        }
    }
}

#[derive(Default)]
struct KeyEntry {
    /// Held while a connection for this key is being made, so that streams arriving
    /// meanwhile wait for it instead of each making their own.
    connecting: tokio::sync::Mutex<()>,
    connections: Mutex<Vec<Arc<PooledConnection>>>,
}

struct PoolInner {
    manager: IdentityManager,
    trust: LiveTrust,
    config: PoolConfig,
    keys: Mutex<HashMap<PoolKey, Arc<KeyEntry>>>,
    sweeper_started: AtomicBool,
    next_id: AtomicU64,
}

/// The HBONE connection pool of one agent. Cheap to clone.
#[derive(Clone)]
pub struct HbonePool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for HbonePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HbonePool")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

enum OpenError {
    /// The connection was gone before the request got onto it; another may work.
    ConnectionGone(HboneError),
    Other(HboneError),
}

impl HbonePool {
    /// `trust`: the bundle servers' chains must lead to, read at each handshake (a
    /// [`LiveTrust`] follows rotations; a plain `TrustBundle` is fixed).
    pub fn new(manager: IdentityManager, trust: impl Into<LiveTrust>, config: PoolConfig) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                manager,
                trust: trust.into(),
                config,
                keys: Mutex::new(HashMap::new()),
                sweeper_started: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens a stream to `request.target` through the HBONE server at
    /// `request.hbone_address`, on a pooled connection when one fits, otherwise on a new
    /// one whose TCP connection `connector` makes (it is called with the address to dial,
    /// only when a new connection is needed: at most twice, when the first one goes away
    /// before the stream opens).
    pub async fn connect<C, F>(
        &self,
        request: ConnectRequest,
        connector: C,
    ) -> Result<HboneStream, HboneError>
    where
        C: Fn(SocketAddr) -> F + Send + Sync,
        F: Future<Output = io::Result<TcpStream>> + Send,
    {
        let key = PoolKey {
            source: request.source.clone(),
            destination: request.destination.clone(),
            address: request.hbone_address,
            source_ip: request.source_ip,
        };
        let span = tracing::debug_span!(
            "hbone_stream",
            target = %request.target,
            dst = %request.destination,
            via = %request.hbone_address,
        );
        self.connect_keyed(key, request, connector)
            .instrument(span)
            .await
    }

    async fn connect_keyed<C, F>(
        &self,
        key: PoolKey,
        request: ConnectRequest,
        connector: C,
    ) -> Result<HboneStream, HboneError>
    where
        C: Fn(SocketAddr) -> F + Send + Sync,
        F: Future<Output = io::Result<TcpStream>> + Send,
    {
        let inner = &self.inner;
        let entry = inner.entry(&key);
        // A connection may turn out to be going away when the request reaches it (closed,
        // or past the server's GOAWAY: a peer agent handing over to its successor); the
        // stream is then opened on another, at most three tries and two new connections.
        let mut new_connections_left = 2;
        let mut last_error = None;
        for _ in 0..3 {
            let slot = match inner.checkout(&entry, &key) {
                Some(slot) => slot,
                None => {
                    let _connecting = entry.connecting.lock().await;
                    match inner.checkout(&entry, &key) {
                        Some(slot) => slot,
                        None => {
                            if new_connections_left == 0 {
                                break;
                            }
                            new_connections_left -= 1;
                            let conn = inner.establish(&key, &connector).await?;
                            inner.start_sweeper();
                            let slot = conn.reserve();
                            lock(&entry.connections).push(conn);
                            slot
                        }
                    }
                }
            };
            match inner.open_stream(slot, &request).await {
                Ok(stream) => return Ok(stream),
                Err(OpenError::ConnectionGone(e)) => {
                    tracing::debug!(error = %e, "the connection went away before the stream opened; retrying");
                    last_error = Some(e);
                }
                Err(OpenError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            HboneError::Request(format!(
                "no usable connection to {} after retries",
                key.address
            ))
        }))
    }

    /// Connections currently pooled (those retired but still carrying streams excluded).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.keys)
            .values()
            .map(|e| lock(&e.connections).len())
            .sum()
    }
}

impl PoolInner {
    fn entry(&self, key: &PoolKey) -> Arc<KeyEntry> {
        Arc::clone(lock(&self.keys).entry(key.clone()).or_default())
    }

    fn checkout(&self, entry: &KeyEntry, key: &PoolKey) -> Option<StreamSlot> {
        let current = self.manager.current(&key.source);
        let current_serial = current.as_ref().map(|c| c.serial());
        let trust_version = self.trust.version();
        let now = SystemTime::now();
        let instant = Instant::now();
        let mut connections = lock(&entry.connections);
        connections.retain(|c| {
            match retire(&c.state(current_serial, trust_version), now, instant, None) {
                Some(reason) => {
                    tracing::debug!(
                        connection = c.id,
                        reason = reason.as_str(),
                        "retiring connection"
                    );
                    false
                }
                None => true,
            }
        });
        let max = self.config.max_streams_per_connection;
        connections
            .iter()
            .find(|c| has_room(&c.state(current_serial, trust_version), max))
            .map(PooledConnection::reserve)
    }

    /// Drops idle and dead connections, and keys left without any.
    fn sweep(&self) {
        let now = SystemTime::now();
        let instant = Instant::now();
        let trust_version = self.trust.version();
        let mut keys = lock(&self.keys);
        keys.retain(|key, entry| {
            let current = self.manager.current(&key.source);
            let serial = current.as_ref().map(|c| c.serial());
            let mut connections = lock(&entry.connections);
            connections.retain(|c| {
                match retire(
                    &c.state(serial, trust_version),
                    now,
                    instant,
                    Some(self.config.idle_timeout),
                ) {
                    Some(reason) => {
                        tracing::debug!(
                            connection = c.id,
                            reason = reason.as_str(),
                            "retiring connection"
                        );
                        false
                    }
                    None => true,
                }
            });
            // An entry someone holds may be about to receive a connection.
            !connections.is_empty() || Arc::strong_count(entry) > 1
        });
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let period =
            (self.config.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let pool: Weak<PoolInner> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }

    async fn establish<C, F>(
        &self,
        key: &PoolKey,
        connector: C,
    ) -> Result<Arc<PooledConnection>, HboneError>
    where
        C: FnOnce(SocketAddr) -> F + Send,
        F: Future<Output = io::Result<TcpStream>> + Send,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "hbone_connection",
            id,
            src = %key.source,
            dst = %key.destination,
            addr = %key.address,
        );
        self.establish_in_span(id, key, connector, span.clone())
            .instrument(span)
            .await
    }

    async fn establish_in_span<C, F>(
        &self,
        id: u64,
        key: &PoolKey,
        connector: C,
        span: tracing::Span,
    ) -> Result<Arc<PooledConnection>, HboneError>
    where
        C: FnOnce(SocketAddr) -> F + Send,
        F: Future<Output = io::Result<TcpStream>> + Send,
    {
        let address = key.address;
        let config = &self.config;
        // A pod that has just started may not have its certificate yet: the CA refuses
        // until its view of the cluster has the pod on this node.
        let fetched = self
            .manager
            .fetch_within(&key.source, config.handshake_timeout / 2)
            .await
            .map_err(|source| HboneError::Certificate {
                identity: key.source.clone(),
                source,
            })?;

        let tcp = tokio::time::timeout(config.connect_timeout, connector(address))
            .await
            .map_err(|_| HboneError::Timeout {
                what: "TCP connect",
                address,
                after: config.connect_timeout,
            })?
            .map_err(|source| HboneError::Connect { address, source })?;
        tcp.set_nodelay(true)?;

        let resolver = Arc::new(ManagedCertResolver::new(
            self.manager.clone(),
            key.source.clone(),
        ));
        let trust_version = self.trust.version();
        let tls_config = spiffe_client_config(
            &self.trust,
            key.destination.clone(),
            Arc::clone(&resolver) as _,
        )?;
        let handshakes = async {
            // Pod IPs, not names: no SNI is sent, and the verifier checks the SPIFFE id.
            let server_name = ServerName::IpAddress(address.ip().into());
            let tls = TlsConnector::from(Arc::new(tls_config))
                .connect(server_name, tcp)
                .await
                .map_err(|source| match identity_mismatch(&source) {
                    Some(mismatch) => HboneError::IdentityMismatch {
                        address,
                        mismatch: mismatch.clone(),
                    },
                    None => HboneError::Tls { address, source },
                })?;
            let peer = server_certificate(&tls, key, address)?;
            let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .initial_stream_window_size(config.h2.stream_window)
                .initial_connection_window_size(config.h2.connection_window)
                .max_frame_size(config.h2.max_frame_size)
                .keep_alive_interval(config.keep_alive_interval)
                .keep_alive_timeout(config.keep_alive_timeout)
                .keep_alive_while_idle(true);
            let (sender, connection) = builder
                .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                .await
                .map_err(|source| HboneError::Http { address, source })?;
            Ok::<_, HboneError>((sender, connection, peer))
        };
        let (sender, connection, peer) = tokio::time::timeout(config.handshake_timeout, handshakes)
            .await
            .map_err(|_| HboneError::Timeout {
                what: "TLS and HTTP/2 handshakes",
                address,
                after: config.handshake_timeout,
            })??;
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        tokio::spawn(
            async move {
                let reason: Arc<str> = match connection.await {
                    Ok(()) => {
                        tracing::debug!("connection closed");
                        Arc::from("closed")
                    }
                    Err(error) => {
                        let reason = error_chain(&error);
                        tracing::debug!(error = %reason, "connection ended");
                        Arc::from(reason)
                    }
                };
                let _ = ended_tx.send(Some(reason));
            }
            .instrument(span),
        );
        let local = resolver.presented().unwrap_or(fetched);
        tracing::debug!(
            local_serial = %local.serial(),
            peer_serial = %peer.serial,
            "connection established"
        );
        Ok(Arc::new(PooledConnection {
            id,
            sender,
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(None),
            local,
            peer,
            address,
            trust_version,
            ended,
        }))
    }

    async fn open_stream(
        &self,
        slot: StreamSlot,
        request: &ConnectRequest,
    ) -> Result<HboneStream, OpenError> {
        let conn = Arc::clone(&slot.conn);
        let address = conn.address;
        let http_request = connect_request(request).map_err(OpenError::Other)?;
        let mut sender = conn.sender.clone();
        let exchange = async {
            sender.ready().await?;
            sender.send_request(http_request).await
        };
        let response = match tokio::time::timeout(self.config.response_timeout, exchange).await {
            Err(_) => {
                return Err(OpenError::Other(HboneError::Timeout {
                    what: "CONNECT response",
                    address,
                    after: self.config.response_timeout,
                }));
            }
            Ok(Err(source)) => {
                let gone = source.is_closed()
                    || source.is_canceled()
                    || conn.sender.is_closed()
                    || unprocessed(&source);
                if !gone {
                    return Err(OpenError::Other(HboneError::Http { address, source }));
                }
                let error = match conn.end_reason().await {
                    Some(reason) => HboneError::ConnectionFailed {
                        address,
                        reason: reason.to_string(),
                    },
                    None => HboneError::Http { address, source },
                };
                return Err(OpenError::ConnectionGone(error));
            }
            Ok(Ok(response)) => response,
        };
        if response.status() != StatusCode::OK {
            return Err(OpenError::Other(HboneError::Refused {
                address,
                target: request.target,
                status: response.status(),
            }));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|source| OpenError::Other(HboneError::Http { address, source }))?;
        Ok(HboneStream {
            io: TokioIo::new(upgraded),
            info: StreamInfo {
                connection_id: conn.id,
                local_serial: conn.local.serial().clone(),
                peer: conn.peer.clone(),
                target: request.target,
            },
            _slot: slot,
        })
    }
}

/// Whether the server never processed the stream: it came after the server's GOAWAY (a
/// peer handing its listeners to a successor, say) or was refused with REFUSED_STREAM.
/// Such a CONNECT is safely opened again on another connection (RFC 9113 §8.7).
fn unprocessed(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = cause.source();
    }
    false
}

/// An error with its causes, deduplicated (hyper and rustls repeat each other).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The verified server's certificate; the verifier already checked it names the
/// destination identity.
fn server_certificate(
    tls: &tokio_rustls::client::TlsStream<TcpStream>,
    key: &PoolKey,
    address: SocketAddr,
) -> Result<PeerCertificate, HboneError> {
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| HboneError::PeerCertificate {
            address,
            reason: "no certificate".to_owned(),
        })?;
    let info = CertificateInfo::parse(leaf).map_err(|e| HboneError::PeerCertificate {
        address,
        reason: e.to_string(),
    })?;
    Ok(PeerCertificate {
        identity: key.destination.clone(),
        serial: info.serial,
        not_after: info.not_after,
    })
}

/// The CONNECT request ztunnel sends: `:authority` the original destination, and the
/// source address, baggage and trace context as headers.
fn connect_request(request: &ConnectRequest) -> Result<Request<Empty<Bytes>>, HboneError> {
    let mut builder = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(request.target.to_string());
    if let Some(ip) = request.source_ip {
        builder = builder.header(FORWARDED, forwarded_for(ip));
    }
    if let Some(baggage) = &request.baggage {
        let value = HeaderValue::from_str(baggage)
            .map_err(|_| HboneError::Request(format!("invalid baggage {baggage:?}")))?;
        builder = builder.header(BAGGAGE, value);
    }
    let (name, value) = match &request.trace {
        Some(trace) => trace.connect_header(),
        None => TraceContext::new_root(None).child().connect_header(),
    };
    builder = builder.header(name, value);
    builder
        .body(Empty::new())
        .map_err(|e| HboneError::Request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::TRACEPARENT;

    fn request() -> ConnectRequest {
        ConnectRequest {
            source: Identity::in_default_trust_domain("a", "client").expect("id"),
            destination: Identity::in_default_trust_domain("b", "server").expect("id"),
            hbone_address: "10.244.1.5:15008".parse().expect("addr"),
            target: "10.244.1.5:8080".parse().expect("addr"),
            source_ip: Some("10.244.0.7".parse().expect("ip")),
            baggage: Some("k8s.namespace.name=a".to_owned()),
            trace: Some(
                TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .expect("valid"),
            ),
        }
    }

    #[test]
    fn connect_request_has_ztunnels_shape() {
        let req = connect_request(&request()).expect("builds");
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(req.uri().to_string(), "10.244.1.5:8080");
        assert_eq!(
            req.uri().authority().map(|a| a.as_str()),
            Some("10.244.1.5:8080")
        );
        assert_eq!(req.uri().scheme(), None);
        assert_eq!(req.headers()[FORWARDED], "for=10.244.0.7");
        assert_eq!(req.headers()[BAGGAGE], "k8s.namespace.name=a");
        assert_eq!(
            req.headers()[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn ipv6_targets_are_bracketed_and_an_undecided_trace_is_generated() {
        let mut r = request();
        r.target = "[fd00::5]:8080".parse().expect("addr");
        r.source_ip = Some("fd00::7".parse().expect("ip"));
        r.trace = None;
        r.baggage = None;
        let req = connect_request(&r).expect("builds");
        assert_eq!(
            req.uri().authority().map(|a| a.as_str()),
            Some("[fd00::5]:8080")
        );
        assert_eq!(req.headers()[FORWARDED], "for=\"[fd00::7]\"");
        assert!(
            req.headers().get(TRACEPARENT).is_none(),
            "no traceparent: it could only say \"not sampled\""
        );
        let sent = TraceContext::extract(req.headers()).expect("a b3 header");
        assert_eq!(sent.sampling(), crate::telemetry::Sampling::Undecided);
        assert!(req.headers().get(BAGGAGE).is_none());
    }
}
