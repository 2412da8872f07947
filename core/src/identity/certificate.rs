//! A workload certificate together with the key it was issued for.
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::keys::{KeyError, WorkloadKey};
use super::spiffe::Identity;
use super::trust::{TrustBundle, sha256_fingerprint};
use super::x509::{CertificateInfo, CertificateParseError, CertificateSerial};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the CA returned an empty certificate chain for {0}")]
    EmptyChain(Identity),
    #[error("the certificate issued for {identity} is unreadable: {source}")]
    Parse {
        identity: Identity,
        source: CertificateParseError,
    },
    #[error("the certificate issued for {requested} names {issued} instead")]
    WrongIdentity {
        requested: Identity,
        issued: Identity,
    },
    #[error("the certificate issued for {0} is not for the key this agent generated")]
    WrongKey(Identity),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The current certificate of one identity: what the TLS layer presents for it.
pub struct WorkloadCertificate {
    identity: Identity,
    info: CertificateInfo,
    chain: Vec<CertificateDer<'static>>,
    certified_key: Arc<CertifiedKey>,
}

impl WorkloadCertificate {
    /// Checks what a CA returned (leaf first, then intermediates, root last, as Istio's API
    /// orders them) against the identity requested and the key generated for it.
    pub fn from_issued(
        identity: Identity,
        key: WorkloadKey,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CertificateError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CertificateError::EmptyChain(identity.clone()))?;
        let info = CertificateInfo::parse(leaf).map_err(|source| CertificateError::Parse {
            identity: identity.clone(),
            source,
        })?;
        let issued = info
            .single_identity()
            .map_err(|source| CertificateError::Parse {
                identity: identity.clone(),
                source,
            })?;
        if *issued != identity {
            return Err(CertificateError::WrongIdentity {
                requested: identity,
                issued: issued.clone(),
            });
        }
        if info.public_key_info != key.public_key_info() {
            return Err(CertificateError::WrongKey(identity));
        }
        // Peers hold the root already; sending it would only cost bytes on every handshake.
        let presented = match chain.len() {
            0 | 1 => chain.clone(),
            n => chain[..n - 1].to_vec(),
        };
        let certified_key = Arc::new(CertifiedKey::new(presented, key.into_signing_key()?));
        Ok(Self {
            identity,
            info,
            chain,
            certified_key,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn serial(&self) -> &CertificateSerial {
        &self.info.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.info.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    pub fn is_valid_at(&self, time: SystemTime) -> bool {
        self.info.not_before <= time && time < self.info.not_after
    }

    /// The chain as issued: leaf, intermediates, root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `from_issued` refuses an empty chain.
        &self.chain[0]
    }

    /// Whether peers trusting `bundle` accept this certificate: the chain as handshakes
    /// present it, verified against the bundle's roots. Checked at `now`, or at the start
    /// of the validity when that is later (a CA clock slightly ahead is no reason to
    /// doubt the chain).
    pub fn chains_to(&self, bundle: &TrustBundle, now: SystemTime) -> Result<(), rustls::Error> {
        bundle.verify_client_chain(&self.certified_key.cert, now.max(self.info.not_before))
    }

    /// The SHA-256 fingerprint of the last certificate of the chain as issued (the root).
    pub fn root_fingerprint(&self) -> Option<String> {
        self.chain.last().map(|c| sha256_fingerprint(c.as_ref()))
    }

    /// The chain and signing key rustls presents in handshakes.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified_key)
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("serial", &self.info.serial)
            .field("not_before", &self.info.not_before)
            .field("not_after", &self.info.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}
