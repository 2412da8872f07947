//! What runs an ingress gateway: for a Gateway of class `istio` (or `weft`), as Istio's
//! gateway deployment controller makes them (`pilot/pkg/config/kube/gateway/
//! deploymentcontroller.go`): a ServiceAccount, a Deployment of `weft-waypoint --mode
//! ingress` running as it, and a Service of type LoadBalancer with the listeners' ports, all
//! named `<gateway>-<class>` (`bookinfo-gateway-istio`), labelled
//! `gateway.networking.k8s.io/gateway-name` and `istio.io/gateway-name` with the Gateway's
//! name, owned by the Gateway. The pod finds the Gateway it serves by that label in its own
//! namespace (`weft_waypoint::ingress::config`).
//!
//! As Istio's gateway pods: they listen on the listeners' own ports (the Service's
//! `targetPort` is the port; `net.ipv4.ip_unprivileged_port_start` is 0 in the pod), stay out
//! of capture (`istio.io/dataplane-mode: none`) and prove their ServiceAccount's identity
//! into the mesh.
use serde_json::{Value, json};
use weft_core::mesh::waypoint::GATEWAY_NAME_LABEL;

use crate::class::{Class, GATEWAY_CLASS_LABEL, MANAGED_LABEL};
use crate::gateway::{Gateway, Labels};
use crate::object::ObjectKind;
use crate::waypoint::{
    METRICS_PORT, NAME_OVERRIDES, READINESS_PORT, Refusal, Settings, TOKEN_DIR, TOKEN_KEY,
    TRUST_BUNDLE_KEY, TRUST_DIR, copied, is_dns1035_label, owner_references, port_name,
    proxy_container, proxy_volumes,
};

/// Istio's second label naming the Gateway on what it makes for it.
pub const ISTIO_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";

/// The listener protocols an ingress gateway serves. TLS termination of Gateway API
/// listeners (`tls.certificateRefs`) is not served yet: such listeners are refused.
const SERVED_PROTOCOLS: [&str; 1] = ["HTTP"];

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
        if !SERVED_PROTOCOLS.contains(&listener.protocol.as_str()) || listener.tls || !port_ok {
            warnings.push(format!(
                "spec.listeners[{i}] ({} {} on {}) not served: weft's ingress gateway serves \
                 HTTP listeners without tls",
                listener.name, listener.protocol, listener.port
            ));
        } else {
            served += 1;
        }
    }
    if served == 0 {
        return Err(Refusal {
            reason: "ListenersNotValid",
            message: format!(
                "no listener weft serves (HTTP without tls){}",
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

/// The ports the Service exposes: each served listener's, once, in order.
fn listener_ports(gateway: &Gateway) -> Vec<(String, u16, String)> {
    let mut ports: Vec<(String, u16, String)> = Vec::new();
    for listener in &gateway.listeners {
        let Ok(port) = u16::try_from(listener.port) else {
            continue;
        };
        if port == 0
            || !SERVED_PROTOCOLS.contains(&listener.protocol.as_str())
            || listener.tls
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

/// The ServiceAccount, Deployment and Service of an accepted ingress Gateway, as server-side
/// apply bodies, in the order they are applied.
pub fn objects(gateway: &Gateway, settings: &Settings) -> Vec<(ObjectKind, Value)> {
    vec![
        (ObjectKind::ServiceAccount, service_account(gateway)),
        (ObjectKind::Deployment, deployment(gateway, settings)),
        (ObjectKind::Service, service(gateway)),
    ]
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
    let mut metadata = json!({
        "name": object_name(gateway),
        "namespace": gateway.namespace,
        "labels": labels(gateway),
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

fn deployment(gateway: &Gateway, settings: &Settings) -> Value {
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
    let args: Vec<String> = [
        ("--mode", "ingress".to_string()),
        ("--name", gateway.name.clone()),
        ("--ca-address", settings.ca_address.clone()),
        ("--ca-server-name", settings.ca_server_name.clone()),
        ("--ca-token-file", format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        ("--trust-bundle", format!("{TRUST_DIR}/{TRUST_BUNDLE_KEY}")),
        ("--trust-domain", settings.trust_domain.clone()),
        ("--readiness-addr", format!("0.0.0.0:{READINESS_PORT}")),
        // HTTP listeners only: no Secrets to read, and no Role to read them.
        ("--tls-secrets", "false".to_string()),
    ]
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
            name: "https".into(),
            port: 443,
            protocol: "HTTPS".into(),
            tls: true,
        });
        let warnings = judge(&gw).expect("the HTTP listener is served");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("spec.listeners[1]"), "{warnings:?}");
        let ports = objects(&gw, &Settings::default())[2].1["spec"]["ports"].clone();
        assert_eq!(
            ports.as_array().map(Vec::len),
            Some(2),
            "443 is not exposed"
        );
        gw.requests_addresses = true;
        let warnings = judge(&gw).expect("accepted");
        assert!(warnings[1].contains("spec.addresses"), "{warnings:?}");
        gw.listeners.remove(0);
        assert_eq!(
            judge(&gw).expect_err("nothing served").reason,
            "ListenersNotValid"
        );
        let mut long = bookinfo();
        long.name = "a".repeat(60);
        assert_eq!(judge(&long).expect_err("too long").reason, "Invalid");
    }
}
