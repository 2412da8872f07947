//! HTTP connections from the waypoint to endpoints, carried over HBONE (or plain TCP to a
//! pod outside the mesh), reused across requests: HTTP/1.1 connections one request at a
//! time from an idle list, HTTP/2 connections shared by concurrent requests (at most
//! `maxConcurrentStreams` each; more open another connection).
//!
//! Each connection's driver task also ends it as the DestinationRule's connection pool
//! says: after `idleTimeout` without a request in flight, and once `maxConnectionDuration`
//! has passed (no new request is given to it from then on; the ones in flight finish).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::{Instrument, debug, debug_span};
use weft_core::hbone::{ConnectRequest, HBONE_PORT, HbonePool};
use weft_core::identity::Identity;
use weft_core::telemetry::TraceContext;

use super::socket;
use crate::upstream::limits::{CircuitBreaker, ConnectionPermit, Overflow, RequestPermit, Reuse};
use crate::upstream::policy::{Keepalive, PoolLimits};
use crate::upstream::tls::Origination;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request bodies going upstream: the client's stream or a replayable copy.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// HTTP version spoken to the endpoint: the client's, so that what HTTP/2 alone carries
/// (trailers, gRPC) passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
}

/// How the endpoint is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A mesh pod: HBONE to `<pod IP>:15008`, which must prove `identity`.
    Hbone { identity: Identity },
    /// A pod outside the mesh: plain TCP, as Istio's waypoint does.
    Plain,
    /// Outside the mesh, in TLS the waypoint originates (a DestinationRule's `tls`).
    Tls(Arc<Origination>),
    /// A waypoint pod (the key's address is its HBONE port), which must prove `identity`,
    /// asked for `target`: a Service's ClusterIP and port.
    Waypoint {
        identity: Identity,
        target: SocketAddr,
    },
}

/// One endpoint as the connection pool keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// The pod's address and the port its application listens on.
    pub address: SocketAddr,
    pub transport: Transport,
    pub protocol: Protocol,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {address}: {reason}")]
    Connect { address: SocketAddr, reason: String },
    #[error("HTTP handshake with {address}: {source}")]
    Handshake {
        address: SocketAddr,
        source: hyper::Error,
    },
}

/// Per-connection settings (DestinationRule `connectionPool`); a connection keeps those
/// it was opened with.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionLimits {
    /// `tcp.connectTimeout`; 10s when `None`.
    pub connect_timeout: Option<Duration>,
    /// `http.idleTimeout`: closed after this long without a request in flight.
    pub idle_timeout: Option<Duration>,
    /// `tcp.maxConnectionDuration`: no new request after this long, closed once idle.
    pub max_connection_duration: Option<Duration>,
    /// `http.maxConcurrentStreams`: requests in flight on one HTTP/2 connection.
    pub max_concurrent_streams: Option<NonZeroU32>,
    /// `tcp.tcpKeepalive` on the upstream socket.
    pub keepalive: Option<Keepalive>,
}

impl ConnectionLimits {
    pub fn of(pool: &PoolLimits) -> Self {
        Self {
            connect_timeout: Some(pool.connect_timeout),
            idle_timeout: pool.idle_timeout,
            max_connection_duration: pool.max_connection_duration,
            max_concurrent_streams: pool.max_concurrent_streams,
            keepalive: pool.keepalive,
        }
    }
}

/// One HTTP/1.1 connection, or the shared HTTP/2 one, with its place in the circuit
/// breaker's count and the endpoint's.
struct Http1Conn {
    sender: http1::SendRequest<UpstreamBody>,
    slot: Arc<ConnSlot>,
}

struct Http2Conn {
    sender: http2::SendRequest<UpstreamBody>,
    slot: Arc<ConnSlot>,
}

/// Counted while the connection is open: in the cluster's `maxConnections` (the permit)
/// and in its endpoint's own count (which decides whether the endpoint may always open a
/// first connection). Also the connection's requests in flight, for its timeouts.
struct ConnSlot {
    permit: ConnectionPermit,
    endpoint: Arc<EndpointConns>,
    life: Lifetime,
}

/// Requests in flight on one connection and when it was last idle, so that its driver
/// closes it after `idleTimeout` or `maxConnectionDuration`.
struct Lifetime {
    /// Requests in flight, or [`CLOSED`] once the driver decided to close the connection:
    /// the two are one atomic so that no request starts on a connection being closed.
    active: AtomicUsize,
    opened: Instant,
    /// When the last request in flight ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Signalled when a request ends.
    released: Notify,
    idle_timeout: Option<Duration>,
    max_duration: Option<Duration>,
    /// Requests one connection may carry at once.
    max_active: usize,
}

const CLOSED: usize = usize::MAX;

impl Lifetime {
    fn new(limits: &ConnectionLimits, protocol: Protocol) -> Self {
        let now = Instant::now();
        let max_active = match (protocol, limits.max_concurrent_streams) {
            (Protocol::Http2, Some(max)) => usize::try_from(max.get()).unwrap_or(CLOSED - 1),
            _ => CLOSED - 1,
        };
        Self {
            active: AtomicUsize::new(0),
            opened: now,
            idle_since: Mutex::new(now),
            released: Notify::new(),
            idle_timeout: limits.idle_timeout,
            max_duration: limits.max_connection_duration,
            max_active,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.max_duration
            .is_some_and(|max| now.saturating_duration_since(self.opened) >= max)
    }

    /// Starts a request unless the connection is closed, past its maximum duration or
    /// carrying as many requests as it may.
    fn try_start(&self) -> bool {
        if self.expired(Instant::now()) {
            return false;
        }
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != CLOSED && n < self.max_active).then_some(n + 1)
            })
            .is_ok()
    }

    fn finish(&self) {
        let was = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != CLOSED && n > 0).then(|| n - 1)
            });
        if was == Ok(1) {
            *weft_core::sync::lock(&self.idle_since) = Instant::now();
        }
        self.released.notify_one();
    }

    /// When the driver should look at closing the connection; `None` while only a request
    /// ending can change that.
    fn next_check(&self) -> Option<Instant> {
        let active = self.active.load(Ordering::Acquire);
        let now = Instant::now();
        let end = self
            .max_duration
            .map(|max| self.opened + max)
            .filter(|end| active == 0 || *end > now);
        let idle = self
            .idle_timeout
            .filter(|_| active == 0)
            .map(|idle| *weft_core::sync::lock(&self.idle_since) + idle);
        match (end, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Marks the connection closed if nothing is in flight and it has been idle for the
    /// timeout or lived its maximum duration.
    fn try_close(&self, now: Instant) -> bool {
        let idle = self.idle_timeout.is_some_and(|timeout| {
            now.saturating_duration_since(*weft_core::sync::lock(&self.idle_since)) >= timeout
        });
        (idle || self.expired(now))
            && self
                .active
                .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// One request in flight on a connection, ended on drop.
struct Active(Arc<ConnSlot>);

impl Active {
    fn start(slot: &Arc<ConnSlot>) -> Option<Self> {
        slot.life.try_start().then(|| Self(slot.clone()))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.life.finish();
        // A request waiting for a stream on a full HTTP/2 connection may take this one.
        self.0.endpoint.ready.notify_one();
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.endpoint.open.fetch_sub(1, Ordering::AcqRel);
        // A waiting request may now open a connection of its own.
        self.endpoint.ready.notify_one();
    }
}

#[derive(Default)]
struct EndpointConns {
    idle: Mutex<Vec<Http1Conn>>,
    /// HTTP/2 connections that take new requests: one, unless `maxConcurrentStreams`
    /// filled it.
    shared: Mutex<Vec<Http2Conn>>,
    open: AtomicUsize,
    /// Signalled when a connection becomes idle or closes.
    ready: Notify,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    hbone: HbonePool,
    /// The waypoint's own identity, presented to every endpoint.
    source: Identity,
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointConns>>>,
}

/// Why no connection could carry a request.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// A connection checked out for one request, with the request's circuit-breaker permit.
pub struct Checkout {
    connection: Checked,
    permit: RequestPermit,
    /// Taken from the pool rather than opened for this request.
    reused: bool,
}

enum Checked {
    Http1(Http1Conn, Arc<EndpointConns>, Active),
    Http2(http2::SendRequest<UpstreamBody>, Active),
}

impl Connections {
    pub fn new(hbone: HbonePool, source: Identity) -> Self {
        Self {
            inner: Arc::new(Inner {
                hbone,
                source,
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn endpoint(&self, key: &EndpointKey) -> Arc<EndpointConns> {
        let mut endpoints = weft_core::sync::lock(&self.inner.endpoints);
        // Endpoints without connections are forgotten so the map does not grow with churn.
        endpoints.retain(|_, e| Arc::strong_count(e) > 1 || e.open.load(Ordering::Acquire) > 0);
        endpoints.entry(key.clone()).or_default().clone()
    }

    /// A connection ready to send one request to the endpoint, following Envoy's
    /// circuit-breaking order: a ready connection takes the request at once (if the
    /// cluster's request limit allows); otherwise the request is pending (if the pending
    /// limit allows) until a new connection is open or, at `maxConnections`, one of the
    /// endpoint's connections becomes free. A new HBONE connection's CONNECT carries
    /// `trace`, the context of the request it is opened for.
    pub async fn checkout(
        &self,
        key: &EndpointKey,
        breaker: &Arc<CircuitBreaker>,
        limits: ConnectionLimits,
        trace: Option<&TraceContext>,
    ) -> Result<Checkout, CheckoutError> {
        let endpoint = self.endpoint(key);
        if let Some(checkout) = self.ready_connection(key, &endpoint, breaker)? {
            return Ok(checkout);
        }
        let pending = breaker.try_pending()?;
        loop {
            let notified = endpoint.ready.notified();
            if let Some(permit) = breaker.try_connection(endpoint.open.load(Ordering::Acquire) > 0)
            {
                endpoint.open.fetch_add(1, Ordering::AcqRel);
                let slot = Arc::new(ConnSlot {
                    permit,
                    endpoint: endpoint.clone(),
                    life: Lifetime::new(&limits, key.protocol),
                });
                let connection = self.connect(key, slot, &endpoint, limits, trace).await?;
                let permit = pending.into_request()?;
                return Ok(Checkout {
                    connection,
                    permit,
                    reused: false,
                });
            }
            // At maxConnections: wait for one of this endpoint's connections.
            notified.await;
            if let Some(connection) = self.take_ready(key, &endpoint) {
                let permit = match pending.into_request() {
                    Ok(permit) => permit,
                    Err(overflow) => {
                        give_back(connection, &endpoint);
                        return Err(overflow.into());
                    }
                };
                return Ok(Checkout {
                    connection,
                    permit,
                    reused: true,
                });
            }
        }
    }

    fn ready_connection(
        &self,
        key: &EndpointKey,
        endpoint: &Arc<EndpointConns>,
        breaker: &Arc<CircuitBreaker>,
    ) -> Result<Option<Checkout>, Overflow> {
        let Some(connection) = self.take_ready(key, endpoint) else {
            return Ok(None);
        };
        match breaker.try_request() {
            Ok(permit) => Ok(Some(Checkout {
                connection,
                permit,
                reused: true,
            })),
            Err(overflow) => {
                give_back(connection, endpoint);
                Err(overflow)
            }
        }
    }

    fn take_ready(&self, key: &EndpointKey, endpoint: &Arc<EndpointConns>) -> Option<Checked> {
        match key.protocol {
            Protocol::Http1 => {
                let mut idle = weft_core::sync::lock(&endpoint.idle);
                while let Some(candidate) = idle.pop() {
                    if candidate.sender.is_ready()
                        && let Some(active) = Active::start(&candidate.slot)
                    {
                        return Some(Checked::Http1(candidate, endpoint.clone(), active));
                    }
                    // Closed by the peer or by its timeouts: dropping it frees its slot.
                }
                None
            }
            Protocol::Http2 => {
                let mut shared = weft_core::sync::lock(&endpoint.shared);
                let now = Instant::now();
                // Closed ones, and those past their maximum duration (their requests in
                // flight keep them until they finish), take no new requests.
                shared.retain(|c| !c.sender.is_closed() && !c.slot.life.expired(now));
                let (at, active) = shared
                    .iter()
                    .enumerate()
                    .find_map(|(at, c)| Active::start(&c.slot).map(|active| (at, active)))?;
                let conn = shared.get(at)?;
                if conn.slot.permit.start_request() == Reuse::Close {
                    // Its last request: new requests get a new connection; in-flight ones
                    // keep this one alive until they finish.
                    let conn = shared.remove(at);
                    return Some(Checked::Http2(conn.sender, active));
                }
                Some(Checked::Http2(conn.sender.clone(), active))
            }
        }
    }

    async fn connect(
        &self,
        key: &EndpointKey,
        slot: Arc<ConnSlot>,
        endpoint: &Arc<EndpointConns>,
        limits: ConnectionLimits,
        trace: Option<&TraceContext>,
    ) -> Result<Checked, ConnectError> {
        let alpn: &[u8] = match key.protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        };
        let io = self.open(key, limits, Some(alpn), trace).await?;
        match key.protocol {
            Protocol::Http1 => {
                let (sender, connection) =
                    http1::Builder::new()
                        .handshake(io)
                        .await
                        .map_err(|source| ConnectError::Handshake {
                            address: key.address,
                            source,
                        })?;
                // With upgrades: a `101` hands the connection to the spliced stream.
                spawn_driver(key.address, connection.with_upgrades(), slot.clone());
                let active = Active::start(&slot).ok_or_else(|| closed(key.address))?;
                Ok(Checked::Http1(
                    Http1Conn { sender, slot },
                    endpoint.clone(),
                    active,
                ))
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(|source| ConnectError::Handshake {
                        address: key.address,
                        source,
                    })?;
                spawn_driver(key.address, connection, slot.clone());
                let active = Active::start(&slot).ok_or_else(|| closed(key.address))?;
                let reuse = slot.permit.start_request();
                if reuse == Reuse::Keep {
                    weft_core::sync::lock(&endpoint.shared).push(Http2Conn {
                        sender: sender.clone(),
                        slot,
                    });
                }
                Ok(Checked::Http2(sender, active))
            }
        }
    }

    /// A raw stream to an endpoint (HBONE or plain TCP), for TCP routes; of `limits`
    /// only the connect timeout and keepalive apply.
    pub async fn open_stream(
        &self,
        address: SocketAddr,
        transport: &Transport,
        limits: ConnectionLimits,
    ) -> Result<Box<dyn Io>, ConnectError> {
        let key = EndpointKey {
            address,
            transport: transport.clone(),
            protocol: Protocol::Http1,
        };
        Ok(self.open(&key, limits, None, None).await?.into_inner())
    }

    /// `alpn`: what a TLS connection the waypoint originates offers (none for a stream);
    /// `trace`: what an HBONE CONNECT carries.
    async fn open(
        &self,
        key: &EndpointKey,
        limits: ConnectionLimits,
        alpn: Option<&[u8]>,
        trace: Option<&TraceContext>,
    ) -> Result<TokioIo<Box<dyn Io>>, ConnectError> {
        let failed = |reason: String| ConnectError::Connect {
            address: key.address,
            reason,
        };
        let connect_timeout = limits.connect_timeout.unwrap_or(Duration::from_secs(10));
        let io: Box<dyn Io> = match &key.transport {
            Transport::Plain => Box::new(
                socket::connect(key.address, connect_timeout, limits.keepalive)
                    .await
                    .map_err(failed)?,
            ),
            Transport::Tls(origination) => {
                let tcp = socket::connect(key.address, connect_timeout, limits.keepalive)
                    .await
                    .map_err(failed)?;
                let Some(server_name) = origination.server_name.clone() else {
                    return Err(failed(
                        "no SNI: a wildcard host needs the request's Host or tls.sni".into(),
                    ));
                };
                let connector = tokio_rustls::TlsConnector::from(origination.config(alpn));
                let tls =
                    tokio::time::timeout(connect_timeout, connector.connect(server_name, tcp))
                        .await
                        .map_err(|_| {
                            failed(format!("TLS handshake timed out after {connect_timeout:?}"))
                        })?
                        .map_err(|e| failed(format!("TLS handshake: {e}")))?;
                Box::new(tls)
            }
            Transport::Hbone { identity } => {
                let hbone = SocketAddr::new(key.address.ip(), HBONE_PORT);
                self.hbone_stream(
                    identity,
                    hbone,
                    key.address,
                    connect_timeout,
                    &limits,
                    trace,
                )
                .await
                .map_err(failed)?
            }
            Transport::Waypoint { identity, target } => self
                .hbone_stream(
                    identity,
                    key.address,
                    *target,
                    connect_timeout,
                    &limits,
                    trace,
                )
                .await
                .map_err(failed)?,
        };
        Ok(TokioIo::new(io))
    }
}

impl Connections {
    /// A CONNECT stream to `target` through the HBONE server at `hbone`, which must
    /// prove `identity`; the proxy proves its own. A new HBONE connection gets the
    /// keepalive of `limits` (one already open to that node is shared as it is). The
    /// CONNECT carries `trace` (without one, the far side starts a trace of its own).
    async fn hbone_stream(
        &self,
        identity: &Identity,
        hbone: SocketAddr,
        target: SocketAddr,
        connect_timeout: Duration,
        limits: &ConnectionLimits,
        trace: Option<&TraceContext>,
    ) -> Result<Box<dyn Io>, String> {
        let keepalive = limits.keepalive;
        let request = ConnectRequest {
            source: self.inner.source.clone(),
            destination: identity.clone(),
            hbone_address: hbone,
            target,
            source_ip: None,
            baggage: None,
            trace: trace.cloned(),
        };
        let stream = tokio::time::timeout(
            connect_timeout,
            self.inner
                .hbone
                .connect(request, move |address| async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    socket::configure(&tcp, keepalive)?;
                    Ok(tcp)
                }),
        )
        .await
        .map_err(|_| format!("timed out after {connect_timeout:?}"))?
        .map_err(|e| e.to_string())?;
        Ok(Box::new(stream))
    }
}

fn give_back(connection: Checked, endpoint: &Arc<EndpointConns>) {
    if let Checked::Http1(conn, _, active) = connection {
        // Ended before the connection is offered again.
        drop(active);
        weft_core::sync::lock(&endpoint.idle).push(conn);
        endpoint.ready.notify_one();
    }
}

fn closed(address: SocketAddr) -> ConnectError {
    ConnectError::Connect {
        address,
        reason: "connection closed as it opened".into(),
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Runs the connection until it ends, or until its idle timeout or maximum duration
/// closes it (dropping it closes the socket); then the endpoint's lists forget it.
fn spawn_driver<F>(address: SocketAddr, connection: F, slot: Arc<ConnSlot>)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(
        async move {
            let mut connection = Box::pin(connection);
            let life = &slot.life;
            loop {
                let released = life.released.notified();
                let check = life.next_check();
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(error) = ended {
                            debug!(%error, "upstream connection ended");
                        }
                        break;
                    }
                    () = released => {}
                    () = sleep_until(check), if check.is_some() => {
                        if life.try_close(Instant::now()) {
                            debug!("upstream connection closed: idle timeout or maximum duration");
                            break;
                        }
                    }
                }
            }
            drop(connection);
            slot.endpoint.forget_closed();
        }
        .instrument(debug_span!("upstream", %address)),
    );
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

impl EndpointConns {
    /// Drops pooled connections that have ended, so that they stop counting as open.
    fn forget_closed(&self) {
        weft_core::sync::lock(&self.idle).retain(|c| !c.sender.is_closed());
        weft_core::sync::lock(&self.shared).retain(|c| !c.sender.is_closed());
        self.ready.notify_one();
    }
}

impl Checkout {
    /// An HTTP/1.1 connection that carried a request before: its server may be closing it
    /// as idle just as this request goes out.
    pub fn reused_http1(&self) -> bool {
        self.reused && matches!(self.connection, Checked::Http1(..))
    }

    /// Sends the request. The response body holds the request's permit, and an HTTP/1.1
    /// connection goes back to the pool once that body has been read to its end (it
    /// cannot carry the next request before); `hold` (e.g. the balancer's in-flight count)
    /// is released with the body too.
    pub async fn send(
        self,
        request: hyper::Request<UpstreamBody>,
        hold: Option<Box<dyn Send + Sync>>,
    ) -> Result<hyper::Response<ResponseBody>, hyper::Error> {
        let Checkout {
            connection, permit, ..
        } = self;
        match connection {
            Checked::Http2(mut sender, active) => {
                let response = sender.send_request(request).await?;
                Ok(response.map(|body| ResponseBody {
                    body,
                    back: None,
                    active: Some(active),
                    _held: (permit, hold),
                }))
            }
            Checked::Http1(mut conn, endpoint, active) => {
                let reuse = conn.slot.permit.start_request();
                let response = conn.sender.send_request(request).await?;
                if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                    // Upgraded: the connection is the spliced stream's now and never goes
                    // back to the pool; its slot stays counted (and in use) while the body
                    // is held.
                    return Ok(response.map(|body| ResponseBody {
                        body,
                        back: None,
                        active: Some(active),
                        _held: (permit, hold),
                    }));
                }
                let back = (reuse == Reuse::Keep).then_some((conn, endpoint));
                Ok(response.map(|body| ResponseBody {
                    body,
                    back,
                    active: Some(active),
                    _held: (permit, hold),
                }))
            }
        }
    }
}

/// An upstream response body that returns its HTTP/1.1 connection to the pool when it
/// reaches its end, and holds the request's permits until then.
pub struct ResponseBody {
    body: Incoming,
    back: Option<(Http1Conn, Arc<EndpointConns>)>,
    /// The request in flight on its connection, ended with the body.
    active: Option<Active>,
    _held: (RequestPermit, Option<Box<dyn Send + Sync>>),
}

impl ResponseBody {
    fn release_connection(&mut self) {
        if let Some((conn, endpoint)) = self.back.take() {
            // The HTTP/1.1 request ends here: its connection may take the next one.
            drop(self.active.take());
            weft_core::sync::lock(&endpoint.idle).push(conn);
            endpoint.ready.notify_one();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.release_connection();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that ended without being polled to `None` (its end seen through
        // `is_end_stream`) still leaves a reusable connection; one dropped half-read does
        // not, and hyper closes it.
        if self.body.is_end_stream() {
            self.release_connection();
        }
    }
}
