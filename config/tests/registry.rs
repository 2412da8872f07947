//! The registry's model as consumers read it: enrollment, identities, waypoints, services
//! and endpoints, policies, and how snapshots behave under change.
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::ip;
use weft_config::api::security::MtlsMode;
use weft_config::api::{Kind, ObjectRef};
use weft_config::registry::{Change, MeshSettings, Registry, WaypointRef};
use weft_config::source::yaml;

fn apply(registry: &Registry, text: &str) {
    let documents = yaml::parse(text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert!(report.refused.is_empty(), "{:?}", report.refused);
}

fn pod(namespace: &str, name: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\n\
         spec: {{nodeName: node-1, serviceAccountName: {name}}}\nstatus: {{phase: Running, podIP: {ip}}}\n---\n"
    )
}

fn waypoint(name: &str, namespace: &str) -> Option<WaypointRef> {
    Some(WaypointRef {
        name: name.into(),
        namespace: namespace.into(),
    })
}

#[test]
fn waypoint_binding_follows_istio_labels_and_namespace_relabelling() {
    let registry = Registry::default();
    apply(
        &registry,
        &[
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: shop-wp}}\n---\n",
            &pod("shop", "a", "10.244.1.1", ""),
            &pod("shop", "b", "10.244.1.2", "istio.io/use-waypoint: none"),
            &pod("shop", "c", "10.244.1.3", "istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: infra"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, labels: {istio.io/use-waypoint: web-wp}}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n---\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {clusterIP: 10.96.0.6, ports: [{port: 5432}]}\n",
        ]
        .concat(),
    );
    let s = registry.snapshot();
    let by_ip = |addr: &str| {
        s.workload_by_ip(ip(addr))
            .expect("workload")
            .waypoint
            .as_deref()
            .cloned()
    };
    assert_eq!(by_ip("10.244.1.1"), waypoint("shop-wp", "shop"));
    assert_eq!(
        by_ip("10.244.1.2"),
        None,
        "`none` opts out of the namespace's waypoint"
    );
    assert_eq!(by_ip("10.244.1.3"), waypoint("shared", "infra"));
    assert_eq!(
        s.service_by_vip(ip("10.96.0.5")).expect("web").waypoint,
        waypoint("web-wp", "shop")
    );
    assert_eq!(
        s.service_by_vip(ip("10.96.0.6")).expect("db").waypoint,
        waypoint("shop-wp", "shop")
    );

    // Relabelling the namespace re-derives its pods and services.
    apply(
        &registry,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/use-waypoint: other}}\n",
    );
    let s2 = registry.snapshot();
    let w = s2.workload_by_ip(ip("10.244.1.1")).expect("a");
    assert_eq!(w.waypoint.as_deref().cloned(), waypoint("other", "shop"));
    assert!(!w.in_mesh, "the namespace left ambient mode");
    assert_eq!(
        s2.service_by_vip(ip("10.96.0.6")).expect("db").waypoint,
        waypoint("other", "shop")
    );
    // The old snapshot is untouched: readers holding it see a consistent past.
    assert_eq!(by_ip("10.244.1.1"), waypoint("shop-wp", "shop"));
    assert!(s2.version() > s.version());
}

#[test]
fn pods_seen_before_their_namespace_are_enrolled_once_it_arrives() {
    let registry = Registry::default();
    apply(&registry, &pod("late", "a", "10.244.3.1", ""));
    assert!(
        !registry
            .snapshot()
            .workload_by_ip(ip("10.244.3.1"))
            .expect("a")
            .in_mesh
    );
    apply(
        &registry,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: late, labels: {istio.io/dataplane-mode: ambient}}\n",
    );
    assert!(
        registry
            .snapshot()
            .workload_by_ip(ip("10.244.3.1"))
            .expect("a")
            .in_mesh
    );
}

#[test]
fn identities_use_the_configured_trust_domain() {
    let registry = Registry::new(MeshSettings {
        trust_domain: "prod.example".into(),
        ..Default::default()
    });
    apply(&registry, &pod("shop", "web", "10.244.1.9", ""));
    let snapshot = registry.snapshot();
    let w = snapshot.workload_by_ip(ip("10.244.1.9")).expect("web");
    assert_eq!(&*w.identity, "spiffe://prod.example/ns/shop/sa/web");
    assert_eq!(
        snapshot.workload_by_uid(&w.uid).map(|x| &*x.name),
        Some("web")
    );
}

#[test]
fn an_address_reused_by_a_new_pod_survives_the_old_pods_deletion() {
    let registry = Registry::default();
    apply(&registry, &pod("shop", "old", "10.244.1.50", ""));
    apply(&registry, &pod("shop", "new", "10.244.1.50", ""));
    registry.apply([Change::Delete(ObjectRef::new(Kind::Pod, "shop", "old"))]);
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.workload_by_ip(ip("10.244.1.50")).map(|w| &*w.name),
        Some("new")
    );
    assert_eq!(snapshot.workload_count(), 1);
}

#[test]
fn endpoint_slices_follow_their_service_label() {
    let registry = Registry::default();
    apply(
        &registry,
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: shop}\nspec: {clusterIP: 10.96.1.1, ports: [{name: http, port: 80, targetPort: http}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: shop}\nspec: {clusterIP: 10.96.1.2, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s1, namespace: shop, labels: {kubernetes.io/service-name: a}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.244.1.1], conditions: {ready: false, terminating: true}}]\nports: [{name: http, port: 8080}]\n",
    );
    let s = registry.snapshot();
    let a = s.service_by_vip(ip("10.96.1.1")).expect("a");
    assert_eq!(a.endpoints.len(), 1);
    assert!(!a.endpoints[0].ready && a.endpoints[0].terminating);
    assert_eq!(
        a.endpoint_port(80, &a.endpoints[0]),
        Some(8080),
        "named targetPort resolved through the slice"
    );
    apply(
        &registry,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s1, namespace: shop, labels: {kubernetes.io/service-name: b}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.244.1.1]}]\nports: [{name: http, port: 8080}]\n",
    );
    let s = registry.snapshot();
    assert!(s.service("shop", "a").expect("a").endpoints.is_empty());
    let b = s.service("shop", "b").expect("b");
    assert_eq!(b.endpoints.len(), 1);
    assert!(b.endpoints[0].ready, "absent conditions mean ready");
}

const DUAL_STACK: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\n\
     spec: {nodeName: node-2, serviceAccountName: web}\n\
     status: {phase: Running, podIP: 10.244.2.10, podIPs: [{ip: 10.244.2.10}, {ip: 'fd00:10:244:2::a'}]}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
     spec: {ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6], clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, 'fd00:10:96::a'], ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n\
     apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-v4, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
     addressType: IPv4\nendpoints: [{addresses: [10.244.2.10], targetRef: {kind: Pod, namespace: shop, name: web-0}}]\nports: [{name: http, port: 8080}]\n---\n\
     apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
     addressType: IPv6\nendpoints: [{addresses: ['fd00:10:244:2::a'], targetRef: {kind: Pod, namespace: shop, name: web-0}}]\nports: [{name: http, port: 8080}]\n";

#[test]
fn dual_stack_pods_and_services_are_found_by_either_family() {
    let registry = Registry::default();
    apply(&registry, DUAL_STACK);
    let s = registry.snapshot();
    let by_v4 = s.workload_by_ip(ip("10.244.2.10")).expect("by IPv4");
    let by_v6 = s.workload_by_ip(ip("fd00:10:244:2::a")).expect("by IPv6");
    assert!(Arc::ptr_eq(by_v4, by_v6), "one workload, two addresses");
    assert_eq!(*by_v6.ips, [ip("10.244.2.10"), ip("fd00:10:244:2::a")]);
    let vip4 = s
        .service_by_vip(ip("10.96.0.10"))
        .expect("by IPv4 ClusterIP");
    let vip6 = s
        .service_by_vip(ip("fd00:10:96::a"))
        .expect("by IPv6 ClusterIP");
    assert!(Arc::ptr_eq(vip4, vip6), "one service, two ClusterIPs");
    let addresses: Vec<_> = vip6.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(addresses.len(), 2, "both families' slices: {addresses:?}");
    assert!(addresses.contains(&ip("fd00:10:244:2::a")));
    let v6_endpoint = vip6
        .endpoints
        .iter()
        .find(|e| e.address.is_ipv6())
        .expect("IPv6 endpoint");
    assert_eq!(
        s.endpoint_workload(v6_endpoint).map(|w| &*w.name),
        Some("web-0")
    );
    assert_eq!(vip6.endpoint_port(80, v6_endpoint), Some(8080));

    // The pod's IPv6 address changes: the old one no longer leads to it.
    apply(
        &registry,
        &DUAL_STACK
            .split("---")
            .next()
            .expect("the pod")
            .replace("fd00:10:244:2::a", "fd00:10:244:2::b"),
    );
    let s = registry.snapshot();
    assert!(s.workload_by_ip(ip("fd00:10:244:2::a")).is_none());
    assert_eq!(
        s.workload_by_ip(ip("fd00:10:244:2::b")).map(|w| &*w.name),
        Some("web-0")
    );
    // The IPv6 slice goes: only the IPv4 endpoint is left.
    registry.apply([Change::Delete(ObjectRef::new(
        Kind::EndpointSlice,
        "shop",
        "web-v6",
    ))]);
    let s = registry.snapshot();
    let web = s
        .service_by_vip(ip("fd00:10:96::a"))
        .expect("still by IPv6");
    assert_eq!(
        web.endpoints.iter().map(|e| e.address).collect::<Vec<_>>(),
        [ip("10.244.2.10")]
    );
}

#[test]
fn an_endpoint_slice_with_an_address_of_another_family_is_refused() {
    let registry = Registry::default();
    let documents = yaml::parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nendpoints: [{addresses: ['fd00:10:244:2::a']}]\n",
        Arc::new(PathBuf::from("test.yaml")),
    )
    .expect("YAML");
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    assert!(
        report.refused[0].to_string().contains("addressType IPv4"),
        "{}",
        report.refused[0]
    );
}

#[test]
fn authorization_policies_apply_from_the_root_and_own_namespace_by_selector() {
    let registry = Registry::default();
    apply(
        &registry,
        &[
            &pod("shop", "web", "10.244.1.1", "app: web"),
            &pod("shop", "db", "10.244.1.2", "app: db"),
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-deny, namespace: istio-system}\nspec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: web-only, namespace: shop}\nspec: {selector: {matchLabels: {app: web}}, rules: [{}]}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: other-ns, namespace: other}\nspec: {rules: [{}]}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: to-waypoint, namespace: shop}\nspec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], rules: [{}]}\n",
        ]
        .concat(),
    );
    let s = registry.snapshot();
    let names = |addr: &str| -> Vec<String> {
        let w = s.workload_by_ip(ip(addr)).expect("workload");
        s.authorization_policies_for(w)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(names("10.244.1.1"), ["mesh-deny", "web-only"]);
    assert_eq!(names("10.244.1.2"), ["mesh-deny"]);
}

#[test]
fn peer_authentication_resolves_workload_then_namespace_then_mesh() {
    let registry = Registry::default();
    apply(
        &registry,
        &[
            &pod("shop", "web", "10.244.1.1", "app: web"),
            &pod("shop", "db", "10.244.1.2", "app: db"),
            &pod("plain", "x", "10.244.2.1", ""),
            &pod("unset", "y", "10.244.3.1", ""),
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: PERMISSIVE}}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: web, namespace: shop}\nspec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {\"8080\": {mode: DISABLE}}}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: unset}\nspec: {mtls: {mode: UNSET}}\n",
        ]
        .concat(),
    );
    let s = registry.snapshot();
    let mode =
        |addr: &str, port: u16| s.mtls_mode(s.workload_by_ip(ip(addr)).expect("workload"), port);
    assert_eq!(
        mode("10.244.1.1", 8080),
        MtlsMode::Disable,
        "port-level setting of the workload policy"
    );
    assert_eq!(
        mode("10.244.1.1", 9090),
        MtlsMode::Strict,
        "workload policy"
    );
    assert_eq!(
        mode("10.244.1.2", 8080),
        MtlsMode::Permissive,
        "namespace policy"
    );
    assert_eq!(
        mode("10.244.2.1", 80),
        MtlsMode::Strict,
        "mesh policy in the root namespace"
    );
    assert_eq!(
        mode("10.244.3.1", 80),
        MtlsMode::Strict,
        "UNSET inherits the mesh's"
    );
    registry.apply([Change::Delete(ObjectRef::new(
        Kind::PeerAuthentication,
        "istio-system",
        "default",
    ))]);
    let s = registry.snapshot();
    assert_eq!(
        s.mtls_mode(s.workload_by_ip(ip("10.244.2.1")).expect("x"), 80),
        MtlsMode::Permissive,
        "Istio's default without any policy"
    );
}

#[test]
fn service_entries_by_host_and_address_and_wildcard_routes() {
    let registry = Registry::default();
    apply(
        &registry,
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: shop}\n\
         spec: {hosts: [api.example.com], addresses: [240.0.0.1], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS, location: MESH_EXTERNAL}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: wild, namespace: shop}\n\
         spec: {hosts: ['*.example.com'], tcp: [{route: [{destination: {host: api.example.com}}]}]}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: gw-only, namespace: shop}\n\
         spec: {hosts: [edge.example.org], gateways: [ingress], http: [{route: [{destination: {host: api.example.com}}]}]}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ingress, namespace: shop}\n\
         spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [edge.example.org]}]}\n",
    );
    let s = registry.snapshot();
    assert_eq!(s.service_entries_for_host("api.example.com").len(), 1);
    assert!(s.service_entry_by_address(ip("240.0.0.1")).is_some());
    let routes = s
        .routes_for_host("api.example.com")
        .expect("wildcard route matches");
    assert_eq!(
        routes.virtual_services[0].metadata.name.as_deref(),
        Some("wild")
    );
    assert!(
        s.routes_for_host("edge.example.org").is_none(),
        "bound to a gateway only, not the mesh"
    );
    assert_eq!(
        s.warnings().count(),
        0,
        "destinations resolve through the ServiceEntry"
    );
}

#[test]
fn replace_is_scoped_to_its_kinds() {
    let registry = Registry::default();
    apply(
        &registry,
        &[
            &pod("shop", "a", "10.244.1.1", ""),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        ]
        .concat(),
    );
    registry.apply([Change::Replace {
        kinds: vec![Kind::Pod],
        candidates: Vec::new(),
    }]);
    let s = registry.snapshot();
    assert_eq!(s.workload_count(), 0);
    // The namespace (another kind) is still known: a pod arriving now is enrolled by it.
    apply(
        &registry,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n",
    );
    apply(&registry, &pod("shop", "b", "10.244.1.2", ""));
    assert!(
        registry
            .snapshot()
            .workload_by_ip(ip("10.244.1.2"))
            .expect("b")
            .in_mesh
    );
}

#[test]
fn unchanged_input_publishes_nothing() {
    let registry = Registry::default();
    let text = pod("shop", "a", "10.244.1.1", "");
    apply(&registry, &text);
    let version = registry.snapshot().version();
    let rx = registry.subscribe();
    apply(&registry, &text);
    assert_eq!(registry.snapshot().version(), version);
    assert!(!rx.has_changed().expect("registry alive"));
}

/// VirtualServices are indexed by the Gateway they bind to, whether it exists or not, and
/// what only shows across objects is warned about: a missing Gateway, and — in a registry
/// that reads its namespace's TLS Secrets (an ingress gateway's) — a missing credential,
/// which disappears when the Secret arrives.
#[test]
fn gateway_bindings_and_credentials_are_followed() {
    let registry = Registry::new(MeshSettings {
        secrets_namespace: Some("istio-system".into()),
        ..MeshSettings::default()
    });
    apply(
        &registry,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: web}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: shop}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop, namespace: web}\nspec: {hosts: [shop.example.com], gateways: [gw, mesh], http: [{route: [{destination: {host: shop}}]}]}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: lost, namespace: web}\nspec: {hosts: [lost.example.com], gateways: [other/nowhere], http: [{route: [{destination: {host: shop}}]}]}\n",
    );
    let s = registry.snapshot();
    let gw = weft_config::translate::gateway::GatewayRef::new("web", "gw");
    let bound: Vec<_> = s
        .virtual_services_for_gateway(&gw)
        .iter()
        .map(|v| v.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(bound, ["shop"]);
    assert!(s.gateway(&gw).is_some());
    let warned = |field: &str| s.warnings().any(|w| w.field == field);
    assert!(
        warned("spec.gateways[0]"),
        "the missing Gateway other/nowhere"
    );
    assert!(warned("spec.servers[0].tls.credentialName"));
    apply(
        &registry,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: shop, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: '-----BEGIN CERTIFICATE-----', tls.key: '-----BEGIN PRIVATE KEY-----'}\n",
    );
    let s = registry.snapshot();
    assert!(s.secret("istio-system", "shop").is_some());
    assert!(
        !s.warnings()
            .any(|w| w.field == "spec.servers[0].tls.credentialName"),
        "the Secret arrived"
    );
    // A registry that reads no Secret cannot tell, and says nothing.
    let agent = Registry::default();
    apply(
        &agent,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: web}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: shop}\n",
    );
    assert!(agent.snapshot().warnings().next().is_none());
}

/// A pod as the kubelet reports it: owners, a resourceVersion, five conditions.
fn reported_pod(resource_version: &str, scheduled_at: &str, ready: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-7d9f8-abcde\n  generateName: web-7d9f8-\n  namespace: shop\n  \
         resourceVersion: \"{resource_version}\"\n  labels: {{app: web}}\n  \
         ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8, uid: \"1234\", controller: true}}]\n\
         spec: {{nodeName: node-1, serviceAccountName: web}}\n\
         status:\n  phase: Running\n  hostIP: 172.16.0.1\n  podIP: 10.0.0.7\n  conditions:\n  \
         - {{type: PodScheduled, status: \"True\", lastTransitionTime: \"{scheduled_at}\"}}\n  \
         - {{type: Initialized, status: \"True\"}}\n  - {{type: ContainersReady, status: \"{ready}\"}}\n  \
         - {{type: Ready, status: \"{ready}\"}}\n---\n"
    )
}

#[test]
fn a_pod_update_that_changes_nothing_weft_reads_publishes_no_snapshot() {
    // Each agent holds every pod of the cluster and receives every update of them: one
    // that changes only what weft drops (resourceVersion, owners, conditions other than
    // Ready, hostIP) must cost no new snapshot.
    let registry = Registry::default();
    apply(
        &registry,
        &reported_pod("100", "2026-12-01T10:00:00Z", "True"),
    );
    let version = registry.snapshot().version();
    let documents = yaml::parse(
        &reported_pod("101", "2026-12-01T10:00:05Z", "True"),
        Arc::new(PathBuf::from("test.yaml")),
    )
    .expect("YAML");
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert!(!report.changed, "nothing weft reads changed");
    assert_eq!(registry.snapshot().version(), version);
    // Readiness is read: that update is published.
    apply(
        &registry,
        &reported_pod("102", "2026-12-01T10:00:05Z", "False"),
    );
    let snapshot = registry.snapshot();
    assert!(snapshot.version() > version);
    let web = snapshot
        .workload("shop", "web-7d9f8-abcde")
        .expect("the pod");
    assert!(!web.ready);
}

/// Every agent holds every pod of the cluster (issue #21): pods alike share one copy of
/// their labels, namespace and node, a workload keeps only the annotations the mesh reads
/// (Istio's), and an endpoint shares its node and its pod's name with the workload.
#[test]
fn workloads_and_endpoints_share_what_they_hold_alike() {
    let registry = Registry::default();
    let text = [
        pod("shop", "a", "10.244.1.1", "app: web"),
        pod("shop", "b", "10.244.1.2", "app: web"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: db}, annotations: \
         {prometheus.io/scrape: 'true', traffic.sidecar.istio.io/excludeOutboundPorts: '5432', ambient.istio.io/dns-capture: 'false'}}\n\
         spec: {nodeName: node-1, serviceAccountName: c}\nstatus: {phase: Running, podIP: 10.244.1.3}\n---\n"
            .to_string(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.244.1.1], nodeName: node-1, targetRef: {kind: Pod, namespace: shop, name: a}}]\n"
            .to_string(),
    ]
    .concat();
    apply(&registry, &text);
    let s = registry.snapshot();
    let a = s.workload("shop", "a").expect("a");
    let b = s.workload("shop", "b").expect("b");
    let c = s.workload("shop", "c").expect("c");
    assert!(Arc::ptr_eq(a.labels.shared(), b.labels.shared()));
    assert!(!Arc::ptr_eq(a.labels.shared(), c.labels.shared()));
    assert!(Arc::ptr_eq(&a.namespace, &c.namespace));
    let node = |w: &weft_config::registry::Workload| w.node.clone().expect("node");
    assert!(Arc::ptr_eq(&node(a), &node(b)));
    let kept: Vec<&str> = c.annotations.keys().map(String::as_str).collect();
    assert_eq!(
        kept,
        [
            "ambient.istio.io/dns-capture",
            "traffic.sidecar.istio.io/excludeOutboundPorts"
        ]
    );
    let web = s.service("shop", "web").expect("web");
    let endpoint = &web.endpoints[0];
    assert!(Arc::ptr_eq(endpoint.node.as_ref().expect("node"), &node(a)));
    let (_, target) = endpoint.target.as_ref().expect("targetRef");
    assert!(Arc::ptr_eq(target, &a.name));
    // The same objects again: nothing changed, nothing published.
    let version = s.version();
    apply(&registry, &text);
    assert_eq!(registry.snapshot().version(), version);
}
