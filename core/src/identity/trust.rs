//! The mesh's trust bundle: the root certificates peers' chains must lead to.
use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("reading PEM certificates: {0}")]
    Pem(String),
    #[error("the trust bundle holds no certificate")]
    Empty,
    #[error("root certificate #{index} is unusable as a trust anchor: {reason}")]
    Anchor { index: usize, reason: String },
}

/// Root certificates, shared cheaply between TLS configurations.
#[derive(Clone)]
pub struct TrustBundle {
    store: Arc<RootCertStore>,
    certificates: Arc<[CertificateDer<'static>]>,
}

impl TrustBundle {
    pub fn from_der(
        certificates: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TrustBundleError> {
        let certificates: Vec<_> = certificates.into_iter().collect();
        if certificates.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        let mut store = RootCertStore::empty();
        for (index, cert) in certificates.iter().enumerate() {
            store
                .add(cert.clone())
                .map_err(|e| TrustBundleError::Anchor {
                    index,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            store: Arc::new(store),
            certificates: certificates.into(),
        })
    }

    /// All `CERTIFICATE` blocks of a PEM text (a mounted `root-cert.pem`, for instance).
    pub fn from_pem(pem: &str) -> Result<Self, TrustBundleError> {
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustBundleError::Pem(e.to_string()))?;
        Self::from_der(certificates)
    }

    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    pub fn to_pem(&self) -> String {
        self.certificates.iter().map(|c| der_to_pem(c)).collect()
    }

    /// The union of two bundles, as during a root migration when both roots are trusted.
    pub fn merged(&self, other: &TrustBundle) -> Result<Self, TrustBundleError> {
        let mut all: Vec<_> = self.certificates.to_vec();
        for cert in other.certificates() {
            if !all.contains(cert) {
                all.push(cert.clone());
            }
        }
        Self::from_der(all)
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.certificates.len())
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
    use super::*;

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
        let der = CertificateDer::from((0u8..=200).collect::<Vec<u8>>());
        let pem = der_to_pem(&der);
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parses");
        assert_eq!(back, der);
    }

    #[test]
    fn empty_bundle_is_refused() {
        assert!(matches!(
            TrustBundle::from_pem(""),
            Err(TrustBundleError::Empty)
        ));
    }
}
