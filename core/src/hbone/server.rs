//! The HBONE server: accepts mutual TLS on port 15008, reads CONNECT requests, asks the
//! caller's handler what to do with each, and splices accepted streams with their upstream.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tracing::Instrument;

use super::config::HboneServerConfig;
use super::error::HboneError;
use super::headers::{FORWARDED, parse_authority, parse_forwarded_for};
use crate::hardening::{NO_REQUEST_GRACE, OpenStream, PeerConnections, Quiet, StreamActivity};
use crate::identity::tls::{ManagedCertResolver, spiffe_server_config};
use crate::identity::{BoxFuture, Identity, IdentityManager, LiveTrust, PeerCertificate};

/// Which identity the server proves on a connection, from the local address it was
/// accepted on (the destination pod's IP) and the SNI the client sent, if any. `None`
/// refuses the connection.
pub trait ServerIdentities: Send + Sync + 'static {
    fn identity_for(&self, local: SocketAddr, sni: Option<&str>) -> Option<Identity>;
}

impl<F> ServerIdentities for F
where
    F: Fn(SocketAddr, Option<&str>) -> Option<Identity> + Send + Sync + 'static,
{
    fn identity_for(&self, local: SocketAddr, sni: Option<&str>) -> Option<Identity> {
        self(local, sni)
    }
}

/// One CONNECT request, as the handler sees it.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// The client, as its certificate proved.
    pub peer: PeerCertificate,
    /// The original source address from `Forwarded: for=`, as the client claims it.
    pub source: Option<IpAddr>,
    /// The `:authority`: where the client wants to go.
    pub destination: SocketAddr,
    pub headers: HeaderMap,
    /// The TCP connection's addresses (the client's agent, and this listener).
    pub remote_addr: SocketAddr,
    pub local_addr: SocketAddr,
    /// The identity this server presented on the connection.
    pub server_identity: Identity,
}

impl InboundRequest {
    /// The client's address as the receiver should believe it: the tunnel's TCP source
    /// (agents dial from inside the source pod, so it is the client pod's own address),
    /// unless the peer is a proxy of the mesh (a waypoint), which carries other clients'
    /// traffic and names the client in `Forwarded`. Any other peer's `Forwarded` is only
    /// its own claim: believing it would let a client pass `ipBlocks` with any address.
    /// `peer_is_proxy` is asked only when the claim differs from the TCP source.
    pub fn client_address(&self, peer_is_proxy: impl FnOnce() -> bool) -> IpAddr {
        let tcp_peer = self.remote_addr.ip();
        match self.source {
            Some(claimed) if claimed != tcp_peer && peer_is_proxy() => claimed,
            _ => tcp_peer,
        }
    }
}

/// Bytes both ways: the connection to the application, or anything else to splice with.
pub trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> UpstreamIo for T {}

pub type Upstream = Box<dyn UpstreamIo>;

/// The CONNECT stream itself, once the tunnel is open.
pub type Tunnel = TokioIo<hyper::upgrade::Upgraded>;

/// What to do with an admitted CONNECT stream.
pub enum Admitted {
    /// Splice it with this upstream (a node agent: the application's socket).
    Splice(Upstream),
    /// Hand the stream to this function, which serves it (a waypoint: HTTP on the stream),
    /// saving the copy through an in-memory pipe that splicing would need.
    Serve(Box<dyn FnOnce(Tunnel) -> BoxFuture<'static, ()> + Send>),
}

impl From<Upstream> for Admitted {
    fn from(upstream: Upstream) -> Self {
        Admitted::Splice(upstream)
    }
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Policy says no: 403.
    Forbidden(String),
    /// The destination cannot be reached: 503.
    Unavailable(String),
}

/// Decides each CONNECT: allow by returning the upstream to splice with (typically a
/// fresh connection to the application), or refuse.
pub trait InboundHandler: Send + Sync + 'static {
    fn handle(&self, request: InboundRequest) -> BoxFuture<'static, Result<Admitted, Refusal>>;
}

impl<F, Fut, A> InboundHandler for F
where
    F: Fn(InboundRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, Refusal>> + Send + 'static,
    A: Into<Admitted>,
{
    fn handle(&self, request: InboundRequest) -> BoxFuture<'static, Result<Admitted, Refusal>> {
        let decided = self(request);
        Box::pin(async move { decided.await.map(Into::into) })
    }
}

struct ServerInner {
    manager: IdentityManager,
    trust: LiveTrust,
    identities: Box<dyn ServerIdentities>,
    handler: Arc<dyn InboundHandler>,
    config: HboneServerConfig,
    /// One TLS configuration per identity served; its resolver reads the manager and its
    /// verifier the trust bundle at each handshake, so it never goes stale.
    tls: Mutex<HashMap<Identity, Arc<rustls::ServerConfig>>>,
    /// Set once [`HboneServer::retire`] is called: open connections are asked to wind down.
    retired: tokio::sync::watch::Sender<bool>,
    /// TCP connections being served (from accept to close).
    open: AtomicUsize,
    /// The same, per client address, up to the configured maximum each.
    peers: PeerConnections,
}

/// Resolves once the server is retired (at once if it already is).
async fn until_retired(retired: &mut tokio::sync::watch::Receiver<bool>) {
    // The borrow the watch returns is dropped here: it must not be held across an await.
    if retired.wait_for(|retired| *retired).await.is_err() {
        // The server is gone, so it never retires: wait forever.
        std::future::pending::<()>().await;
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard<'a>(&'a AtomicUsize);

impl<'a> OpenGuard<'a> {
    fn new(open: &'a AtomicUsize) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self(open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Cheap to clone; one server can serve any number of listeners.
#[derive(Clone)]
pub struct HboneServer {
    inner: Arc<ServerInner>,
}

impl std::fmt::Debug for HboneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneServer").finish_non_exhaustive()
    }
}

/// What a connection proved, shared by its streams.
struct Connection {
    peer: PeerCertificate,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    server_identity: Identity,
}

impl HboneServer {
    pub fn new(
        manager: IdentityManager,
        trust: impl Into<LiveTrust>,
        identities: impl ServerIdentities,
        handler: impl InboundHandler,
        config: HboneServerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                manager,
                trust: trust.into(),
                identities: Box::new(identities),
                handler: Arc::new(handler),
                peers: PeerConnections::new(config.max_connections_per_peer),
                config,
                tls: Mutex::new(HashMap::new()),
                retired: tokio::sync::watch::Sender::new(false),
                open: AtomicUsize::new(0),
            }),
        }
    }

    /// Asks every open connection, and every one accepted from now on, to wind down: an
    /// HTTP/2 GOAWAY tells the client to open new streams elsewhere (its pool dials again,
    /// reaching whoever accepts now), while the streams already open run to their end.
    /// For a process handing its listeners to a successor, then draining.
    pub fn retire(&self) {
        self.inner.retired.send_replace(true);
    }

    /// TCP connections being served right now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Accepts connections until the future is dropped, each served on a task of its own.
    pub async fn serve(&self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let server = self.clone();
                    tokio::spawn(async move {
                        // Failures are logged in the connection's span.
                        let _ = server.serve_connection(tcp).await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "HBONE accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one accepted TCP connection until it closes.
    pub async fn serve_connection(&self, tcp: TcpStream) -> Result<(), HboneError> {
        let local_addr = tcp.local_addr()?;
        let remote_addr = tcp.peer_addr()?;
        let span = tracing::info_span!(
            "hbone_inbound",
            remote = %remote_addr,
            local = %local_addr,
            peer = tracing::field::Empty,
        );
        let result = self
            .serve_tcp(tcp, local_addr, remote_addr, span.clone())
            .instrument(span)
            .await;
        if let Err(error) = &result {
            tracing::debug!(%remote_addr, %local_addr, %error, "HBONE connection failed");
        }
        result
    }

    async fn serve_tcp(
        &self,
        tcp: TcpStream,
        local_addr: SocketAddr,
        remote_addr: SocketAddr,
        span: tracing::Span,
    ) -> Result<(), HboneError> {
        let Some(_peer_slot) = self.inner.peers.admit(remote_addr.ip()) else {
            // Closed before any TLS work: the cheapest answer to a peer opening too many.
            return Err(HboneError::TooManyConnections {
                address: remote_addr,
                max: self.inner.config.max_connections_per_peer,
            });
        };
        let _open = OpenGuard::new(&self.inner.open);
        let mut retired = self.inner.retired.subscribe();
        tcp.set_nodelay(true)?;
        let timeout = self.inner.config.handshake_timeout;
        let (tls, server_identity) = tokio::time::timeout(timeout, self.handshake(tcp, local_addr))
            .await
            .map_err(|_| HboneError::Timeout {
                what: "TLS handshake",
                address: remote_addr,
                after: timeout,
            })??;
        let peer =
            PeerCertificate::from_chain(tls.get_ref().1.peer_certificates()).map_err(|e| {
                HboneError::PeerCertificate {
                    address: remote_addr,
                    reason: e.to_string(),
                }
            })?;
        span.record("peer", tracing::field::display(&peer.identity));
        tracing::debug!(serial = %peer.serial, "client authenticated");
        let connection = Arc::new(Connection {
            peer,
            remote_addr,
            local_addr,
            server_identity,
        });

        let config = &self.inner.config;
        let h2 = &config.h2;
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(h2.stream_window)
            .initial_connection_window_size(h2.connection_window)
            .max_frame_size(h2.max_frame_size);
        config.limits.apply(&mut builder);
        let handler = Arc::clone(&self.inner.handler);
        let activity = StreamActivity::new();
        let service = service_fn({
            let activity = activity.clone();
            move |request| {
                // Open from its complete headers until its tunnel ends.
                let stream = activity.opened();
                let connection = Arc::clone(&connection);
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(route(request, connection, handler, stream).await) }
            }
        });
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // Resolves at once when retired before this connection was accepted.
            () = until_retired(&mut retired) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            quiet = activity.quiet_for_too_long(config.timeouts) => {
                match quiet {
                    Quiet::NoFirstRequest(after) => {
                        tracing::debug!(?after, "no CONNECT completed: closing");
                    }
                    Quiet::Idle(after) => tracing::debug!(?after, "idle: closing"),
                }
                // GOAWAY; a client that does not close then is cut off.
                connection.as_mut().graceful_shutdown();
                let grace = match quiet {
                    Quiet::NoFirstRequest(_) => NO_REQUEST_GRACE,
                    Quiet::Idle(_) => config.handshake_timeout,
                };
                tokio::time::timeout(grace, connection.as_mut()).await.unwrap_or(Ok(()))
            }
        };
        result.map_err(|source| HboneError::Http {
            address: remote_addr,
            source,
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        local_addr: SocketAddr,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Identity), HboneError> {
        let tls_error = |source| HboneError::Tls {
            address: local_addr,
            source,
        };
        // Read the ClientHello first: which certificate to present may depend on its SNI.
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .map_err(tls_error)?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let identity = self
            .inner
            .identities
            .identity_for(local_addr, sni.as_deref())
            .ok_or_else(|| HboneError::NoServerIdentity {
                local: local_addr,
                sni: sni.clone(),
            })?;
        // Waits for the first certificate of an identity just starting to be served, while
        // the CA may still refuse it (its view of a new pod lags), for half the handshake's
        // time.
        self.inner
            .manager
            .fetch_within(&identity, self.inner.config.handshake_timeout / 2)
            .await
            .map_err(|source| HboneError::Certificate {
                identity: identity.clone(),
                source,
            })?;
        let config = self.tls_config(&identity)?;
        let tls = start.into_stream(config).await.map_err(tls_error)?;
        Ok((tls, identity))
    }

    fn tls_config(&self, identity: &Identity) -> Result<Arc<rustls::ServerConfig>, HboneError> {
        let mut configs = crate::sync::lock(&self.inner.tls);
        if let Some(config) = configs.get(identity) {
            return Ok(Arc::clone(config));
        }
        let resolver = ManagedCertResolver::new(self.inner.manager.clone(), identity.clone());
        let config = Arc::new(spiffe_server_config(&self.inner.trust, Arc::new(resolver))?);
        configs.insert(identity.clone(), Arc::clone(&config));
        Ok(config)
    }
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

async fn route(
    mut request: Request<Incoming>,
    connection: Arc<Connection>,
    handler: Arc<dyn InboundHandler>,
    stream: OpenStream,
) -> Response<Empty<Bytes>> {
    if request.method() != Method::CONNECT {
        tracing::debug!(method = %request.method(), "not a CONNECT: 405");
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let authority = request.uri().authority().map(|a| a.as_str()).unwrap_or("");
    let destination = match parse_authority(authority) {
        Ok(d) => d,
        Err(error) => {
            tracing::debug!(%error, "bad CONNECT authority: 400");
            return status(StatusCode::BAD_REQUEST);
        }
    };
    let source = request
        .headers()
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded_for);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let inbound = InboundRequest {
        peer: connection.peer.clone(),
        source,
        destination,
        headers: request.headers().clone(),
        remote_addr: connection.remote_addr,
        local_addr: connection.local_addr,
        server_identity: connection.server_identity.clone(),
    };
    let span = tracing::debug_span!("hbone_stream", %destination, source = ?source);
    let decision = handler.handle(inbound).instrument(span.clone()).await;
    match decision {
        Ok(Admitted::Splice(upstream)) => {
            tokio::spawn(
                async move {
                    splice(on_upgrade, upstream).await;
                    drop(stream);
                }
                .instrument(span),
            );
            status(StatusCode::OK)
        }
        Ok(Admitted::Serve(serve)) => {
            tokio::spawn(
                async move {
                    match on_upgrade.await {
                        Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
                        Err(error) => {
                            tracing::debug!(%error, "the stream closed before the tunnel opened")
                        }
                    }
                    drop(stream);
                }
                .instrument(span),
            );
            status(StatusCode::OK)
        }
        Err(Refusal::Forbidden(reason)) => {
            tracing::info!(parent: &span, peer = %connection.peer.identity, %destination, %reason, "CONNECT refused: 403");
            status(StatusCode::FORBIDDEN)
        }
        Err(Refusal::Unavailable(reason)) => {
            tracing::info!(parent: &span, %destination, %reason, "CONNECT failed: 503");
            status(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Copies both ways until both sides are done, passing half-closes along.
async fn splice(on_upgrade: OnUpgrade, mut upstream: Upstream) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "the stream closed before the tunnel opened");
            return;
        }
    };
    let mut downstream = TokioIo::new(upgraded);
    match crate::io::splice(&mut downstream, &mut upstream).await {
        Ok((sent, received)) => tracing::debug!(sent, received, "stream done"),
        Err(error) => tracing::debug!(%error, "stream ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::x509::CertificateSerial;

    fn request(forwarded: Option<&str>) -> InboundRequest {
        let identity = Identity::new("cluster.local", "shop", "sleep").expect("identity");
        InboundRequest {
            peer: PeerCertificate {
                identity: identity.clone(),
                serial: CertificateSerial::from_bytes(&[1]),
                not_after: std::time::SystemTime::UNIX_EPOCH,
            },
            source: forwarded.map(|ip| ip.parse().expect("ip")),
            destination: "10.244.2.10:8080".parse().expect("addr"),
            headers: HeaderMap::new(),
            remote_addr: "10.244.1.10:40000".parse().expect("addr"),
            local_addr: "10.244.2.10:15008".parse().expect("addr"),
            server_identity: identity,
        }
    }

    #[test]
    fn forwarded_is_believed_from_a_proxy_only() {
        let peer: IpAddr = "10.244.1.10".parse().expect("ip");
        let claimed: IpAddr = "10.244.9.9".parse().expect("ip");
        let forged = request(Some("10.244.9.9"));
        assert_eq!(forged.client_address(|| false), peer, "a client's claim");
        assert_eq!(forged.client_address(|| true), claimed, "a waypoint's");
        assert_eq!(request(None).client_address(|| true), peer);
        let honest = request(Some("10.244.1.10"));
        assert_eq!(
            honest.client_address(|| panic!("no lookup when the claim is the peer")),
            peer
        );
    }
}
