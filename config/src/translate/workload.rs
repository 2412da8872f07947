//! A Pod (and its Namespace) → a registry [`Workload`].
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use weft_core::mesh::enrollment::ambient_enrolled;

use super::hosts::MeshSettings;
use super::waypoint;
use crate::api::kubernetes::Pod;
use crate::api::{DEFAULT_NAMESPACE, labels};
use crate::registry::model::{Labels, NamedPort, Workload, is_mesh_annotation};

pub fn workload(
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
    settings: &MeshSettings,
) -> Workload {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let uid: Arc<str> = match meta.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.into(),
        // Hand-written YAML often has no uid; namespace/name is unique among live pods.
        _ => format!("{namespace}/{name}").into(),
    };
    let service_account = pod
        .spec
        .service_account_name
        .clone()
        .or_else(|| pod.spec.service_account.clone())
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let pod_labels = Labels::new(labels(meta).clone());
    let host_network = pod.spec.host_network;
    let phase = pod.status.phase.clone();
    let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
    let ips = if host_network || finished {
        // A host-network pod's address is its node's; a finished pod's may be reused.
        Vec::new()
    } else {
        pod_ips(pod)
    };
    let ready = if pod.status.conditions.is_empty() {
        phase.as_deref() == Some("Running")
    } else {
        pod.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let annotations = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| is_mesh_annotation(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>();
    Workload {
        identity: settings.spiffe_id(&namespace, &service_account).into(),
        waypoint: waypoint::binding(&pod_labels, &namespace, namespace_labels).map(Arc::new),
        in_mesh: !host_network && ambient_enrolled(&pod_labels, namespace_labels),
        node: pod.spec.node_name.as_deref().map(Arc::from),
        ports: pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone(),
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                })
            })
            .collect(),
        probe_ports: probe_ports(pod).into(),
        uid,
        name: name.into(),
        namespace: namespace.into(),
        service_account: service_account.into(),
        ips: ips.into_boxed_slice(),
        labels: pod_labels,
        annotations: Labels::new(annotations),
        host_network,
        phase: phase.as_deref().map(Arc::from),
        ready,
    }
}

/// `workload` again after its namespace's labels changed: what the namespace decides
/// (enrollment, the waypoint binding) derived anew, the rest as it was.
pub fn rebind(
    workload: &Workload,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Workload {
    Workload {
        waypoint: waypoint::binding(&workload.labels, &workload.namespace, namespace_labels)
            .map(Arc::new),
        in_mesh: !workload.host_network && ambient_enrolled(&workload.labels, namespace_labels),
        ..workload.clone()
    }
}

/// The ports the kubelet's probes connect to on the pod's own IPs: `httpGet`, `tcpSocket`
/// (a number, or the name of one of the container's ports) and `grpc` of every container's
/// readiness, liveness and startup probes. A probe with a `host` of its own dials elsewhere;
/// a name no port of the container has is a probe that fails in the kubelet too.
fn probe_ports(pod: &Pod) -> Vec<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut ports = Vec::new();
    for container in &pod.spec.containers {
        let probes = [
            &container.readiness_probe,
            &container.liveness_probe,
            &container.startup_probe,
        ];
        for probe in probes.into_iter().flatten() {
            let by_port = [&probe.http_get, &probe.tcp_socket];
            for action in by_port.into_iter().flatten() {
                if action.host.as_deref().is_some_and(|h| !h.is_empty()) {
                    continue;
                }
                let port = match &action.port {
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                    Some(IntOrString::String(name)) => container
                        .ports
                        .iter()
                        .find(|p| p.name.as_deref() == Some(name.as_str()))
                        .and_then(|p| u16::try_from(p.container_port).ok()),
                    None => None,
                };
                ports.extend(port);
            }
            if let Some(grpc) = &probe.grpc {
                ports.extend(u16::try_from(grpc.port).ok());
            }
        }
    }
    ports.retain(|p| *p != 0);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `status.podIPs`, or `status.podIP` when the list is absent, in order, without
/// duplicates; unparsable entries (refused by validation) are skipped.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let listed = pod.status.pod_ips.iter().map(|p| p.ip.as_str());
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in pod.status.pod_ip.as_deref().into_iter().chain(listed) {
        if let Ok(ip) = ip.parse()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kubernetes::{PodIp, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(labels: &[(&str, &str)], host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: PodSpec {
                service_account_name: Some("web".into()),
                node_name: Some("node-1".into()),
                host_network,
                ..Default::default()
            },
            status: PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.244.1.5".into()),
                pod_ips: vec![PodIp {
                    ip: "10.244.1.5".into(),
                }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn identity_enrollment_and_addresses() {
        let ns: BTreeMap<_, _> =
            [("istio.io/dataplane-mode".to_string(), "ambient".to_string())].into();
        let w = workload(&pod(&[], false), Some(&ns), &MeshSettings::default());
        assert_eq!(&*w.identity, "spiffe://cluster.local/ns/shop/sa/web");
        assert!(w.in_mesh);
        assert!(w.ready);
        assert_eq!(*w.ips, ["10.244.1.5".parse::<IpAddr>().expect("ip")]);
        let opted_out = workload(
            &pod(&[("istio.io/dataplane-mode", "none")], false),
            Some(&ns),
            &MeshSettings::default(),
        );
        assert!(!opted_out.in_mesh);
        let host = workload(&pod(&[], true), Some(&ns), &MeshSettings::default());
        assert!(!host.in_mesh);
        assert!(host.ips.is_empty());
    }

    #[test]
    fn trust_domain_is_configurable() {
        let settings = MeshSettings {
            trust_domain: "example.org".into(),
            ..Default::default()
        };
        let w = workload(&pod(&[], false), None, &settings);
        assert_eq!(&*w.identity, "spiffe://example.org/ns/shop/sa/web");
    }

    #[test]
    fn probe_ports_resolve_names_and_skip_other_hosts() {
        let yaml = r#"
metadata: {name: web-1, namespace: shop}
spec:
  containers:
  - name: app
    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9000}]
    readinessProbe: {httpGet: {path: /ready, port: http}}
    livenessProbe: {tcpSocket: {port: 8080}}
    startupProbe: {httpGet: {port: 7000, host: 10.0.0.1}}
  - name: side
    livenessProbe: {grpc: {port: 9090}}
    readinessProbe: {httpGet: {port: no-such-name}}
  - name: run
    readinessProbe: {exec: {command: [cat, /tmp/ready]}}
"#;
        let pod: Pod = serde_yaml::from_str(yaml).expect("pod");
        let w = workload(&pod, None, &MeshSettings::default());
        // 7000 is probed on another host; `no-such-name` names no port (the kubelet fails it).
        assert_eq!(*w.probe_ports, [8080, 9090]);
    }
}
