//! The waypoint: Istio VirtualService, DestinationRule and L7 AuthorizationPolicy rules
//! applied to real requests between lab pods, carried over HBONE end to end, and a
//! destination agent that refuses traffic which bypasses the waypoint.
//!
//! Tolerances: weighted and probabilistic outcomes are asserted within ±5 percentage
//! points over the stated number of requests (a binomial standard deviation of 0.9 point
//! at 2,000 requests and 80/20, 1.6 points at 1,000 and 50/50: at least 3σ); times within
//! ±0.2 s.
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up, pod_ip, testapp, testapp_in, testapp_json};
use weft_lab::Lab;

const REVIEWS: &str = "http://reviews.shop.svc.cluster.local:9080";

fn get(lab: &Lab, url: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["get", url];
    args.extend_from_slice(extra);
    testapp_json(lab, "shop/client", &args)
}

fn statuses(lines: &[Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts
            .entry(line["status"].as_u64().unwrap_or(0))
            .or_default() += 1;
    }
    counts
}

fn versions(lines: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let version = line["body"]["version"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        *counts.entry(version).or_default() += 1;
    }
    counts
}

/// What a testapp server counted, asked on the pod's loopback (a waypoint-bound pod
/// refuses anything but its waypoint).
fn stats_of(lab: &Lab, pod: &str) -> Vec<Value> {
    testapp_json(lab, pod, &["get", "http://127.0.0.1:9080/stats"])
}

fn share(count: usize, total: usize) -> f64 {
    100.0 * count as f64 / total as f64
}

#[test]
fn virtual_service_routes_by_header_and_weight() {
    let lab = lab_up("wpr", "waypoint", 2, true);
    let jason = get(&lab, REVIEWS, &["-H", "end-user: jason", "--count", "200"]);
    assert_eq!(
        versions(&jason),
        BTreeMap::from([("v2".into(), 200)]),
        "end-user: jason goes to v2"
    );
    let others = get(&lab, REVIEWS, &["-H", "end-user: maria", "--count", "200"]);
    assert_eq!(
        versions(&others),
        BTreeMap::from([("v1".into(), 200)]),
        "everyone else to v1"
    );

    let split = get(&lab, &format!("{REVIEWS}/split"), &["--count", "2000"]);
    let counts = versions(&split);
    let v1 = share(counts.get("v1").copied().unwrap_or(0), 2000);
    let v2 = share(counts.get("v2").copied().unwrap_or(0), 2000);
    assert!(
        (v1 - 80.0).abs() <= 5.0 && (v2 - 20.0).abs() <= 5.0,
        "80/20 split: {counts:?}"
    );

    // HTTP/2 with trailers (as gRPC sends them) passes through intact both ways.
    let h2 = get(
        &lab,
        REVIEWS,
        &[
            "--http2",
            "--body-bytes",
            "1000",
            "--trailer",
            "x-checksum: 1234",
            "--trailer",
            "grpc-status-details: none",
        ],
    );
    assert_eq!(h2[0]["status"], 200, "{h2:?}");
    assert_eq!(h2[0]["http_version"], "HTTP/2.0");
    assert_eq!(
        h2[0]["body"]["body_bytes"], 1000,
        "the request body arrived whole"
    );
    assert_eq!(
        h2[0]["body"]["trailers"]["x-checksum"][0], "1234",
        "request trailers reach the app: {h2:?}"
    );
    assert_eq!(
        h2[0]["trailers"]["x-checksum"][0], "1234",
        "response trailers reach the client: {h2:?}"
    );
    assert_eq!(h2[0]["trailers"]["grpc-status-details"][0], "none");

    // The waypoint counted every request in Istio's metric, with the client's identity.
    let scraped = testapp_json(
        &lab,
        "shop/waypoint-0",
        &["get", "http://127.0.0.1:15020/metrics"],
    );
    let text = scraped[0]["body"].as_str().unwrap_or_default().to_string();
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            l.contains(r#"reporter="waypoint""#)
                && l.contains(r#"destination_service="reviews.shop.svc.cluster.local""#)
                && l.contains(r#"source_principal="spiffe://cluster.local/ns/shop/sa/client""#)
                && l.contains(r#"response_code="200""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 2401.0, "istio_requests_total for reviews:\n{text}");
    // …and which endpoint answered: v2 took jason's 200 and its share of the split.
    let to_v2: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"destination_service="reviews.shop.svc.cluster.local""#)
                && l.contains(r#"destination_version="v2""#)
                && l.contains(
                    r#"destination_principal="spiffe://cluster.local/ns/shop/sa/reviews""#,
                )
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let split_v2 = counts.get("v2").copied().unwrap_or(0) as f64;
    assert_eq!(to_v2, 200.0 + split_v2, "destination labels of v2:\n{text}");

    // The requests reached v2 through the waypoint: its agent took them over HBONE from
    // the waypoint's identity, never from the client's.
    let v2_ip = pod_ip(&lab, "shop/reviews-v2-0");
    let to_v2 = |r: &Value| {
        r["direction"] == "inbound"
            && r["original_destination"]
                .as_str()
                .is_some_and(|d| d.starts_with(&v2_ip))
    };
    let records =
        weft_e2e::agent_connections_when(&lab, "node-1", |records| records.iter().any(to_v2));
    let peers: Vec<&str> = records
        .iter()
        .filter(|r| to_v2(r))
        .filter_map(|r| r["peer_identity"].as_str())
        .collect();
    assert!(
        !peers.is_empty(),
        "no inbound record for reviews-v2: {records:?}"
    );
    assert!(
        peers
            .iter()
            .all(|p| *p == "spiffe://cluster.local/ns/shop/sa/waypoint"),
        "reviews-v2 was reached by {peers:?}"
    );
}

#[test]
fn retries_timeouts_faults_and_mirrors() {
    let lab = lab_up("wpf", "waypoint", 2, true);

    // Retries: attempts 3 (up to 4 tries) on a backend failing 30% of requests. Expected
    // success 1 - 0.3^4 = 99.2%, i.e. 8 failures in 1,000 (σ ≈ 2.8); the bound allows 3σ,
    // and still refuses 3 tries (27 expected failures).
    let sent = 1000;
    let flaky = get(
        &lab,
        "http://flaky.shop.svc.cluster.local:9080/",
        &["--count", "1000"],
    );
    let failed = sent - statuses(&flaky).get(&200).copied().unwrap_or(0);
    assert!(
        failed <= 17,
        "retries should hide the failures: {:?}",
        statuses(&flaky)
    );
    // The backend saw each request once plus its retries: 1 + 0.3 + 0.09 + 0.027 = 1.417
    // tries per request on average, never more than 4.
    let stats = stats_of(&lab, "shop/flaky-0");
    let received = stats[0]["body"]["requests"].as_u64().unwrap_or(0) as f64 / sent as f64;
    assert!(
        (1.33..=1.50).contains(&received),
        "the backend counted {received:.3} tries per request, expected 1.417"
    );

    // Bodies of unknown length (gRPC-style: HTTP/2, no content-length, trailers) are
    // retried too: recorded as they stream, replayed whole. 4 tries fail 0.3^4 = 0.8% (1.6
    // expected in 200); without retries 30% (60) would.
    let uploads = get(
        &lab,
        "http://flaky.shop.svc.cluster.local:9080/upload",
        &[
            "--http2",
            "--method",
            "POST",
            "--body-bytes",
            "20000",
            "--trailer",
            "x-upload-check:complete",
            "--count",
            "200",
        ],
    );
    let answered: Vec<&Value> = uploads.iter().filter(|l| l["status"] == 200).collect();
    assert!(
        answered.len() >= 192,
        "retries should hide the failures of streamed uploads: {:?}",
        statuses(&uploads)
    );
    for line in answered {
        assert_eq!(
            line["body"]["body_bytes"], 20000,
            "the backend got the whole body: {line}"
        );
        assert_eq!(
            line["body"]["trailers"]["x-upload-check"][0], "complete",
            "and its trailers: {line}"
        );
    }

    // Timeout 1 s on a 3 s backend: 504 after 1 s.
    let slow = get(&lab, &format!("{REVIEWS}/slow?delay_ms=3000"), &[]);
    assert_eq!(slow[0]["status"], 504, "{slow:?}");
    let elapsed = slow[0]["elapsed_ms"].as_u64().unwrap_or(0);
    assert!(
        (800..=1200).contains(&elapsed),
        "timed out after {elapsed} ms, expected 1000 ± 200"
    );

    // Fault abort 50%: ±5 points over 1,000 is 3σ (σ = 1.6 points).
    let aborted = get(&lab, &format!("{REVIEWS}/abort"), &["--count", "1000"]);
    let s503 = statuses(&aborted).get(&503).copied().unwrap_or(0);
    assert!(
        (share(s503, 1000) - 50.0).abs() <= 5.0,
        "abort 50%: {:?}",
        statuses(&aborted)
    );
    // Fault delay 500 ms.
    let delayed = get(&lab, &format!("{REVIEWS}/delay"), &["--count", "3"]);
    for line in &delayed {
        assert_eq!(line["status"], 200);
        assert!(
            line["elapsed_ms"].as_u64().unwrap_or(0) >= 500,
            "delay not applied: {line}"
        );
    }

    // Mirror: the shadow service gets a copy with `-shadow` on the host; the client sees
    // the primary's answer.
    let mirrored = get(&lab, &format!("{REVIEWS}/mirror"), &["--count", "5"]);
    for line in &mirrored {
        assert_eq!(
            line["body"]["version"], "v1",
            "client sees the primary: {line}"
        );
    }
    let copies = weft_e2e::eventually(Duration::from_secs(5), || {
        let stats = stats_of(&lab, "shop/shadow");
        stats[0]["body"]["by_host"]
            .as_object()
            .is_some_and(|hosts| {
                hosts
                    .iter()
                    .any(|(h, n)| h.contains("-shadow") && n.as_u64() == Some(5))
            })
    });
    assert!(
        copies,
        "the shadow service did not receive 5 mirrored copies"
    );
}

#[test]
fn outlier_detection_pool_limits_authorization_and_bypass() {
    let lab = lab_up("wpo", "waypoint", 2, true);

    // Outlier detection: the always-failing endpoint is ejected after 3 consecutive 5xx.
    let lines = get(
        &lab,
        "http://backend.shop.svc.cluster.local:9080/",
        &["--count", "60"],
    );
    let failures = statuses(&lines).get(&500).copied().unwrap_or(0);
    assert!(
        failures <= 3,
        "at most 3 failures before ejection, saw {failures}"
    );
    assert!(
        lines[20..].iter().all(|l| l["status"] == 200),
        "after ejection all go to the good endpoint"
    );

    // Connection pool: one request at a time; concurrent ones overflow with 503.
    let children: Vec<_> = (0..6)
        .map(|_| {
            let mut command = lab
                .pod_command("shop/client", weft_e2e::testapp())
                .unwrap_or_else(|e| panic!("client command: {e}"));
            command
                .args(["get", "http://narrow.shop.svc.cluster.local:9080/"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting a client: {e}"))
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for child in children {
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("client: {e}"));
        let line: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let overloaded = line["headers"]["x-envoy-overloaded"].is_array();
        *outcomes
            .entry((line["status"].as_u64().unwrap_or(0), overloaded))
            .or_insert(0) += 1;
    }
    assert!(
        outcomes.contains_key(&(200, false)),
        "some requests pass: {outcomes:?}"
    );
    assert!(
        outcomes.contains_key(&(503, true)),
        "some overflow with x-envoy-overloaded: {outcomes:?}"
    );

    // L7 DENY on /admin*, other paths pass.
    assert_eq!(
        get(&lab, &format!("{REVIEWS}/admin/users"), &[])[0]["status"],
        403
    );
    assert_eq!(
        get(&lab, &format!("{REVIEWS}/products"), &[])[0]["status"],
        200
    );

    // Bypass: dialing a reviews pod directly is refused by its agent.
    let reviews_ip = pod_ip(&lab, "shop/reviews-v1-0");
    let bypass = testapp_in(
        &lab,
        "shop/client",
        &["get", &format!("http://{reviews_ip}:9080/")],
    );
    assert!(
        !bypass.status.success(),
        "a direct request to a waypoint-bound pod must fail: {}",
        String::from_utf8_lossy(&bypass.stdout)
    );
}

#[test]
fn a_stopping_waypoint_finishes_the_requests_in_flight() {
    let lab = lab_up("wpd", "waypoint", 2, true);
    assert_eq!(get(&lab, &format!("{REVIEWS}/warm"), &[])[0]["status"], 200);
    // A 2 s request on a keep-alive connection, then a second one; the waypoint is told to
    // stop (SIGTERM, as a rollout does) 0.5 s into the first.
    let mut command = lab
        .pod_command("shop/client", testapp())
        .expect("a command in the client pod");
    let request = command
        .args([
            "get",
            "--count",
            "2",
            &format!("{REVIEWS}/inflight?delay_ms=2000"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the requests start");
    std::thread::sleep(Duration::from_millis(500));
    let pids = || {
        lab.pod_processes("shop/waypoint-0")
            .expect("the waypoint pod")
    };
    let waypoint = pids();
    assert!(!waypoint.is_empty(), "the waypoint runs");
    for pid in &waypoint {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let output = request.wait_with_output().expect("the requests end");
    let replies: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON ({e}): {line}")))
        .collect();
    assert_eq!(
        replies.len(),
        2,
        "both requests answered: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let (first, second) = (&replies[0], &replies[1]);
    assert_eq!(
        first["status"], 200,
        "the request in flight completed: {first}"
    );
    // A draining waypoint asks HTTP/1.1 clients to reconnect, so an idle keep-alive
    // connection does not hold it until the drain time is up.
    assert_eq!(
        first["headers"]["connection"][0], "close",
        "the answer in flight during the drain says Connection: close: {first}"
    );
    assert_eq!(
        second["status"], 200,
        "a request after it is served (new connections are accepted during the drain delay): {second}"
    );
    assert_ne!(
        first["local"], second["local"],
        "the second request went on a new connection"
    );
    // It exits once drained: the 5 s drain delay, then the idle connections' GOAWAY.
    assert!(
        eventually(Duration::from_secs(15), || pids().is_empty()),
        "the waypoint exited after draining"
    );
}
