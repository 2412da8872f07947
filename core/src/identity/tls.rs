//! rustls pieces for SPIFFE mutual TLS: verifiers that check chains against the trust bundle
//! and peers against SPIFFE ids, and certificate resolvers that read the identity manager at
//! handshake time (so a rotated certificate is used by the next handshake, and sessions
//! already open keep the one they started with). The verifiers read the [`LiveTrust`] at
//! each handshake the same way: a rotated trust bundle applies to the next handshake
//! without rebuilding any configuration, and open sessions are not verified again.
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};

use super::certificate::WorkloadCertificate;
use super::crypto::crypto_provider;
use super::manager::IdentityManager;
use super::spiffe::Identity;
use super::trust::LiveTrust;
use super::x509::{CertificateInfo, CertificateParseError, CertificateSerial};

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The peer presented a valid chain, but for another identity than the one expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the peer presented {presented_list} where {expected} was expected", presented_list = list(.presented))]
pub struct IdentityMismatch {
    pub expected: Identity,
    pub presented: Vec<Identity>,
}

fn list(ids: &[Identity]) -> String {
    if ids.is_empty() {
        return "no SPIFFE identity".to_owned();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn other_error(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(e))))
}

/// Finds an [`IdentityMismatch`] inside an error from a TLS handshake, however wrapped.
pub fn identity_mismatch<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a IdentityMismatch> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(m) = e.downcast_ref::<IdentityMismatch>() {
            return Some(m);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = Some(inner);
            continue;
        }
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            current = Some(other.0.as_ref());
            continue;
        }
        current = e.source();
    }
    None
}

/// Client side: the server's chain must lead to the trust bundle and its certificate must
/// name the expected SPIFFE identity. The TLS server name plays no part: HBONE dials pod IPs
/// and SPIFFE certificates carry no IP or DNS names.
pub struct SpiffeServerVerifier {
    trust: LiveTrust,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(trust: &LiveTrust, expected: Identity) -> Self {
        Self {
            trust: trust.clone(),
            expected,
            provider: crypto_provider(),
        }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            self.trust.load().root_store_ref(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let info = CertificateInfo::parse(end_entity).map_err(other_error)?;
        if !info.identities.contains(&self.expected) {
            return Err(other_error(IdentityMismatch {
                expected: self.expected.clone(),
                presented: info.identities,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side: a client certificate is required, its chain must lead to the trust bundle,
/// and it must carry exactly one SPIFFE identity (the one policy will be checked against).
///
/// No root hints are sent (the `certificate_authorities` of the CertificateRequest stay
/// empty, so a client presents its certificate whatever its root): they would be borrowed
/// from a bundle that can change between handshakes, and an empty list is what RFC 8446
/// allows for "any".
pub struct SpiffeClientVerifier {
    trust: LiveTrust,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    pub fn new(trust: &LiveTrust) -> Self {
        Self {
            trust: trust.clone(),
            provider: crypto_provider(),
        }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .load()
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = CertificateInfo::parse(end_entity).map_err(other_error)?;
        info.single_identity().map_err(other_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS server's certificate checked as any TLS client would (chain to the trust bundle,
/// validity, the server's DNS name or IP address in its SANs), against the bundle in force
/// at the handshake: how agents and waypoints verify the CA, whose serving certificate a
/// restarted CA may issue under a new root.
pub struct LiveWebPkiServerVerifier {
    trust: LiveTrust,
    provider: Arc<CryptoProvider>,
}

impl LiveWebPkiServerVerifier {
    pub fn new(trust: &LiveTrust) -> Self {
        Self {
            trust: trust.clone(),
            provider: crypto_provider(),
        }
    }
}

impl fmt::Debug for LiveWebPkiServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveWebPkiServerVerifier")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for LiveWebPkiServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust.load().server_verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `certificate` carries one of `wanted` among its DNS and URI names (Envoy's
/// `match_subject_alt_names`, exact). `true` when nothing is wanted.
pub fn certificate_names_match(wanted: &[String], certificate: &CertificateDer<'_>) -> bool {
    if wanted.is_empty() {
        return true;
    }
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let Ok((_, parsed)) = x509_parser::certificate::X509Certificate::from_der(certificate) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(n) | GeneralName::URI(n) => wanted.iter().any(|w| w == n),
        _ => false,
    })
}

/// The server presented a valid chain whose certificate carries none of the names wanted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server certificate carries none of the subject alt names {wanted:?}")]
pub struct SubjectAltNameMismatch {
    pub wanted: Vec<String>,
}

/// How a TLS client checks a server outside the mesh (a DestinationRule's `tls` at a
/// waypoint): the chain must lead to `roots`, and the certificate must carry one of
/// `subject_alt_names` (DNS or URI, exact), or, when none is given, the server name the
/// client sent (its SNI) — never neither. `insecure` (`insecureSkipVerify`) accepts any
/// certificate; the handshake's signatures are still checked.
pub struct ExternalServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    subject_alt_names: Vec<String>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl ExternalServerVerifier {
    pub fn new(
        roots: Arc<rustls::RootCertStore>,
        subject_alt_names: Vec<String>,
        insecure: bool,
    ) -> Self {
        Self {
            roots,
            subject_alt_names,
            insecure,
            provider: crypto_provider(),
        }
    }
}

impl fmt::Debug for ExternalServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalServerVerifier")
            .field("roots", &self.roots.len())
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ExternalServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.subject_alt_names.is_empty() {
            rustls::client::verify_server_name(&parsed, server_name)?;
        } else if !certificate_names_match(&self.subject_alt_names, end_entity) {
            return Err(other_error(SubjectAltNameMismatch {
                wanted: self.subject_alt_names.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the identity manager's current certificate for one identity, looked up at each
/// handshake. Remembers the certificate it last handed out, so the connection it was made
/// for can tell which serial it presented.
pub struct ManagedCertResolver {
    manager: IdentityManager,
    identity: Identity,
    presented: Mutex<Option<Arc<WorkloadCertificate>>>,
}

impl ManagedCertResolver {
    pub fn new(manager: IdentityManager, identity: Identity) -> Self {
        Self {
            manager,
            identity,
            presented: Mutex::new(None),
        }
    }

    /// The certificate handed to the last handshake that asked.
    pub fn presented(&self) -> Option<Arc<WorkloadCertificate>> {
        crate::sync::lock(&self.presented).clone()
    }

    fn resolve_now(&self) -> Option<Arc<CertifiedKey>> {
        let cert = self.manager.current(&self.identity);
        if cert.is_none() {
            tracing::warn!(identity = %self.identity, "no certificate to present in the handshake");
        }
        let key = cert.as_ref().map(|c| c.certified_key());
        *crate::sync::lock(&self.presented) = cert;
        key
    }
}

impl fmt::Debug for ManagedCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedCertResolver")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ResolvesClientCert for ManagedCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.resolve_now()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for ManagedCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolve_now()
    }
}

/// ALPN protocol of HBONE (and of gRPC over TLS).
pub const ALPN_H2: &[u8] = b"h2";

/// A TLS 1.3 client configuration that presents `resolver`'s certificate and accepts only a
/// server that proves `expected`. Session resumption is off: a resumed session would skip
/// the certificates, and with them the identity checks and rotation.
pub fn spiffe_client_config(
    trust: &LiveTrust,
    expected: Identity,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<ClientConfig, TlsConfigError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(trust, expected)))
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A TLS 1.3 server configuration that requires a client certificate with a SPIFFE
/// identity chaining to `trust`, and presents `resolver`'s certificate.
pub fn spiffe_server_config(
    trust: &LiveTrust,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(trust)))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// What a verified peer proved in the handshake.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub identity: Identity,
    pub serial: CertificateSerial,
    pub not_after: SystemTime,
}

impl PeerCertificate {
    /// From the certificates rustls accepted for the peer (leaf first).
    pub fn from_chain(chain: Option<&[CertificateDer<'_>]>) -> Result<Self, CertificateParseError> {
        let leaf = chain
            .and_then(|c| c.first())
            .ok_or(CertificateParseError::NoIdentity)?;
        let info = CertificateInfo::parse(leaf)?;
        let identity = info.single_identity()?.clone();
        Ok(Self {
            identity,
            serial: info.serial,
            not_after: info.not_after,
        })
    }
}
