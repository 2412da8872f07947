//! Workload keys and the certificate signing requests made with them.
//!
//! A key is generated in this process for each certificate and never leaves it: only the
//! CSR (public key and SPIFFE id) is sent to the CA. Nothing here formats key material for
//! logs; `Debug` shows the algorithm only.
use std::fmt;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;

use super::crypto::crypto_provider;
use super::spiffe::Identity;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("generating an ECDSA P-256 key: {0}")]
    Generate(rcgen::Error),
    #[error("building the CSR for {identity}: {source}")]
    Csr {
        identity: Identity,
        source: rcgen::Error,
    },
    #[error("loading the key into rustls: {0}")]
    Load(rustls::Error),
}

/// A freshly generated ECDSA P-256 key pair for one certificate.
pub struct WorkloadKey {
    pair: KeyPair,
}

impl WorkloadKey {
    pub fn generate() -> Result<Self, KeyError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(|pair| Self { pair })
            .map_err(KeyError::Generate)
    }

    /// A PEM CSR for the identity, with the SPIFFE id as its only URI SAN and an empty
    /// subject, as Istio's agents send.
    pub fn csr_pem(&self, identity: &Identity) -> Result<String, KeyError> {
        let mut params = CertificateParams::default();
        // rcgen's default subject is a placeholder common name; SPIFFE certificates have none.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|source| KeyError::Csr {
                identity: identity.clone(),
                source,
            })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(|source| KeyError::Csr {
                identity: identity.clone(),
                source,
            })
    }

    /// DER SubjectPublicKeyInfo, to check that an issued certificate is for this key.
    pub fn public_key_info(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.pair.subject_public_key_info()
    }

    /// The key as rustls signs with it. Consumes the key pair so that the only copy of the
    /// private key afterwards lives inside rustls.
    pub(crate) fn into_signing_key(self) -> Result<Arc<dyn SigningKey>, KeyError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pair.serialize_der()));
        crypto_provider()
            .key_provider
            .load_private_key(der)
            .map_err(KeyError::Load)
    }
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(ECDSA P-256, redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_carries_the_spiffe_id_as_uri_san_and_a_valid_signature() {
        let identity = Identity::in_default_trust_domain("shop", "web").expect("valid");
        let key = WorkloadKey::generate().expect("key");
        let pem = key.csr_pem(&identity).expect("csr");
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).expect("CSR PEM");
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("DER CSR");
        csr.verify_signature().expect("self-signature verifies");
        let uris: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![identity.to_string()]);
        assert_eq!(
            csr.certification_request_info.subject.iter().count(),
            0,
            "subject must be empty"
        );
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            key.public_key_info().as_slice()
        );
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let key = WorkloadKey::generate().expect("key");
        assert_eq!(format!("{key:?}"), "WorkloadKey(ECDSA P-256, redacted)");
    }
}
