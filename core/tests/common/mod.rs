//! A small mesh on 127.0.0.1: a CA served over gRPC (TLS), two nodes with their tokens,
//! an identity manager per side, an echo application and an HBONE server in front of it.
#![allow(dead_code)] // Each test binary uses a different part of the fixture.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weft_core::ca::{
    CaClientTls, CaConfig, CaServer, CaService, CertificateAuthority, GrpcIssuer, GrpcIssuerConfig,
    NodeTokenAuthenticator,
};
use weft_core::hbone::{
    ConnectRequest, HboneServer, HboneServerConfig, InboundRequest, Refusal, Upstream,
};
use weft_core::identity::{Identity, IdentityManager, LiveTrust, ManagerConfig, TrustBundle};

pub const NODE_A: &str = "node-a";
pub const NODE_B: &str = "node-b";
pub const TOKEN_A: &str = "token-of-node-a";
pub const TOKEN_B: &str = "token-of-node-b";
pub const CA_NAME: &str = "weft-ca.weft-system.svc";
/// A destination port the fixture's handler refuses by policy.
pub const FORBIDDEN_PORT: u16 = 1;

/// Every test body runs under this bound.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test finished within its time bound")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn id(ns: &str, sa: &str) -> Identity {
    Identity::in_default_trust_domain(ns, sa).expect("valid identity")
}

pub fn client_id() -> Identity {
    id("ns-a", "client")
}

pub fn server_id() -> Identity {
    id("ns-b", "server")
}

/// Aborts a background task when the test lets go of it.
pub struct Background(JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// node-a runs the client's pod, node-b the server's.
pub fn may_issue(node: &str, identity: &Identity) -> bool {
    matches!(
        (node, identity.namespace(), identity.service_account()),
        (NODE_A, "ns-a", "client") | (NODE_B, "ns-b", "server")
    )
}

/// Serves the CA over gRPC with TLS on an ephemeral port.
pub async fn serve_ca(ca: Arc<CertificateAuthority>) -> (SocketAddr, Background) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind CA");
    let addr = listener.local_addr().expect("CA address");
    let service = CaService::new(
        ca,
        Arc::new(NodeTokenAuthenticator::new([
            (NODE_A, TOKEN_A),
            (NODE_B, TOKEN_B),
        ])),
        Arc::new(may_issue),
    );
    let server = CaServer::tls(service, vec![CA_NAME.to_owned()], Duration::from_secs(3600))
        .expect("CA TLS configuration");
    let task = tokio::spawn(async move {
        server
            .serve(listener, std::future::pending())
            .await
            .expect("CA serves");
    });
    (addr, Background(task))
}

pub fn grpc_issuer<T: Clone + Into<LiveTrust>>(
    addr: SocketAddr,
    token: &str,
    trust: &T,
) -> GrpcIssuer {
    let mut config = GrpcIssuerConfig::new(addr.to_string());
    config.token = Some(token.to_owned());
    config.tls = Some(CaClientTls {
        trust: trust.clone().into(),
        server_name: CA_NAME.to_owned(),
    });
    GrpcIssuer::new(config).expect("gRPC issuer")
}

pub struct Mesh {
    pub ca: Arc<CertificateAuthority>,
    pub ca_addr: SocketAddr,
    pub trust: TrustBundle,
    pub client_manager: IdentityManager,
    pub server_manager: IdentityManager,
    _ca: Background,
}

/// A CA and one identity manager per node, both getting certificates over gRPC.
pub async fn mesh(validity: Duration) -> Mesh {
    init_tracing();
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"));
    let trust = ca.trust_bundle();
    let (ca_addr, ca_task) = serve_ca(Arc::clone(&ca)).await;
    let config = ManagerConfig {
        requested_validity: validity,
        ..ManagerConfig::default()
    };
    let client_manager = IdentityManager::new(
        Arc::new(grpc_issuer(ca_addr, TOKEN_A, &trust)),
        config.clone(),
    );
    let server_manager =
        IdentityManager::new(Arc::new(grpc_issuer(ca_addr, TOKEN_B, &trust)), config);
    Mesh {
        ca,
        ca_addr,
        trust,
        client_manager,
        server_manager,
        _ca: ca_task,
    }
}

/// The application: echoes every byte back until EOF.
pub async fn echo_server() -> (SocketAddr, Background) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, Background(task))
}

/// An HBONE server as the test sees it.
pub struct HboneFixture {
    pub addr: SocketAddr,
    /// TCP connections accepted on the HBONE port.
    pub accepted: Arc<AtomicUsize>,
    /// CONNECT requests the handler was asked about.
    pub requests: Arc<Mutex<Vec<InboundRequest>>>,
    /// How each served connection ended.
    pub outcomes: mpsc::UnboundedReceiver<Result<(), String>>,
    /// The server itself (to retire it).
    pub server: HboneServer,
    /// The server the accept loop hands new connections to: `server` until
    /// [`HboneFixture::hand_over`].
    accepting: Arc<Mutex<HboneServer>>,
    /// What a successor server is built from.
    manager: IdentityManager,
    trust: LiveTrust,
    identity: Identity,
    config: HboneServerConfig,
    _task: Background,
}

impl HboneFixture {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// As an agent's successor takes the listener over: from now on a new server (same
    /// identity and handler) accepts; `server` keeps the connections it has.
    pub fn hand_over(&self) {
        let successor = new_server(
            &self.manager,
            &self.trust,
            self.identity.clone(),
            Arc::clone(&self.requests),
            self.config.clone(),
        );
        *self.accepting.lock().expect("server lock") = successor;
    }

    pub fn requests(&self) -> Vec<InboundRequest> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// The next connection outcome, waiting a bounded time for it.
    pub async fn next_outcome(&mut self) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(10), self.outcomes.recv())
            .await
            .expect("a connection ended within 10 s")
            .expect("the accept loop is running")
    }
}

/// The handler an agent would install: policy (one forbidden port), then a connection to
/// the application, 503 if that fails.
fn handler(
    requests: Arc<Mutex<Vec<InboundRequest>>>,
) -> impl Fn(InboundRequest) -> std::pin::Pin<Box<dyn Future<Output = Result<Upstream, Refusal>> + Send>>
+ Send
+ Sync
+ 'static {
    move |request: InboundRequest| {
        requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        Box::pin(async move {
            if request.destination.port() == FORBIDDEN_PORT {
                return Err(Refusal::Forbidden(format!(
                    "{} may not reach port {FORBIDDEN_PORT}",
                    request.peer.identity
                )));
            }
            match TcpStream::connect(request.destination).await {
                Ok(tcp) => Ok(Box::new(tcp) as Upstream),
                Err(e) => Err(Refusal::Unavailable(e.to_string())),
            }
        })
    }
}

/// An HBONE server on 127.0.0.1 presenting `identity` from `manager`. The test's own accept
/// loop counts TCP connections and feeds them to `serve_connection`.
pub async fn hbone_server<T: Clone + Into<LiveTrust>>(
    manager: &IdentityManager,
    trust: &T,
    identity: Identity,
) -> HboneFixture {
    hbone_server_with(manager, trust, identity, HboneServerConfig::default()).await
}

/// The same with the server's configuration (its limits) given.
pub async fn hbone_server_with<T: Clone + Into<LiveTrust>>(
    manager: &IdentityManager,
    trust: &T,
    identity: Identity,
    config: HboneServerConfig,
) -> HboneFixture {
    let trust: LiveTrust = trust.clone().into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HBONE");
    let addr = listener.local_addr().expect("HBONE address");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let server = new_server(
        manager,
        &trust,
        identity.clone(),
        Arc::clone(&requests),
        config.clone(),
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, outcomes) = mpsc::unbounded_channel();
    let counter = Arc::clone(&accepted);
    let accepting = Arc::new(Mutex::new(server.clone()));
    let current = Arc::clone(&accepting);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let server = current.lock().expect("server lock").clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = server.serve_connection(tcp).await;
                let _ = tx.send(outcome.map_err(|e| e.to_string()));
            });
        }
    });
    HboneFixture {
        addr,
        accepted,
        requests,
        outcomes,
        server,
        accepting,
        manager: manager.clone(),
        trust,
        identity,
        config,
        _task: Background(task),
    }
}

fn new_server(
    manager: &IdentityManager,
    trust: &LiveTrust,
    identity: Identity,
    requests: Arc<Mutex<Vec<InboundRequest>>>,
    config: HboneServerConfig,
) -> HboneServer {
    HboneServer::new(
        manager.clone(),
        trust.clone(),
        move |_local: SocketAddr, _sni: Option<&str>| Some(identity.clone()),
        handler(requests),
        config,
    )
}

pub fn connect_request(hbone: SocketAddr, target: SocketAddr) -> ConnectRequest {
    ConnectRequest {
        source: client_id(),
        destination: server_id(),
        hbone_address: hbone,
        target,
        source_ip: Some("127.0.0.1".parse().expect("ip")),
        baggage: Some("k8s.namespace.name=ns-a".to_owned()),
        trace: None,
    }
}

/// The connector an agent passes: here a plain loopback connection.
pub async fn dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// Writes `payload` and reads the same number of bytes back.
pub async fn echo<S>(stream: &mut S, payload: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(payload).await.expect("write");
    stream.flush().await.expect("flush");
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("echo within 10 s")
        .expect("read");
    back
}
