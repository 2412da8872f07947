//! The registry as operators read it: `GET /workloads`, `/services`, `/policies` and
//! `/config_dump`. The registry's model is not `Serialize` (it is shaped for lookups), so
//! these views borrow from one snapshot and are serialized while it is held: a dump is
//! consistent, never a mix of two versions.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use weft_config::Refusal;
use weft_config::api::common::WorkloadSelector;
use weft_config::api::gateway::Gateway;
use weft_config::api::networking::{DestinationRule, ServiceEntry, VirtualService};
use weft_config::api::security::{Action, AuthorizationPolicy, MtlsMode, PeerAuthentication};
use weft_config::registry::{
    Endpoint, MeshSettings, Service, Snapshot, TargetPort, WaypointRef, Workload,
};
use weft_config::translate::policy::selects;

#[derive(Debug, Serialize)]
pub struct WaypointRefView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

fn waypoint_ref(waypoint: Option<&WaypointRef>) -> Option<WaypointRefView<'_>> {
    waypoint.map(|w| WaypointRefView {
        namespace: &w.namespace,
        name: &w.name,
    })
}

#[derive(Debug, Serialize)]
pub struct WorkloadView<'a> {
    pub uid: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub node: Option<&'a str>,
    pub ips: &'a [IpAddr],
    pub identity: &'a str,
    pub service_account: &'a str,
    /// Captured by the mesh by its labels (on whichever node it runs).
    pub in_mesh: bool,
    /// Enrolled by this agent: its programs attached, its listeners open.
    pub captured: bool,
    pub waypoint: Option<WaypointRefView<'a>>,
    pub phase: Option<&'a str>,
    pub ready: bool,
    pub host_network: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a BTreeMap<String, String>>,
}

fn workload_view<'a>(w: &'a Workload, captured: bool, with_labels: bool) -> WorkloadView<'a> {
    WorkloadView {
        uid: &w.uid,
        name: &w.name,
        namespace: &w.namespace,
        node: w.node.as_deref(),
        ips: &w.ips,
        identity: &w.identity,
        service_account: &w.service_account,
        in_mesh: w.in_mesh,
        captured,
        waypoint: waypoint_ref(w.waypoint.as_deref()),
        phase: w.phase.as_deref(),
        ready: w.ready,
        host_network: w.host_network,
        labels: with_labels.then_some(&w.labels),
    }
}

/// Every workload of the cluster (the agent resolves destinations on other nodes too),
/// sorted by namespace and name.
pub fn workloads<'a>(
    snapshot: &'a Snapshot,
    captured: &HashSet<String>,
    with_labels: bool,
) -> Vec<WorkloadView<'a>> {
    let mut views: Vec<WorkloadView> = snapshot
        .workloads()
        .map(|w| workload_view(w, captured.contains(&*w.uid), with_labels))
        .collect();
    views.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    views
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TargetPortView<'a> {
    Number(u16),
    Name(&'a str),
}

#[derive(Debug, Serialize)]
pub struct ServicePortView<'a> {
    pub name: Option<&'a str>,
    pub port: u16,
    pub target_port: TargetPortView<'a>,
    pub protocol: &'a str,
    pub app_protocol: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct EndpointPortView<'a> {
    pub name: Option<&'a str>,
    pub port: u16,
    pub protocol: &'a str,
}

#[derive(Debug, Serialize)]
pub struct EndpointView<'a> {
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<&'a str>,
    /// `namespace/name` of the pod behind the address, when the slice names one.
    pub pod: Option<String>,
    pub ports: Vec<EndpointPortView<'a>>,
}

fn endpoint_view(e: &Endpoint) -> EndpointView<'_> {
    EndpointView {
        address: e.address,
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        node: e.node.as_deref(),
        pod: e.target.as_ref().map(|(ns, name)| format!("{ns}/{name}")),
        ports: e
            .ports
            .iter()
            .map(|p| EndpointPortView {
                name: p.name.as_deref(),
                port: p.port,
                protocol: &p.protocol,
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceView<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub host: &'a str,
    pub vips: &'a [IpAddr],
    pub ports: Vec<ServicePortView<'a>>,
    pub endpoints_total: usize,
    pub endpoints_ready: usize,
    pub waypoint: Option<WaypointRefView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<EndpointView<'a>>>,
}

fn service_view(s: &Service, with_endpoints: bool) -> ServiceView<'_> {
    ServiceView {
        name: &s.name,
        namespace: &s.namespace,
        host: &s.hostname,
        vips: &s.vips,
        ports: s
            .ports
            .iter()
            .map(|p| ServicePortView {
                name: p.name.as_deref(),
                port: p.port,
                target_port: match &p.target_port {
                    TargetPort::Number(n) => TargetPortView::Number(*n),
                    TargetPort::Name(name) => TargetPortView::Name(name),
                },
                protocol: &p.protocol,
                app_protocol: p.app_protocol.as_deref(),
            })
            .collect(),
        endpoints_total: s.endpoints.len(),
        endpoints_ready: s.endpoints.iter().filter(|e| e.ready).count(),
        waypoint: waypoint_ref(s.waypoint.as_ref()),
        endpoints: with_endpoints.then(|| s.endpoints.iter().map(endpoint_view).collect()),
    }
}

pub fn services(snapshot: &Snapshot, with_endpoints: bool) -> Vec<ServiceView<'_>> {
    let mut views: Vec<ServiceView> = snapshot
        .services()
        .map(|s| service_view(s, with_endpoints))
        .collect();
    views.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    views
}

// --- policies

/// (namespace, name) of an object's metadata.
macro_rules! meta_name {
    ($object:expr) => {
        (
            $object.metadata.namespace.as_deref().unwrap_or_default(),
            $object.metadata.name.as_deref().unwrap_or_default(),
        )
    };
}

fn has_selector(selector: Option<&WorkloadSelector>) -> bool {
    selector.is_some_and(|s| !s.match_labels.is_empty())
}

/// How far a policy reaches, in Istio's terms.
fn scope(namespace: &str, selector: Option<&WorkloadSelector>, root: &str) -> &'static str {
    match (has_selector(selector), namespace == root) {
        (true, _) => "workload",
        (false, true) => "mesh",
        (false, false) => "namespace",
    }
}

#[derive(Debug, Serialize)]
pub struct AuthorizationPolicyView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub action: Action,
    /// `mesh`, `namespace`, `workload` (a selector), or `waypoint` (a targetRef: enforced by
    /// a waypoint, not by this agent).
    pub scope: &'static str,
    pub selector: Option<&'a BTreeMap<String, String>>,
    /// Absent rules (`null`) match nothing; an empty rule matches everything.
    pub rules: Option<usize>,
    /// The mesh pods of this node it is enforced on.
    pub selects_on_node: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PeerAuthenticationView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub mode: MtlsMode,
    pub port_level: BTreeMap<&'a str, MtlsMode>,
    pub scope: &'static str,
    pub selector: Option<&'a BTreeMap<String, String>>,
    pub selects_on_node: Vec<String>,
}

/// What is in force on one mesh pod of this node.
#[derive(Debug, Serialize)]
pub struct PodPolicyView {
    pub pod: String,
    pub identity: String,
    /// For ports without a port-level setting.
    pub mtls_mode: MtlsMode,
    pub authorization_policies: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PoliciesView<'a> {
    pub authorization_policies: Vec<AuthorizationPolicyView<'a>>,
    pub peer_authentications: Vec<PeerAuthenticationView<'a>>,
    pub pods_on_node: Vec<PodPolicyView>,
}

/// Whether a PeerAuthentication covers `workload`: the root namespace's without a selector
/// covers the mesh, others only their own namespace (narrowed by a selector).
fn peer_authentication_covers(
    policy: &PeerAuthentication,
    workload: &Workload,
    root: &str,
) -> bool {
    let (namespace, _) = meta_name!(policy);
    let selector = policy.spec.selector.as_ref();
    (namespace == root && !has_selector(selector))
        || (*namespace == *workload.namespace && selects(selector, &workload.labels))
}

pub fn policies<'a>(snapshot: &'a Snapshot, node: &str) -> PoliciesView<'a> {
    let root = snapshot.settings().root_namespace.as_str();
    let local: Vec<&Arc<Workload>> = snapshot
        .workloads_on_node(node)
        .filter(|w| w.in_mesh)
        .collect();
    let key = |w: &Workload| format!("{}/{}", w.namespace, w.name);

    let mut enforced_on: HashMap<(&str, &str), Vec<String>> = HashMap::new();
    let mut pods_on_node = Vec::new();
    for workload in &local {
        let applied = snapshot.authorization_policies_for(workload);
        let mut names = Vec::new();
        for policy in applied {
            let (namespace, name) = meta_name!(policy);
            enforced_on
                .entry((namespace, name))
                .or_default()
                .push(key(workload));
            names.push(format!("{namespace}/{name}"));
        }
        pods_on_node.push(PodPolicyView {
            pod: key(workload),
            identity: workload.identity.to_string(),
            mtls_mode: snapshot.mtls_mode(workload, 0),
            authorization_policies: names,
        });
    }
    pods_on_node.sort_by(|a, b| a.pod.cmp(&b.pod));

    let authorization_policies = snapshot
        .all_authorization_policies()
        .into_iter()
        .map(|p| {
            let (namespace, name) = meta_name!(p);
            let targeted = p.spec.target_ref.is_some() || !p.spec.target_refs.is_empty();
            let mut selects_on_node = enforced_on.remove(&(namespace, name)).unwrap_or_default();
            selects_on_node.sort();
            AuthorizationPolicyView {
                namespace,
                name,
                action: p.spec.effective_action(),
                scope: if targeted {
                    "waypoint"
                } else {
                    scope(namespace, p.spec.selector.as_ref(), root)
                },
                selector: p.spec.selector.as_ref().map(|s| &s.match_labels),
                rules: p.spec.rules.as_ref().map(Vec::len),
                selects_on_node,
            }
        })
        .collect();

    let peer_authentications = snapshot
        .all_peer_authentications()
        .into_iter()
        .map(|p| {
            let (namespace, name) = meta_name!(p);
            let mut selects_on_node: Vec<String> = local
                .iter()
                .filter(|w| peer_authentication_covers(p, w, root))
                .map(|w| key(w))
                .collect();
            selects_on_node.sort();
            PeerAuthenticationView {
                namespace,
                name,
                mode: p.spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
                port_level: p
                    .spec
                    .port_level_mtls
                    .iter()
                    .map(|(port, m)| (port.as_str(), m.mode))
                    .collect(),
                scope: scope(namespace, p.spec.selector.as_ref(), root),
                selector: p.spec.selector.as_ref().map(|s| &s.match_labels),
                selects_on_node,
            }
        })
        .collect();

    PoliciesView {
        authorization_policies,
        peer_authentications,
        pods_on_node,
    }
}

// --- the whole configuration

#[derive(Debug, Serialize)]
pub struct RefusalView<'a> {
    pub kind: String,
    pub namespace: &'a str,
    pub name: &'a str,
    /// JSON path of the offending field, e.g. `spec.http[0].route[1].weight`.
    pub field: &'a str,
    pub reason: &'a str,
    /// `file:document` for objects read from a directory.
    pub origin: Option<String>,
}

fn refusal_view(r: &Refusal) -> RefusalView<'_> {
    RefusalView {
        kind: r.object.kind.to_string(),
        namespace: &r.object.namespace,
        name: &r.object.name,
        field: &r.field,
        reason: &r.reason,
        origin: r.origin.as_ref().map(ToString::to_string),
    }
}

#[derive(Debug, Serialize)]
pub struct RoutesView<'a> {
    pub host: String,
    /// Oldest first: the first one is what applies, as in Istio.
    pub virtual_services: Vec<&'a VirtualService>,
    pub destination_rule: Option<&'a DestinationRule>,
}

#[derive(Debug, Serialize)]
pub struct WaypointView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `service`, `workload`, `all` or `none` (`istio.io/waypoint-for`).
    pub traffic: &'static str,
    pub port: u16,
    /// The Service fronting the waypoint's pods, when it exists.
    pub service: Option<&'a str>,
    pub identities: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct SettingsView<'a> {
    pub trust_domain: &'a str,
    pub cluster_domain: &'a str,
    pub root_namespace: &'a str,
}

fn settings_view(s: &MeshSettings) -> SettingsView<'_> {
    SettingsView {
        trust_domain: &s.trust_domain,
        cluster_domain: &s.cluster_domain,
        root_namespace: &s.root_namespace,
    }
}

#[derive(Debug, Serialize)]
pub struct ConfigDump<'a> {
    pub node: &'a str,
    /// Increases with every change the registry published.
    pub registry_version: u64,
    pub settings: SettingsView<'a>,
    pub workloads: Vec<WorkloadView<'a>>,
    pub services: Vec<ServiceView<'a>>,
    pub service_entries: Vec<&'a ServiceEntry>,
    pub routes: Vec<RoutesView<'a>>,
    pub waypoints: Vec<WaypointView<'a>>,
    /// Istio `networking.istio.io` Gateways (edge load balancers).
    pub gateways: Vec<&'a Gateway>,
    pub authorization_policies: Vec<&'a AuthorizationPolicy>,
    pub peer_authentications: Vec<&'a PeerAuthentication>,
    /// Objects whose latest version was refused; a previously accepted version, if any,
    /// is still in force.
    pub refused: Vec<RefusalView<'a>>,
    /// Objects accepted with a doubt (a route to an unknown host, say).
    pub warnings: Vec<RefusalView<'a>>,
}

pub fn config_dump<'a>(
    snapshot: &'a Snapshot,
    node: &'a str,
    captured: &HashSet<String>,
) -> ConfigDump<'a> {
    let routes = snapshot
        .all_routes()
        .into_iter()
        .map(|(host, routes)| RoutesView {
            host,
            virtual_services: routes.virtual_services.iter().map(Arc::as_ref).collect(),
            destination_rule: routes.destination_rule.as_deref(),
        })
        .collect();
    let waypoints = snapshot
        .waypoints()
        .map(|w| WaypointView {
            namespace: &w.namespace,
            name: &w.name,
            traffic: w.traffic.as_str(),
            port: w.port,
            service: snapshot.waypoint_service(w).map(|s| s.hostname.as_str()),
            identities: snapshot.waypoint_identities(w),
        })
        .collect();
    let mut service_entries: Vec<&ServiceEntry> =
        snapshot.service_entries().map(Arc::as_ref).collect();
    service_entries.sort_by_key(|e| meta_name!(e));
    let mut gateways: Vec<&Gateway> = snapshot.gateways().map(Arc::as_ref).collect();
    gateways.sort_by_key(|g| meta_name!(g));
    ConfigDump {
        node,
        registry_version: snapshot.version(),
        settings: settings_view(snapshot.settings()),
        workloads: workloads(snapshot, captured, true),
        services: services(snapshot, true),
        service_entries,
        routes,
        waypoints,
        gateways,
        authorization_policies: snapshot
            .all_authorization_policies()
            .into_iter()
            .map(Arc::as_ref)
            .collect(),
        peer_authentications: snapshot
            .all_peer_authentications()
            .into_iter()
            .map(Arc::as_ref)
            .collect(),
        refused: snapshot.refused().map(refusal_view).collect(),
        warnings: snapshot.warnings().map(refusal_view).collect(),
    }
}

/// Counts for `/status`.
pub fn refused_objects(snapshot: &Snapshot) -> usize {
    snapshot
        .refused()
        .map(|r| &r.object)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weft_config::registry::{Change, Registry};
    use weft_config::source::yaml;

    use super::*;

    fn registry(text: &str) -> Registry {
        let registry = Registry::default();
        let documents =
            yaml::parse(text, Arc::new(PathBuf::from("t.yaml"))).expect("test YAML parses");
        registry.apply(documents.candidates.into_iter().map(Change::Apply));
        registry
    }

    const CLUSTER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: u-web, labels: {app: web}}
spec: {nodeName: node-1, serviceAccountName: web}
status: {phase: Running, podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, uid: u-db, labels: {app: db}}
spec: {nodeName: node-2, serviceAccountName: db}
status: {phase: Running, podIP: 10.244.2.5}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-only, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-strict, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}, weight: 40}, {destination: {host: web}, weight: 50}]}]
"#;

    #[test]
    fn policies_name_the_pods_of_this_node_they_select() {
        let registry = registry(CLUSTER);
        let snapshot = registry.snapshot();
        let view = policies(&snapshot, "node-1");
        let json = serde_json::to_value(&view).expect("serializes");
        assert_eq!(json["authorization_policies"][0]["name"], "web-only");
        assert_eq!(json["authorization_policies"][0]["scope"], "workload");
        assert_eq!(
            json["authorization_policies"][0]["selects_on_node"],
            serde_json::json!(["shop/web"])
        );
        assert_eq!(json["peer_authentications"][0]["scope"], "mesh");
        assert_eq!(json["peer_authentications"][0]["mode"], "STRICT");
        assert_eq!(
            json["peer_authentications"][0]["selects_on_node"],
            serde_json::json!(["shop/web"]),
            "db runs on node-2"
        );
        assert_eq!(json["pods_on_node"][0]["mtls_mode"], "STRICT");
    }

    #[test]
    fn config_dump_names_refused_objects_field_and_reason() {
        let registry = registry(CLUSTER);
        let snapshot = registry.snapshot();
        let captured = HashSet::from(["u-web".to_string()]);
        let json =
            serde_json::to_value(config_dump(&snapshot, "node-1", &captured)).expect("serializes");
        let refused = &json["refused"][0];
        assert_eq!(refused["kind"], "VirtualService");
        assert_eq!(refused["namespace"], "shop");
        assert_eq!(refused["name"], "broken");
        assert_eq!(refused["field"], "spec.http[0].route[1].weight");
        assert!(
            refused["reason"]
                .as_str()
                .is_some_and(|r| r.contains("sum to 90")),
            "{refused}"
        );
        assert_eq!(json["workloads"][0]["name"], "db");
        assert_eq!(json["workloads"][0]["captured"], false);
        assert_eq!(json["workloads"][1]["captured"], true);
        assert_eq!(
            json["workloads"][1]["identity"],
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(refused_objects(&snapshot), 1);
    }
}
