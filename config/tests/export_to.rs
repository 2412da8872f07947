//! `exportTo` as a waypoint's or an ingress gateway's registry applies it: the
//! VirtualServices and DestinationRules the process uses are those exported to its
//! namespace, the mesh config's defaults standing in for rules without `exportTo`.
use std::path::PathBuf;
use std::sync::Arc;

use weft_config::registry::{Change, MeshSettings, Registry};
use weft_config::source::yaml;

fn registry_with(settings: MeshSettings, text: &str) -> Registry {
    let registry = Registry::new(settings);
    let documents = yaml::parse(text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    registry
}

const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  exportTo: ["."]
  subsets: [{name: v2, labels: {version: v2}}]
"#;

const HOST: &str = "reviews.bookinfo.svc.cluster.local";

fn at(namespace: &str) -> MeshSettings {
    MeshSettings {
        proxy_namespace: Some(namespace.into()),
        ..MeshSettings::default()
    }
}

fn seen(namespace: &str, extra: &str) -> (usize, bool) {
    let snapshot = registry_with(at(namespace), &format!("{RULES}{extra}")).snapshot();
    snapshot.routes_for_host(HOST).map_or((0, false), |r| {
        (r.virtual_services.len(), r.destination_rule.is_some())
    })
}

#[test]
fn a_proxy_applies_only_what_is_exported_to_its_namespace() {
    // The waypoint of bookinfo sees both; one elsewhere only the public VirtualService.
    assert_eq!(seen("bookinfo", ""), (1, true));
    assert_eq!(seen("waypoints", ""), (1, false));
}

#[test]
fn the_mesh_config_default_applies_to_rules_without_export_to() {
    let mesh = r#"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultVirtualServiceExportTo: ["."]
"#;
    assert_eq!(seen("waypoints", mesh), (0, false));
    assert_eq!(seen("bookinfo", mesh), (1, true));
}
