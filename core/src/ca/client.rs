//! The gRPC client of Istio's certificate API: a [`CertificateIssuer`] backed by a remote
//! CA (weft's, or istiod).
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};

use super::proto::{IMPERSONATED_IDENTITY, IstioCertificateRequest, IstioCertificateServiceClient};
use crate::identity::tls::{ALPN_H2, LiveWebPkiServerVerifier};
use crate::identity::trust_file::{DEFAULT_POLL, TrustFileError, TrustFileWatcher};
use crate::identity::{
    BoxFuture, CertificateIssuer, CertificateRequest, IssueError, LiveTrust, crypto_provider,
};

/// TLS towards the CA: its certificate must chain to `trust` (the bundle in force at each
/// connection: a CA restarted under a new root is trusted once the bundle holds that root)
/// and be valid for `server_name` (a DNS name or IP address in its SANs, as for any TLS
/// server; istiod's is `istiod.istio-system.svc`).
#[derive(Debug, Clone)]
pub struct CaClientTls {
    pub trust: LiveTrust,
    pub server_name: String,
}

#[derive(Debug, Clone)]
pub struct GrpcIssuerConfig {
    /// `host:port` of the CA.
    pub address: String,
    /// `None`: plaintext, for a node-local link only.
    pub tls: Option<CaClientTls>,
    /// The node's credential, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A file holding the credential, read again for every request (overrides `token`):
    /// the kubelet rotates projected service-account tokens in place, and a token read once
    /// at start would expire under a long-running agent.
    pub token_file: Option<std::path::PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl GrpcIssuerConfig {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            tls: None,
            token: None,
            token_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcIssuerError {
    #[error("invalid CA server name {0:?}")]
    ServerName(String),
    #[error("the CA token is not valid metadata (printable ASCII expected)")]
    Token,
    #[error("reading the CA token {}: {source}", path.display())]
    TokenFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid CA endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
}

/// Requests certificates from a CA over gRPC, for identities of pods on this node (named in
/// the `ImpersonatedIdentity` metadata, as Istio's node agents do).
#[derive(Clone)]
pub struct GrpcIssuer {
    client: IstioCertificateServiceClient<Channel>,
    credential: Credential,
}

/// What the `authorization` header of each request carries.
#[derive(Clone)]
enum Credential {
    None,
    Fixed(MetadataValue<Ascii>),
    File(Arc<std::path::Path>),
}

impl Credential {
    fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, GrpcIssuerError> {
        match self {
            Credential::None => Ok(None),
            Credential::Fixed(value) => Ok(Some(value.clone())),
            // A blocking read is fine here: a token is a kilobyte on a local (tmpfs) volume,
            // read once per certificate request.
            Credential::File(path) => {
                let token =
                    std::fs::read_to_string(path).map_err(|source| GrpcIssuerError::TokenFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                bearer(&token).map(Some)
            }
        }
    }
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, GrpcIssuerError> {
    format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| GrpcIssuerError::Token)
}

impl std::fmt::Debug for GrpcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcIssuer").finish_non_exhaustive()
    }
}

impl GrpcIssuer {
    /// Connects lazily, on the first request, and reconnects as needed. Must be called
    /// inside a tokio runtime.
    pub fn new(config: GrpcIssuerConfig) -> Result<Self, GrpcIssuerError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let name = ServerName::try_from(tls.server_name.clone())
                    .map_err(|_| GrpcIssuerError::ServerName(tls.server_name.clone()))?;
                let mut client = ClientConfig::builder_with_provider(crypto_provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(LiveWebPkiServerVerifier::new(
                        &tls.trust,
                    )))
                    .with_no_client_auth();
                client.alpn_protocols = vec![ALPN_H2.to_vec()];
                Some((TlsConnector::from(Arc::new(client)), name))
            }
        };
        let credential = match (&config.token_file, &config.token) {
            (Some(path), _) => Credential::File(Arc::from(path.as_path())),
            (None, Some(token)) => Credential::Fixed(bearer(token)?),
            (None, None) => Credential::None,
        };
        // The URI only satisfies tonic; the connector below decides where to connect and
        // whether to speak TLS. "http" even with TLS: with "https", tonic would add TLS of
        // its own when built with its TLS features.
        let endpoint = Endpoint::from_static("http://weft-ca.invalid")
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout);
        let connector = CaConnector {
            address: Arc::from(config.address.as_str()),
            tls,
        };
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            credential,
        })
    }

    /// The raw call, with the gRPC status on refusal.
    pub async fn create_certificate(
        &self,
        request: &CertificateRequest,
    ) -> Result<Vec<CertificateDer<'static>>, tonic::Status> {
        let mut message = IstioCertificateRequest {
            csr: request.csr_pem.clone(),
            validity_duration: i64::try_from(request.validity.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        };
        message.set_metadata_string(IMPERSONATED_IDENTITY, &request.identity.to_string());
        let mut grpc_request = tonic::Request::new(message);
        // Unavailable, not refused: the kubelet may be between writes of a rotated token,
        // and the identity manager retries what is unavailable.
        let authorization = self
            .credential
            .authorization()
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        if let Some(value) = authorization {
            grpc_request.metadata_mut().insert("authorization", value);
        }
        let response = self
            .client
            .clone()
            .create_certificate(grpc_request)
            .await?
            .into_inner();
        let mut chain = Vec::new();
        for pem in &response.cert_chain {
            // Each element should be one certificate; accept several per element too.
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                chain.push(cert.map_err(|e| {
                    tonic::Status::internal(format!(
                        "the CA returned an unreadable certificate: {e}"
                    ))
                })?);
            }
        }
        Ok(chain)
    }
}

impl CertificateIssuer for GrpcIssuer {
    fn issue(
        &self,
        request: CertificateRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, IssueError>> {
        Box::pin(async move {
            let identity = request.identity.clone();
            self.create_certificate(&request).await.map_err(|status| {
                let reason = format!("{:?}: {}", status.code(), status.message());
                match status.code() {
                    Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::FailedPrecondition => IssueError::Refused { identity, reason },
                    Code::Internal | Code::Unimplemented | Code::DataLoss => {
                        IssueError::BadResponse { identity, reason }
                    }
                    _ => IssueError::Unavailable { identity, reason },
                }
            })
        })
    }
}

#[derive(Clone)]
struct CaConnector {
    address: Arc<str>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl tower_service::Service<Uri> for CaConnector {
    type Response = TokioIo<CaStream>;
    type Error = io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&*this.address).await?;
            // gRPC is request/response: without NODELAY, Nagle delays every small frame.
            tcp.set_nodelay(true)?;
            let stream = match this.tls {
                None => CaStream::Plain(tcp),
                Some((connector, name)) => {
                    CaStream::Tls(Box::new(connector.connect(name, tcp).await?))
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

enum CaStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for CaStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CaStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            CaStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for CaStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            CaStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            CaStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CaStream::Plain(s) => Pin::new(s).poll_flush(cx),
            CaStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CaStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            CaStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a process of the mesh finds what it needs to ask the CA: the flags agents and
/// waypoints share (`--ca-address`, `--ca-server-name`, `--ca-token-file`,
/// `--trust-bundle`, with the same environment variables).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CaClientFiles {
    /// The CA (`host:port`) speaking Istio's CreateCertificate over gRPC/TLS.
    #[cfg_attr(feature = "cli", arg(long = "ca-address", env = "WEFT_CA_ADDRESS"))]
    pub address: String,
    /// The name the CA's certificate is valid for.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "ca-server-name",
            env = "WEFT_CA_SERVER_NAME",
            default_value = DEFAULT_CA_SERVER_NAME
        )
    )]
    pub server_name: String,
    /// The bearer token presented to the CA (in a cluster, the pod's service-account token
    /// projected for the audience `istio-ca`); read again for every certificate request, as
    /// the kubelet rotates it.
    #[cfg_attr(
        feature = "cli",
        arg(long = "ca-token-file", env = "WEFT_CA_TOKEN_FILE")
    )]
    pub token_file: std::path::PathBuf,
    /// The mesh's root certificates (PEM, one or several concatenated): what peers' and the
    /// CA's certificates must chain to. Watched: a change (as the kubelet swaps a mounted
    /// ConfigMap) applies to new handshakes without a restart; a bad file is refused and
    /// the previous roots stay.
    #[cfg_attr(feature = "cli", arg(long = "trust-bundle", env = "WEFT_TRUST_BUNDLE"))]
    pub trust_bundle: std::path::PathBuf,
}

/// The CA's name in `deploy/`: its Service in weft-system.
pub const DEFAULT_CA_SERVER_NAME: &str = "weft-ca.weft-system.svc";

#[derive(Debug, thiserror::Error)]
pub enum CaClientFilesError {
    #[error("reading {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Trust(#[from] TrustFileError),
    #[error("setting up the CA client: {0}")]
    Client(#[from] GrpcIssuerError),
}

/// What [`CaClientFiles::load`] sets up.
#[derive(Debug)]
pub struct CaClient {
    /// The trust bundle in force, kept current from its file by `watcher`.
    pub trust: LiveTrust,
    pub issuer: GrpcIssuer,
    /// Keep it: dropping it stops following the file.
    pub watcher: TrustFileWatcher,
}

impl CaClientFiles {
    /// The trust bundle (watched), and a CA client over TLS that verifies the CA against
    /// it. Must be called inside a tokio runtime.
    pub fn load(&self) -> Result<CaClient, CaClientFilesError> {
        let (trust, watcher) = TrustFileWatcher::start(&self.trust_bundle, DEFAULT_POLL)?;
        // Read now only to fail at start-up, naming the file, rather than at the first
        // certificate request; every request reads it again.
        let token = std::fs::read_to_string(&self.token_file).map_err(|source| {
            CaClientFilesError::Read {
                what: "the CA token",
                path: self.token_file.clone(),
                source,
            }
        })?;
        bearer(&token)?;
        let issuer = GrpcIssuer::new(GrpcIssuerConfig {
            tls: Some(CaClientTls {
                trust: trust.clone(),
                server_name: self.server_name.clone(),
            }),
            token_file: Some(self.token_file.clone()),
            ..GrpcIssuerConfig::new(self.address.clone())
        })?;
        Ok(CaClient {
            trust,
            issuer,
            watcher,
        })
    }
}
