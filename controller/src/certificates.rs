//! The certificates of an ingress Gateway's HTTPS listeners (`tls.certificateRefs`), as the
//! controller judges them: which Secret each reference names, whether a ReferenceGrant lets
//! the Gateway use one of another namespace, what a listener's `ResolvedRefs` says, and
//! which Secrets the gateway may read (the Role the controller grants it names exactly
//! those). The gateway itself makes the same decisions from its registry
//! (`weft_config::translate::gateway_routes::certificate_ref`).
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

pub use crate::gateway::CertificateRef;
use crate::gateway::{GATEWAY_API_GROUP, Gateway, Listener};

/// A Secret: (namespace, name).
pub type SecretKey = (String, String);

/// The type of Secret a certificate is read from.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A ReferenceGrant, cut to what allows a Gateway's reference to a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceGrant {
    pub namespace: String,
    /// (group, kind, namespace) of the referring objects.
    pub from: Vec<(String, String, String)>,
    /// (group, kind, name: `None` for all) of the objects referred to.
    pub to: Vec<(String, String, Option<String>)>,
}

impl ReferenceGrant {
    pub fn from_json(value: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
        Self {
            namespace: text(&value["metadata"]["namespace"]),
            from: items(&value["spec"]["from"])
                .iter()
                .map(|f| (text(&f["group"]), text(&f["kind"]), text(&f["namespace"])))
                .collect(),
            to: items(&value["spec"]["to"])
                .iter()
                .map(|t| {
                    (
                        text(&t["group"]),
                        text(&t["kind"]),
                        t["name"]
                            .as_str()
                            .filter(|n| !n.is_empty())
                            .map(str::to_string),
                    )
                })
                .collect(),
        }
    }

    /// Whether it lets Gateways of `from_namespace` refer to the Secret `name` of its own
    /// namespace.
    pub fn allows_secret(&self, from_namespace: &str, name: &str) -> bool {
        self.from.iter().any(|(group, kind, namespace)| {
            group == GATEWAY_API_GROUP && kind == "Gateway" && namespace == from_namespace
        }) && self.to.iter().any(|(group, kind, to)| {
            is_core(group) && kind == "Secret" && to.as_deref().is_none_or(|n| n == name)
        })
    }
}

fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// Why a reference cannot be used: the listener condition `ResolvedRefs` is `False` with
/// this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Whether weft's ingress gateway terminates TLS on the listener: `HTTPS` or `TLS` with
/// `tls.mode` `Terminate` (the default).
pub fn terminates(listener: &Listener) -> bool {
    matches!(listener.protocol.as_str(), "HTTPS" | "TLS")
        && listener.tls_mode.as_deref().unwrap_or("Terminate") == "Terminate"
}

/// The Secret `reference` (of listener `field` of a Gateway in `gateway_namespace`) names,
/// if the Gateway may use it: a core Secret, of the Gateway's namespace or of one whose
/// ReferenceGrants (among `grants`) allow it.
pub fn resolve(
    gateway_namespace: &str,
    field: &str,
    reference: &CertificateRef,
    grants: &[ReferenceGrant],
) -> Result<SecretKey, RefProblem> {
    if !is_core(&reference.group) || reference.kind != "Secret" {
        return Err(RefProblem {
            reason: "InvalidCertificateRef",
            message: format!(
                "{field}: group {:?} kind {:?} {}: weft reads core Secrets only",
                reference.group, reference.kind, reference.name
            ),
        });
    }
    let namespace = reference.namespace.as_deref().unwrap_or(gateway_namespace);
    if namespace != gateway_namespace
        && !grants
            .iter()
            .filter(|g| g.namespace == namespace)
            .any(|g| g.allows_secret(gateway_namespace, &reference.name))
    {
        return Err(RefProblem {
            reason: "RefNotPermitted",
            message: format!(
                "{field}: Secret {namespace}/{} not permitted: no ReferenceGrant in {namespace} \
                 allows Gateways of {gateway_namespace} to refer to it",
                reference.name
            ),
        });
    }
    Ok((namespace.to_string(), reference.name.clone()))
}

/// The Secrets the gateway reads: of each HTTPS listener it terminates, the first
/// certificateRef's (the one it serves), when permitted — whether or not it exists yet, so
/// a Secret created later is read without a new grant.
pub fn readable(gateway: &Gateway, grants: &[ReferenceGrant]) -> BTreeSet<SecretKey> {
    gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| terminates(l))
        .filter_map(|(i, l)| {
            let field = format!("spec.listeners[{i}].tls.certificateRefs[0]");
            resolve(
                &gateway.namespace,
                &field,
                l.certificate_refs.first()?,
                grants,
            )
            .ok()
        })
        .collect()
}

/// The readable Secrets by namespace: one Role per namespace names them.
pub fn by_namespace(readable: &BTreeSet<SecretKey>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (namespace, name) in readable {
        out.entry(namespace.clone()).or_default().push(name.clone());
    }
    out
}

/// `ResolvedRefs` of each listener, in order: `Ok` for a listener without certificates to
/// resolve and for an HTTPS listener whose every certificateRef names a permitted Secret
/// of type `kubernetes.io/tls`; else the first problem. `secret_type` tells the type of a
/// Secret that exists (`None`: it does not).
pub fn resolved_refs(
    gateway: &Gateway,
    grants: &[ReferenceGrant],
    secret_type: &dyn Fn(&SecretKey) -> Option<String>,
) -> Vec<Result<(), RefProblem>> {
    gateway
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            if !terminates(listener) {
                return Ok(());
            }
            if listener.certificate_refs.is_empty() {
                return Err(RefProblem {
                    reason: "InvalidCertificateRef",
                    message: format!(
                        "spec.listeners[{i}].tls.certificateRefs: none; a listener terminating TLS needs a \
                         Secret of type {TLS_SECRET_TYPE}"
                    ),
                });
            }
            for (j, reference) in listener.certificate_refs.iter().enumerate() {
                let field = format!("spec.listeners[{i}].tls.certificateRefs[{j}]");
                let key = resolve(&gateway.namespace, &field, reference, grants)?;
                match secret_type(&key) {
                    None => {
                        return Err(RefProblem {
                            reason: "InvalidCertificateRef",
                            message: format!("{field}: Secret {}/{} does not exist", key.0, key.1),
                        });
                    }
                    Some(kind) if kind != TLS_SECRET_TYPE => {
                        return Err(RefProblem {
                            reason: "InvalidCertificateRef",
                            message: format!(
                                "{field}: Secret {}/{} is of type {kind:?}, not {TLS_SECRET_TYPE}",
                                key.0, key.1
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway() -> Gateway {
        Gateway::from_json(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "web", "uid": "g-1"},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "shop", "port": 443, "protocol": "HTTPS", "hostname": "shop.example.com",
                 "tls": {"certificateRefs": [{"name": "shop-cert"}]}},
                {"name": "admin", "port": 443, "protocol": "HTTPS", "hostname": "admin.example.com",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": "admin-cert", "namespace": "certs"}]}},
                {"name": "books", "port": 443, "protocol": "HTTPS", "hostname": "books.example.com",
                 "tls": {"certificateRefs": [{"name": "books-cert", "namespace": "certs"}]}},
                {"name": "odd", "port": 8443, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"kind": "ConfigMap", "name": "x"}]}},
                {"name": "none", "port": 9443, "protocol": "HTTPS", "tls": {}},
                {"name": "opaque", "port": 10443, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "opaque"}]}},
                {"name": "pass", "port": 11443, "protocol": "TLS",
                 "tls": {"mode": "Passthrough"}}]},
        }))
        .expect("gateway")
    }

    fn grant() -> ReferenceGrant {
        ReferenceGrant::from_json(&json!({
            "metadata": {"name": "web-gateways", "namespace": "certs"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "web"}],
                     "to": [{"group": "", "kind": "Secret", "name": "admin-cert"}]},
        }))
    }

    fn key(namespace: &str, name: &str) -> SecretKey {
        (namespace.to_string(), name.to_string())
    }

    #[test]
    fn the_gateway_reads_its_namespace_s_secrets_and_others_a_grant_allows() {
        let gw = gateway();
        assert_eq!(
            readable(&gw, &[]),
            BTreeSet::from([key("web", "opaque"), key("web", "shop-cert")]),
            "another namespace's Secrets need a ReferenceGrant; a ConfigMap is no certificate"
        );
        assert_eq!(
            readable(&gw, &[grant()]),
            BTreeSet::from([
                key("certs", "admin-cert"),
                key("web", "opaque"),
                key("web", "shop-cert")
            ]),
            "the grant names admin-cert only"
        );
        let mut elsewhere = grant();
        elsewhere.namespace = "other".into();
        assert_eq!(
            readable(&gw, &[elsewhere]).len(),
            2,
            "a grant of another namespace allows nothing in certs"
        );
        assert_eq!(
            by_namespace(&readable(&gw, &[grant()]))["web"],
            ["opaque", "shop-cert"]
        );
    }

    #[test]
    fn resolved_refs_name_the_listener_s_field_and_reason() {
        let gw = gateway();
        let secrets = |k: &SecretKey| match (k.0.as_str(), k.1.as_str()) {
            ("web", "shop-cert") | ("certs", "admin-cert") | ("certs", "books-cert") => {
                Some(TLS_SECRET_TYPE.to_string())
            }
            ("web", "opaque") => Some("Opaque".to_string()),
            _ => None,
        };
        let got = resolved_refs(&gw, &[grant()], &secrets);
        let reasons: Vec<Option<&str>> = got
            .iter()
            .map(|r| r.as_ref().err().map(|p| p.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                None,
                None,
                None,
                Some("RefNotPermitted"),
                Some("InvalidCertificateRef"),
                Some("InvalidCertificateRef"),
                Some("InvalidCertificateRef"),
                None
            ]
        );
        let message = |i: usize| got[i].as_ref().expect_err("a problem").message.clone();
        assert!(
            message(3)
                .starts_with("spec.listeners[3].tls.certificateRefs[0]: Secret certs/books-cert"),
            "{}",
            message(3)
        );
        assert!(message(4).contains("kind \"ConfigMap\""), "{}", message(4));
        assert!(
            message(5).starts_with("spec.listeners[5].tls.certificateRefs: none"),
            "{}",
            message(5)
        );
        assert!(message(6).contains("type \"Opaque\""), "{}", message(6));
        let without = resolved_refs(&gw, &[grant()], &|_| None);
        assert_eq!(
            without[1].as_ref().expect_err("missing").message,
            "spec.listeners[1].tls.certificateRefs[0]: Secret web/shop-cert does not exist"
        );
    }
}
