//! Asking a provider: the gRPC `Check` over a tonic channel, or an HTTP/1.1 request to the
//! HTTP service, over connections the caller opens ([`Connect`]: HBONE to a mesh
//! service, plain TCP to one outside the mesh), within the provider's timeout. Every
//! failure (no connection, a broken call, no answer in time) is a [`Checked::Failed`] that
//! the provider's `failOpen` and `statusOnError` turn into a verdict.
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::sync::lock;

use super::attributes::{HttpAttributes, PeerInfo, http_check_request, network_check_request};
use super::http_service;
use super::proto::AuthorizationClient;
use super::settings::{Protocol, Settings};
use super::verdict::{Checked, Denied, Failure, Verdict, grpc_checked, network_checked};

/// The largest HTTP service answer read (a denial's body goes to the client).
const MAX_ANSWER: usize = 1024 * 1024;
/// Clients kept per cache before it starts afresh (keys include pods that come and go).
const MAX_CLIENTS: usize = 1024;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<BoxIo>> + Send>>;

/// Opens a connection to the provider's service, resolving it anew each time (the
/// registry may have changed since the last one).
pub trait Connect: Send + Sync + 'static {
    fn connect(&self) -> Connecting;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("extension provider {name}: the authority {authority:?} is not a URI: {source}")]
    Authority {
        name: String,
        authority: String,
        source: tonic::transport::Error,
    },
}

/// One provider, ready to be asked. Cheap to share; the gRPC channel and the idle HTTP
/// connections are reused across checks.
pub struct Client {
    settings: Settings,
    transport: Transport,
}

enum Transport {
    Grpc(AuthorizationClient<Channel>),
    Http(HttpPool),
}

impl Client {
    /// Needs a tokio runtime (the gRPC channel runs a task); connects on first use.
    pub fn new(settings: Settings, connector: Arc<dyn Connect>) -> Result<Self, ClientError> {
        let transport = match &settings.protocol {
            Protocol::Grpc => {
                // Istio sets the `:authority` to the service's hostname.
                let authority = format!("http://{}", settings.hostname());
                let endpoint = Endpoint::from_shared(authority.clone()).map_err(|source| {
                    ClientError::Authority {
                        name: settings.name.clone(),
                        authority,
                        source,
                    }
                })?;
                let channel = endpoint.connect_with_connector_lazy(ConnectService(connector));
                Transport::Grpc(AuthorizationClient::new(channel))
            }
            Protocol::Http(_) => Transport::Http(HttpPool {
                connector,
                idle: Mutex::new(Vec::new()),
            }),
        };
        Ok(Self {
            settings,
            transport,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Checks one HTTP request.
    pub async fn check_http(&self, attributes: &HttpAttributes<'_>) -> Verdict {
        let asked = tokio::time::timeout(self.settings.timeout, self.ask_http(attributes)).await;
        let checked = asked.unwrap_or_else(|_| {
            Checked::Failed(Failure::new(format!(
                "no answer within {:?}",
                self.settings.timeout
            )))
        });
        self.settings.decide(checked)
    }

    async fn ask_http(&self, attributes: &HttpAttributes<'_>) -> Checked {
        match (&self.transport, &self.settings.protocol) {
            (Transport::Grpc(client), _) => {
                let pack = self.settings.body.is_some_and(|b| b.pack_as_bytes);
                let message = http_check_request(attributes, pack, SystemTime::now());
                grpc_call(client, message, &self.settings)
                    .await
                    .map_or_else(Checked::Failed, |response| grpc_checked(&response))
            }
            (Transport::Http(pool), Protocol::Http(http)) => {
                let request = match http_service::check_request(http, attributes) {
                    Ok(request) => request,
                    Err(error) => {
                        return Checked::Failed(Failure::new(format!(
                            "the check request cannot be built: {error}"
                        )));
                    }
                };
                match pool.send(request).await {
                    Ok((status, headers, body)) => {
                        http_service::checked(http, status, &headers, body)
                    }
                    Err(reason) => Checked::Failed(Failure::new(reason)),
                }
            }
            (Transport::Http(_), Protocol::Grpc) => {
                Checked::Failed(Failure::new("internal: HTTP transport for a gRPC provider"))
            }
        }
    }

    /// Checks one TCP connection, as Envoy's network ext_authz filter does. An HTTP
    /// provider cannot: the connection is refused (Istio would skip the check, which fails
    /// open).
    pub async fn check_network(&self, source: &PeerInfo, destination: &PeerInfo) -> Verdict {
        let Transport::Grpc(client) = &self.transport else {
            return Verdict::Deny(Denied {
                status: 403,
                headers: Vec::new(),
                body: Bytes::new(),
                reason: format!(
                    "extension provider {} is an HTTP service, which cannot check a TCP \
                     connection",
                    self.settings.name
                ),
            });
        };
        let message = network_check_request(source, destination);
        let asked = tokio::time::timeout(
            self.settings.timeout,
            grpc_call(client, message, &self.settings),
        )
        .await;
        let checked = match asked {
            Ok(Ok(response)) => network_checked(&response),
            Ok(Err(failure)) => Checked::Failed(failure),
            Err(_) => Checked::Failed(Failure::new(format!(
                "no answer within {:?}",
                self.settings.timeout
            ))),
        };
        self.settings.decide(checked)
    }
}

async fn grpc_call(
    client: &AuthorizationClient<Channel>,
    message: super::proto::CheckRequest,
    settings: &Settings,
) -> Result<super::proto::CheckResponse, Failure> {
    let mut client = client.clone();
    let mut request = tonic::Request::new(message);
    request.set_timeout(settings.timeout);
    match client.call(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            debug!(provider = %settings.name, %status, "ext_authz call failed");
            Err(Failure::new(format!(
                "{}: {}",
                status.code(),
                status.message()
            )))
        }
    }
}

/// The tower service tonic's channel connects through.
#[derive(Clone)]
struct ConnectService(Arc<dyn Connect>);

impl tower_service::Service<Uri> for ConnectService {
    type Response = TokioIo<BoxIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<BoxIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let connecting = self.0.connect();
        Box::pin(async move { connecting.await.map(TokioIo::new) })
    }
}

/// HTTP/1.1 connections to the HTTP service, one check at a time each, kept while open.
struct HttpPool {
    connector: Arc<dyn Connect>,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

impl HttpPool {
    fn take_idle(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = lock(&self.idle);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let io = self
            .connector
            .connect()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "ext_authz HTTP connection ended");
            }
        });
        Ok(sender)
    }

    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        // A kept connection the service has just closed fails at once: try a new one.
        if let Some(sender) = self.take_idle()
            && let Ok(answer) = self.send_on(sender, clone_request(&request)).await
        {
            return Ok(answer);
        }
        let sender = self.connect().await?;
        self.send_on(sender, request).await
    }

    async fn send_on(
        &self,
        mut sender: http1::SendRequest<Full<Bytes>>,
        request: http::Request<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let response = sender
            .send_request(request.map(Full::new))
            .await
            .map_err(|e| format!("sending the check: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !sender.is_closed() {
            lock(&self.idle).push(sender);
        }
        Ok((parts.status, parts.headers, body))
    }
}

fn clone_request(request: &http::Request<Bytes>) -> http::Request<Bytes> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Clients by key (a provider, or a provider and the pod it checks for), made again when
/// the provider's settings change.
pub struct Clients<K> {
    entries: Mutex<HashMap<K, Arc<Client>>>,
}

impl<K> Default for Clients<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Clients<K> {
    pub fn get(
        &self,
        key: K,
        settings: &Settings,
        connector: impl FnOnce() -> Arc<dyn Connect>,
    ) -> Result<Arc<Client>, ClientError> {
        let mut entries = lock(&self.entries);
        if let Some(client) = entries.get(&key)
            && client.settings == *settings
        {
            return Ok(client.clone());
        }
        if entries.len() >= MAX_CLIENTS {
            entries.clear();
        }
        let client = Arc::new(Client::new(settings.clone(), connector())?);
        entries.insert(key, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use http::{HeaderValue, Version};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::ext_authz::proto::{
        Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
        HeaderValue as ProtoHeader, HeaderValueOption, OkHttpResponse, RpcStatus, check_response,
    };
    use crate::ext_authz::settings::HttpSettings;
    use crate::ext_authz::verdict::Allowed;

    struct Tcp(SocketAddr);

    impl Connect for Tcp {
        fn connect(&self) -> Connecting {
            let address = self.0;
            Box::pin(async move {
                let stream = TcpStream::connect(address).await?;
                Ok(Box::new(stream) as BoxIo)
            })
        }
    }

    /// Allows when the request has `x-ext-authz: allow`, like Istio's sample.
    struct Sample;

    fn option(key: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(ProtoHeader {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            ..HeaderValueOption::default()
        }
    }

    impl Authorization for Sample {
        fn check(
            self: Arc<Self>,
            request: tonic::Request<CheckRequest>,
        ) -> tonic::codegen::BoxFuture<tonic::Response<CheckResponse>, tonic::Status> {
            let allowed = request
                .get_ref()
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
                .and_then(|h| h.headers.get("x-ext-authz"))
                .is_some_and(|v| v == "allow");
            let response = if allowed {
                CheckResponse {
                    status: Some(RpcStatus::default()),
                    http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                        headers: vec![option("x-ext-authz-check-result", "allowed")],
                        ..OkHttpResponse::default()
                    })),
                }
            } else {
                CheckResponse {
                    status: Some(RpcStatus {
                        code: 7,
                        message: "denied".into(),
                    }),
                    http_response: Some(check_response::HttpResponse::DeniedResponse(
                        DeniedHttpResponse {
                            status: None,
                            headers: vec![option("x-ext-authz-check-result", "denied")],
                            body: "denied by ext_authz".into(),
                        },
                    )),
                }
            };
            Box::pin(async move { Ok(tonic::Response::new(response)) })
        }
    }

    fn attributes(headers: &HeaderMap) -> HttpAttributes<'_> {
        HttpAttributes {
            source: PeerInfo::default(),
            destination: PeerInfo::default(),
            method: "GET",
            path: "/",
            host: "reviews",
            scheme: "http",
            version: Version::HTTP_11,
            headers,
            body: None,
        }
    }

    /// The client against a tonic server of the same service (the e2e tests use Envoy's
    /// generated Python code instead).
    #[tokio::test]
    async fn grpc_allow_deny_and_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(Sample))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let settings = Settings::grpc("sample", "authz.foo.svc.cluster.local", 9000);
        let client = Client::new(settings.clone(), Arc::new(Tcp(address))).expect("client");
        let mut headers = HeaderMap::new();
        headers.insert("x-ext-authz", HeaderValue::from_static("allow"));
        let Verdict::Allow(allowed) = client.check_http(&attributes(&headers)).await else {
            panic!("not allowed");
        };
        assert_eq!(allowed.upstream[0].value, "allowed");
        let Verdict::Deny(denied) = client.check_http(&attributes(&HeaderMap::new())).await else {
            panic!("not denied");
        };
        assert_eq!(
            (denied.status, denied.body.as_ref()),
            (403, &b"denied by ext_authz"[..])
        );
        server.abort();
        let _ = server.await;

        // Nothing listens: refused, then allowed with failOpen.
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let nowhere = closed.local_addr().expect("address");
        drop(closed);
        let down = Client::new(settings.clone(), Arc::new(Tcp(nowhere))).expect("client");
        assert!(matches!(
            down.check_http(&attributes(&headers)).await,
            Verdict::Deny(Denied { status: 403, .. })
        ));
        let mut open = settings;
        open.fail_open = true;
        open.timeout = Duration::from_secs(2);
        let down = Client::new(open, Arc::new(Tcp(nowhere))).expect("client");
        assert!(matches!(
            down.check_http(&attributes(&headers)).await,
            Verdict::Allow(Allowed {
                failed_open: Some(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn network_checks_of_an_http_provider_are_refused() {
        let mut settings = Settings::grpc("h", "h.foo.svc.cluster.local", 8000);
        settings.protocol = Protocol::Http(HttpSettings::default());
        let client = Client::new(
            settings,
            Arc::new(Tcp("127.0.0.1:9".parse().expect("addr"))),
        )
        .expect("client");
        assert!(matches!(
            client
                .check_network(&PeerInfo::default(), &PeerInfo::default())
                .await,
            Verdict::Deny(_)
        ));
    }
}
