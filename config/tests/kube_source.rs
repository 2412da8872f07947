//! The Kubernetes API source against a fixture API server that speaks the real list/watch
//! protocol and injects faults: the registry converges after each one, without losing or
//! duplicating objects.
mod common;
mod fixture;

use std::time::Duration;

use common::{endpoint_slice, ip, namespace, pod, service, wait_for, workload_names};
use fixture::ApiServer;
use serde_json::json;
use weft_config::api::{Kind, ObjectRef};
use weft_config::registry::Registry;
use weft_config::source::{self, KubeSource, KubeSourceConfig, PodScope, SourceTask};

const CONVERGE: Duration = Duration::from_secs(30);

fn config() -> KubeSourceConfig {
    KubeSourceConfig {
        resync: None,
        discovery_retry: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A namespace in the mesh, two pods on two nodes, a service with its slice, a route.
fn seed(api: &ApiServer) {
    api.apply(namespace(
        "shop",
        json!({"istio.io/dataplane-mode": "ambient"}),
    ));
    api.apply(pod(
        "shop",
        "web-1",
        "node-1",
        "10.244.1.10",
        json!({"app": "web", "version": "v1"}),
    ));
    api.apply(pod(
        "shop",
        "web-2",
        "node-2",
        "10.244.2.10",
        json!({"app": "web", "version": "v2"}),
    ));
    api.apply(service("shop", "web", "10.96.0.20", json!({"app": "web"})));
    api.apply(endpoint_slice(
        "shop",
        "web",
        &[("web-1", "10.244.1.10"), ("web-2", "10.244.2.10")],
    ));
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    }));
}

async fn start(api: &ApiServer, registry: &Registry, config: KubeSourceConfig) -> SourceTask {
    let task = source::spawn(registry, KubeSource::new(api.client()).with_config(config));
    tokio::time::timeout(CONVERGE, task.ready())
        .await
        .expect("the kube source became ready")
        .expect("the kube source did not end");
    task
}

/// The registry holds exactly the fixture's pods.
async fn converged(api: &ApiServer, registry: &Registry, what: &str) {
    let expected = api.names("Pod");
    wait_for(registry, what, CONVERGE, |s| workload_names(s) == expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_make_it_ready_then_watch_events_apply() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;

    // Ready means the initial lists are in: no waiting needed.
    let snapshot = registry.snapshot();
    let web1 = snapshot
        .workload_by_ip(ip("10.244.1.10"))
        .expect("web-1 by IP");
    assert_eq!(&*web1.identity, "spiffe://cluster.local/ns/shop/sa/web");
    assert!(web1.in_mesh);
    let svc = snapshot
        .service_by_vip(ip("10.96.0.20"))
        .expect("service by VIP");
    assert_eq!(svc.hostname, "web.shop.svc.cluster.local");
    assert_eq!(svc.endpoints.len(), 2);
    assert_eq!(
        snapshot
            .routes_for_host("web.shop.svc.cluster.local")
            .map(|r| r.virtual_services.len()),
        Some(1)
    );

    api.apply(pod(
        "shop",
        "web-3",
        "node-1",
        "10.244.1.11",
        json!({"app": "web"}),
    ));
    wait_for(&registry, "web-3 added", CONVERGE, |s| {
        s.workload_by_ip(ip("10.244.1.11")).is_some()
    })
    .await;
    api.apply(pod(
        "shop",
        "web-1",
        "node-1",
        "10.244.1.10",
        json!({"app": "web", "istio.io/dataplane-mode": "none"}),
    ));
    wait_for(&registry, "web-1 opted out", CONVERGE, |s| {
        s.workload_by_ip(ip("10.244.1.10"))
            .is_some_and(|w| !w.in_mesh)
    })
    .await;
    api.delete("Pod", "shop", "web-2");
    converged(&api, &registry, "web-2 deleted").await;
    assert!(
        registry
            .snapshot()
            .workload_by_ip(ip("10.244.2.10"))
            .is_none()
    );
    // One list per kind: everything after came through the watch.
    assert_eq!(api.count_requests("LIST pods"), 1, "{:?}", api.requests());
}

/// Nodes are read for their locality labels: an endpoint's locality is its node's, and it
/// follows a relabelled node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_labels_give_endpoints_their_locality() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let node = |name: &str, zone: &str| {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "topology.kubernetes.io/region": "eu",
                "topology.kubernetes.io/zone": zone,
                "kubernetes.io/hostname": name,
            }},
        })
    };
    api.apply(node("node-1", "eu-a"));
    api.apply(node("node-2", "eu-b"));
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;

    let zones = |s: &weft_config::registry::Snapshot| -> Vec<String> {
        s.service_by_vip(ip("10.96.0.20"))
            .map(|svc| {
                svc.endpoints
                    .iter()
                    .map(|e| {
                        let l = s.endpoint_locality(e);
                        format!("{}/{}", l.region, l.zone)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(zones(&registry.snapshot()), ["eu/eu-a", "eu/eu-b"]);
    api.apply(node("node-2", "eu-c"));
    wait_for(&registry, "node-2 relabelled", CONVERGE, |s| {
        zones(s) == ["eu/eu-a", "eu/eu-c"]
    })
    .await;
    api.delete("Node", "", "node-1");
    wait_for(&registry, "node-1 gone", CONVERGE, |s| {
        zones(s) == ["/", "eu/eu-c"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_watches_resume_from_their_resource_version() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;

    // A change to another kind moves the global resourceVersion on; the pods watch learns
    // it from BOOKMARKs and resumes from there, not from its last pod event.
    let later = api.apply(service(
        "shop",
        "other",
        "10.96.0.21",
        json!({"app": "other"}),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    api.end_watches();
    api.apply(pod(
        "shop",
        "web-3",
        "node-1",
        "10.244.1.11",
        json!({"app": "web"}),
    ));
    api.delete("Pod", "shop", "web-1");
    converged(&api, &registry, "changes made around a watch restart").await;
    // Resumed from the last resourceVersion, not relisted.
    assert_eq!(api.count_requests("LIST pods"), 1, "{:?}", api.requests());
    let resumed_from: Vec<u64> = api
        .requests()
        .iter()
        .filter_map(|r| r.strip_prefix("WATCH pods from ")?.parse().ok())
        .collect();
    assert!(resumed_from.len() >= 2, "{resumed_from:?}");
    assert!(
        resumed_from[1] >= later,
        "the resumed watch started at {} although bookmarks had reached {later}",
        resumed_from[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;

    api.kill_connections();
    // Changes while the client is cut off.
    api.apply(pod(
        "shop",
        "web-4",
        "node-2",
        "10.244.2.11",
        json!({"app": "web"}),
    ));
    api.delete("Pod", "shop", "web-1");
    api.delete("EndpointSlice", "shop", "web-abc");
    converged(&api, &registry, "changes made while disconnected").await;
    wait_for(
        &registry,
        "the deleted slice's endpoints gone",
        CONVERGE,
        |s| {
            s.service("shop", "web")
                .is_some_and(|svc| svc.endpoints.is_empty())
        },
    )
    .await;

    // And once more: a second drop right after recovery.
    api.kill_connections();
    api.apply(pod(
        "shop",
        "web-5",
        "node-1",
        "10.244.1.12",
        json!({"app": "web"}),
    ));
    converged(&api, &registry, "changes after a second drop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_without_losing_or_duplicating() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;
    let lists_before = api.count_requests("LIST pods");

    // 1. The watch resumes from a resourceVersion whose history is gone: ERROR 410.
    //    Watches are held off while the changes are made and the history compacted, so
    //    the resume is certain to be stale.
    api.pause_watches(true);
    api.kill_connections();
    api.delete("Pod", "shop", "web-1");
    api.apply(pod(
        "shop",
        "web-6",
        "node-2",
        "10.244.2.16",
        json!({"app": "web"}),
    ));
    api.compact();
    api.pause_watches(false);
    converged(&api, &registry, "relist after a 410 ERROR event on resume").await;
    let lists_after_error_event = api.count_requests("LIST pods");
    assert!(
        lists_after_error_event > lists_before,
        "{:?}",
        api.requests()
    );

    // 2. An open watch is told 410 mid-stream.
    api.apply(pod(
        "shop",
        "web-7",
        "node-1",
        "10.244.1.17",
        json!({"app": "web"}),
    ));
    converged(&api, &registry, "web-7 seen").await;
    api.gone_on_open_watches();
    api.delete("Pod", "shop", "web-2");
    converged(&api, &registry, "relist after a 410 on an open watch").await;
    let lists_after_open_gone = api.count_requests("LIST pods");
    assert!(
        lists_after_open_gone > lists_after_error_event,
        "{:?}",
        api.requests()
    );

    // 3. The watch request itself answered with HTTP 410: kube-runtime alone would retry
    //    it forever with the same resourceVersion; the source must relist.
    api.gone_as_http(true);
    api.pause_watches(true);
    api.kill_connections();
    api.delete("Pod", "shop", "web-6");
    api.apply(pod(
        "shop",
        "web-8",
        "node-2",
        "10.244.2.18",
        json!({"app": "web"}),
    ));
    api.compact();
    api.pause_watches(false);
    converged(&api, &registry, "relist after HTTP 410 on watch").await;
    assert!(
        api.count_requests("LIST pods") > lists_after_open_gone,
        "{:?}",
        api.requests()
    );

    let snapshot = registry.snapshot();
    assert_eq!(workload_names(&snapshot), api.names("Pod"));
    assert_eq!(snapshot.workload_count(), api.names("Pod").len());
    assert!(snapshot.service_by_vip(ip("10.96.0.20")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_istio_object_is_refused_alone_and_the_good_version_keeps_serving() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    // Does not fit the schema at all: a weight that is not a number.
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"hosts": ["broken"], "http": [{"route": [{"destination": {"host": "web"}, "weight": "fifty"}]}]},
    }));
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;

    let snapshot = registry.snapshot();
    let broken = ObjectRef::new(Kind::VirtualService, "shop", "broken");
    let refusals = snapshot.refusals_of(&broken);
    assert_eq!(
        refusals.len(),
        1,
        "{:?}",
        snapshot.refused().collect::<Vec<_>>()
    );
    assert_eq!(refusals[0].field, "spec.http[0].route[0].weight");
    // The rest of the list is in.
    assert!(
        snapshot
            .routes_for_host("web.shop.svc.cluster.local")
            .is_some()
    );

    // An update that breaks a valid route is refused; the valid version keeps serving.
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "web", "subset": "v2"}, "weight": 40}]}]},
    }));
    let web = ObjectRef::new(Kind::VirtualService, "shop", "web");
    let snapshot = wait_for(&registry, "the bad update refused", CONVERGE, |s| {
        !s.refusals_of(&web).is_empty()
    })
    .await;
    assert_eq!(
        snapshot.refusals_of(&web)[0].field,
        "spec.http[0].route[1].weight"
    );
    let served = &snapshot
        .routes_for_host("web.shop.svc.cluster.local")
        .expect("routes")
        .virtual_services[0];
    assert_eq!(
        served.spec.http[0].route.len(),
        1,
        "the previous version is still in force"
    );
    assert!(registry.refused_total() >= 2);

    // Fixing it clears the refusal.
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"hosts": ["broken"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    }));
    wait_for(&registry, "the fixed route accepted", CONVERGE, |s| {
        s.refusals_of(&broken).is_empty()
            && s.routes_for_host("broken.shop.svc.cluster.local").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_istio_crds_it_is_ready_with_the_kubernetes_objects() {
    common::init_tracing();
    let api = ApiServer::start().await;
    api.set_istio_served(false);
    seed(&api);
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;
    assert_eq!(registry.snapshot().workload_count(), 2);
    assert!(api.count_requests("MISS /apis/networking.istio.io") >= 3);

    // CRDs installed later are picked up.
    api.set_istio_served(true);
    wait_for(&registry, "routes once the CRDs appear", CONVERGE, |s| {
        s.routes_for_host("web.shop.svc.cluster.local").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_can_be_restricted_to_one_node() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let config = KubeSourceConfig {
        pods: PodScope::Node("node-1".into()),
        ..config()
    };
    let _task = start(&api, &registry, config).await;
    let names: Vec<_> = registry
        .snapshot()
        .workloads()
        .map(|w| w.name.to_string())
        .collect();
    assert_eq!(names, ["web-1"]);
    api.apply(pod("shop", "web-8", "node-2", "10.244.2.18", json!({})));
    api.apply(pod("shop", "web-9", "node-1", "10.244.1.19", json!({})));
    wait_for(&registry, "web-9 on node-1", CONVERGE, |s| {
        s.workload_by_ip(ip("10.244.1.19")).is_some()
    })
    .await;
    assert!(
        registry
            .snapshot()
            .workload_by_ip(ip("10.244.2.18"))
            .is_none()
    );
}

/// weft-ca's selection: its ClusterRole grants pods only, so the source must request no
/// other kind (on a cluster, any other request is refused and readiness never comes), and
/// readiness waits for the pods' list alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_selecting_pods_only_requests_no_other_kind_and_becomes_ready() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let config = KubeSourceConfig {
        kinds: source::CA_WATCHED.into(),
        ..config()
    };
    let _task = start(&api, &registry, config).await;

    // What the CA looks up: a pod's node, and the identities of a node's pods.
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot
            .workload("shop", "web-1")
            .and_then(|w| w.node.as_deref()),
        Some("node-1")
    );
    let on_node_2: Vec<_> = snapshot
        .workloads_on_node("node-2")
        .map(|w| &*w.identity)
        .collect();
    assert_eq!(on_node_2, ["spiffe://cluster.local/ns/shop/sa/web"]);
    // The other kinds' objects are in the fixture, but not in the registry.
    assert_eq!(snapshot.service_count(), 0);
    assert!(
        snapshot
            .routes_for_host("web.shop.svc.cluster.local")
            .is_none()
    );

    // Pods keep coming through the watch; by the time this one is in, any other kind's
    // watcher would long have made its first request.
    api.apply(pod("shop", "web-3", "node-1", "10.244.1.11", json!({})));
    wait_for(&registry, "web-3 through the watch", CONVERGE, |s| {
        s.workload("shop", "web-3").is_some()
    })
    .await;
    let requests = api.requests();
    let beyond_pods: Vec<_> = requests
        .iter()
        .filter(|r| !(r.starts_with("LIST pods") || r.starts_with("WATCH pods ")))
        .collect();
    assert!(
        beyond_pods.is_empty(),
        "requests beyond pods: {beyond_pods:?} (all: {requests:?})"
    );
    assert_eq!(api.count_requests("LIST pods"), 1, "{requests:?}");
}

/// A selection of no kind would never be ready: refused, naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_selecting_no_kind_is_refused() {
    common::init_tracing();
    let api = ApiServer::start().await;
    let nothing = KubeSourceConfig {
        kinds: Default::default(),
        ..config()
    };
    // Through `start`: the precise error, before any client is made.
    let started = source::start(Default::default(), None, nothing.clone()).await;
    assert!(
        matches!(started, Err(source::SourceError::NothingToWatch)),
        "{:?}",
        started.err()
    );
    // A source spawned directly ends instead of waiting forever.
    let registry = Registry::default();
    let task = source::spawn(
        &registry,
        KubeSource::new(api.client()).with_config(nothing),
    );
    let ready = tokio::time::timeout(CONVERGE, task.ready())
        .await
        .expect("the source ended instead of waiting");
    assert!(ready.is_err(), "ready with nothing watched");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_relists_without_publishing_when_nothing_changed() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let registry = Registry::default();
    let config = KubeSourceConfig {
        resync: Some(Duration::from_millis(700)),
        ..config()
    };
    let _task = start(&api, &registry, config).await;
    let version = registry.snapshot().version();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while api.count_requests("LIST pods") < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resync: {:?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        registry.snapshot().version(),
        version,
        "an identical relist published a new snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_waypoints_are_watched_beside_istio_gateways_of_the_same_name() {
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "labels": {"istio.io/waypoint-for": "all"}},
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    }));
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop"},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
    }));
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;
    let binding = weft_config::registry::model::WaypointRef {
        name: "edge".into(),
        namespace: "shop".into(),
    };
    let snapshot = registry.snapshot();
    let waypoint = snapshot.waypoint(&binding).expect("the waypoint Gateway");
    assert_eq!(
        waypoint.traffic,
        weft_config::registry::model::WaypointFor::All
    );
    assert_eq!(waypoint.port, 15008);
    assert_eq!(
        snapshot.gateways().count(),
        1,
        "Istio's Gateway is kept apart"
    );
    assert!(
        snapshot.refused().next().is_none(),
        "{:?}",
        snapshot.refused().collect::<Vec<_>>()
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("LIST gateways")),
        "{:?}",
        api.requests()
    );
}

/// Istio's mesh config is the ConfigMap `istio` of the root namespace, asked for by name
/// (so RBAC can grant that one ConfigMap); a change applies at run time, a bad one is
/// refused with its field while the last good one keeps serving, a deletion restores
/// Istio's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_config_is_the_istio_config_map_of_the_root_namespace() {
    use weft_config::api::mesh::PathNormalization;
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    let config_map = |namespace: &str, name: &str, mesh: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace},
               "data": {"mesh": mesh}})
    };
    api.apply(config_map(
        "istio-system",
        "istio",
        "pathNormalization: {normalization: NONE}\ndnsRefreshRate: 5s\n",
    ));
    api.apply(config_map(
        "istio-system",
        "other",
        "pathNormalization: {normalization: MERGE_SLASHES}\n",
    ));
    api.apply(config_map(
        "shop",
        "istio",
        "pathNormalization: {normalization: MERGE_SLASHES}\n",
    ));
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.mesh_config().path_normalization(),
        PathNormalization::None
    );
    let warned: Vec<String> = snapshot
        .warnings()
        .filter(|w| w.object.kind == weft_config::api::Kind::MeshConfig)
        .map(|w| w.field.clone())
        .collect();
    assert_eq!(
        warned,
        ["data.mesh.dnsRefreshRate"],
        "an Istio field weft ignores is named"
    );
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r
                == "LIST configmaps fields=metadata.name=istio,metadata.namespace=istio-system"),
        "{requests:?}"
    );

    api.apply(config_map(
        "istio-system",
        "istio",
        "pathNormalization: {normalization: MERGE_SLASHES}\n",
    ));
    wait_for(&registry, "the new mesh config", CONVERGE, |s| {
        s.mesh_config().path_normalization() == PathNormalization::MergeSlashes
    })
    .await;
    api.apply(config_map(
        "istio-system",
        "istio",
        "pathNormalization: {normalization: SOMETIMES}\n",
    ));
    wait_for(&registry, "the bad mesh config refused", CONVERGE, |s| {
        s.refused().any(|r| {
            r.object == ObjectRef::new(Kind::MeshConfig, "istio-system", "istio")
                && r.field == "data.mesh.pathNormalization.normalization"
        })
    })
    .await;
    assert_eq!(
        registry.snapshot().mesh_config().path_normalization(),
        PathNormalization::MergeSlashes,
        "the last good mesh config keeps serving"
    );
    api.delete("ConfigMap", "istio-system", "istio");
    wait_for(&registry, "defaults again", CONVERGE, |s| {
        s.mesh_config().path_normalization() == PathNormalization::Base
    })
    .await;
}

/// The Gateway API's routes and ReferenceGrants are watched (ReferenceGrant from v1beta1,
/// the only version a Gateway API before v1.5 serves): an HTTPRoute attached to a Service
/// is bound to that Service's host, and its backendRef to another namespace is refused
/// until a ReferenceGrant there allows it, then refused again once the grant is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_routes_follow_their_reference_grants() {
    use weft_config::translate::gateway_routes::RefAt;
    common::init_tracing();
    let api = ApiServer::start().await;
    seed(&api);
    api.apply(service(
        "other",
        "ratings",
        "10.96.0.30",
        json!({"app": "ratings"}),
    ));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                 "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": 90},
                                            {"name": "ratings", "namespace": "other", "port": 9080, "weight": 10}]}]},
    }));
    let registry = Registry::default();
    let _task = start(&api, &registry, config()).await;
    let second = RefAt::Backend {
        rule: 0,
        backend: 1,
    };
    let reason = |snapshot: &weft_config::registry::Snapshot| -> Option<&'static str> {
        let resolution = snapshot.route_resolutions().next()?;
        match resolution.backends.get(second)? {
            Ok(_) => Some("ok"),
            Err(issue) => Some(issue.reason),
        }
    };
    wait_for(
        &registry,
        "the route, refused its cross-namespace backend",
        CONVERGE,
        |s| reason(s) == Some("RefNotPermitted"),
    )
    .await;
    let snapshot = registry.snapshot();
    let routes = snapshot
        .routes_for_host("web.shop.svc.cluster.local")
        .expect("routes for web");
    assert_eq!(routes.gateway_routes.len(), 1);
    assert_eq!(routes.gateway_routes[0].port, Some(80));
    assert!(
        snapshot
            .warnings()
            .any(|w| w.field == "spec.rules[0].backendRefs[1]"
                && w.reason.contains("ReferenceGrant")),
        "{:?}",
        snapshot.warnings().collect::<Vec<_>>()
    );

    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "from-shop", "namespace": "other"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
    wait_for(&registry, "the grant allowing the backend", CONVERGE, |s| {
        reason(s) == Some("ok")
    })
    .await;
    api.delete("ReferenceGrant", "other", "from-shop");
    wait_for(&registry, "the grant gone", CONVERGE, |s| {
        reason(s) == Some("RefNotPermitted")
    })
    .await;
    // TLSRoutes (v1) and TCPRoutes (v1alpha2) are watched and resolved too.
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
        "metadata": {"name": "tls", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example.com"],
                 "rules": [{"backendRefs": [{"name": "web", "port": 443}]}]},
    }));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
        "metadata": {"name": "tcp", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "edge"}],
                 "rules": [{"backendRefs": [{"name": "web", "port": 5000}]}]},
    }));
    wait_for(&registry, "the TLSRoute and the TCPRoute", CONVERGE, |s| {
        let kinds: Vec<_> = s.route_resolutions().map(|r| r.route.kind()).collect();
        kinds.contains(&weft_config::api::Kind::TlsRoute)
            && kinds.contains(&weft_config::api::Kind::TcpRoute)
    })
    .await;
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("LIST httproutes"))
            && requests.iter().any(|r| r.starts_with("LIST grpcroutes"))
            && requests.iter().any(|r| r.starts_with("LIST tlsroutes"))
            && requests.iter().any(|r| r.starts_with("LIST tcproutes"))
            && requests
                .iter()
                .any(|r| r.starts_with("LIST referencegrants")),
        "{requests:?}"
    );
}

/// An ingress gateway given Secrets by name (`--tls-secret`, what weft-ca's controller gives
/// the gateway of a Gateway API Gateway) reads those and no other, each with a GET, never a
/// list or a watch: a Role naming them (`get`, `resourceNames`) is all it needs. Only
/// `kubernetes.io/tls` ones are held; changes and deletions are seen at the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_given_by_name_are_read_by_name_with_get_only() {
    common::init_tracing();
    let api = ApiServer::start().await;
    api.apply(namespace("shop", json!({})));
    api.apply(namespace("certs", json!({})));
    let secret = |namespace: &str, name: &str, type_: &str, crt: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
               "metadata": {"name": name, "namespace": namespace},
               "stringData": {
                   "tls.crt": format!("-----BEGIN CERTIFICATE-----\n{crt}\n-----END CERTIFICATE-----\n"),
                   "tls.key": "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n"}})
    };
    api.apply(secret("shop", "shop-cert", "kubernetes.io/tls", "one"));
    api.apply(secret("certs", "shared-cert", "kubernetes.io/tls", "one"));
    api.apply(secret("shop", "opaque", "Opaque", "one"));
    api.apply(secret("shop", "other-cert", "kubernetes.io/tls", "one"));
    let named = ["shop-cert", "shared-cert", "opaque", "nowhere"];
    api.add_user(
        "gateway-token",
        "system:serviceaccount:shop:edge-istio",
        &json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                           "resourceNames": named}]}),
    );
    let registry = Registry::default();
    let config = KubeSourceConfig {
        kinds: [Kind::Secret].into(),
        secret_names: vec![
            ("shop".into(), "shop-cert".into()),
            ("certs".into(), "shared-cert".into()),
            ("shop".into(), "opaque".into()),
            ("shop".into(), "nowhere".into()),
        ],
        secret_poll: Duration::from_millis(100),
        ..config()
    };
    let task = source::spawn(
        &registry,
        KubeSource::new(api.client_with_token("gateway-token")).with_config(config),
    );
    tokio::time::timeout(CONVERGE, task.ready())
        .await
        .expect("the kube source became ready")
        .expect("the kube source did not end");
    let held = |s: &weft_config::registry::Snapshot| -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = s
            .secrets()
            .map(|x| {
                (
                    x.metadata.namespace.clone().unwrap_or_default(),
                    x.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        held(&registry.snapshot()),
        [
            ("certs".to_string(), "shared-cert".to_string()),
            ("shop".to_string(), "shop-cert".to_string())
        ],
        "the named TLS Secrets, of any namespace; not the Opaque one, not another"
    );
    // A changed Secret and a deleted one are seen at the next read.
    api.apply(secret("shop", "shop-cert", "kubernetes.io/tls", "two"));
    wait_for(&registry, "the changed Secret", CONVERGE, |s| {
        s.secret("shop", "shop-cert")
            .and_then(|x| x.value("tls.crt").ok().flatten())
            .is_some_and(|v| String::from_utf8_lossy(&v).contains("two"))
    })
    .await;
    api.delete("Secret", "certs", "shared-cert");
    wait_for(&registry, "the deleted Secret gone", CONVERGE, |s| {
        s.secret("certs", "shared-cert").is_none()
    })
    .await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.contains("secrets") || r.starts_with("GET secrets")),
        "Secrets are read with GET only: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("GET secrets")),
        "{requests:?}"
    );
}
