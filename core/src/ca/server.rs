//! The CA as a gRPC service speaking Istio's certificate API.
//!
//! Transport: TLS 1.3 with a server certificate the CA issues itself (re-issued at half its
//! lifetime), so clients verify it against the mesh root. Plaintext is possible for a CA
//! reached over a node-local link in the lab ([`CaServer::plaintext`]); the bearer tokens
//! then cross that link in the clear, so it must not leave the node.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxFuture;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, NodeIdentities};
use super::authority::{CaError, CertificateAuthority};
use super::proto::{
    IMPERSONATED_IDENTITY, IstioCertificateRequest, IstioCertificateResponse,
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::identity::tls::ALPN_H2;
use crate::identity::trust::der_to_pem;
use crate::identity::{CertificateInfo, Identity, crypto_provider};

/// The certificate service: authenticates the caller, checks the identity asked for is one
/// the caller may obtain ([`super::Caller::authorize`]: a node, its pods' identities; a
/// workload, its own), and signs.
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<dyn Authenticator>,
    nodes: Arc<dyn NodeIdentities>,
}

impl CaService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: Arc<dyn Authenticator>,
        nodes: Arc<dyn NodeIdentities>,
    ) -> Self {
        Self {
            ca,
            authenticator,
            nodes,
        }
    }

    /// The tower service to mount on a tonic server of one's own.
    pub fn into_service(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr();
        let caller = self
            .authenticator
            .authenticate(request.metadata())
            .await
            .map_err(|e| {
                tracing::warn!(?peer, error = %e, "CA request refused: unauthenticated");
                Status::unauthenticated(e.to_string())
            })?;
        let request = request.into_inner();
        let csr_identities = csr_identities(&request.csr)?;
        let identity = requested_identity(&request, &csr_identities)?;
        if identity.trust_domain() != self.ca.trust_domain() {
            let reason = format!(
                "{identity} is outside the trust domain {} this CA serves",
                self.ca.trust_domain()
            );
            tracing::warn!(%caller, %identity, "CA request refused: {reason}");
            return Err(Status::permission_denied(reason));
        }
        caller
            .authorize(&identity, &csr_identities, self.nodes.as_ref())
            .map_err(|e| {
                tracing::warn!(%caller, %identity, "CA request refused: {e}");
                Status::permission_denied(e.to_string())
            })?;
        let validity = u64::try_from(request.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let chain = self
            .ca
            .sign_csr(&request.csr, &identity, validity)
            .map_err(|e| match e {
                CaError::Csr(_) => Status::invalid_argument(e.to_string()),
                CaError::TrustDomain { .. } => Status::permission_denied(e.to_string()),
                other => {
                    tracing::error!(error = %other, "signing failed");
                    Status::internal(format!("signing failed: {other}"))
                }
            })?;
        if let Some(info) = chain.first().and_then(|c| CertificateInfo::parse(c).ok()) {
            tracing::info!(%caller, %identity, serial = %info.serial, "certificate issued");
        }
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain.iter().map(der_to_pem).collect(),
        }))
    }
}

/// The identity asked for: `ImpersonatedIdentity` in the metadata (how node agents ask,
/// and what Istio's CA honours), otherwise the CSR's own SPIFFE id. Either way the caller's
/// right to it is checked afterwards; the signed certificate names this identity only.
fn requested_identity(
    request: &IstioCertificateRequest,
    csr_identities: &[Identity],
) -> Result<Identity, Status> {
    if let Some(text) = request.metadata_string(IMPERSONATED_IDENTITY) {
        return text.parse().map_err(|e| {
            Status::invalid_argument(format!("metadata {IMPERSONATED_IDENTITY}: {e}"))
        });
    }
    match csr_identities {
        [one] => Ok(one.clone()),
        _ => Err(Status::invalid_argument(format!(
            "no {IMPERSONATED_IDENTITY} metadata and the CSR names {} SPIFFE identities (one needed)",
            csr_identities.len()
        ))),
    }
}

/// The SPIFFE ids among the URI SANs a CSR asks for. Other names are not looked at: the
/// certificate carries none of them.
fn csr_identities(csr_pem: &str) -> Result<Vec<Identity>, Status> {
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| Status::invalid_argument(format!("invalid CSR: {e}")))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| Status::invalid_argument(format!("invalid CSR: {e}")))?;
    Ok(csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.parse().ok(),
            _ => None,
        })
        .collect())
}

impl IstioCertificateService for CaService {
    fn create_certificate(
        self: Arc<Self>,
        request: Request<IstioCertificateRequest>,
    ) -> BoxFuture<Response<IstioCertificateResponse>, Status> {
        Box::pin(async move { self.create(request).await })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaServeError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("building the CA's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves a [`CaService`] on a listener the caller bound.
pub struct CaServer {
    service: CaService,
    tls: Option<Arc<ServerConfig>>,
    handshake_timeout: Duration,
}

impl CaServer {
    /// TLS with a certificate for `names` (DNS names or IP addresses clients dial) issued by
    /// the CA itself, valid `validity` and re-issued at half of it.
    pub fn tls(
        service: CaService,
        names: Vec<String>,
        validity: Duration,
    ) -> Result<Self, CaServeError> {
        let resolver = ServingCertificate::new(Arc::clone(&service.ca), names, validity)?;
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            service,
            tls: Some(Arc::new(config)),
            handshake_timeout: Duration::from_secs(10),
        })
    }

    /// Plain HTTP/2: only for a node-local link (see the module documentation).
    pub fn plaintext(service: CaService) -> Self {
        Self {
            service,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Serves until `shutdown` completes or the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CaServeError> {
        let local = listener.local_addr().ok();
        tracing::info!(?local, tls = self.tls.is_some(), "CA serving gRPC");
        let router = tonic::transport::Server::builder().add_service(self.service.into_service());
        match self.tls {
            None => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                    .await?
            }
            Some(config) => {
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                let acceptor = tokio::spawn(accept_tls(
                    listener,
                    TlsAcceptor::from(config),
                    self.handshake_timeout,
                    tx,
                ));
                let served = router
                    .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
                    .await;
                acceptor.abort();
                served?
            }
        }
        Ok(())
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, so that one slow
/// client cannot hold up the others; hands finished streams to the gRPC server.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    streams: tokio::sync::mpsc::Sender<Result<TlsConn, io::Error>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like pass; back off a little instead of spinning.
                tracing::warn!(error = %e, "CA accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let sender = streams.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send(Ok(TlsConn(tls))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "CA TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "CA TLS handshake timed out"),
            }
        });
        if streams.is_closed() {
            return;
        }
    }
}

/// A TLS connection as tonic's server wants it (with the TCP connection's addresses).
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The CA's own server certificate, re-issued by the CA once half its lifetime has passed.
struct ServingCertificate {
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    validity: Duration,
    current: Mutex<(Arc<CertifiedKey>, SystemTime)>,
}

impl ServingCertificate {
    fn new(
        ca: Arc<CertificateAuthority>,
        names: Vec<String>,
        validity: Duration,
    ) -> Result<Self, CaError> {
        let key = ca.issue_serving_certificate(&names, validity)?;
        Ok(Self {
            current: Mutex::new((key, SystemTime::now() + validity / 2)),
            ca,
            names,
            validity,
        })
    }
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = crate::sync::lock(&self.current);
        if SystemTime::now() >= current.1 {
            match self
                .ca
                .issue_serving_certificate(&self.names, self.validity)
            {
                Ok(key) => *current = (key, SystemTime::now() + self.validity / 2),
                // The old certificate is still valid for the other half of its life.
                Err(e) => tracing::error!(error = %e, "re-issuing the CA's serving certificate"),
            }
        }
        Some(Arc::clone(&current.0))
    }
}
