//! Locality: the lab's two nodes are in two zones of one region (Node objects with
//! `topology.kubernetes.io/zone`), and each Service has an endpoint in each. Requests stay
//! in the zone while its endpoint is ready, go to the other zone when it is not, and come
//! back when it is ready again:
//! - behind the waypoint, by the DestinationRule's `localityLbSetting` (with outlier
//!   detection, as Istio needs), relative to the waypoint's own zone (its node's);
//! - without a waypoint, by the Service's `trafficDistribution: PreferClose`, relative to
//!   the client's zone, as the client's agent balances.
//!
//! Tolerances: none on counts (all requests of a burst must land in one zone: 30 requests
//! through the waypoint, 12 connections without one, whose agent balances connections);
//! readiness
//! changes are awaited for at most 20 s (the kubelet probes every second, the agents and
//! the waypoint read the cluster view within a second or two).
use std::collections::BTreeMap;
use std::time::Duration;

use weft_e2e::{eventually, lab_up, testapp_json};
use weft_lab::Lab;

const WAIT: Duration = Duration::from_secs(20);
/// How requests are sent: a waypoint balances each request of one connection, an agent
/// each connection.
#[derive(Clone, Copy)]
enum Burst {
    /// 30 requests on one keep-alive connection.
    Requests,
    /// 12 connections of one request each (all 12 to a given one of two endpoints by
    /// chance: 1 in 4,096).
    Connections,
}

/// Which pods answered a burst of GETs from the client to `url`.
fn landings(lab: &Lab, url: &str, burst: Burst) -> BTreeMap<String, usize> {
    let lines: Vec<_> = match burst {
        Burst::Requests => testapp_json(lab, "shop/client", &["get", url, "--count", "30"]),
        Burst::Connections => (0..12)
            .flat_map(|_| testapp_json(lab, "shop/client", &["get", url]))
            .collect(),
    };
    let mut counts = BTreeMap::new();
    for line in &lines {
        let pod = match line["status"].as_u64() {
            Some(200) => line["body"]["pod"].as_str().unwrap_or("?").to_string(),
            other => format!("status {other:?}"),
        };
        *counts.entry(pod).or_default() += 1;
    }
    counts
}

/// Whether every request of a burst went to `pod`.
fn all_to(counts: &BTreeMap<String, usize>, pod: &str) -> bool {
    counts.len() == 1 && counts.contains_key(pod)
}

/// Turns `pod`'s health (and so, through its readiness probe, its endpoint) off or on.
fn set_health(lab: &Lab, pod: &str, state: &str) {
    let url = format!("http://127.0.0.1:9080/control/health?state={state}");
    let answer = testapp_json(lab, pod, &["get", "--method", "POST", &url]);
    assert_eq!(answer[0]["status"], 200, "{answer:?}");
}

/// Waits for `pod`'s readiness to be `ready`.
fn await_ready(lab: &Lab, pod: &str, ready: bool) {
    assert!(
        eventually(WAIT, || lab.pod_ready(pod).ok() == Some(ready)),
        "{pod} ready={ready}; events: {:?}",
        lab.pod_events(pod)
    );
}

/// Fails `near`'s endpoint: requests then go to `far`; restores it: they come back.
fn fails_over_and_back(lab: &Lab, url: &str, burst: Burst, near: &str, far: &str) {
    let (near_name, far_name) = (pod_name(near), pod_name(far));
    let mut seen = BTreeMap::new();
    assert!(
        eventually(WAIT, || {
            seen = landings(lab, url, burst);
            all_to(&seen, near_name)
        }),
        "{url}: every request stays in {near}'s zone while it is ready: {seen:?}"
    );
    set_health(lab, near, "failing");
    await_ready(lab, near, false);
    assert!(
        eventually(WAIT, || {
            seen = landings(lab, url, burst);
            all_to(&seen, far_name)
        }),
        "{url}: with {near} not ready every request fails over to {far}: {seen:?}"
    );
    set_health(lab, near, "serving");
    await_ready(lab, near, true);
    assert!(
        eventually(WAIT, || {
            seen = landings(lab, url, burst);
            all_to(&seen, near_name)
        }),
        "{url}: {near} ready again takes every request back: {seen:?}"
    );
}

fn pod_name(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, name)| name)
}

#[test]
fn requests_stay_in_their_zone_until_its_endpoints_fail_then_fail_over() {
    let lab = lab_up("loc", "locality", 2, true);

    // Behind the waypoint: the zone is the waypoint's, wherever the lab scheduled it.
    let waypoint_node = lab
        .plan
        .pod("shop/waypoint-0")
        .map(|p| p.node.clone())
        .unwrap_or_else(|| panic!("the waypoint's pod; pods: {:?}", lab.summary().pods));
    let (near, far) = if waypoint_node == "node-1" {
        ("shop/zonal-1", "shop/zonal-2")
    } else {
        ("shop/zonal-2", "shop/zonal-1")
    };
    fails_over_and_back(
        &lab,
        "http://zonal.shop.svc.cluster.local:9080/",
        Burst::Requests,
        near,
        far,
    );

    // Without a waypoint: the client's zone (node-1's), as its agent chooses.
    fails_over_and_back(
        &lab,
        "http://close.shop.svc.cluster.local:9080/",
        Burst::Connections,
        "shop/close-1",
        "shop/close-2",
    );
}
