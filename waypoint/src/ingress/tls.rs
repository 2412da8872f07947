//! TLS at the edge (the ClientHello's SNI is read first: `crate::client_hello`): the
//! server configurations of SIMPLE, MUTUAL and OPTIONAL_MUTUAL servers built from their `kubernetes.io/tls` Secrets (`tls.crt`,
//! `tls.key`, and `ca.crt` for client certificates), with the server's
//! `minProtocolVersion`, `maxProtocolVersion` and `cipherSuites`.
//!
//! rustls serves TLS 1.2 and 1.3 with forward-secret AEAD suites only; what a Gateway asks
//! beyond that is refused or warned about by validation (`weft_config::validate::gateway`).
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, RootCertStore, ServerConfig};
use weft_config::api::gateway::{ServerTlsMode, ServerTlsSettings};
use weft_config::api::kubernetes::{CA_CERT_KEY, Secret, TLS_CERT_KEY, TLS_KEY_KEY};

/// Why a server cannot terminate TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("Secret {0} (type kubernetes.io/tls) is missing")]
    MissingSecret(String),
    #[error("Secret {secret}: {reason}")]
    BadSecret { secret: String, reason: String },
    #[error("{0}")]
    Settings(String),
}

/// A terminating server's TLS: its rustls configuration and the client certificate
/// names it requires (`subjectAltNames`, MUTUAL and OPTIONAL_MUTUAL).
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub subject_alt_names: Vec<String>,
}

fn provider(tls: &ServerTlsSettings) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let listed: Vec<CipherSuite> = tls
        .cipher_suites
        .iter()
        .flat_map(|entry| weft_config::validate::gateway::cipher_names(entry))
        .filter_map(rustls_suite)
        .collect();
    if !tls.cipher_suites.is_empty() {
        // The listed TLS 1.2 suites, in the provider's order; TLS 1.3's are not
        // configurable (as in Envoy).
        provider.cipher_suites.retain(|suite| {
            suite.version() == &rustls::version::TLS13 || listed.contains(&suite.suite())
        });
    }
    Ok(provider)
}

/// Envoy's name of a TLS 1.2 suite → rustls's, for those rustls has.
fn rustls_suite(name: &str) -> Option<CipherSuite> {
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-RSA-CHACHA20-POLY1305" => CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// The versions a server allows: TLS 1.2 and 1.3 unless its settings narrow them (a
/// minimum below 1.2 is served as 1.2; validation warns).
fn versions(
    tls: &ServerTlsSettings,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let rank = |v: Option<&str>, default: u8| match v {
        None | Some("TLS_AUTO") => default,
        Some("TLSV1_0") => 10,
        Some("TLSV1_1") => 11,
        Some("TLSV1_2") => 12,
        Some("TLSV1_3") => 13,
        Some(_) => default,
    };
    let min = rank(tls.min_protocol_version.as_deref(), 12).max(12);
    let max = rank(tls.max_protocol_version.as_deref(), 13);
    let versions: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, v)| v)
        .collect();
    if versions.is_empty() {
        return Err(TlsError::Settings(format!(
            "minProtocolVersion {:?} and maxProtocolVersion {:?} leave no version weft serves",
            tls.min_protocol_version, tls.max_protocol_version
        )));
    }
    Ok(versions)
}

/// The server configuration of a terminating server from its Secret. `alpn`: the
/// protocols offered (`h2`, `http/1.1` for HTTPS; none for TLS in front of TCP).
pub fn server_tls(
    tls: &ServerTlsSettings,
    secret: Option<&Secret>,
    secret_name: &str,
    alpn: &[&[u8]],
) -> Result<ServerTls, TlsError> {
    let secret = secret.ok_or_else(|| TlsError::MissingSecret(secret_name.to_string()))?;
    let bad = |reason: String| TlsError::BadSecret {
        secret: secret_name.to_string(),
        reason,
    };
    let pem = |key: &str| -> Result<Option<Vec<u8>>, TlsError> {
        secret.value(key).map_err(|e| bad(e.to_string()))
    };
    let chain = pem(TLS_CERT_KEY)?.ok_or_else(|| bad(format!("no {TLS_CERT_KEY}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("{TLS_CERT_KEY}: {e}")))?;
    if certs.is_empty() {
        return Err(bad(format!("{TLS_CERT_KEY} holds no certificate")));
    }
    let key_pem = pem(TLS_KEY_KEY)?.ok_or_else(|| bad(format!("no {TLS_KEY_KEY}")))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(format!("{TLS_KEY_KEY}: {e}")))?;
    let provider = Arc::new(provider(tls)?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(tls)?)
        .map_err(|e| TlsError::Settings(e.to_string()))?;
    let mode = tls.mode.unwrap_or_default();
    let builder = match mode {
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let ca = pem(CA_CERT_KEY)?.ok_or_else(|| {
                bad(format!(
                    "{mode:?} needs {CA_CERT_KEY}: the CA client certificates must chain to"
                ))
            })?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&ca) {
                let cert = cert.map_err(|e| bad(format!("{CA_CERT_KEY}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("{CA_CERT_KEY}: {e}")))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if mode == ServerTlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| bad(format!("{CA_CERT_KEY}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("{TLS_KEY_KEY}: {e}")))?;
    if !key_matches(&certs[0], &*signing) {
        return Err(bad(format!(
            "{TLS_KEY_KEY} is not the key of the first certificate of {TLS_CERT_KEY}"
        )));
    }
    // Not `with_single_cert`: it reads the certificate with webpki, which refuses the
    // X.509 v1 certificates `openssl x509 -req` makes before OpenSSL 3.2 (those of Istio's
    // tasks); the certificate is the clients' to judge, as with Envoy.
    let certified = Arc::new(rustls::sign::CertifiedKey::new(certs, signing));
    let mut config = builder.with_cert_resolver(Arc::new(Single(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(ServerTls {
        config: Arc::new(config),
        subject_alt_names: match mode {
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => tls.subject_alt_names.clone(),
            _ => Vec::new(),
        },
    })
}

/// Serves one certificate whatever the client asks (the SNI chose the server before).
#[derive(Debug)]
struct Single(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Whether `certificate` holds the public key of `key` (when the key can tell it).
fn key_matches(certificate: &CertificateDer<'_>, key: &dyn rustls::sign::SigningKey) -> bool {
    use x509_parser::prelude::FromDer;
    let Some(public) = key.public_key() else {
        return true;
    };
    match x509_parser::certificate::X509Certificate::from_der(certificate) {
        Ok((_, parsed)) => parsed.tbs_certificate.subject_pki.raw == public.as_ref(),
        Err(_) => false,
    }
}

/// Whether a verified client certificate carries one of `wanted` among its DNS and URI
/// names (Envoy's `match_subject_alt_names`, exact); no certificate passes only where
/// none is required (OPTIONAL_MUTUAL).
pub fn client_names_allowed(wanted: &[String], certificate: Option<&CertificateDer<'_>>) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let Some(certificate) = certificate else {
        return true;
    };
    weft_core::identity::tls::certificate_names_match(wanted, certificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(yaml: &str) -> Secret {
        serde_yaml::from_str(yaml).expect("secret")
    }

    fn credential(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params")
                .self_signed(&key)
                .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn tls_secret(cert: &str, key: &str, ca: Option<&str>) -> Secret {
        let indent = |pem: &str| {
            pem.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        let ca = ca
            .map(|ca| format!("  ca.crt: |\n{}", indent(ca)))
            .unwrap_or_default();
        secret(&format!(
            "metadata: {{name: c, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}{ca}",
            indent(cert),
            indent(key)
        ))
    }

    #[test]
    fn server_configurations_follow_the_server_settings() {
        let (cert, key) = credential(&["shop.example.com"]);
        let simple: ServerTlsSettings =
            serde_yaml::from_str("{mode: SIMPLE, credentialName: c}").expect("tls");
        let built = server_tls(&simple, Some(&tls_secret(&cert, &key, None)), "c", &[b"h2"])
            .expect("SIMPLE builds");
        assert_eq!(built.config.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(
            server_tls(&simple, None, "c", &[]).err(),
            Some(TlsError::MissingSecret("c".into()))
        );
        let (_, other_key) = credential(&["shop.example.com"]);
        let mismatched = server_tls(
            &simple,
            Some(&tls_secret(&cert, &other_key, None)),
            "c",
            &[],
        );
        assert!(
            matches!(&mismatched, Err(TlsError::BadSecret { reason, .. }) if reason.contains("not the key")),
            "{mismatched:?}"
        );
        let mutual: ServerTlsSettings =
            serde_yaml::from_str("{mode: MUTUAL, credentialName: c}").expect("tls");
        let no_ca = server_tls(&mutual, Some(&tls_secret(&cert, &key, None)), "c", &[]);
        assert!(
            matches!(&no_ca, Err(TlsError::BadSecret { reason, .. }) if reason.contains("ca.crt")),
            "{no_ca:?}"
        );
        let (ca, _) = credential(&["client-ca"]);
        assert!(server_tls(&mutual, Some(&tls_secret(&cert, &key, Some(&ca))), "c", &[]).is_ok());
        let only_12: ServerTlsSettings = serde_yaml::from_str(
            "{mode: SIMPLE, credentialName: c, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]}",
        )
        .expect("tls");
        let built = server_tls(&only_12, Some(&tls_secret(&cert, &key, None)), "c", &[])
            .expect("TLS 1.2 only");
        let suites: Vec<CipherSuite> = built
            .config
            .crypto_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            suites,
            [CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
        );
    }

    #[test]
    fn client_names_are_checked_when_listed() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client.example.com".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().clone();
        assert!(client_names_allowed(&[], Some(&der)));
        assert!(client_names_allowed(
            &["client.example.com".into()],
            Some(&der)
        ));
        assert!(!client_names_allowed(
            &["other.example.com".into()],
            Some(&der)
        ));
    }
}
