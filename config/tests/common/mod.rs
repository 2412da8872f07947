//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_config::registry::{Registry, Snapshot};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "weft_config=info".into()),
        )
        .try_init();
}

/// Waits until `predicate` holds for the registry's snapshot, or fails the test saying
/// what was awaited.
pub async fn wait_for(
    registry: &Registry,
    what: &str,
    timeout: Duration,
    predicate: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut versions = registry.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snapshot = registry.snapshot();
        if predicate(&snapshot) {
            return snapshot;
        }
        match tokio::time::timeout_at(deadline, versions.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("registry dropped while waiting for {what}"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; last snapshot v{} has {} workloads, {} services, refusals {:?}",
                snapshot.version(),
                snapshot.workload_count(),
                snapshot.service_count(),
                snapshot
                    .refused()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        }
    }
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn pod(namespace: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": name.split('-').next().unwrap_or(name),
                 "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

pub fn service(namespace: &str, name: &str, vip: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": vip, "clusterIPs": [vip], "selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    })
}

/// An EndpointSlice of `service` with one ready endpoint per (pod name, ip).
pub fn endpoint_slice(namespace: &str, service: &str, endpoints: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(pod, ip)| {
            json!({
                "addresses": [ip], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abc"), "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

pub fn ip(text: &str) -> std::net::IpAddr {
    text.parse().expect("test IP")
}

/// The workloads of a snapshot as sorted (namespace, name).
pub fn workload_names(snapshot: &Snapshot) -> Vec<(String, String)> {
    let mut names: Vec<_> = snapshot
        .workloads()
        .map(|w| (w.namespace.to_string(), w.name.to_string()))
        .collect();
    names.sort();
    names
}
