//! The certificate authority: a signing certificate and key (generated, or read from PEM
//! files as a Kubernetes Secret mounts them) that turns CSRs into workload certificates.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PKCS_RSA_SHA256, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::identity::{
    BoxFuture, CertificateInfo, CertificateIssuer, CertificateRequest, DEFAULT_TRUST_DOMAIN,
    Identity, IssueError, TrustBundle, crypto_provider,
};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA certificate is unusable: {0}")]
    CaCertificate(String),
    #[error("the CA key is unusable (PKCS#8 \"PRIVATE KEY\" PEM expected): {0}")]
    CaKey(String),
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("the CA certificate is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotCa,
    #[error("the CA certificate expired at {0:?}")]
    Expired(SystemTime),
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error("{identity} is outside the trust domain {trust_domain} this CA serves")]
    TrustDomain {
        identity: Identity,
        trust_domain: String,
    },
    #[error("generating a key: {0}")]
    Key(rcgen::Error),
    #[error("signing the certificate: {0}")]
    Sign(rcgen::Error),
}

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub trust_domain: String,
    /// Lifetime of a workload certificate when the request names none (Istio: 24 h).
    pub default_validity: Duration,
    /// Longest lifetime granted, whatever is asked (Istio: 90 days).
    pub max_validity: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            default_validity: Duration::from_secs(24 * 3600),
            max_validity: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// A freshly generated root, as PEM, to be stored (in a Secret, say) and loaded with
/// [`CertificateAuthority::from_pem`]. `Debug` hides the key.
pub struct GeneratedRoot {
    pub certificate_pem: String,
    key_pem: String,
}

impl GeneratedRoot {
    /// A self-signed ECDSA P-256 root for the trust domain (subject `O=<trust domain>`, as
    /// Istio's self-signed root).
    pub fn generate(trust_domain: &str, validity: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Key)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = now_seconds();
        // A root is not rotated often; an hour of back-dating absorbs node clock skew.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + to_time(validity);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        Ok(Self {
            certificate_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The private key, PEM. For writing it where the CA will read it, nothing else.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for GeneratedRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedRoot")
            .field("certificate_pem", &self.certificate_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

pub struct CertificateAuthority {
    config: CaConfig,
    signer: Issuer<'static, KeyPair>,
    /// Appended to every leaf: the signing certificate, then its own chain up to the root.
    chain: Vec<CertificateDer<'static>>,
    signing_not_after: SystemTime,
    trust: TrustBundle,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("signing_not_after", &self.signing_not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The embedded default: a CA with a root generated now, valid ten years, living only
    /// in this process.
    pub fn generate(config: CaConfig) -> Result<Self, CaError> {
        let root = GeneratedRoot::generate(
            &config.trust_domain,
            Duration::from_secs(10 * 365 * 24 * 3600),
        )?;
        Self::from_pem(&root.certificate_pem, root.key_pem(), config)
    }

    /// A CA from its certificate and PKCS#8 key in PEM. The certificate text may continue
    /// with the chain of an intermediate CA up to its root; the last certificate is the
    /// root peers trust.
    pub fn from_pem(cert_pem: &str, key_pem: &str, config: CaConfig) -> Result<Self, CaError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaError::CaCertificate(e.to_string()))?;
        let signing = chain
            .first()
            .ok_or_else(|| CaError::CaCertificate("no CERTIFICATE block".to_owned()))?;
        let info =
            CertificateInfo::parse(signing).map_err(|e| CaError::CaCertificate(e.to_string()))?;
        if !info.is_ca {
            return Err(CaError::NotCa);
        }
        if info.not_after <= SystemTime::now() {
            return Err(CaError::Expired(info.not_after));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::CaKey(e.to_string()))?;
        if key.subject_public_key_info() != info.public_key_info {
            return Err(CaError::KeyMismatch);
        }
        let signer = Issuer::from_ca_cert_der(signing, key)
            .map_err(|e| CaError::CaCertificate(e.to_string()))?;
        let root = chain.last().cloned().into_iter();
        let trust =
            TrustBundle::from_der(root).map_err(|e| CaError::CaCertificate(e.to_string()))?;
        Ok(Self {
            config,
            signer,
            signing_not_after: info.not_after,
            chain,
            trust,
        })
    }

    /// [`Self::from_pem`] from files, e.g. `ca-cert.pem` and `ca-key.pem` of a mounted Secret.
    pub fn from_pem_files(
        cert_path: &Path,
        key_path: &Path,
        config: CaConfig,
    ) -> Result<Self, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(cert_path)?, &read(key_path)?, config)
    }

    pub fn trust_domain(&self) -> &str {
        &self.config.trust_domain
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The roots workloads verify peers against.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.trust.clone()
    }

    pub fn root_certificate_pem(&self) -> String {
        self.trust.to_pem()
    }

    /// Signs the CSR's key into a certificate for `identity`. The identity comes from the
    /// caller's authorization, not from the CSR: whatever names the CSR asks for are
    /// ignored, so a CSR can never widen what was authorized. `validity` is clamped to the
    /// configured maximum and to the CA's own expiry. Returns leaf, then the CA chain.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if identity.trust_domain() != self.config.trust_domain {
            return Err(CaError::TrustDomain {
                identity: identity.clone(),
                trust_domain: self.config.trust_domain.clone(),
            });
        }
        let public_key = CsrPublicKey::from_pem(csr_pem)?;
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Csr(e.to_string()))?;
        let mut params = self.leaf_params(validity);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
        let leaf = params
            .signed_by(&public_key, &self.signer)
            .map_err(CaError::Sign)?;
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(leaf.der().clone());
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// A server certificate for the CA's own gRPC endpoint, under the given DNS names or
    /// IP addresses. The key is generated here and goes straight into rustls.
    pub fn issue_serving_certificate(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<Arc<CertifiedKey>, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Key)?;
        let mut params = self.leaf_params(Some(validity));
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(CaError::Sign),
            })
            .collect::<Result<_, _>>()?;
        let leaf = params
            .signed_by(&key, &self.signer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(
            self.chain
                .iter()
                .take(self.chain.len().saturating_sub(1))
                .cloned(),
        );
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = crypto_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| CaError::CaKey(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
    }

    /// What every leaf shares: an empty subject (SPIFFE), not a CA, signature and key
    /// encipherment, server authentication, a random serial, and a validity starting now.
    fn leaf_params(&self, validity: Option<Duration>) -> CertificateParams {
        let validity = match validity {
            Some(v) if !v.is_zero() => v,
            _ => self.config.default_validity,
        }
        .min(self.config.max_validity);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        // Whole seconds, truncated: X.509 times have no fractions, and rounding up would
        // make a certificate not yet valid for the first fraction of a second.
        let not_before = now_seconds();
        let signing_not_after = OffsetDateTime::from(self.signing_not_after);
        params.not_before = not_before;
        params.not_after = (not_before + to_time(validity)).min(signing_not_after);
        params
    }
}

impl CertificateIssuer for CertificateAuthority {
    fn issue(
        &self,
        request: CertificateRequest,
    ) -> BoxFuture<'_, Result<Vec<CertificateDer<'static>>, IssueError>> {
        let result = self
            .sign_csr(&request.csr_pem, &request.identity, Some(request.validity))
            .map_err(|e| IssueError::Refused {
                identity: request.identity.clone(),
                reason: e.to_string(),
            });
        Box::pin(std::future::ready(result))
    }
}

/// The public key of a CSR whose self-signature verified.
struct CsrPublicKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl CsrPublicKey {
    fn from_pem(pem: &str) -> Result<Self, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::Csr(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CaError::Csr(format!("not a DER PKCS#10 request: {e}")))?;
        // Proof of possession: only the holder of the key can have signed the request.
        csr.verify_signature()
            .map_err(|e| CaError::Csr(format!("its signature does not verify: {e}")))?;
        let spki = &csr.certification_request_info.subject_pki;
        let key_oid = &spki.algorithm.algorithm;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let alg = if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            match curve {
                Some(c) if c == OID_EC_P256 => &PKCS_ECDSA_P256_SHA256,
                Some(c) if c == OID_NIST_EC_P384 => &PKCS_ECDSA_P384_SHA384,
                other => {
                    return Err(CaError::Csr(format!(
                        "unsupported elliptic curve {}",
                        other.map_or_else(|| "(none)".to_owned(), |c| c.to_id_string())
                    )));
                }
            }
        } else if *key_oid == OID_PKCS1_RSAENCRYPTION {
            &PKCS_RSA_SHA256
        } else if *key_oid == OID_SIG_ED25519 {
            &PKCS_ED25519
        } else {
            return Err(CaError::Csr(format!(
                "unsupported key type {}",
                key_oid.to_id_string()
            )));
        };
        Ok(Self {
            raw: spki.subject_public_key.data.to_vec(),
            alg,
        })
    }
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

fn now_seconds() -> OffsetDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// 128 random bits, positive as DER requires and never zero-led, as RFC 5280 recommends.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    if crypto_provider().secure_random.fill(&mut bytes).is_err() {
        // Only reachable if the OS has no randomness at all; fall back to the clock so that
        // serials still differ.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_be_bytes();
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::WorkloadKey;

    fn identity(ns: &str, sa: &str) -> Identity {
        Identity::in_default_trust_domain(ns, sa).expect("valid")
    }

    #[test]
    fn signs_for_the_authorized_identity_not_the_one_in_the_csr() {
        let ca = CertificateAuthority::generate(CaConfig::default()).expect("ca");
        let key = WorkloadKey::generate().expect("key");
        let csr = key.csr_pem(&identity("evil", "admin")).expect("csr");
        let chain = ca
            .sign_csr(&csr, &identity("shop", "web"), None)
            .expect("signed");
        assert_eq!(chain.len(), 2, "leaf and root");
        let info = CertificateInfo::parse(&chain[0]).expect("parse");
        assert_eq!(info.identities, vec![identity("shop", "web")]);
        assert_eq!(info.public_key_info, key.public_key_info());
        assert!(!info.is_ca);
        assert_eq!(ca.trust_bundle().certificates(), &chain[1..]);
    }

    #[test]
    fn validity_is_the_request_clamped_to_the_maximum() {
        let config = CaConfig {
            max_validity: Duration::from_secs(3600),
            ..CaConfig::default()
        };
        let ca = CertificateAuthority::generate(config).expect("ca");
        let csr = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&identity("a", "b"))
            .expect("csr");
        let lifetime = |validity| {
            let chain = ca
                .sign_csr(&csr, &identity("a", "b"), validity)
                .expect("signed");
            let info = CertificateInfo::parse(&chain[0]).expect("parse");
            info.not_after
                .duration_since(info.not_before)
                .expect("ordered")
        };
        assert_eq!(
            lifetime(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            lifetime(Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600)
        );
        // No request (or zero): the default, itself clamped.
        assert_eq!(lifetime(None), Duration::from_secs(3600));
    }

    #[test]
    fn serials_differ() {
        let ca = CertificateAuthority::generate(CaConfig::default()).expect("ca");
        let csr = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&identity("a", "b"))
            .expect("csr");
        let serial = || {
            let chain = ca
                .sign_csr(&csr, &identity("a", "b"), None)
                .expect("signed");
            CertificateInfo::parse(&chain[0]).expect("parse").serial
        };
        assert_ne!(serial(), serial());
    }

    #[test]
    fn refuses_other_trust_domains_and_garbage_csrs() {
        let ca = CertificateAuthority::generate(CaConfig::default()).expect("ca");
        let other = Identity::new("example.org", "a", "b").expect("valid");
        let csr = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&other)
            .expect("csr");
        assert!(matches!(
            ca.sign_csr(&csr, &other, None),
            Err(CaError::TrustDomain { .. })
        ));
        assert!(matches!(
            ca.sign_csr("not a csr", &identity("a", "b"), None),
            Err(CaError::Csr(_))
        ));
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = CertificateAuthority::generate(CaConfig::default()).expect("ca");
        let csr_pem = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&identity("a", "b"))
            .expect("csr");
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .expect("pem")
            .as_ref()
            .to_vec();
        // Flip a bit in the middle of the signed part (inside the public key).
        let middle = der.len() / 2;
        der[middle] ^= 0x01;
        let pem = crate::identity::trust::der_to_pem(&CertificateDer::from(der))
            .replace("CERTIFICATE", "CERTIFICATE REQUEST");
        assert!(matches!(
            ca.sign_csr(&pem, &identity("a", "b"), None),
            Err(CaError::Csr(_))
        ));
    }

    #[test]
    fn loads_from_pem_and_refuses_a_foreign_key() {
        let root =
            GeneratedRoot::generate("cluster.local", Duration::from_secs(3600)).expect("root");
        let other =
            GeneratedRoot::generate("cluster.local", Duration::from_secs(3600)).expect("root");
        let ca = CertificateAuthority::from_pem(
            &root.certificate_pem,
            root.key_pem(),
            CaConfig::default(),
        )
        .expect("loads");
        assert_eq!(
            ca.root_certificate_pem().trim(),
            root.certificate_pem.trim()
        );
        assert!(matches!(
            CertificateAuthority::from_pem(
                &root.certificate_pem,
                other.key_pem(),
                CaConfig::default()
            ),
            Err(CaError::KeyMismatch)
        ));
        assert!(!format!("{root:?}").contains("PRIVATE KEY"));
    }
}
