//! What runs an ingress gateway: for a Gateway of class `istio` (or `weft`), as Istio's
//! gateway deployment controller makes them (`pilot/pkg/config/kube/gateway/
//! deploymentcontroller.go`): a ServiceAccount, a Deployment of `weft-waypoint --mode
//! ingress` running as it, and a Service of type LoadBalancer with the listeners' ports, all
//! named `<gateway>-<class>` (`bookinfo-gateway-istio`), labelled
//! `gateway.networking.k8s.io/gateway-name` and `istio.io/gateway-name` with the Gateway's
//! name, owned by the Gateway. The pod finds the Gateway it serves by that label in its own
//! namespace (`weft_waypoint::ingress::config`).
//!
//! Listeners served: HTTP (without `tls`) and HTTPS terminating TLS; for the Secrets the
//! HTTPS listeners name ([`crate::certificates`]), a Role per namespace granting `get` of
//! those Secrets by name and a RoleBinding of it to the ServiceAccount, and the Deployment
//! runs with `--tls-secret namespace/name` for each. Each listener's status is
//! [`listener_statuses`].
//!
//! As Istio's gateway pods: they listen on the listeners' own ports (the Service's
//! `targetPort` is the port; `net.ipv4.ip_unprivileged_port_start` is 0 in the pod), stay out
//! of capture (`istio.io/dataplane-mode: none`) and prove their ServiceAccount's identity
//! into the mesh.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use weft_core::mesh::waypoint::GATEWAY_NAME_LABEL;

use crate::certificates::{RefProblem, SecretKey, by_namespace, terminates};
use crate::class::{Class, GATEWAY_CLASS_LABEL, MANAGED_LABEL};
use crate::gateway::{Gateway, Labels, Listener};
use crate::object::{GATEWAY_NAMESPACE_LABEL, GATEWAY_UID_LABEL, ObjectKind};
use crate::waypoint::{
    METRICS_PORT, NAME_OVERRIDES, READINESS_PORT, Refusal, Settings, TOKEN_DIR, TOKEN_KEY,
    TRUST_BUNDLE_KEY, TRUST_DIR, copied, is_dns1035_label, owned_metadata, owner_references,
    port_name, proxy_container, proxy_volumes,
};

/// Istio's second label naming the Gateway on what it makes for it.
pub const ISTIO_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";

/// Whether weft's ingress gateway serves the listener: HTTP without `tls`, HTTPS
/// terminating TLS (`tls.mode` `Terminate`, the default) with its `tls.certificateRefs`,
/// TLS terminating it or passing it through, TCP.
pub fn serves(listener: &Listener) -> bool {
    match listener.protocol.as_str() {
        "HTTP" => !listener.tls,
        "HTTPS" => terminates(listener),
        "TLS" => terminates(listener) || listener.tls_mode.as_deref() == Some("Passthrough"),
        "TCP" => true,
        _ => false,
    }
}

/// The route kinds a listener takes (`weft_core::mesh::waypoint::allowed_route_kinds`), and
/// the kinds its `allowedRoutes.kinds` lists that it cannot take.
pub fn listener_kinds(listener: &Listener) -> (Vec<&'static str>, Vec<String>) {
    let mode = listener.tls_mode.as_deref().unwrap_or("Terminate");
    let taken = weft_core::mesh::waypoint::allowed_route_kinds(
        &listener.protocol,
        mode,
        listener
            .allowed_kinds
            .iter()
            .map(|(g, k)| (g.as_str(), k.as_str())),
    );
    let refused = listener
        .allowed_kinds
        .iter()
        .filter(|(g, k)| g != crate::gateway::GATEWAY_API_GROUP || !taken.contains(&k.as_str()))
        .map(|(g, k)| format!("{g}/{k}"))
        .collect();
    (taken, refused)
}

/// The name of everything made for `gateway`: `<name>-<class>`, as Istio names it.
pub fn object_name(gateway: &Gateway) -> String {
    gateway.object_name()
}

/// Whether an ingress Gateway can be run, and what of it weft does not act on (each a
/// sentence). Refused: a Gateway whose objects' name cannot name a Service, or without a
/// listener weft serves.
pub fn judge(gateway: &Gateway) -> Result<Vec<String>, Refusal> {
    let name = object_name(gateway);
    if !is_dns1035_label(&name) {
        return Err(Refusal {
            reason: "Invalid",
            message: format!(
                "metadata.name: {name:?} (<name>-<class>) cannot name the gateway's Service: at \
                 most 63 lowercase letters, digits and '-', starting with a letter and ending \
                 with a letter or digit"
            ),
        });
    }
    let mut warnings = Vec::new();
    let mut served = 0;
    for (i, listener) in gateway.listeners.iter().enumerate() {
        let port_ok = (1..=65535).contains(&listener.port);
        if !serves(listener) || !port_ok {
            warnings.push(format!(
                "spec.listeners[{i}] ({} {} on {}) not served: weft's ingress gateway serves \
                 HTTP listeners without tls, HTTPS listeners terminating TLS, TLS listeners \
                 terminating or passing it through, and TCP listeners",
                listener.name, listener.protocol, listener.port
            ));
        } else {
            served += 1;
            if listener.certificate_refs.len() > 1 {
                warnings.push(format!(
                    "spec.listeners[{i}].tls.certificateRefs[1..] ignored: weft serves the first \
                     certificate"
                ));
            }
        }
    }
    if served == 0 {
        return Err(Refusal {
            reason: "ListenersNotValid",
            message: format!(
                "no listener weft serves (HTTP without tls, HTTPS terminating TLS){}",
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(": {}", warnings.join("; "))
                }
            ),
        });
    }
    for annotation in NAME_OVERRIDES {
        if gateway.annotations.contains_key(annotation) {
            warnings.push(format!(
                "annotation {annotation} ignored: weft names an ingress gateway's objects <name>-<class>"
            ));
        }
    }
    if gateway.requests_addresses {
        warnings.push(
            "spec.addresses ignored: the Service's LoadBalancer address is the cloud's to assign"
                .to_string(),
        );
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
    Ok(warnings)
}

/// What a listener's status says before `Programmed` (which follows the Gateway's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// The route kinds it takes (`gateway.networking.k8s.io`).
    pub supported_kinds: Vec<&'static str>,
    /// `Accepted`: `Err((reason, message))` for a listener weft does not serve.
    pub accepted: Result<(), (&'static str, String)>,
    /// `ResolvedRefs`: its certificate references ([`crate::certificates::resolved_refs`]).
    pub resolved_refs: Result<(), RefProblem>,
    /// `attachedRoutes`: `None` when the routes are not known (the count is kept as found).
    pub attached_routes: Option<u32>,
}

/// Gives each listener its `attachedRoutes` from `counts` (by listener name; absent: 0).
pub fn count_attached(statuses: &mut [ListenerStatus], counts: &BTreeMap<String, u32>) {
    for status in statuses {
        status.attached_routes = Some(counts.get(&status.name).copied().unwrap_or(0));
    }
}

/// The status of each listener of an ingress Gateway, in order; `refs` are
/// [`crate::certificates::resolved_refs`] of it.
pub fn listener_statuses(
    gateway: &Gateway,
    refs: &[Result<(), RefProblem>],
) -> Vec<ListenerStatus> {
    gateway
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            let accepted = if !(1..=65535).contains(&listener.port)
                || listener.port == u64::from(READINESS_PORT)
            {
                Err((
                    "PortUnavailable",
                    format!(
                        "spec.listeners[{i}].port: {} cannot be served (the status port is {READINESS_PORT})",
                        listener.port
                    ),
                ))
            } else if serves(listener) {
                Ok(())
            } else {
                Err((
                    "UnsupportedProtocol",
                    format!(
                        "spec.listeners[{i}] ({} {}{}): weft's ingress gateway serves HTTP listeners \
                         without tls, HTTPS listeners terminating TLS, TLS listeners terminating \
                         or passing it through, and TCP listeners",
                        listener.name,
                        listener.protocol,
                        listener
                            .tls_mode
                            .as_deref()
                            .map(|m| format!(", tls.mode {m}"))
                            .unwrap_or_default()
                    ),
                ))
            };
            let (kinds, refused_kinds) = listener_kinds(listener);
            let mut resolved_refs = refs.get(i).cloned().unwrap_or(Ok(()));
            if resolved_refs.is_ok() && !refused_kinds.is_empty() {
                resolved_refs = Err(RefProblem {
                    reason: "InvalidRouteKinds",
                    message: format!(
                        "spec.listeners[{i}].allowedRoutes.kinds: {} cannot attach to a {} listener",
                        refused_kinds.join(", "),
                        listener.protocol
                    ),
                });
            }
            ListenerStatus {
                name: listener.name.clone(),
                supported_kinds: if accepted.is_ok() { kinds } else { Vec::new() },
                accepted,
                resolved_refs,
                attached_routes: None,
            }
        })
        .collect()
}

/// The ports the Service exposes: each served listener's, once, in order.
fn listener_ports(gateway: &Gateway) -> Vec<(String, u16, String)> {
    let mut ports: Vec<(String, u16, String)> = Vec::new();
    for listener in &gateway.listeners {
        let Ok(port) = u16::try_from(listener.port) else {
            continue;
        };
        if port == 0
            || !serves(listener)
            || port == READINESS_PORT
            || ports.iter().any(|(_, p, _)| *p == port)
        {
            continue;
        }
        let name = port_name(&listener.name);
        let name = if name.is_empty() || ports.iter().any(|(n, _, _)| *n == name) {
            format!("port-{port}")
        } else {
            name
        };
        ports.push((name, port, listener.protocol.to_ascii_lowercase()));
    }
    ports
}

/// The ServiceAccount, the Roles and RoleBindings letting it read the Secrets of
/// `readable` (one pair per namespace holding any), the Deployment and the Service of an
/// accepted ingress Gateway, as server-side apply bodies, in the order they are applied.
pub fn objects(
    gateway: &Gateway,
    settings: &Settings,
    readable: &BTreeSet<SecretKey>,
) -> Vec<(ObjectKind, Value)> {
    let mut objects = vec![(ObjectKind::ServiceAccount, service_account(gateway))];
    for (namespace, names) in by_namespace(readable) {
        objects.push((ObjectKind::Role, role(gateway, &namespace, &names)));
        objects.push((ObjectKind::RoleBinding, role_binding(gateway, &namespace)));
    }
    objects.push((
        ObjectKind::Deployment,
        deployment(gateway, settings, readable),
    ));
    objects.push((ObjectKind::Service, service(gateway)));
    objects
}

/// The name of the Role and RoleBinding in `namespace`: `<name>-<class>-secrets` in the
/// Gateway's own, `<gateway namespace>.<name>-<class>-secrets` in another (where Gateways of
/// several namespaces may have one).
pub fn role_name(gateway: &Gateway, namespace: &str) -> String {
    if namespace == gateway.namespace {
        format!("{}-secrets", object_name(gateway))
    } else {
        format!("{}.{}-secrets", gateway.namespace, object_name(gateway))
    }
}

/// Metadata of a Role or RoleBinding: the gateway's labels and the Gateway's uid and
/// namespace; owned by the Gateway in its own namespace (an owner reference cannot name an
/// owner of another namespace: the controller deletes those itself).
fn rbac_metadata(gateway: &Gateway, namespace: &str) -> Value {
    let mut labels = labels(gateway);
    labels.insert(
        GATEWAY_NAMESPACE_LABEL.to_string(),
        gateway.namespace.clone(),
    );
    if let Some(uid) = &gateway.uid {
        labels.insert(GATEWAY_UID_LABEL.to_string(), uid.clone());
    }
    let mut metadata = json!({
        "name": role_name(gateway, namespace),
        "namespace": namespace,
        "labels": labels,
    });
    if namespace == gateway.namespace
        && let Some(owners) = owner_references(gateway)
    {
        metadata["ownerReferences"] = owners;
    }
    metadata
}

/// `get` of the named Secrets only: the gateway reads each by name (never lists), and RBAC
/// cannot name Secrets in a list or watch without a field selector anyway.
fn role(gateway: &Gateway, namespace: &str, names: &[String]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": rbac_metadata(gateway, namespace),
        "rules": [{
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": names,
        }],
    })
}

fn role_binding(gateway: &Gateway, namespace: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": rbac_metadata(gateway, namespace),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_name(gateway, namespace),
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": object_name(gateway),
            "namespace": gateway.namespace,
        }],
    })
}

fn labels(gateway: &Gateway) -> Labels {
    let mut labels = copied(gateway, true);
    labels.extend([
        (GATEWAY_NAME_LABEL.to_string(), gateway.name.clone()),
        (ISTIO_GATEWAY_NAME_LABEL.to_string(), gateway.name.clone()),
        (GATEWAY_CLASS_LABEL.to_string(), gateway.class_name.clone()),
        (
            MANAGED_LABEL.to_string(),
            Class::Ingress.managed_value().to_string(),
        ),
        ("app.kubernetes.io/name".to_string(), object_name(gateway)),
        ("app.kubernetes.io/part-of".to_string(), "weft".to_string()),
    ]);
    labels
}

fn metadata(gateway: &Gateway) -> Value {
    owned_metadata(gateway, &object_name(gateway), labels(gateway))
}

fn service_account(gateway: &Gateway) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(gateway),
    })
}

fn field_ref(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

fn deployment(gateway: &Gateway, settings: &Settings, readable: &BTreeSet<SecretKey>) -> Value {
    let name = object_name(gateway);
    let mut pod_labels = labels(gateway);
    pod_labels.insert("istio.io/dataplane-mode".into(), "none".into());
    let mut pod_annotations = copied(gateway, false);
    pod_annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
        (
            "prometheus.io/path".to_string(),
            "/stats/prometheus".to_string(),
        ),
    ]);
    // `--name` is the Gateway's: policies attached to the Gateway by `targetRefs` apply.
    let mut flags = vec![
        ("--mode", "ingress".to_string()),
        ("--name", gateway.name.clone()),
        ("--ca-address", settings.ca_address.clone()),
        ("--ca-server-name", settings.ca_server_name.clone()),
        ("--ca-token-file", format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        ("--trust-bundle", format!("{TRUST_DIR}/{TRUST_BUNDLE_KEY}")),
        ("--trust-domain", settings.trust_domain.clone()),
        ("--readiness-addr", format!("0.0.0.0:{READINESS_PORT}")),
        // Not the namespace's Secrets: those its HTTPS listeners name, each by name, which
        // the Roles made with it allow (and no Secret nor Role without HTTPS listeners).
        ("--tls-secrets", "false".to_string()),
    ];
    flags.extend(
        readable
            .iter()
            .map(|(namespace, name)| ("--tls-secret", format!("{namespace}/{name}"))),
    );
    let args: Vec<String> = flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
    let mut ports: Vec<Value> = listener_ports(gateway)
        .into_iter()
        .map(|(name, port, _)| json!({ "name": name, "containerPort": port, "protocol": "TCP" }))
        .collect();
    ports.push(json!({ "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" }));
    ports
        .push(json!({ "name": "status-port", "containerPort": READINESS_PORT, "protocol": "TCP" }));
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
                    "serviceAccountName": name,
                    "nodeSelector": { "kubernetes.io/os": "linux" },
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                        // Listeners on ports below 1024, as Istio's gateway pods.
                        "sysctls": [{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" }],
                    },
                    "containers": [proxy_container(json!({
                        "name": "istio-proxy",
                        "image": settings.image,
                        "args": args,
                        "env": [
                            field_ref("POD_NAME", "metadata.name"),
                            field_ref("POD_NAMESPACE", "metadata.namespace"),
                            field_ref("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
                            field_ref("NODE_NAME", "spec.nodeName"),
                            { "name": "RUST_LOG", "value": "info" },
                        ],
                        "ports": ports,
                    }))],
                    "volumes": proxy_volumes(),
                },
            },
        },
    })
}

/// Type LoadBalancer: the status port, then each served listener's port (named after the
/// listener, `appProtocol` its protocol lowercased, as Istio's).
fn service(gateway: &Gateway) -> Value {
    let mut ports = vec![json!({
        "name": "status-port", "port": READINESS_PORT, "protocol": "TCP", "appProtocol": "tcp",
    })];
    ports.extend(listener_ports(gateway).into_iter().map(|(name, port, protocol)| {
        json!({ "name": name, "port": port, "targetPort": port, "protocol": "TCP", "appProtocol": protocol })
    }));
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(gateway),
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": "PreferDualStack",
            "selector": { GATEWAY_NAME_LABEL: gateway.name },
            "ports": ports,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::contains;

    /// Istio's `samples/bookinfo/gateway-api/bookinfo-gateway.yaml`'s Gateway, as read from
    /// the API server.
    fn bookinfo() -> Gateway {
        Gateway::from_json(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "bookinfo-gateway", "namespace": "bookinfo", "uid": "g-1"},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
        }))
        .expect("gateway")
    }

    #[test]
    fn bookinfo_gets_its_objects_named_labelled_and_owned_as_istio_makes_them() {
        let gw = bookinfo();
        assert_eq!(judge(&gw), Ok(Vec::new()));
        let objects = objects(&gw, &Settings::default(), &BTreeSet::new());
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
            assert_eq!(meta["name"], "bookinfo-gateway-istio", "{kind:?}");
            assert_eq!(meta["namespace"], "bookinfo");
            assert_eq!(meta["labels"][GATEWAY_NAME_LABEL], "bookinfo-gateway");
            assert_eq!(meta["labels"][ISTIO_GATEWAY_NAME_LABEL], "bookinfo-gateway");
            assert_eq!(meta["labels"][MANAGED_LABEL], "weft.io-gateway-controller");
            assert_eq!(meta["ownerReferences"][0]["uid"], "g-1");
            assert_eq!(meta["ownerReferences"][0]["controller"], true);
        }
        let pod = &objects[1].1["spec"]["template"];
        assert_eq!(pod["spec"]["serviceAccountName"], "bookinfo-gateway-istio");
        assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
        let container = &pod["spec"]["containers"][0];
        let args = container["args"].as_array().expect("args");
        assert_eq!(
            args[..4],
            [
                json!("--mode"),
                json!("ingress"),
                json!("--name"),
                json!("bookinfo-gateway")
            ]
        );
        assert!(contains(&container["env"], &json!([{"name": "POD_NAME"}])));
        assert!(
            args.windows(2)
                .any(|w| w == [json!("--tls-secrets"), json!("false")]),
            "{args:?}"
        );
        assert_eq!(container["ports"][0]["containerPort"], 80);
        let service = &objects[2].1;
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "status-port", "port": 15021, "protocol": "TCP", "appProtocol": "tcp"},
                   {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP", "appProtocol": "http"}])
        );
        assert_eq!(
            service["spec"]["selector"],
            json!({GATEWAY_NAME_LABEL: "bookinfo-gateway"})
        );
    }

    #[test]
    fn listeners_weft_does_not_serve_are_named_and_none_served_is_refused() {
        let mut gw = bookinfo();
        gw.listeners.push(crate::gateway::Listener {
            name: "udp".into(),
            port: 53,
            protocol: "UDP".into(),
            ..crate::gateway::Listener::default()
        });
        gw.listeners.push(crate::gateway::Listener {
            name: "tls".into(),
            port: 443,
            protocol: "TLS".into(),
            tls: true,
            tls_mode: Some("Passthrough".into()),
            ..crate::gateway::Listener::default()
        });
        let warnings = judge(&gw).expect("the HTTP listener is served");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("spec.listeners[1]"), "{warnings:?}");
        let ports =
            objects(&gw, &Settings::default(), &BTreeSet::new())[2].1["spec"]["ports"].clone();
        assert_eq!(
            ports[2],
            json!({"name": "tls", "port": 443, "targetPort": 443, "protocol": "TCP", "appProtocol": "tls"}),
            "53 is not exposed, the TLS listener's 443 is"
        );
        assert_eq!(ports.as_array().map(Vec::len), Some(3));
        gw.requests_addresses = true;
        let warnings = judge(&gw).expect("accepted");
        assert!(warnings[1].contains("spec.addresses"), "{warnings:?}");
        gw.listeners.remove(0);
        gw.listeners.remove(1);
        assert_eq!(
            judge(&gw).expect_err("nothing served").reason,
            "ListenersNotValid"
        );
        let mut long = bookinfo();
        long.name = "a".repeat(60);
        assert_eq!(judge(&long).expect_err("too long").reason, "Invalid");
    }

    /// Bookinfo's Gateway with HTTPS listeners: one for bookinfo.example.com with a Secret
    /// of its namespace, one with a Secret of `certs`, one with a Secret of `private`.
    fn with_https() -> Gateway {
        let mut value = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "bookinfo-gateway", "namespace": "bookinfo", "uid": "g-1"},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "bookinfo.example.com",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": "bookinfo-cert"}]}},
                {"name": "shared", "port": 443, "protocol": "HTTPS", "hostname": "shared.example.com",
                 "tls": {"certificateRefs": [{"name": "shared-cert", "namespace": "certs"}]}},
                {"name": "private", "port": 443, "protocol": "HTTPS", "hostname": "private.example.com",
                 "tls": {"certificateRefs": [{"name": "private-cert", "namespace": "private"}]}}]},
        });
        value["spec"]["listeners"][1]["tls"]["certificateRefs"]
            .as_array_mut()
            .expect("refs")
            .push(json!({"name": "bookinfo-ecdsa"}));
        Gateway::from_json(&value).expect("gateway")
    }

    fn certs_grant() -> crate::certificates::ReferenceGrant {
        crate::certificates::ReferenceGrant::from_json(&json!({
            "metadata": {"name": "gateways", "namespace": "certs"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "bookinfo"}],
                     "to": [{"group": "", "kind": "Secret"}]},
        }))
    }

    #[test]
    fn https_listeners_are_served_and_their_secrets_granted_by_name_in_each_namespace() {
        let gw = with_https();
        let warnings = judge(&gw).expect("accepted");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("spec.listeners[1].tls.certificateRefs[1..] ignored"),
            "{warnings:?}"
        );
        let readable = crate::certificates::readable(&gw, &[certs_grant()]);
        let objects = objects(&gw, &Settings::default(), &readable);
        let keys: Vec<String> = objects
            .iter()
            .map(|(kind, body)| crate::object::ObjectKey::of(*kind, body).to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "ServiceAccount bookinfo/bookinfo-gateway-istio",
                "Role bookinfo/bookinfo-gateway-istio-secrets",
                "RoleBinding bookinfo/bookinfo-gateway-istio-secrets",
                "Role certs/bookinfo.bookinfo-gateway-istio-secrets",
                "RoleBinding certs/bookinfo.bookinfo-gateway-istio-secrets",
                "Deployment bookinfo/bookinfo-gateway-istio",
                "Service bookinfo/bookinfo-gateway-istio",
            ],
            "no Role in private: no ReferenceGrant there"
        );
        let role = &objects[1].1;
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                    "resourceNames": ["bookinfo-cert"]}]),
            "the first certificate only, by name, get only"
        );
        assert_eq!(role["metadata"]["ownerReferences"][0]["uid"], "g-1");
        let binding = &objects[2].1;
        assert_eq!(binding["roleRef"]["name"], "bookinfo-gateway-istio-secrets");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "bookinfo-gateway-istio", "namespace": "bookinfo"}])
        );
        let foreign = &objects[3].1;
        assert_eq!(foreign["rules"][0]["resourceNames"], json!(["shared-cert"]));
        assert!(
            foreign["metadata"].get("ownerReferences").is_none(),
            "an owner reference cannot cross namespaces"
        );
        assert_eq!(foreign["metadata"]["labels"][GATEWAY_UID_LABEL], "g-1");
        assert_eq!(
            foreign["metadata"]["labels"][GATEWAY_NAMESPACE_LABEL],
            "bookinfo"
        );
        let args = objects[5].1["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .clone();
        let secrets: Vec<&Value> = args
            .windows(2)
            .filter(|w| w[0] == "--tls-secret")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            secrets,
            [
                &json!("bookinfo/bookinfo-cert"),
                &json!("certs/shared-cert")
            ]
        );
        assert!(
            args.windows(2)
                .any(|w| w == [json!("--tls-secrets"), json!("false")])
        );
        let ports = &objects[6].1["spec"]["ports"];
        assert_eq!(
            ports[2],
            json!({"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP", "appProtocol": "https"})
        );
        // Without HTTPS listeners: no Role, no Secret read.
        let plain = super::objects(
            &bookinfo(),
            &Settings::default(),
            &crate::certificates::readable(&bookinfo(), &[]),
        );
        assert_eq!(plain.len(), 3);
    }

    #[test]
    fn listener_status_says_which_listeners_are_accepted_and_resolved() {
        let mut gw = with_https();
        let listener = |name: &str, port: u64, protocol: &str| crate::gateway::Listener {
            name: name.into(),
            port,
            protocol: protocol.into(),
            ..crate::gateway::Listener::default()
        };
        gw.listeners.push(listener("udp", 9000, "UDP"));
        gw.listeners.push(listener("tcp", 9001, "TCP"));
        gw.listeners.push(crate::gateway::Listener {
            tls: true,
            tls_mode: Some("Passthrough".into()),
            allowed_kinds: vec![
                (crate::gateway::GATEWAY_API_GROUP.into(), "TLSRoute".into()),
                (crate::gateway::GATEWAY_API_GROUP.into(), "HTTPRoute".into()),
            ],
            ..listener("pass", 9002, "TLS")
        });
        let refs = crate::certificates::resolved_refs(&gw, &[], &|k| {
            (k.1 != "bookinfo-ecdsa").then(|| "kubernetes.io/tls".to_string())
        });
        let mut statuses = listener_statuses(&gw, &refs);
        let summary: Vec<(bool, Option<&str>)> = statuses
            .iter()
            .map(|s| {
                (
                    s.accepted.is_ok(),
                    s.resolved_refs.as_ref().err().map(|p| p.reason),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (true, None),
                (true, Some("InvalidCertificateRef")),
                (true, Some("RefNotPermitted")),
                (true, Some("RefNotPermitted")),
                (false, None),
                (true, None),
                (true, Some("InvalidRouteKinds")),
            ]
        );
        assert_eq!(
            statuses[4].accepted.as_ref().expect_err("UDP").0,
            "UnsupportedProtocol"
        );
        assert!(statuses[4].supported_kinds.is_empty());
        assert_eq!(statuses[0].supported_kinds, ["HTTPRoute", "GRPCRoute"]);
        assert_eq!(statuses[5].supported_kinds, ["TCPRoute"]);
        assert_eq!(
            statuses[6].supported_kinds,
            ["TLSRoute"],
            "a Passthrough listener cannot take the HTTPRoutes it lists"
        );
        assert!(statuses.iter().all(|s| s.attached_routes.is_none()));
        count_attached(
            &mut statuses,
            &BTreeMap::from([("tcp".to_string(), 2), ("pass".to_string(), 1)]),
        );
        let counts: Vec<Option<u32>> = statuses.iter().map(|s| s.attached_routes).collect();
        assert_eq!(
            counts,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(2),
                Some(1)
            ]
        );
    }
}
