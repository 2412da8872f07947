//! The listening sockets of an ingress gateway, kept in step with its configuration: a
//! port that stays keeps its socket (queued connections are not lost) and serves the new
//! configuration from its next connection; a port that goes is closed; a port that
//! cannot be bound is retried with the next configuration.
//!
//! Per connection: plaintext goes to the HTTP handler (`crate::http`) or the TCP one
//! (`crate::tcp`) with the listener's routes; TLS first has its ClientHello read, its SNI
//! choosing the server, then is passed through as it came or terminated and served.
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{ChainAction, Serve, chain_for};
use super::tls::client_names_allowed;
use crate::client_hello::read_hello;
use crate::context::WaypointContext;
use crate::downstream::{Downstream, GatewayRoutes, GatewayTarget, Target};
use crate::prefixed::Prefixed;
use crate::route::Source;
use crate::{http, tcp};

/// How long a client has to send its ClientHello, and to finish the handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    serve: Arc<ArcSwap<Serve>>,
    accept: JoinHandle<()>,
}

/// The gateway's listeners.
pub struct Listeners {
    ctx: Arc<WaypointContext>,
    running: HashMap<SocketAddr, Running>,
    /// Connections being served, for the drain at shutdown.
    open: Arc<AtomicUsize>,
}

/// Counts a connection while it is served.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Listeners {
    pub fn new(ctx: Arc<WaypointContext>) -> Self {
        Self {
            ctx,
            running: HashMap::new(),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Connections being served.
    pub fn open(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// The addresses listened on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self.running.keys().copied().collect();
        addresses.sort();
        addresses
    }

    /// Listens where `wanted` says, serving each address's new configuration; returns
    /// the addresses that could not be bound.
    pub fn apply(&mut self, wanted: Vec<(SocketAddr, Serve)>) -> Vec<(SocketAddr, io::Error)> {
        let mut failed = Vec::new();
        let keep: Vec<SocketAddr> = wanted.iter().map(|(a, _)| *a).collect();
        for address in self.addresses() {
            if !keep.contains(&address)
                && let Some(gone) = self.running.remove(&address)
            {
                gone.accept.abort();
                info!(%address, "stopped listening");
            }
        }
        for (address, serve) in wanted {
            if let Some(running) = self.running.get(&address) {
                running.serve.store(Arc::new(serve));
                continue;
            }
            match bind(address) {
                Ok(listener) => {
                    let serve = Arc::new(ArcSwap::from_pointee(serve));
                    let accept = tokio::spawn(accept_loop(
                        listener,
                        serve.clone(),
                        self.ctx.clone(),
                        self.open.clone(),
                    ));
                    info!(%address, "listening");
                    self.running.insert(address, Running { serve, accept });
                }
                Err(error) => failed.push((address, error)),
            }
        }
        failed
    }

    /// Stops accepting on every listener (the drain at shutdown); connections being
    /// served go on.
    pub fn stop_accepting(&mut self) {
        for (_, running) in self.running.drain() {
            running.accept.abort();
        }
    }
}

fn bind(address: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    serve: Arc<ArcSwap<Serve>>,
    ctx: Arc<WaypointContext>,
    open: Arc<AtomicUsize>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        open.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(open.clone());
        let serve = serve.load_full();
        let ctx = ctx.clone();
        let span = info_span!("ingress", %local, %peer);
        tokio::spawn(
            async move {
                connection(tcp, peer, local, serve, ctx).await;
                drop(guard);
            }
            .instrument(span),
        );
    }
}

async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    serve: Arc<Serve>,
    ctx: Arc<WaypointContext>,
) {
    let chains = match &*serve {
        Serve::Plain(target) => {
            return serve_target(tcp, target, peer, local, false, ctx).await;
        }
        Serve::Tls(chains) => chains,
    };
    let Some((head, sni)) = read_hello(&mut tcp, TLS_TIMEOUT).await else {
        return;
    };
    let Some(chain) = chain_for(chains, sni.as_deref()) else {
        debug!(
            sni = sni.as_deref().unwrap_or_default(),
            "no server for this SNI; closed"
        );
        return;
    };
    let io = Prefixed::new(head, tcp);
    match &chain.action {
        ChainAction::Passthrough(target) => serve_target(io, target, peer, local, false, ctx).await,
        ChainAction::Terminate {
            tls: Err(error),
            target,
        } => {
            // As Envoy without the server's certificate: the handshake does not happen.
            debug!(server = %target.server, %error, "TLS refused");
        }
        ChainAction::Terminate {
            tls: Ok(tls),
            target,
        } => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            let stream = match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    debug!(server = %target.server, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(server = %target.server, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first());
            if !client_names_allowed(&tls.subject_alt_names, certificate) {
                debug!(server = %target.server, "client certificate names none of subjectAltNames; closed");
                return;
            }
            serve_target(stream, target, peer, local, true, ctx).await;
        }
    }
}

async fn serve_target<I>(
    io: I,
    target: &Arc<GatewayTarget>,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    ctx: Arc<WaypointContext>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let downstream = Downstream {
        target: Target::Gateway(target.clone()),
        // Routes' `sourceLabels` at a gateway are the gateway's own; the client outside
        // proves no identity.
        source: Source {
            principal: None,
            namespace: target.workload.as_ref().map(|w| w.namespace.to_string()),
            labels: target
                .workload
                .as_ref()
                .map(|w| w.labels.to_map())
                .unwrap_or_default(),
        },
        source_ip: Some(peer.ip()),
        destination: local,
        secure,
        tunnel_trace: None,
    };
    match &target.routes {
        GatewayRoutes::Http(_) => http::serve(io, downstream, ctx).await,
        GatewayRoutes::Tcp(_) => tcp::forward(io, downstream, ctx).await,
    }
}

/// Logs bind failures once per address until it binds.
pub fn report_failures(failed: &[(SocketAddr, io::Error)]) {
    for (address, error) in failed {
        warn!(%address, %error, "cannot listen; retried with the next configuration change");
    }
}
