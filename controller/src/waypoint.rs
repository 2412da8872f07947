//! What runs a waypoint: for a Gateway of class `istio-waypoint` (or `weft-waypoint`), a
//! ServiceAccount (the waypoint's identity, `…/sa/<gateway name>`), a Deployment of
//! weft-waypoint running as it, and a Service in front of it, all named after the Gateway
//! (the registry finds a waypoint's pods through the Service of its Gateway's name). In each
//! namespace with waypoints, the mesh's root certificate (ConfigMap `weft-trust-bundle`,
//! as istiod publishes `istio-ca-root-cert`), and one ClusterRoleBinding whose subjects are
//! the waypoints' ServiceAccounts, since waypoints read the whole cluster.
//!
//! As Istio's waypoint template does: the Gateway's labels and annotations (or
//! `spec.infrastructure`'s) are copied onto what is made, which is labelled with the
//! Gateway's name and class and `gateway.istio.io/managed`; pods stay out of capture
//! (`istio.io/dataplane-mode: none`: their traffic already arrives and leaves as HBONE); the
//! Service has the status port and the HBONE listener's port; no replica count is set, so
//! `kubectl scale` and autoscalers keep theirs.
use std::collections::BTreeMap;

use serde_json::{Value, json};
use weft_core::mesh::waypoint::{
    GATEWAY_NAME_LABEL, HBONE_PROTOCOL, WAYPOINT_FOR_LABEL, declaration_issues,
};

use crate::class::{Class, GATEWAY_CLASS_LABEL, MANAGED_LABEL};
use crate::gateway::{Gateway, Labels};
use crate::object::ObjectKind;

/// The CA as the base installation runs it (deploy/base/ca.yaml).
pub const CA_ADDRESS: &str = "weft-ca.weft-system.svc:15012";
pub const CA_SERVER_NAME: &str = weft_core::ca::DEFAULT_CA_SERVER_NAME;
/// The ClusterRole (deploy/base/rbac.yaml) the waypoints' ServiceAccounts are bound to.
pub const CLUSTER_ROLE: &str = "weft-waypoint";
/// The ClusterRoleBinding (deploy/base/rbac.yaml) of that role whose subjects the
/// controller keeps: one per waypoint.
pub const CLUSTER_ROLE_BINDING: &str = "weft-waypoints";
/// The ConfigMap holding the mesh's root certificate, in the waypoint's namespace.
pub const TRUST_BUNDLE_CONFIG_MAP: &str = "weft-trust-bundle";
pub const TRUST_BUNDLE_KEY: &str = "root-cert.pem";
pub(crate) const TRUST_DIR: &str = "/etc/weft/trust";
/// The pod's service-account token projected for the CA's audience, where ztunnel and
/// Istio's waypoints find theirs.
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub(crate) const TOKEN_KEY: &str = "istio-token";
/// The audience weft-ca (and istiod) ask of tokens.
pub(crate) const TOKEN_AUDIENCE: &str = "istio-ca";
/// Twelve hours, as Istio projects it; the kubelet rotates it before then.
pub(crate) const TOKEN_LIFETIME_SECONDS: u32 = 43_200;
/// The mesh's ports, as the agent and ztunnel use them.
pub const HBONE_PORT: u16 = 15008;
pub(crate) const METRICS_PORT: u16 = 15020;
pub(crate) const READINESS_PORT: u16 = 15021;
/// Annotations Istio reads on a waypoint's Gateway to name its objects otherwise; weft names
/// them after the Gateway (the registry finds a waypoint by its Gateway's name).
pub(crate) const NAME_OVERRIDES: [&str; 2] = [
    "gateway.istio.io/name-override",
    "gateway.istio.io/service-account",
];
/// Not copied from the Gateway onto what is made (Istio's list).
const NOT_COPIED: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "gateway.istio.io/name-override",
    "gateway.istio.io/service-account",
    "gateway.istio.io/controller-version",
];

pub fn default_image() -> String {
    format!(
        "ghcr.io/weft-mesh/weft-waypoint:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// How the control plane is installed: what a waypoint is given to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub image: String,
    /// Where waypoints ask for their certificate (`host:port`).
    pub ca_address: String,
    /// The name the CA's serving certificate carries.
    pub ca_server_name: String,
    pub trust_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: default_image(),
            ca_address: CA_ADDRESS.to_string(),
            ca_server_name: CA_SERVER_NAME.to_string(),
            trust_domain: "cluster.local".to_string(),
        }
    }
}

/// Why a Gateway of a waypoint class gets no waypoint: a Gateway API reason for its
/// `Accepted` condition, and what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a waypoint Gateway can be run, and what of it weft does not act on (each a
/// sentence, for the log and the `Accepted` condition). The declaration's rule is the
/// registry's: a Gateway refused here is one the agents do not route to either.
pub fn judge(gateway: &Gateway) -> Result<Vec<String>, Refusal> {
    let issues = declaration_issues(
        gateway.labels.get(WAYPOINT_FOR_LABEL).map(String::as_str),
        gateway
            .listeners
            .iter()
            .map(|l| (l.protocol.as_str(), l.port)),
    );
    if !issues.is_empty() {
        let listeners = issues
            .iter()
            .any(|(field, _)| field.starts_with("spec.listeners"));
        let message: Vec<String> = issues
            .iter()
            .map(|(field, reason)| format!("{field}: {reason}"))
            .collect();
        return Err(Refusal {
            reason: if listeners {
                "ListenersNotValid"
            } else {
                "Invalid"
            },
            message: message.join("; "),
        });
    }
    if !is_dns1035_label(&gateway.name) {
        return Err(Refusal {
            reason: "Invalid",
            message: format!(
                "metadata.name: {:?} cannot name the waypoint's Service: at most 63 lowercase \
                 letters, digits and '-', starting with a letter and ending with a letter or digit",
                gateway.name
            ),
        });
    }
    let mut warnings = Vec::new();
    for annotation in NAME_OVERRIDES {
        if gateway.annotations.contains_key(annotation) {
            warnings.push(format!(
                "annotation {annotation} ignored: weft names a waypoint's objects and identity after its Gateway"
            ));
        }
    }
    if let Some(reference) = gateway
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        warnings.push(format!(
            "spec.infrastructure.parametersRef ({reference}) ignored: weft reads no parameters"
        ));
    }
    let hbone = hbone_port(gateway);
    let mut first = true;
    for listener in &gateway.listeners {
        if listener.protocol == HBONE_PROTOCOL && first {
            first = false;
            continue;
        }
        warnings.push(format!(
            "listener {} ({} on {}) ignored: a waypoint takes HBONE on one port ({hbone})",
            listener.name, listener.protocol, listener.port
        ));
    }
    Ok(warnings)
}

/// The port of the first HBONE listener (15008 when there is none: only for a Gateway
/// [`judge`] refused).
fn hbone_port(gateway: &Gateway) -> u16 {
    gateway
        .listeners
        .iter()
        .find(|l| l.protocol == HBONE_PROTOCOL)
        .and_then(|l| u16::try_from(l.port).ok())
        .unwrap_or(HBONE_PORT)
}

/// The ServiceAccount, Deployment and Service of an accepted waypoint Gateway, as
/// server-side apply bodies, in the order they are applied. Owned by the Gateway when its
/// uid is known (read from the API server; not from a file).
pub fn objects(gateway: &Gateway, settings: &Settings) -> Vec<(ObjectKind, Value)> {
    vec![
        (ObjectKind::ServiceAccount, service_account(gateway)),
        (ObjectKind::Deployment, deployment(gateway, settings)),
        (ObjectKind::Service, service(gateway)),
    ]
}

/// Labels on everything made: the Gateway's own (or `spec.infrastructure.labels`), then
/// weft's, which win.
fn labels(gateway: &Gateway) -> Labels {
    let mut labels = copied(gateway, true);
    labels.extend([
        (GATEWAY_NAME_LABEL.to_string(), gateway.name.clone()),
        (GATEWAY_CLASS_LABEL.to_string(), gateway.class_name.clone()),
        (
            MANAGED_LABEL.to_string(),
            Class::Waypoint.managed_value().to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "weft-waypoint".to_string(),
        ),
        ("app.kubernetes.io/part-of".to_string(), "weft".to_string()),
    ]);
    labels
}

/// The Gateway's labels or annotations to copy: `spec.infrastructure`'s when it gives them
/// (Gateway API), else the Gateway's own (Istio's default), without the Gateway API's own
/// prefix or Istio's controller annotations.
pub(crate) fn copied(gateway: &Gateway, labels: bool) -> Labels {
    let infrastructure = gateway
        .infrastructure
        .as_ref()
        .map(|i| if labels { &i.labels } else { &i.annotations });
    let source = match infrastructure {
        Some(given) if !given.is_empty() => given,
        _ if labels => &gateway.labels,
        _ => &gateway.annotations,
    };
    source
        .iter()
        .filter(|(k, _)| !k.starts_with("gateway.networking.k8s.io/"))
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn owner_references(gateway: &Gateway) -> Option<Value> {
    gateway.uid.as_ref().map(|uid| {
        json!([{
            "apiVersion": gateway.api_version,
            "kind": "Gateway",
            "name": gateway.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    })
}

fn metadata(gateway: &Gateway) -> Value {
    owned_metadata(gateway, &gateway.name, labels(gateway))
}

/// The metadata of an object made for `gateway`: `name` in its namespace, `labels`, the
/// annotations copied from the Gateway, the Gateway as its owner. Waypoints and ingress
/// gateways alike.
pub(crate) fn owned_metadata(gateway: &Gateway, name: &str, labels: Labels) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": gateway.namespace,
        "labels": labels,
    });
    let annotations = copied(gateway, false);
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    if let Some(owners) = owner_references(gateway) {
        metadata["ownerReferences"] = owners;
    }
    metadata
}

/// Its name is the waypoint's, and so is the SPIFFE identity the waypoint proves.
fn service_account(gateway: &Gateway) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(gateway),
    })
}

fn deployment(gateway: &Gateway, settings: &Settings) -> Value {
    let hbone = hbone_port(gateway);
    let mut pod_labels = labels(gateway);
    pod_labels.insert("istio.io/dataplane-mode".into(), "none".into());
    let mut pod_annotations: BTreeMap<String, String> = copied(gateway, false);
    // Istio's metric names on Istio's port and path, as the agents'.
    pod_annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
        (
            "prometheus.io/path".to_string(),
            "/stats/prometheus".to_string(),
        ),
    ]);
    let args: Vec<String> = [
        ("--name", gateway.name.clone()),
        ("--namespace", gateway.namespace.clone()),
        ("--service-account", gateway.name.clone()),
        ("--ca-address", settings.ca_address.clone()),
        ("--ca-server-name", settings.ca_server_name.clone()),
        ("--ca-token-file", format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        ("--trust-bundle", format!("{TRUST_DIR}/{TRUST_BUNDLE_KEY}")),
        ("--trust-domain", settings.trust_domain.clone()),
        ("--listen", format!("0.0.0.0:{hbone}")),
        ("--readiness-addr", format!("0.0.0.0:{READINESS_PORT}")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(gateway),
        "spec": {
            "selector": { "matchLabels": { GATEWAY_NAME_LABEL: gateway.name } },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": pod_annotations,
                },
                "spec": {
                    "serviceAccountName": gateway.name,
                    "nodeSelector": { "kubernetes.io/os": "linux" },
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [proxy_container(json!({
                        "name": "weft-waypoint",
                        "image": settings.image,
                        "args": args,
                        // Its pod and node: locality load balancing compares endpoints'
                        // localities with the waypoint's own.
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                            { "name": "RUST_LOG", "value": "info" },
                        ],
                        "ports": [
                            { "name": "mesh", "containerPort": hbone, "protocol": "TCP" },
                            { "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" },
                            { "name": "readiness", "containerPort": READINESS_PORT, "protocol": "TCP" },
                        ],
                    }))],
                    "volumes": proxy_volumes(),
                },
            },
        },
    })
}

/// The container of a pod the controller runs for a Gateway (a waypoint's, an ingress
/// gateway's): `own` (name, image, args, env, ports) and what they share — probes on the
/// readiness port, resources, a locked-down security context, the trust bundle and the CA
/// token mounted from [`proxy_volumes`].
pub(crate) fn proxy_container(own: Value) -> Value {
    let mut container = json!({
        // Istio's waypoint and gateway templates: a startup probe every second, so a
        // restarted proxy is Ready (and back in its Service's endpoints) about a second
        // after it serves rather than at the readiness probe's next period; then
        // readiness every 15 s, four failures to leave the endpoints.
        "startupProbe": {
            "httpGet": { "path": "/healthz/ready", "port": READINESS_PORT },
            "initialDelaySeconds": 1,
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 30,
        },
        "readinessProbe": {
            "httpGet": { "path": "/healthz/ready", "port": READINESS_PORT },
            "periodSeconds": 15,
            "timeoutSeconds": 1,
            "failureThreshold": 4,
        },
        // Alive is answering: a restart drops every connection it proxies.
        "livenessProbe": {
            "tcpSocket": { "port": READINESS_PORT },
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": { "cpu": "100m", "memory": "128Mi" },
            "limits": { "memory": "1Gi" },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": "trust-bundle", "mountPath": TRUST_DIR, "readOnly": true },
            { "name": TOKEN_KEY, "mountPath": TOKEN_DIR, "readOnly": true },
        ],
    });
    if let (Some(shared), Value::Object(own)) = (container.as_object_mut(), own) {
        shared.extend(own);
    }
    container
}

/// The volumes [`proxy_container`] mounts.
pub(crate) fn proxy_volumes() -> Value {
    json!([
        {
            "name": "trust-bundle",
            "configMap": { "name": TRUST_BUNDLE_CONFIG_MAP },
        },
        // A token for the CA only, bound to this pod and rotated by the kubelet.
        {
            "name": TOKEN_KEY,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": TOKEN_LIFETIME_SECONDS,
                "path": TOKEN_KEY,
            }}]},
        },
    ])
}

/// The status port, then the HBONE listener's port (Istio names Service ports after
/// listeners and gives each the listener's protocol, lowercased, as `appProtocol`).
fn service(gateway: &Gateway) -> Value {
    let hbone = gateway
        .listeners
        .iter()
        .find(|l| l.protocol == HBONE_PROTOCOL);
    let mesh_name = hbone
        .map(|l| port_name(&l.name))
        .filter(|n| !n.is_empty() && n != "status-port")
        .unwrap_or_else(|| "mesh".to_string());
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(gateway),
        "spec": {
            "type": "ClusterIP",
            "ipFamilyPolicy": "PreferDualStack",
            "selector": { GATEWAY_NAME_LABEL: gateway.name },
            "ports": [
                { "name": "status-port", "port": READINESS_PORT, "protocol": "TCP", "appProtocol": "tcp" },
                { "name": mesh_name, "port": hbone_port(gateway), "protocol": "TCP", "appProtocol": "hbone" },
            ],
        },
    })
}

/// A listener name (dots allowed, up to 253) as a Service port name (no dots, up to 63).
pub(crate) fn port_name(listener: &str) -> String {
    let name: String = listener.replace('.', "-").chars().take(63).collect();
    name.trim_end_matches('-').to_string()
}

/// The ConfigMap `weft-trust-bundle` of `namespace`: the mesh's root certificate for its
/// waypoints, owned by each of them (not as controller), so it goes when the last one does.
pub fn trust_bundle(namespace: &str, owners: &[&Gateway], pem: &str) -> Value {
    let references: Vec<Value> = owners
        .iter()
        .filter_map(|g| {
            Some(json!({
                "apiVersion": g.api_version,
                "kind": "Gateway",
                "name": g.name,
                "uid": g.uid.as_ref()?,
            }))
        })
        .collect();
    let mut metadata = json!({
        "name": TRUST_BUNDLE_CONFIG_MAP,
        "namespace": namespace,
        "labels": {
            MANAGED_LABEL: Class::Waypoint.managed_value(),
            "app.kubernetes.io/part-of": "weft",
        },
    });
    if !references.is_empty() {
        metadata["ownerReferences"] = Value::Array(references);
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": { TRUST_BUNDLE_KEY: pem },
    })
}

/// The subjects of the ClusterRoleBinding [`CLUSTER_ROLE_BINDING`]: each waypoint's
/// ServiceAccount. Only `subjects` is applied (its `roleRef` is deploy/'s): a binding per
/// waypoint would be cluster-scoped, which a namespaced Gateway cannot own.
pub fn binding_subjects(waypoints: &[&Gateway]) -> Value {
    let mut subjects: Vec<(&str, String)> = waypoints
        .iter()
        .map(|g| (g.namespace.as_str(), service_account_name(g)))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    let subjects: Vec<Value> = subjects
        .into_iter()
        .map(|(namespace, name)| {
            json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
        })
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": CLUSTER_ROLE_BINDING },
        "subjects": subjects,
    })
}

/// The Gateway that declares a waypoint, as `istioctl waypoint generate` prints it, so the
/// same object declares the waypoint to Istio and to weft. `waypoint_for`: a value of
/// `istio.io/waypoint-for`.
pub fn gateway_manifest(name: &str, namespace: &str, waypoint_for: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { WAYPOINT_FOR_LABEL: waypoint_for },
        },
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{ "name": "mesh", "port": HBONE_PORT, "protocol": HBONE_PROTOCOL }],
        },
    })
}

/// The ServiceAccount a Gateway's pods run as: the Gateway's name for a waypoint,
/// `<name>-<class>` for an ingress gateway.
pub fn service_account_name(gateway: &Gateway) -> String {
    gateway.object_name()
}

/// A DNS-1035 label: what a Service name must be.
pub fn is_dns1035_label(value: &str) -> bool {
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_ok = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let last_ok = value
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    value.len() <= 63 && valid_chars && first_ok && last_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::contains;

    fn gateway(extra: Value) -> Gateway {
        let mut value = gateway_manifest("wp", "shop", "service");
        value["metadata"]["uid"] = "g-1".into();
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (base.get_mut(k), v) {
                    (Some(Value::Object(b)), Value::Object(e)) => {
                        b.extend(e.clone());
                    }
                    _ => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Gateway::from_json(&value).expect("gateway")
    }

    fn find(objects: &[(ObjectKind, Value)], kind: ObjectKind) -> &Value {
        &objects
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("object of kind")
            .1
    }

    #[test]
    fn each_object_is_named_labelled_and_owned_after_the_gateway() {
        let gw = gateway(
            json!({"metadata": {"labels": {"istio.io/waypoint-for": "all", "team": "a"},
                                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}}),
        );
        let objects = objects(&gw, &Settings::default());
        let kinds: Vec<ObjectKind> = objects.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                ObjectKind::ServiceAccount,
                ObjectKind::Deployment,
                ObjectKind::Service
            ]
        );
        for (kind, body) in &objects {
            let meta = &body["metadata"];
            assert_eq!(meta["name"], "wp", "{kind:?}");
            assert_eq!(meta["namespace"], "shop");
            assert_eq!(meta["labels"][MANAGED_LABEL], "weft.io-waypoint-controller");
            assert_eq!(meta["labels"][GATEWAY_NAME_LABEL], "wp");
            assert_eq!(meta["labels"]["istio.io/waypoint-for"], "all", "copied");
            assert_eq!(meta["labels"]["team"], "a");
            assert!(meta.get("annotations").is_none(), "kubectl's is not copied");
            assert_eq!(
                meta["ownerReferences"],
                json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "wp", "uid": "g-1", "controller": true, "blockOwnerDeletion": true}])
            );
        }
        let deployment = find(&objects, ObjectKind::Deployment);
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
        assert_eq!(pod["spec"]["serviceAccountName"], "wp");
        assert!(deployment["spec"].get("replicas").is_none());
        assert!(contains(
            &pod["spec"]["containers"][0]["args"],
            &json!([
                "--name",
                "wp",
                "--namespace",
                "shop",
                "--service-account",
                "wp",
                "--ca-address",
                "weft-ca.weft-system.svc:15012",
                "--ca-server-name",
                "weft-ca.weft-system.svc",
                "--ca-token-file",
                "/var/run/secrets/tokens/istio-token",
                "--trust-bundle",
                "/etc/weft/trust/root-cert.pem",
                "--trust-domain",
                "cluster.local",
                "--listen",
                "0.0.0.0:15008",
                "--readiness-addr",
                "0.0.0.0:15021"
            ])
        ));
        let service = find(&objects, ObjectKind::Service);
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "status-port", "port": 15021, "protocol": "TCP", "appProtocol": "tcp"},
                   {"name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "hbone"}])
        );
        assert_eq!(
            service["spec"]["selector"],
            json!({GATEWAY_NAME_LABEL: "wp"})
        );
    }

    #[test]
    fn infrastructure_labels_replace_the_gateways_own_and_a_file_gateway_has_no_owner() {
        let mut gw = gateway(json!({"spec": {"gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh.tunnel", "port": 15009, "protocol": "HBONE"}],
            "infrastructure": {"labels": {"cost-centre": "7", "gateway.networking.k8s.io/x": "no"},
                               "annotations": {"note": "n"}}}}));
        gw.uid = None;
        let objects = objects(&gw, &Settings::default());
        let service = find(&objects, ObjectKind::Service);
        let meta = &service["metadata"];
        assert_eq!(meta["labels"]["cost-centre"], "7");
        assert!(meta["labels"].get("istio.io/waypoint-for").is_none());
        assert!(meta["labels"].get("gateway.networking.k8s.io/x").is_none());
        assert_eq!(meta["annotations"]["note"], "n");
        assert!(meta.get("ownerReferences").is_none());
        assert_eq!(service["spec"]["ports"][1]["name"], "mesh-tunnel");
        assert_eq!(service["spec"]["ports"][1]["port"], 15009);
        let deployment = find(&objects, ObjectKind::Deployment);
        let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args");
        assert!(args.contains(&json!("0.0.0.0:15009")), "{args:?}");
    }

    #[test]
    fn a_malformed_declaration_is_refused_with_the_gateway_api_reason() {
        let no_hbone = gateway(json!({"spec": {"gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}));
        let refusal = judge(&no_hbone).expect_err("no HBONE listener");
        assert_eq!(refusal.reason, "ListenersNotValid");
        assert!(
            refusal.message.contains("spec.listeners"),
            "{}",
            refusal.message
        );
        let bad_label =
            gateway(json!({"metadata": {"labels": {"istio.io/waypoint-for": "every"}}}));
        assert_eq!(judge(&bad_label).expect_err("label").reason, "Invalid");
        let mut dotted = gateway(json!({}));
        dotted.name = "my.waypoint".into();
        assert!(
            judge(&dotted)
                .expect_err("not a Service name")
                .message
                .contains("metadata.name")
        );
    }

    #[test]
    fn what_weft_does_not_act_on_is_said() {
        let gw = gateway(json!({
            "metadata": {"annotations": {"gateway.istio.io/service-account": "other"}},
            "spec": {"gatewayClassName": "istio-waypoint", "listeners": [
                {"name": "mesh", "port": 15008, "protocol": "HBONE"},
                {"name": "http", "port": 80, "protocol": "HTTP"}],
                "infrastructure": {"parametersRef": {"group": "", "kind": "ConfigMap", "name": "p"}}}}));
        let warnings = judge(&gw).expect("accepted");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("gateway.istio.io/service-account"));
        assert!(warnings[1].contains("parametersRef"));
        assert!(warnings[2].contains("listener http"));
    }

    #[test]
    fn the_trust_bundle_is_owned_by_every_waypoint_of_its_namespace() {
        let a = gateway(json!({}));
        let mut b = gateway(json!({}));
        b.name = "wp-b".into();
        b.uid = Some("g-2".into());
        let config_map = trust_bundle("shop", &[&a, &b], "PEM");
        assert_eq!(config_map["data"][TRUST_BUNDLE_KEY], "PEM");
        let owners: Vec<&str> = config_map["metadata"]["ownerReferences"]
            .as_array()
            .expect("owners")
            .iter()
            .filter_map(|o| o["uid"].as_str())
            .collect();
        assert_eq!(owners, ["g-1", "g-2"]);
        assert!(
            config_map["metadata"]["ownerReferences"][0]
                .get("controller")
                .is_none()
        );
    }

    #[test]
    fn the_binding_lists_each_waypoints_service_account_once_in_order() {
        let a = gateway(json!({}));
        let mut b = gateway(json!({}));
        b.namespace = "infra".into();
        let body = binding_subjects(&[&a, &b, &a]);
        assert_eq!(
            body["subjects"],
            json!([{"kind": "ServiceAccount", "name": "wp", "namespace": "infra"},
                   {"kind": "ServiceAccount", "name": "wp", "namespace": "shop"}])
        );
        assert!(body.get("roleRef").is_none(), "deploy/'s");
    }
}
