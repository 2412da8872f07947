//! The mesh's trust bundle: the root certificates peers' chains must lead to.
//!
//! A [`TrustBundle`] is one immutable set of roots (one or several: during a root rotation
//! the old and the new root are trusted together, a PEM concatenation as in Istio's
//! multi-root bundles), with the rustls verifiers built from it once. A [`LiveTrust`] is the
//! bundle in force in a process: the TLS verifiers of `super::tls` read it at every
//! handshake, and replacing it (`super::trust_file` does when the bundle's file changes)
//! takes effect at the next handshake, while connections already open keep running.
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::{self, SectionKind};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::crypto::crypto_provider;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TrustBundleError {
    #[error("reading PEM certificates: {0}")]
    Pem(String),
    #[error("the trust bundle holds no certificate")]
    Empty,
    #[error(
        "PEM block #{index} of the trust bundle is a {kind}, not a CERTIFICATE: a trust bundle \
         holds root certificates only (never a key)"
    )]
    NotACertificate { index: usize, kind: String },
    #[error("root certificate #{index} is not a readable X.509 certificate: {reason}")]
    Unreadable { index: usize, reason: String },
    #[error(
        "root certificate #{index} ({subject}) is not a CA certificate (basicConstraints \
         CA:TRUE missing): a trust bundle holds the mesh's roots, not workload certificates"
    )]
    NotCa { index: usize, subject: String },
    #[error("root certificate #{index} is unusable as a trust anchor: {reason}")]
    Anchor { index: usize, reason: String },
    #[error("building the verifiers of the trust bundle: {0}")]
    Verifier(String),
}

/// What a user needs to tell roots apart (`/certs` shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    /// SHA-256 of the DER certificate, colon-separated upper-case hex, as
    /// `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint_sha256: String,
    /// The subject, RFC 4514 style (`O=cluster.local`).
    pub subject: String,
    pub not_after: SystemTime,
}

/// Root certificates, shared cheaply between TLS configurations.
#[derive(Clone)]
pub struct TrustBundle {
    store: Arc<RootCertStore>,
    certificates: Arc<[CertificateDer<'static>]>,
    roots: Arc<[RootInfo]>,
    /// Built once per bundle: a handshake only borrows them.
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
}

impl TrustBundle {
    /// The roots, in order, duplicates dropped. Each must be a CA certificate.
    pub fn from_der(
        certificates: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TrustBundleError> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for cert in certificates {
            if !unique.contains(&cert) {
                unique.push(cert);
            }
        }
        if unique.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        let mut store = RootCertStore::empty();
        let mut roots = Vec::with_capacity(unique.len());
        for (index, cert) in unique.iter().enumerate() {
            roots.push(root_info(index, cert)?);
            store
                .add(cert.clone())
                .map_err(|e| TrustBundleError::Anchor {
                    index,
                    reason: e.to_string(),
                })?;
        }
        let store = Arc::new(store);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&store), crypto_provider())
                .build()
                .map_err(|e| TrustBundleError::Verifier(e.to_string()))?;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&store), crypto_provider())
                .build()
                .map_err(|e| TrustBundleError::Verifier(e.to_string()))?;
        Ok(Self {
            store,
            certificates: unique.into(),
            roots: roots.into(),
            client_verifier,
            server_verifier,
        })
    }

    /// All `CERTIFICATE` blocks of a PEM text (a mounted `root-cert.pem`, for instance;
    /// several roots are several blocks, one after the other). Any other block (a key, a
    /// CSR) refuses the whole text, and so does a block that does not decode.
    pub fn from_pem(text: &str) -> Result<Self, TrustBundleError> {
        let mut reader = text.as_bytes();
        let mut certificates = Vec::new();
        let mut index = 0;
        while let Some((kind, der)) =
            pem::from_buf(&mut reader).map_err(|e| TrustBundleError::Pem(e.to_string()))?
        {
            if kind != SectionKind::Certificate {
                return Err(TrustBundleError::NotACertificate {
                    index,
                    kind: section_name(kind),
                });
            }
            certificates.push(CertificateDer::from(der));
            index += 1;
        }
        Self::from_der(certificates)
    }

    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    pub(crate) fn root_store_ref(&self) -> &RootCertStore {
        &self.store
    }

    /// Verifies client certificates (any SPIFFE identity) against these roots.
    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }

    /// Verifies a TLS server's certificate and name (the CA's) against these roots.
    pub(crate) fn server_verifier(&self) -> &Arc<WebPkiServerVerifier> {
        &self.server_verifier
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// One entry per root, in the order of the bundle.
    pub fn roots(&self) -> &[RootInfo] {
        &self.roots
    }

    pub fn to_pem(&self) -> String {
        self.certificates.iter().map(|c| der_to_pem(c)).collect()
    }

    /// The union of two bundles, as during a root migration when both roots are trusted.
    pub fn merged(&self, other: &TrustBundle) -> Result<Self, TrustBundleError> {
        Self::from_der(
            self.certificates
                .iter()
                .chain(other.certificates())
                .cloned(),
        )
    }

    /// Whether both hold the same roots, in whatever order.
    pub fn same_roots(&self, other: &TrustBundle) -> bool {
        let mine: HashSet<&[u8]> = self.certificates.iter().map(AsRef::as_ref).collect();
        let theirs: HashSet<&[u8]> = other.certificates.iter().map(AsRef::as_ref).collect();
        mine == theirs
    }

    /// Whether `der` is one of the roots.
    pub fn contains(&self, der: &CertificateDer<'_>) -> bool {
        self.certificates.iter().any(|c| c.as_ref() == der.as_ref())
    }

    /// Checks a chain as a peer would see it in a handshake (leaf, then intermediates)
    /// against these roots, at `time`, as a client certificate (every workload certificate
    /// is one: HBONE is mutual TLS).
    pub fn verify_client_chain(
        &self,
        presented: &[CertificateDer<'_>],
        time: SystemTime,
    ) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = presented
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.client_verifier
            .verify_client_cert(
                leaf,
                intermediates,
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            )
            .map(|_| ())
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field(
                "roots",
                &self
                    .roots
                    .iter()
                    .map(|r| r.fingerprint_sha256.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn root_info(index: usize, der: &CertificateDer<'_>) -> Result<RootInfo, TrustBundleError> {
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|e| TrustBundleError::Unreadable {
            index,
            reason: e.to_string(),
        })?;
    let subject = cert.subject().to_string();
    if !cert.is_ca() {
        return Err(TrustBundleError::NotCa { index, subject });
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).map_or(UNIX_EPOCH, |s| {
        UNIX_EPOCH + std::time::Duration::from_secs(s)
    });
    Ok(RootInfo {
        fingerprint_sha256: sha256_fingerprint(der.as_ref()),
        subject,
        not_after,
    })
}

fn section_name(kind: SectionKind) -> String {
    match kind {
        SectionKind::Certificate => "CERTIFICATE".into(),
        SectionKind::PublicKey => "PUBLIC KEY".into(),
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY".into(),
        SectionKind::PrivateKey => "PRIVATE KEY".into(),
        SectionKind::EcPrivateKey => "EC PRIVATE KEY".into(),
        SectionKind::Crl => "X509 CRL".into(),
        SectionKind::Csr => "CERTIFICATE REQUEST".into(),
        SectionKind::EchConfigList => "ECHCONFIG".into(),
        other => format!("{other:?}"),
    }
}

/// SHA-256 of `der`, colon-separated upper-case hex (`openssl x509 -fingerprint -sha256`).
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The trust bundle in force in a process. Cheap to clone (clones share it); reading it is
/// one atomic load, so verifiers read it at every handshake. [`LiveTrust::replace`] swaps it
/// for the next handshakes and tells subscribers (the identity manager re-checks its
/// certificates against the new roots).
#[derive(Clone)]
pub struct LiveTrust {
    inner: Arc<LiveInner>,
}

struct LiveInner {
    current: ArcSwap<TrustBundle>,
    /// Bumped at every replacement.
    version: tokio::sync::watch::Sender<u64>,
    /// Why the last candidate bundle was refused, until a good one is loaded.
    refused: Mutex<Option<String>>,
}

impl LiveTrust {
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            inner: Arc::new(LiveInner {
                current: ArcSwap::from_pointee(bundle),
                version: tokio::sync::watch::Sender::new(0),
                refused: Mutex::new(None),
            }),
        }
    }

    /// The bundle in force now.
    pub fn current(&self) -> Arc<TrustBundle> {
        self.inner.current.load_full()
    }

    /// For the hot path: no reference count is touched.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<TrustBundle>> {
        self.inner.current.load()
    }

    /// Puts `bundle` in force for every handshake from now on. Returns false (and changes
    /// nothing) when it holds the same roots as the bundle in force.
    pub fn replace(&self, bundle: TrustBundle) -> bool {
        *crate::sync::lock(&self.inner.refused) = None;
        if self.inner.current.load().same_roots(&bundle) {
            return false;
        }
        self.inner.current.store(Arc::new(bundle));
        self.inner.version.send_modify(|v| *v += 1);
        true
    }

    /// Records why a candidate bundle was refused (the bundle in force stays).
    pub fn refuse(&self, reason: String) {
        *crate::sync::lock(&self.inner.refused) = Some(reason);
    }

    /// Why the last candidate was refused, if no good bundle came since.
    pub fn refusal(&self) -> Option<String> {
        crate::sync::lock(&self.inner.refused).clone()
    }

    /// How many times the bundle was replaced.
    pub fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// Changes from now on (`changed()` resolves at the next replacement).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.version.subscribe()
    }
}

impl From<TrustBundle> for LiveTrust {
    /// A bundle that nothing replaces (tests, a process without a watched file).
    fn from(bundle: TrustBundle) -> Self {
        Self::new(bundle)
    }
}

impl fmt::Debug for LiveTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTrust")
            .field("current", &*self.load())
            .field("version", &self.version())
            .finish()
    }
}

/// PEM text of one DER certificate, in the form Istio's API carries certificates.
pub fn der_to_pem(der: &CertificateDer<'_>) -> String {
    const LINE: usize = 64;
    let encoded = base64_encode(der.as_ref());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / LINE + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in encoded.as_bytes().chunks(LINE) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::{CaConfig, CertificateAuthority, GeneratedRoot};
    use crate::identity::{Identity, WorkloadKey};

    fn root() -> GeneratedRoot {
        GeneratedRoot::generate("cluster.local", Duration::from_secs(3600)).expect("root")
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }

    #[test]
    fn pem_round_trips_through_the_parser() {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from((0u8..=200).collect::<Vec<u8>>());
        let pem = der_to_pem(&der);
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parses");
        assert_eq!(back, der);
    }

    #[test]
    fn fingerprint_is_colon_separated_upper_hex_sha256() {
        // SHA-256("abc")
        assert_eq!(
            sha256_fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn empty_bundle_is_refused() {
        assert!(matches!(
            TrustBundle::from_pem(""),
            Err(TrustBundleError::Empty)
        ));
        assert!(matches!(
            TrustBundle::from_pem("just some text, no PEM at all\n"),
            Err(TrustBundleError::Empty)
        ));
    }

    #[test]
    fn several_roots_in_one_text_are_all_trusted_in_order() {
        let (old, new) = (root(), root());
        let text = format!(
            "# the old root, then the new one\n{}\n{}",
            old.certificate_pem, new.certificate_pem
        );
        let bundle = TrustBundle::from_pem(&text).expect("two roots");
        assert_eq!(bundle.roots().len(), 2);
        let single = |pem: &str| TrustBundle::from_pem(pem).expect("one root");
        assert_eq!(
            bundle.roots()[0],
            single(&old.certificate_pem).roots()[0].clone()
        );
        assert_eq!(
            bundle.roots()[1],
            single(&new.certificate_pem).roots()[0].clone()
        );
        assert_eq!(bundle.roots()[0].subject, "O=cluster.local");
        assert_eq!(bundle.roots()[0].fingerprint_sha256.len(), 32 * 3 - 1);
        // The same root twice is one root.
        let twice = format!("{}{}", old.certificate_pem, old.certificate_pem);
        assert_eq!(single(&twice).roots().len(), 1);
    }

    #[test]
    fn merging_is_a_union_and_same_roots_ignores_order() {
        let (a, b) = (root(), root());
        let a = TrustBundle::from_pem(&a.certificate_pem).expect("a");
        let b = TrustBundle::from_pem(&b.certificate_pem).expect("b");
        let ab = a.merged(&b).expect("a+b");
        let ba = b.merged(&a).expect("b+a");
        assert_eq!(ab.certificates().len(), 2);
        assert!(ab.same_roots(&ba));
        assert!(!ab.same_roots(&a));
        assert!(ab.merged(&a).expect("a+b+a").same_roots(&ab));
        assert!(ab.contains(&a.certificates()[0]) && ab.contains(&b.certificates()[0]));
        // The PEM form reads back to the same roots.
        assert!(
            TrustBundle::from_pem(&ab.to_pem())
                .expect("pem")
                .same_roots(&ab)
        );
    }

    #[test]
    fn a_key_in_the_bundle_refuses_it() {
        let r = root();
        let text = format!("{}{}", r.certificate_pem, r.key_pem());
        let error = TrustBundle::from_pem(&text).expect_err("a key is no root");
        assert!(
            matches!(&error, TrustBundleError::NotACertificate { index: 1, kind } if kind == "PRIVATE KEY"),
            "{error}"
        );
        assert!(error.to_string().contains("never a key"), "{error}");
    }

    #[test]
    fn a_truncated_or_corrupt_block_refuses_the_whole_text() {
        let (a, b) = (root(), root());
        let good = format!("{}{}", a.certificate_pem, b.certificate_pem);
        // Cut in the middle of the second block (a writer caught half-way).
        let truncated = &good[..good.len() - 100];
        assert!(matches!(
            TrustBundle::from_pem(truncated),
            Err(TrustBundleError::Pem(_))
        ));
        // Base64 that decodes to something that is not a certificate.
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TrustBundle::from_pem(&format!("{}{garbage}", a.certificate_pem)),
            Err(TrustBundleError::Unreadable { index: 1, .. })
        ));
    }

    #[test]
    fn a_workload_certificate_is_no_root() {
        let ca = CertificateAuthority::generate(CaConfig::default()).expect("ca");
        let identity = Identity::in_default_trust_domain("a", "b").expect("id");
        let csr = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&identity)
            .expect("csr");
        let chain = ca.sign_csr(&csr, &identity, None).expect("signed");
        let error = TrustBundle::from_der([chain[0].clone()]).expect_err("a leaf");
        assert!(matches!(error, TrustBundleError::NotCa { index: 0, .. }));
    }

    #[test]
    fn chains_verify_against_the_roots_they_lead_to_only() {
        let ca_a = CertificateAuthority::generate(CaConfig::default()).expect("ca a");
        let ca_b = CertificateAuthority::generate(CaConfig::default()).expect("ca b");
        let identity = Identity::in_default_trust_domain("a", "b").expect("id");
        let csr = WorkloadKey::generate()
            .expect("key")
            .csr_pem(&identity)
            .expect("csr");
        let leaf_a = ca_a.sign_csr(&csr, &identity, None).expect("signed");
        let now = SystemTime::now();
        // As presented in a handshake: without the root.
        let presented = &leaf_a[..1];
        assert!(
            ca_a.trust_bundle()
                .verify_client_chain(presented, now)
                .is_ok()
        );
        assert!(
            ca_b.trust_bundle()
                .verify_client_chain(presented, now)
                .is_err()
        );
        let both = ca_b
            .trust_bundle()
            .merged(&ca_a.trust_bundle())
            .expect("both");
        assert!(both.verify_client_chain(presented, now).is_ok());
    }

    #[test]
    fn live_trust_replaces_only_on_a_change_of_roots() {
        let (a, b) = (root(), root());
        let a = TrustBundle::from_pem(&a.certificate_pem).expect("a");
        let b = TrustBundle::from_pem(&b.certificate_pem).expect("b");
        let live = LiveTrust::new(a.clone());
        let clone = live.clone();
        let changes = live.subscribe();
        assert!(!live.replace(a.clone()), "the same roots change nothing");
        assert_eq!(live.version(), 0);
        assert!(!changes.has_changed().expect("open"));
        let ab = a.merged(&b).expect("a+b");
        assert!(live.replace(ab.clone()));
        assert_eq!(clone.version(), 1);
        assert!(clone.current().same_roots(&ab), "clones share the bundle");
        assert!(changes.has_changed().expect("open"));
        live.refuse("bad file".into());
        assert_eq!(clone.refusal().as_deref(), Some("bad file"));
        assert!(!live.replace(ab), "unchanged");
        assert_eq!(live.refusal(), None, "a good bundle clears the refusal");
    }
}
