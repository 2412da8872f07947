//! Mesh identity: SPIFFE ids, workload keys and certificates, their rotation, the trust
//! bundle, and the rustls pieces that authenticate peers by SPIFFE id.
//!
//! A consumer creates one [`IdentityManager`] with a [`CertificateIssuer`] (the gRPC client
//! of a CA, or the in-process CA) and asks it for certificates by [`Identity`]; the TLS
//! configurations in [`tls`] read the manager at every handshake, and the trust bundle in
//! force ([`LiveTrust`], kept current from its file by [`trust_file`]) likewise.
pub mod certificate;
pub mod crypto;
pub mod issuer;
pub mod keys;
pub mod manager;
pub mod rotation;
pub mod spiffe;
pub mod tls;
pub mod trust;
pub mod trust_file;
pub mod x509;

pub use certificate::{CertificateError, WorkloadCertificate};
pub use crypto::crypto_provider;
pub use issuer::{BoxFuture, CertificateIssuer, CertificateRequest, IssueError};
pub use keys::{KeyError, WorkloadKey};
pub use manager::{IdentityError, IdentityManager, ManagerConfig};
pub use rotation::RotationPolicy;
pub use spiffe::{DEFAULT_TRUST_DOMAIN, Identity, IdentityParseError};
pub use tls::{IdentityMismatch, PeerCertificate};
pub use trust::{LiveTrust, RootInfo, TrustBundle, TrustBundleError, sha256_fingerprint};
pub use trust_file::{TrustFileError, TrustFileWatcher};
pub use x509::{CertificateInfo, CertificateParseError, CertificateSerial};
