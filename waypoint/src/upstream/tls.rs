//! TLS origination: a DestinationRule's `tls` (top level or `portLevelSettings[].tls`, as
//! [`super::policy::EffectivePolicy`] merged it) applied to the endpoints a waypoint reaches
//! in plain TCP — a ServiceEntry's external endpoints, or pods outside the mesh. Istio's
//! egress TLS origination: the application sends plain HTTP, the waypoint sends TLS.
//!
//! Mesh pods are reached over HBONE whatever the rule says (ISTIO_MUTUAL is HBONE's mTLS).
//!
//! - `DISABLE` (or no `tls`): plain TCP.
//! - `SIMPLE`: TLS; the server's chain must lead to `caCertificates` (a PEM file), or the
//!   `ca.crt` of the Secret `credentialName` (in the waypoint's namespace, when the registry
//!   holds it), or the system's roots; its certificate must carry one of `subjectAltNames`,
//!   or, without them, the SNI sent. `insecureSkipVerify: true` checks nothing.
//! - `MUTUAL`: SIMPLE plus the client certificate `clientCertificate` / `privateKey` (PEM
//!   files), or `tls.crt` / `tls.key` of the Secret `credentialName`.
//! - `ISTIO_MUTUAL` to a ServiceEntry host's endpoints is refused: it would present the
//!   mesh's certificate to a server that does not trust the mesh's CA. For a Service's pods
//!   outside the mesh it is left as it was before origination existed (plain TCP), since
//!   rules written for the mesh (`host: "*.local"`, ISTIO_MUTUAL) are common.
//!
//! The SNI is `sni`; without it, Istio's auto SNI: an HTTP request's `Host` (as routes
//! rewrote it; [`Origination::for_authority`]), else the destination host (a TCP stream;
//! a wildcard host then has none and fails). A verification failure fails the connection;
//! nothing ever falls back to plain text.
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tracing::warn;
use weft_config::api::kubernetes::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};
use weft_config::api::networking::{ClientTlsMode, ClientTlsSettings};
use weft_config::registry::Snapshot;
use weft_core::identity::crypto_provider;
use weft_core::identity::tls::ExternalServerVerifier;

/// Where the server's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// `caCertificates`: a PEM file.
    File(String),
    /// `credentialName`: the Secret's `ca.crt`.
    Secret(String),
    /// The system's trust roots.
    System,
}

/// The certificate the waypoint presents (MUTUAL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCredential {
    Files { certificate: String, key: String },
    Secret(String),
}

/// What a DestinationRule's `tls` asks of connections to one host: decided without reading
/// any file ([`plan`]), then built ([`Origination::build`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPlan {
    pub roots: Roots,
    pub client: Option<ClientCredential>,
    /// `sni`, else the destination host; `None` for a wildcard host without `sni`.
    pub sni: Option<String>,
    /// No `sni`: an HTTP request's `Host` is the SNI (Istio's auto SNI).
    pub auto_sni: bool,
    pub subject_alt_names: Vec<String>,
    pub insecure: bool,
}

/// Why a DestinationRule's `tls` cannot be applied: the request fails (503), the reason is
/// logged with the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DestinationRule {rule}: {field}: {reason}")]
pub struct TlsSetupError {
    pub rule: String,
    pub field: &'static str,
    pub reason: String,
}

/// The TLS connections to `host`'s plain endpoints need, from the rule's merged `tls`:
/// `Ok(None)` plain TCP. `entry`: `host` is a ServiceEntry host (not a Service).
pub fn plan(
    tls: Option<&ClientTlsSettings>,
    host: &str,
    rule: &str,
    entry: bool,
) -> Result<Option<TlsPlan>, TlsSetupError> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let error = |field: &'static str, reason: String| TlsSetupError {
        rule: rule.to_string(),
        field,
        reason,
    };
    let mode = tls.mode.unwrap_or_default();
    match mode {
        ClientTlsMode::Disable => return Ok(None),
        ClientTlsMode::IstioMutual if !entry => return Ok(None),
        ClientTlsMode::IstioMutual => {
            return Err(error(
                "trafficPolicy.tls.mode",
                "ISTIO_MUTUAL to an endpoint outside the mesh is not supported (it would \
                 present the mesh certificate to a server outside the mesh): use SIMPLE or \
                 MUTUAL"
                    .into(),
            ));
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    let roots = match (&tls.ca_certificates, &tls.credential_name) {
        (Some(path), _) if !path.is_empty() => Roots::File(path.clone()),
        (_, Some(secret)) if !secret.is_empty() => Roots::Secret(secret.clone()),
        _ => Roots::System,
    };
    let client = if mode == ClientTlsMode::Mutual {
        match (
            &tls.client_certificate,
            &tls.private_key,
            &tls.credential_name,
        ) {
            (Some(certificate), Some(key), _) => Some(ClientCredential::Files {
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            (_, _, Some(secret)) => Some(ClientCredential::Secret(secret.clone())),
            _ => {
                return Err(error(
                    "trafficPolicy.tls",
                    "MUTUAL needs clientCertificate and privateKey, or credentialName".into(),
                ));
            }
        }
    } else {
        None
    };
    let explicit = tls.sni.as_deref().filter(|sni| !sni.is_empty());
    let sni = explicit
        .or((!host.starts_with('*')).then_some(host))
        .map(str::to_string);
    Ok(Some(TlsPlan {
        roots,
        client,
        auto_sni: explicit.is_none(),
        sni,
        subject_alt_names: tls.subject_alt_names.clone(),
        insecure: tls.insecure_skip_verify == Some(true),
    }))
}

/// A built client configuration for one host's endpoints.
pub struct Origination {
    /// Unique per build: connections pooled under one build are not reused by another.
    id: u64,
    config: Arc<ClientConfig>,
    /// The SNI, and the name verified when the rule lists no `subjectAltNames`.
    pub server_name: Option<ServerName<'static>>,
    auto_sni: bool,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination")
            .field("id", &self.id)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.server_name == other.server_name
    }
}

impl Eq for Origination {}

impl Hash for Origination {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.server_name.hash(state);
    }
}

impl Origination {
    /// Reads the files and Secrets `plan` names (Secrets of `namespace`, the waypoint's).
    pub fn build(
        plan: &TlsPlan,
        snapshot: &Snapshot,
        namespace: &str,
        rule: &str,
    ) -> Result<Self, TlsSetupError> {
        let error = |field: &'static str, reason: String| TlsSetupError {
            rule: rule.to_string(),
            field,
            reason,
        };
        let secret_value = |name: &str, key: &str| -> Result<Vec<u8>, TlsSetupError> {
            let field = "trafficPolicy.tls.credentialName";
            let secret = snapshot.secret(namespace, name).ok_or_else(|| {
                error(
                    field,
                    format!(
                        "the waypoint has no Secret {namespace}/{name} (it must be in the \
                         waypoint's namespace and readable by it)"
                    ),
                )
            })?;
            secret
                .value(key)
                .map_err(|e| error(field, format!("Secret {namespace}/{name}: {e}")))?
                .ok_or_else(|| error(field, format!("Secret {namespace}/{name} has no {key}")))
        };
        let mut roots = RootCertStore::empty();
        match &plan.roots {
            Roots::File(path) => {
                let field = "trafficPolicy.tls.caCertificates";
                let pem = std::fs::read(Path::new(path))
                    .map_err(|e| error(field, format!("reading {path}: {e}")))?;
                add_pem(&mut roots, &pem).map_err(|e| error(field, format!("{path}: {e}")))?;
            }
            Roots::Secret(name) => {
                let pem = secret_value(name, CA_CERT_KEY)?;
                add_pem(&mut roots, &pem).map_err(|e| {
                    error(
                        "trafficPolicy.tls.credentialName",
                        format!("{name} {CA_CERT_KEY}: {e}"),
                    )
                })?;
            }
            Roots::System => roots = (*system_roots()).clone(),
        }
        if roots.is_empty() && !plan.insecure {
            return Err(error(
                "trafficPolicy.tls",
                "no trust roots to verify the server with".into(),
            ));
        }
        let verifier = ExternalServerVerifier::new(
            Arc::new(roots),
            plan.subject_alt_names.clone(),
            plan.insecure,
        );
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("trafficPolicy.tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match &plan.client {
            None => builder.with_no_client_auth(),
            Some(credential) => {
                let (field, chain, key) = match credential {
                    ClientCredential::Files { certificate, key } => {
                        let read = |field: &'static str, path: &str| {
                            std::fs::read(path)
                                .map_err(|e| error(field, format!("reading {path}: {e}")))
                        };
                        (
                            "trafficPolicy.tls.clientCertificate",
                            read("trafficPolicy.tls.clientCertificate", certificate)?,
                            read("trafficPolicy.tls.privateKey", key)?,
                        )
                    }
                    ClientCredential::Secret(name) => (
                        "trafficPolicy.tls.credentialName",
                        secret_value(name, TLS_CERT_KEY)?,
                        secret_value(name, TLS_KEY_KEY)?,
                    ),
                };
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
                    .collect::<Result<_, _>>()
                    .map_err(|e| error(field, e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| error(field, format!("the private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| error(field, e.to_string()))?
            }
        };
        let server_name = match &plan.sni {
            Some(sni) => Some(
                ServerName::try_from(sni.clone())
                    .map_err(|e| error("trafficPolicy.tls.sni", format!("{sni:?}: {e}")))?,
            ),
            None => None,
        };
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(config),
            server_name,
            auto_sni: plan.auto_sni,
        })
    }

    /// The origination for one HTTP request whose `Host` is `authority`: without an
    /// explicit `sni`, that host (without its port) is the SNI, as Istio's auto SNI does;
    /// connections are pooled per SNI.
    pub fn for_authority(self: &Arc<Self>, authority: &str) -> Arc<Self> {
        if !self.auto_sni {
            return self.clone();
        }
        let host = match authority.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => match authority.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                _ => authority,
            },
        };
        let Ok(name) = ServerName::try_from(host.to_ascii_lowercase()) else {
            return self.clone();
        };
        if self.server_name.as_ref() == Some(&name) {
            return self.clone();
        }
        Arc::new(Self {
            id: self.id,
            config: self.config.clone(),
            server_name: Some(name),
            auto_sni: true,
        })
    }

    /// The configuration for one connection, offering `alpn` (none for a TCP stream).
    pub fn config(&self, alpn: Option<&[u8]>) -> Arc<ClientConfig> {
        match alpn {
            None => self.config.clone(),
            Some(protocol) => {
                let mut config = (*self.config).clone();
                config.alpn_protocols = vec![protocol.to_vec()];
                Arc::new(config)
            }
        }
    }
}

fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), String> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
        added += 1;
    }
    if added == 0 {
        return Err("no PEM certificate".into());
    }
    Ok(())
}

/// The system's trust roots (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`),
/// loaded once: HTTPS JWKS fetches and TLS origination without `caCertificates`.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                warn!(%error, "reading the system's trust roots");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                warn!(
                    ignored,
                    "no system trust roots: TLS to servers outside the mesh without \
                     caCertificates will fail"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> ClientTlsSettings {
        serde_yaml::from_str(yaml).expect("settings")
    }

    #[test]
    fn the_mode_decides_plain_tls_or_refusal() {
        assert_eq!(plan(None, "api.example.com", "shop/r", true), Ok(None));
        assert_eq!(
            plan(
                Some(&settings("mode: DISABLE")),
                "api.example.com",
                "shop/r",
                true
            ),
            Ok(None)
        );
        let simple = plan(
            Some(&settings("mode: SIMPLE")),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        assert_eq!(
            simple,
            TlsPlan {
                roots: Roots::System,
                client: None,
                sni: Some("api.example.com".into()),
                auto_sni: true,
                subject_alt_names: Vec::new(),
                insecure: false,
            },
            "SIMPLE: the system roots, the host as SNI and as the name to verify"
        );
        let refused = plan(
            Some(&settings("mode: ISTIO_MUTUAL")),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect_err("refused");
        assert!(refused.to_string().contains("ISTIO_MUTUAL"), "{refused}");
        assert!(refused.to_string().contains("shop/r"), "{refused}");
        let mutual = plan(
            Some(&settings("mode: MUTUAL")),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect_err("no credentials");
        assert_eq!(mutual.field, "trafficPolicy.tls");
    }

    #[test]
    fn sni_sans_and_roots_come_from_the_settings() {
        let got = plan(
            Some(&settings(
                "{mode: MUTUAL, sni: front.example.com, subjectAltNames: [api.example.com], caCertificates: /etc/ca.pem, clientCertificate: /c.pem, privateKey: /k.pem}",
            )),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        assert_eq!(got.sni.as_deref(), Some("front.example.com"));
        assert!(
            !got.auto_sni,
            "an explicit sni is kept whatever the request's Host"
        );
        assert_eq!(got.subject_alt_names, ["api.example.com"]);
        assert_eq!(got.roots, Roots::File("/etc/ca.pem".into()));
        assert_eq!(
            got.client,
            Some(ClientCredential::Files {
                certificate: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        let secret = plan(
            Some(&settings(
                "{mode: MUTUAL, credentialName: api-cred, insecureSkipVerify: true}",
            )),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        assert_eq!(secret.roots, Roots::Secret("api-cred".into()));
        assert_eq!(
            secret.client,
            Some(ClientCredential::Secret("api-cred".into()))
        );
        assert!(secret.insecure);
        let wildcard = plan(
            Some(&settings("mode: SIMPLE")),
            "*.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        assert_eq!(
            (wildcard.sni, wildcard.auto_sni),
            (None, true),
            "a wildcard host: the request's Host only"
        );
    }

    #[test]
    fn without_an_explicit_sni_the_request_host_is_the_sni() {
        let snapshot = weft_config::testing::snapshot_of("");
        let build = |yaml: &str, host: &str| {
            let planned = plan(Some(&settings(yaml)), host, "shop/r", true)
                .expect("valid")
                .expect("TLS");
            Arc::new(Origination::build(&planned, &snapshot, "egress", "shop/r").expect("built"))
        };
        let name = |o: &Arc<Origination>| o.server_name.as_ref().map(|n| n.to_str().to_string());
        let auto = build("{mode: SIMPLE, insecureSkipVerify: true}", "*.example.com");
        assert_eq!(name(&auto), None);
        let request = auto.for_authority("Api.Example.com:8080");
        assert_eq!(name(&request).as_deref(), Some("api.example.com"));
        assert_ne!(*request, *auto, "pooled apart");
        assert_eq!(
            *request,
            *auto.for_authority("api.example.com"),
            "one pool per SNI"
        );
        let explicit = build(
            "{mode: SIMPLE, insecureSkipVerify: true, sni: front.example.com}",
            "api.example.com",
        );
        assert_eq!(
            name(&explicit.for_authority("api.example.com")).as_deref(),
            Some("front.example.com")
        );
    }

    #[test]
    fn an_unreadable_ca_file_or_a_missing_secret_names_the_field() {
        let snapshot = weft_config::testing::snapshot_of("");
        let file = plan(
            Some(&settings(
                "{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}",
            )),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        let error = Origination::build(&file, &snapshot, "egress", "shop/r").expect_err("no file");
        assert_eq!(error.field, "trafficPolicy.tls.caCertificates");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        let secret = plan(
            Some(&settings("{mode: SIMPLE, credentialName: api-ca}")),
            "api.example.com",
            "shop/r",
            true,
        )
        .expect("valid")
        .expect("TLS");
        let error =
            Origination::build(&secret, &snapshot, "egress", "shop/r").expect_err("no Secret");
        assert_eq!(error.field, "trafficPolicy.tls.credentialName");
        assert!(error.to_string().contains("egress/api-ca"), "{error}");
    }
}
