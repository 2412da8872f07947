//! HTTP connections from the waypoint to endpoints, carried over HBONE (or plain TCP to a
//! pod outside the mesh), reused across requests: HTTP/1.1 connections one request at a
//! time from an idle list, HTTP/2 connections shared by concurrent requests.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{Instrument, debug, debug_span};
use weft_core::hbone::{ConnectRequest, HBONE_PORT, HbonePool};
use weft_core::identity::Identity;

use crate::upstream::limits::{CircuitBreaker, ConnectionPermit, Overflow, RequestPermit, Reuse};
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

/// Per-connection settings (DestinationRule `connectionPool.tcp`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionLimits {
    pub connect_timeout: Option<Duration>,
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
/// first connection).
struct ConnSlot {
    permit: ConnectionPermit,
    endpoint: Arc<EndpointConns>,
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
    shared: Mutex<Option<Http2Conn>>,
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
}

enum Checked {
    Http1(Http1Conn, Arc<EndpointConns>),
    Http2(http2::SendRequest<UpstreamBody>, Arc<ConnSlot>),
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
    /// endpoint's connections becomes free.
    pub async fn checkout(
        &self,
        key: &EndpointKey,
        breaker: &Arc<CircuitBreaker>,
        limits: ConnectionLimits,
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
                });
                let connection = self.connect(key, slot, &endpoint, limits).await?;
                let permit = pending.into_request()?;
                return Ok(Checkout { connection, permit });
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
                return Ok(Checkout { connection, permit });
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
            Ok(permit) => Ok(Some(Checkout { connection, permit })),
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
                    if candidate.sender.is_ready() {
                        return Some(Checked::Http1(candidate, endpoint.clone()));
                    }
                    // Closed by the peer: dropping it frees its slot.
                }
                None
            }
            Protocol::Http2 => {
                let mut shared = weft_core::sync::lock(&endpoint.shared);
                let usable = shared.as_ref().is_some_and(|c| !c.sender.is_closed());
                if !usable {
                    *shared = None;
                    return None;
                }
                let conn = shared.as_ref()?;
                if conn.slot.permit.start_request() == Reuse::Close {
                    // Its last request: new requests get a new connection; in-flight ones
                    // keep this one alive until they finish.
                    let conn = shared.take()?;
                    return Some(Checked::Http2(conn.sender, conn.slot));
                }
                Some(Checked::Http2(conn.sender.clone(), conn.slot.clone()))
            }
        }
    }

    async fn connect(
        &self,
        key: &EndpointKey,
        slot: Arc<ConnSlot>,
        endpoint: &Arc<EndpointConns>,
        limits: ConnectionLimits,
    ) -> Result<Checked, ConnectError> {
        let alpn: &[u8] = match key.protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        };
        let io = self.open(key, limits, Some(alpn)).await?;
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
                spawn_driver(key.address, connection.with_upgrades());
                Ok(Checked::Http1(Http1Conn { sender, slot }, endpoint.clone()))
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
                spawn_driver(key.address, connection);
                let reuse = slot.permit.start_request();
                if reuse == Reuse::Keep {
                    *weft_core::sync::lock(&endpoint.shared) = Some(Http2Conn {
                        sender: sender.clone(),
                        slot: slot.clone(),
                    });
                }
                Ok(Checked::Http2(sender, slot))
            }
        }
    }

    /// A raw stream to an endpoint (HBONE or plain TCP), for TCP routes.
    pub async fn open_stream(
        &self,
        address: SocketAddr,
        transport: &Transport,
        connect_timeout: Option<Duration>,
    ) -> Result<Box<dyn Io>, ConnectError> {
        let key = EndpointKey {
            address,
            transport: transport.clone(),
            protocol: Protocol::Http1,
        };
        let limits = ConnectionLimits { connect_timeout };
        Ok(self.open(&key, limits, None).await?.into_inner())
    }

    /// `alpn`: what a TLS connection the waypoint originates offers (none for a stream).
    async fn open(
        &self,
        key: &EndpointKey,
        limits: ConnectionLimits,
        alpn: Option<&[u8]>,
    ) -> Result<TokioIo<Box<dyn Io>>, ConnectError> {
        let failed = |reason: String| ConnectError::Connect {
            address: key.address,
            reason,
        };
        let connect_timeout = limits.connect_timeout.unwrap_or(Duration::from_secs(10));
        let io: Box<dyn Io> = match &key.transport {
            Transport::Plain => {
                let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(key.address))
                    .await
                    .map_err(|_| failed(format!("timed out after {connect_timeout:?}")))?
                    .map_err(|e| failed(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
            Transport::Tls(origination) => {
                let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(key.address))
                    .await
                    .map_err(|_| failed(format!("timed out after {connect_timeout:?}")))?
                    .map_err(|e| failed(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
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
                self.hbone_stream(identity, hbone, key.address, connect_timeout)
                    .await
                    .map_err(failed)?
            }
            Transport::Waypoint { identity, target } => self
                .hbone_stream(identity, key.address, *target, connect_timeout)
                .await
                .map_err(failed)?,
        };
        Ok(TokioIo::new(io))
    }
}

impl Connections {
    /// A CONNECT stream to `target` through the HBONE server at `hbone`, which must
    /// prove `identity`; the proxy proves its own.
    async fn hbone_stream(
        &self,
        identity: &Identity,
        hbone: SocketAddr,
        target: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Box<dyn Io>, String> {
        let request = ConnectRequest {
            source: self.inner.source.clone(),
            destination: identity.clone(),
            hbone_address: hbone,
            target,
            source_ip: None,
            baggage: None,
            traceparent: None,
        };
        let stream = tokio::time::timeout(
            connect_timeout,
            self.inner.hbone.connect(request, |address| async move {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
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
    if let Checked::Http1(conn, _) = connection {
        weft_core::sync::lock(&endpoint.idle).push(conn);
        endpoint.ready.notify_one();
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

fn spawn_driver<F>(address: SocketAddr, connection: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(
        async move {
            if let Err(error) = connection.await {
                debug!(%error, "upstream connection ended");
            }
        }
        .instrument(debug_span!("upstream", %address)),
    );
}

impl Checkout {
    /// Sends the request. The response body holds the request's permit, and an HTTP/1.1
    /// connection goes back to the pool once that body has been read to its end (it
    /// cannot carry the next request before); `hold` (e.g. the balancer's in-flight count)
    /// is released with the body too.
    pub async fn send(
        self,
        request: hyper::Request<UpstreamBody>,
        hold: Option<Box<dyn Send + Sync>>,
    ) -> Result<hyper::Response<ResponseBody>, hyper::Error> {
        let Checkout { connection, permit } = self;
        match connection {
            Checked::Http2(mut sender, slot) => {
                let response = sender.send_request(request).await?;
                Ok(response.map(|body| ResponseBody {
                    body,
                    back: None,
                    _held: (permit, Some(slot), hold),
                }))
            }
            Checked::Http1(mut conn, endpoint) => {
                let reuse = conn.slot.permit.start_request();
                let response = conn.sender.send_request(request).await?;
                if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                    // Upgraded: the connection is the spliced stream's now and never goes
                    // back to the pool; its slot stays counted while the body is held.
                    let slot = conn.slot.clone();
                    return Ok(response.map(|body| ResponseBody {
                        body,
                        back: None,
                        _held: (permit, Some(slot), hold),
                    }));
                }
                let back = (reuse == Reuse::Keep).then_some((conn, endpoint));
                Ok(response.map(|body| ResponseBody {
                    body,
                    back,
                    _held: (permit, None, hold),
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
    _held: (
        RequestPermit,
        Option<Arc<ConnSlot>>,
        Option<Box<dyn Send + Sync>>,
    ),
}

impl ResponseBody {
    fn release_connection(&mut self) {
        if let Some((conn, endpoint)) = self.back.take() {
            give_back(Checked::Http1(conn, endpoint.clone()), &endpoint);
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
