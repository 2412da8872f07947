//! Where certificates come from: a CA reached over gRPC, or one running in this process.
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::spiffe::Identity;

/// A boxed future, so that traits stay usable as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One certificate request: the CSR of a key generated for `identity`.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub identity: Identity,
    pub csr_pem: String,
    /// The lifetime asked for; the CA may shorten it.
    pub validity: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IssueError {
    #[error("the CA refused {identity}: {reason}")]
    Refused { identity: Identity, reason: String },
    #[error("the CA is unreachable for {identity}: {reason}")]
    Unavailable { identity: Identity, reason: String },
    #[error("the CA answered for {identity} with something unusable: {reason}")]
    BadResponse { identity: Identity, reason: String },
}

/// Signs certificate requests. Implemented by the gRPC client of Istio's certificate API
/// ([`crate::ca::GrpcIssuer`]) and by the in-process CA ([`crate::ca::CertificateAuthority`]).
pub trait CertificateIssuer: Send + Sync + 'static {
    /// The chain for the request: leaf first, then intermediates, root last.
    fn issue(
        &self,
        request: CertificateRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, IssueError>>;
}
