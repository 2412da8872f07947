//! Istio's Bookinfo routing samples, loaded unchanged from a directory, give the registry
//! the routes, subsets and endpoints Istio would.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ip;
use weft_config::duration;
use weft_config::registry::{Registry, Snapshot, TargetPort};
use weft_config::source::{self, DirSource, SourceTask};

fn sample(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bookinfo")
        .join(path)
}

/// A directory with bookinfo.yaml, the scheduled cluster, destination-rule-all.yaml and
/// `routes`, loaded by the directory source.
async fn load(routes: &str) -> (tempfile::TempDir, Registry, SourceTask) {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    for file in [
        "platform/kube/bookinfo.yaml",
        "cluster/cluster.yaml",
        "networking/destination-rule-all.yaml",
        routes,
    ] {
        let target = dir.path().join(file);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(sample(file), &target).expect("copy sample");
    }
    let registry = Registry::default();
    let task = source::spawn(
        &registry,
        DirSource::new(dir.path()).poll_interval(Duration::from_millis(50)),
    );
    tokio::time::timeout(Duration::from_secs(10), task.ready())
        .await
        .expect("directory loaded")
        .expect("source running");
    (dir, registry, task)
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

fn assert_clean(snapshot: &Snapshot) {
    let refused: Vec<String> = snapshot.refused().map(ToString::to_string).collect();
    assert!(refused.is_empty(), "refusals: {refused:?}");
    let warnings: Vec<String> = snapshot.warnings().map(ToString::to_string).collect();
    assert!(warnings.is_empty(), "warnings: {warnings:?}");
}

/// (subset, weight) of each destination of `host`'s VirtualService's HTTP route `index`.
fn destinations(snapshot: &Snapshot, host: &str, index: usize) -> Vec<(String, Option<i32>)> {
    let routes = snapshot.routes_for_host(host).expect("routes for host");
    assert_eq!(routes.virtual_services.len(), 1);
    routes.virtual_services[0].spec.http[index]
        .route
        .iter()
        .map(|d| (d.destination.subset.clone().unwrap_or_default(), d.weight))
        .collect()
}

fn subset_addresses(snapshot: &Snapshot, host: &str, subset: &str) -> Vec<String> {
    snapshot
        .subset_endpoints(host, subset)
        .iter()
        .map(|e| e.address.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_v1_sends_every_service_to_subset_v1() {
    let (_dir, registry, _task) = load("networking/virtual-service-all-v1.yaml").await;
    let snapshot = registry.snapshot();
    assert_clean(&snapshot);

    for name in ["productpage", "reviews", "ratings", "details"] {
        let host = format!("{name}.default.svc.cluster.local");
        let service = snapshot
            .service_by_host(&host)
            .expect("service by hostname");
        assert_eq!(service.ports.len(), 1);
        assert_eq!(service.ports[0].port, 9080);
        assert_eq!(service.ports[0].name.as_deref(), Some("http"));
        assert_eq!(service.ports[0].target_port, TargetPort::Number(9080));
        assert_eq!(
            destinations(&snapshot, &host, 0),
            [("v1".to_string(), None)]
        );
        let dr = snapshot
            .routes_for_host(&host)
            .and_then(|r| r.destination_rule.clone());
        assert_eq!(dr.expect("destination rule").spec.host, name);
        assert_eq!(
            subset_addresses(&snapshot, &host, "v1").len(),
            1,
            "{host} v1"
        );
    }
    assert_eq!(subset_addresses(&snapshot, REVIEWS, "v1"), ["10.244.0.13"]);
    assert_eq!(subset_addresses(&snapshot, REVIEWS, "v2"), ["10.244.1.14"]);
    assert!(subset_addresses(&snapshot, RATINGS, "v2-mysql").is_empty());

    // The Deployments and ServiceAccounts are not ours to read; the pods are.
    assert_eq!(snapshot.workload_count(), 6);
    let reviews_v2 = snapshot
        .workload_by_ip(ip("10.244.1.14"))
        .expect("reviews-v2");
    assert_eq!(&*reviews_v2.name, "reviews-v2-0");
    assert_eq!(
        &*reviews_v2.identity,
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert!(
        reviews_v2.in_mesh,
        "the default namespace is labelled ambient"
    );
    let mut on_node_0: Vec<_> = snapshot
        .workloads_on_node("node-0")
        .map(|w| w.name.to_string())
        .collect();
    on_node_0.sort();
    assert_eq!(on_node_0, ["details-v1-0", "reviews-v1-0", "reviews-v3-0"]);
    let reviews = snapshot.service_by_host(REVIEWS).expect("reviews");
    assert_eq!(reviews.endpoints.len(), 3);
    let endpoint = &reviews.endpoints[0];
    assert_eq!(reviews.endpoint_port(9080, endpoint), Some(9080));
    assert_eq!(
        snapshot
            .endpoint_workload(endpoint)
            .map(|w| w.labels["app"].clone()),
        Some("reviews".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_test_v2_sends_jason_to_v2_and_everyone_else_to_v1() {
    let (_dir, registry, _task) = load("networking/virtual-service-reviews-test-v2.yaml").await;
    let snapshot = registry.snapshot();
    assert_clean(&snapshot);
    let routes = snapshot.routes_for_host(REVIEWS).expect("reviews routes");
    let http = &routes.virtual_services[0].spec.http;
    assert_eq!(http.len(), 2);
    let user = &http[0].matches[0].headers["end-user"];
    assert_eq!(user.exact.as_deref(), Some("jason"));
    assert_eq!(
        destinations(&snapshot, REVIEWS, 0),
        [("v2".to_string(), None)]
    );
    assert!(http[1].matches.is_empty());
    assert_eq!(
        destinations(&snapshot, REVIEWS, 1),
        [("v1".to_string(), None)]
    );
    assert_eq!(subset_addresses(&snapshot, REVIEWS, "v2"), ["10.244.1.14"]);
    // Only reviews is routed in this sample.
    assert!(
        snapshot
            .routes_for_host(RATINGS)
            .and_then(|r| r.virtual_services.first())
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_50_v3_splits_evenly_between_v1_and_v3() {
    let (_dir, registry, _task) = load("networking/virtual-service-reviews-50-v3.yaml").await;
    let snapshot = registry.snapshot();
    assert_clean(&snapshot);
    assert_eq!(
        destinations(&snapshot, REVIEWS, 0),
        [("v1".to_string(), Some(50)), ("v3".to_string(), Some(50))]
    );
    assert_eq!(subset_addresses(&snapshot, REVIEWS, "v3"), ["10.244.0.15"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_test_delay_delays_jason_by_seven_seconds() {
    let (_dir, registry, _task) = load("networking/virtual-service-ratings-test-delay.yaml").await;
    let snapshot = registry.snapshot();
    assert_clean(&snapshot);
    let routes = snapshot.routes_for_host(RATINGS).expect("ratings routes");
    let first = &routes.virtual_services[0].spec.http[0];
    assert_eq!(
        first.matches[0].headers["end-user"].exact.as_deref(),
        Some("jason")
    );
    let delay = first
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .expect("delay");
    let fixed = delay.fixed_delay.as_deref().expect("fixedDelay");
    assert_eq!(duration::parse(fixed), Ok(Duration::from_secs(7)));
    assert_eq!(delay.percentage.as_ref().map(|p| p.value), Some(100.0));
    assert_eq!(
        destinations(&snapshot, RATINGS, 0),
        [("v1".to_string(), None)]
    );
    assert_eq!(
        destinations(&snapshot, RATINGS, 1),
        [("v1".to_string(), None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_test_abort_fails_jason_with_500() {
    let (_dir, registry, _task) = load("networking/virtual-service-ratings-test-abort.yaml").await;
    let snapshot = registry.snapshot();
    assert_clean(&snapshot);
    let routes = snapshot.routes_for_host(RATINGS).expect("ratings routes");
    let first = &routes.virtual_services[0].spec.http[0];
    let abort = first
        .fault
        .as_ref()
        .and_then(|f| f.abort.as_ref())
        .expect("abort");
    assert_eq!(abort.http_status, Some(500));
    assert_eq!(abort.percentage.as_ref().map(|p| p.value), Some(100.0));
    assert!(
        first
            .fault
            .as_ref()
            .and_then(|f| f.delay.as_ref())
            .is_none()
    );
}
