//! A Gateway API `Gateway` as the controller reads it: what names, owns and configures the
//! objects it needs, and the status it carries. Read from the JSON the API server sends, or
//! from a manifest (the lab, `weftctl`).
use std::collections::BTreeMap;

use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

/// The API group of Gateway API Gateways.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("a Gateway must have metadata.name")]
    NoName,
    #[error("{0} is not a Gateway of {GATEWAY_API_GROUP}")]
    NotAGateway(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listener {
    pub name: String,
    /// As written: the declaration's judge refuses what is no port.
    pub port: u64,
    pub protocol: String,
    /// `tls` is given (an ingress gateway's HTTPS or TLS listener).
    pub tls: bool,
    /// `hostname`, as written.
    pub hostname: Option<String>,
    /// `tls.mode`: `Terminate` when `tls` is given without one.
    pub tls_mode: Option<String>,
    /// `tls.certificateRefs`, in order.
    pub certificate_refs: Vec<CertificateRef>,
    /// `allowedRoutes.kinds`, as (group, kind): the group is the Gateway API's when absent.
    pub allowed_kinds: Vec<(String, String)>,
}

/// One `tls.certificateRefs[]` entry, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateRef {
    /// `""` (the core group) when absent.
    pub group: String,
    /// `Secret` when absent.
    pub kind: String,
    pub name: String,
    /// The Gateway's namespace when absent.
    pub namespace: Option<String>,
}

impl CertificateRef {
    pub fn from_json(value: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Self {
            group: text(&value["group"]),
            kind: value["kind"].as_str().unwrap_or("Secret").to_string(),
            name: text(&value["name"]),
            namespace: value["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        }
    }
}

/// `spec.infrastructure`: labels and annotations for what is created, and parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Infrastructure {
    pub labels: Labels,
    pub annotations: Labels,
    /// `parametersRef`, as `group/kind/name`: weft reads no parameters.
    pub parameters_ref: Option<String>,
}

/// One condition of `status.conditions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gateway {
    /// `gateway.networking.k8s.io/v1` (what owner references name).
    pub api_version: String,
    pub name: String,
    pub namespace: String,
    /// Assigned by the API server; `None` for a Gateway read from a file.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp` is set: the Gateway is going (in the foreground, its
    /// garbage collector deleting what it owns first).
    pub deleting: bool,
    pub class_name: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub listeners: Vec<Listener>,
    pub infrastructure: Option<Infrastructure>,
    /// `spec.addresses` asks for addresses (weft assigns none).
    pub requests_addresses: bool,
    /// `status.conditions` as found.
    pub conditions: Vec<Condition>,
    /// `status.addresses` as found.
    pub addresses: Vec<Value>,
    /// `status.listeners` as found.
    pub listener_status: Vec<Value>,
}

impl Gateway {
    /// Reads a Gateway from its JSON (an API response or a manifest). Fields of the wrong
    /// type read as absent: the API server's schema has refused them already, and the
    /// declaration's judge refuses what is missing.
    pub fn from_json(value: &Value) -> Result<Self, GatewayError> {
        let api_version = text(&value["apiVersion"]);
        if let Some(kind) = value["kind"].as_str()
            && (kind != "Gateway" || !api_version.starts_with(&format!("{GATEWAY_API_GROUP}/")))
        {
            return Err(GatewayError::NotAGateway(format!("{api_version} {kind}")));
        }
        let metadata = &value["metadata"];
        let name = text(&metadata["name"]);
        if name.is_empty() {
            return Err(GatewayError::NoName);
        }
        let namespace = match text(&metadata["namespace"]) {
            ns if ns.is_empty() => "default".to_string(),
            ns => ns,
        };
        let spec = &value["spec"];
        let listeners = spec["listeners"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|l| Listener {
                        name: text(&l["name"]),
                        port: l["port"].as_u64().unwrap_or(0),
                        protocol: text(&l["protocol"]),
                        tls: l["tls"].is_object(),
                        hostname: l["hostname"].as_str().map(str::to_string),
                        tls_mode: l["tls"]
                            .is_object()
                            .then(|| l["tls"]["mode"].as_str().unwrap_or("Terminate").to_string()),
                        certificate_refs: l["tls"]["certificateRefs"]
                            .as_array()
                            .map(|refs| refs.iter().map(CertificateRef::from_json).collect())
                            .unwrap_or_default(),
                        allowed_kinds: l["allowedRoutes"]["kinds"]
                            .as_array()
                            .map(|kinds| {
                                kinds
                                    .iter()
                                    .map(|k| {
                                        (
                                            k["group"]
                                                .as_str()
                                                .unwrap_or(GATEWAY_API_GROUP)
                                                .to_string(),
                                            text(&k["kind"]),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let infrastructure = spec
            .get("infrastructure")
            .filter(|i| i.is_object())
            .map(|i| Infrastructure {
                labels: string_map(&i["labels"]),
                annotations: string_map(&i["annotations"]),
                parameters_ref: i.get("parametersRef").filter(|p| p.is_object()).map(|p| {
                    format!(
                        "{}/{}/{}",
                        text(&p["group"]),
                        text(&p["kind"]),
                        text(&p["name"])
                    )
                }),
            });
        let conditions = value["status"]["conditions"]
            .as_array()
            .map(|items| items.iter().map(condition).collect())
            .unwrap_or_default();
        let addresses = value["status"]["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let listener_status = value["status"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(Gateway {
            api_version: if api_version.is_empty() {
                format!("{GATEWAY_API_GROUP}/v1")
            } else {
                api_version
            },
            name,
            namespace,
            uid: metadata["uid"].as_str().map(str::to_string),
            generation: metadata["generation"].as_i64(),
            deleting: metadata["deletionTimestamp"].is_string(),
            class_name: text(&spec["gatewayClassName"]),
            labels: string_map(&metadata["labels"]),
            annotations: string_map(&metadata["annotations"]),
            listeners,
            infrastructure,
            requests_addresses: spec["addresses"].as_array().is_some_and(|a| !a.is_empty()),
            conditions,
            addresses,
            listener_status,
        })
    }

    /// The name of the ServiceAccount, Deployment and Service made for it: the Gateway's
    /// for a waypoint (the registry finds a waypoint by it), `<name>-<class>` for an ingress
    /// gateway (as Istio names them).
    pub fn object_name(&self) -> String {
        match crate::class::Class::of(&self.class_name) {
            Some(crate::class::Class::Ingress) => format!("{}-{}", self.name, self.class_name),
            _ => self.name.clone(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn string_map(value: &Value) -> Labels {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn condition(value: &Value) -> Condition {
    Condition {
        type_: text(&value["type"]),
        status: text(&value["status"]),
        reason: text(&value["reason"]),
        message: text(&value["message"]),
        observed_generation: value["observedGeneration"].as_i64(),
        last_transition_time: text(&value["lastTransitionTime"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_names_owns_and_configures_the_objects() {
        let gateway = Gateway::from_json(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "wp", "namespace": "shop", "uid": "u-1", "generation": 3,
                         "labels": {"istio.io/waypoint-for": "all"}},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
                     "infrastructure": {"labels": {"team": "a"},
                                        "parametersRef": {"group": "", "kind": "ConfigMap", "name": "p"}}},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                       "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .expect("a gateway");
        assert_eq!(gateway.key(), "shop/wp");
        assert_eq!(gateway.uid.as_deref(), Some("u-1"));
        assert_eq!(gateway.generation, Some(3));
        assert_eq!(gateway.listeners[0].port, 15008);
        let infrastructure = gateway.infrastructure.as_ref().expect("infrastructure");
        assert_eq!(infrastructure.labels["team"], "a");
        assert_eq!(
            infrastructure.parameters_ref.as_deref(),
            Some("/ConfigMap/p")
        );
        assert_eq!(
            gateway.condition("Accepted").map(|c| c.status.as_str()),
            Some("True")
        );
    }

    #[test]
    fn a_gateway_without_a_namespace_is_in_default_and_one_without_a_name_is_refused() {
        let gateway = Gateway::from_json(&json!({"metadata": {"name": "wp"}})).expect("gateway");
        assert_eq!(gateway.namespace, "default");
        assert_eq!(gateway.api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(
            Gateway::from_json(&json!({"metadata": {}})),
            Err(GatewayError::NoName)
        );
        assert!(matches!(
            Gateway::from_json(
                &json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                                       "metadata": {"name": "ingress"}})
            ),
            Err(GatewayError::NotAGateway(_))
        ));
    }
}
