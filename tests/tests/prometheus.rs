//! A real Prometheus (Debian's `prometheus`, installed by `cargo xtask setup`) scrapes the
//! lab's agents and its waypoint as a cluster's Prometheus would from the
//! `prometheus.io/scrape|port|path` annotations of `deploy/` (port 15020,
//! `/stats/prometheus`), every second, from node-1's network namespace (where the nodes'
//! addresses and the pods' are routed); requests of known number, status, delay and size
//! go through the waypoint, and the PromQL of Istio's standard dashboards answers with
//! exactly what was sent.
//!
//! Tolerances: the success rate is a ratio of two `rate()`s whose extrapolation may differ
//! by one scrape interval at the series' start: ±0.02 around the exact ratio.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use weft_e2e::dashboards;
use weft_e2e::graph::{dot_edges, weftctl_graph};
use weft_e2e::{eventually, lab_up, pod_ip, testapp_json};
use weft_lab::Lab;

const REVIEWS: &str = "http://reviews.shop.svc.cluster.local:9080";
const PROMETHEUS: &str = "127.0.0.1:9090";
const WAIT: Duration = Duration::from_secs(60);

/// Prometheus running in a node's network namespace; killed, and its configuration and
/// database removed, when dropped (a failing test included).
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `prometheus.io/port` and `prometheus.io/path` annotations the agent's DaemonSet
/// carries (the waypoint controller gives waypoints the same).
fn scrape_annotations() -> (String, String) {
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/agent.yaml");
    let text = std::fs::read_to_string(&manifest).expect("deploy/base/agent.yaml");
    let annotation = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {key} annotation in {}", manifest.display()))
    };
    assert_eq!(annotation("prometheus.io/scrape"), "true");
    (
        annotation("prometheus.io/port"),
        annotation("prometheus.io/path"),
    )
}

fn start_prometheus(lab: &Lab, agents: &[String], waypoint: &str) -> Prometheus {
    let (port, path) = scrape_annotations();
    let dir = PathBuf::from(format!("/run/weft-lab/{}/prometheus", lab.summary().lab));
    std::fs::create_dir_all(&dir).expect("Prometheus' directory");
    let targets = |hosts: &[String]| {
        hosts
            .iter()
            .map(|h| format!("'{h}:{port}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n\
         - job_name: weft-agents\n  metrics_path: {path}\n  static_configs: [{{targets: [{agents}]}}]\n\
         - job_name: weft-waypoints\n  metrics_path: {path}\n  static_configs: [{{targets: [{waypoint}]}}]\n",
        agents = targets(agents),
        waypoint = targets(&[waypoint.to_string()]),
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("the scrape configuration");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("Prometheus' log");
    let mut command = lab
        .node_command("node-1", "prometheus")
        .expect("a node command");
    command
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = command
        .spawn()
        .expect("starting prometheus (cargo xtask setup installs it)");
    Prometheus { child, dir }
}

/// `GET path` on Prometheus, from node-1's network namespace.
fn prometheus_get(lab: &Lab, path: &str) -> Option<Value> {
    let fetched = lab.in_node_netns("node-1", || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(PROMETHEUS)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    let response = fetched.ok()?.ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query that answers one sample; `None` when it answers
/// none (yet) or Prometheus is not up.
fn query(lab: &Lab, promql: &str) -> Option<f64> {
    let answer = prometheus_get(lab, &format!("/api/v1/query?query={}", encode(promql)))?;
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    let result = answer["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{promql}: {answer}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits (boundedly) until `promql` answers `want`, and returns the last answer.
fn until(lab: &Lab, promql: &str, want: f64) -> Option<f64> {
    let mut last = None;
    eventually(WAIT, || {
        last = query(lab, promql);
        last == Some(want)
    });
    last
}

/// `count` requests from shop/client through the waypoint, each answered `status`.
fn send(lab: &Lab, path: &str, count: u32, extra: &[&str], status: u16) {
    send_from(
        lab,
        "shop/client",
        &format!("{REVIEWS}{path}"),
        count,
        extra,
        status,
    );
}

/// `count` requests to `url` from `pod`, each answered `status`.
fn send_from(lab: &Lab, pod: &str, url: &str, count: u32, extra: &[&str], status: u16) {
    let count = count.to_string();
    let mut args = vec!["get", url, "--count", &count];
    args.extend_from_slice(extra);
    let lines = testapp_json(lab, pod, &args);
    assert_eq!(lines.len().to_string(), count, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["status"] == status),
        "every answer {status}: {lines:?}"
    );
}

const TOTAL: &str =
    r#"sum(istio_requests_total{reporter="waypoint",destination_service=~"reviews.*"})"#;
const REQUEST_BYTES: &str =
    r#"sum(istio_request_bytes_sum{reporter="waypoint",destination_service=~"reviews.*"})"#;
const RESPONSE_BYTES: &str =
    r#"sum(istio_response_bytes_sum{reporter="waypoint",destination_service=~"reviews.*"})"#;

#[test]
fn prometheus_scrapes_istios_metrics_and_the_dashboards_queries_add_up() {
    let lab = lab_up("prom", "waypoint", 2, true);
    let agents: Vec<String> = lab.summary().nodes.iter().map(|n| n.1.clone()).collect();
    let waypoint = pod_ip(&lab, "shop/waypoint-0");
    let _prometheus = start_prometheus(&lab, &agents, &waypoint);

    // Every target is scraped: both agents and the waypoint.
    assert_eq!(until(&lab, "sum(up)", 3.0), Some(3.0), "all targets up");
    assert_eq!(
        until(&lab, r#"count(istio_build{component="ztunnel"})"#, 2.0),
        Some(2.0),
        "each agent says what it is"
    );
    assert_eq!(
        query(
            &lab,
            r#"count(istio_build{component="proxy",job="weft-waypoints"})"#
        ),
        Some(1.0)
    );

    // One success and one failure make both series, scraped before what is measured.
    send(&lab, "/", 1, &[], 200);
    send(&lab, "/?status=500", 1, &[], 500);
    assert_eq!(until(&lab, TOTAL, 2.0), Some(2.0));
    std::thread::sleep(Duration::from_secs(3));
    let (request0, response0) = (
        query(&lab, REQUEST_BYTES).expect("request bytes"),
        query(&lab, RESPONSE_BYTES).expect("response bytes"),
    );

    // 20 uploads of 10,000 bytes, then 20 of 30,000, each answered 2,000 bytes after
    // 120 ms. Their headers are the same (content-length has five digits either way).
    fn upload(bytes: &str) -> [&str; 4] {
        ["--method", "POST", "--body-bytes", bytes]
    }
    send(
        &lab,
        "/bytes?n=2000&delay_ms=120",
        20,
        &upload("10000"),
        200,
    );
    assert_eq!(until(&lab, TOTAL, 22.0), Some(22.0));
    let (request1, response1) = (
        query(&lab, REQUEST_BYTES).expect("request bytes"),
        query(&lab, RESPONSE_BYTES).expect("response bytes"),
    );
    send(
        &lab,
        "/bytes?n=2000&delay_ms=120",
        20,
        &upload("30000"),
        200,
    );
    assert_eq!(until(&lab, TOTAL, 42.0), Some(42.0));
    let (request2, response2) = (
        query(&lab, REQUEST_BYTES).expect("request bytes"),
        query(&lab, RESPONSE_BYTES).expect("response bytes"),
    );
    // The bodies, exactly: the second batch sent 20 × 20,000 bytes more than the first.
    assert_eq!(
        (request2 - request1) - (request1 - request0),
        400_000.0,
        "request bytes {request0} → {request1} → {request2}"
    );
    // Headers and body of each request: the body and a few hundred bytes of headers.
    let headers = (request1 - request0) / 20.0 - 10_000.0;
    assert!(
        (50.0..=500.0).contains(&headers),
        "request headers of {headers} bytes each"
    );
    // The same answers both times: 2,000 bytes and their headers each.
    assert_eq!(
        response2 - response1,
        response1 - response0,
        "response bytes {response0} → {response1} → {response2}"
    );
    let response_headers = (response1 - response0) / 20.0 - 2_000.0;
    assert!(
        (20.0..=1000.0).contains(&response_headers),
        "response headers of {response_headers} bytes each"
    );

    // Ten failures, also delayed (500: Istio's default retry policy would retry a 503).
    send(&lab, "/?status=500&delay_ms=120", 10, &[], 500);
    assert_eq!(until(&lab, TOTAL, 52.0), Some(52.0));
    assert_eq!(
        query(
            &lab,
            r#"sum(istio_requests_total{reporter="waypoint",destination_service=~"reviews.*",response_code="500"})"#
        ),
        Some(11.0)
    );
    std::thread::sleep(Duration::from_secs(2));

    // Istio's dashboards: the success rate of what was sent since both series existed
    // (40 of 50), and the 99th percentile of durations (every one of them 120 ms and a
    // little: Envoy's bucket from 100 to 250 ms).
    let success = query(
        &lab,
        r#"sum(rate(istio_requests_total{reporter="waypoint",response_code!~"5.."}[1m])) / sum(rate(istio_requests_total{reporter="waypoint"}[1m]))"#,
    )
    .expect("a success rate");
    assert!((success - 0.8).abs() <= 0.02, "success rate {success}");
    let p99 = query(
        &lab,
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[1m])) by (le))"#,
    )
    .expect("a 99th percentile");
    assert!((100.0..=250.0).contains(&p99), "p99 {p99} ms");
    assert_eq!(
        query(
            &lab,
            r#"sum(istio_request_bytes_count{reporter="waypoint",destination_service=~"reviews.*"})"#
        ),
        Some(52.0),
        "one size per request"
    );
    assert_eq!(
        query(
            &lab,
            r#"sum(istio_requests_total{reporter="waypoint",request_protocol="http",connection_security_policy="mutual_tls",response_flags="-",source_workload="client"})"#
        ),
        Some(52.0),
        "the labels dashboards group by"
    );
}

/// Every series an instant query answers: its labels and value (`None` when Prometheus
/// is not up).
fn query_all(lab: &Lab, promql: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
    let answer = prometheus_get(lab, &format!("/api/v1/query?query={}", encode(promql)))?;
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    let result = answer["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .filter_map(|series| {
                let labels = series["metric"]
                    .as_object()?
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect(),
    )
}

const PAGE: &str = "http://productpage.bookinfo.svc.cluster.local:9080/productpage";
const BOOKINFO_REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080";
const CURL: &str = "bookinfo/curl";
/// The dashboards' variables, as the lab's Bookinfo gives them (the lab names a
/// Deployment's workload after its pod).
const VALUES: [(&str, &str); 3] = [
    ("service", "reviews.bookinfo.svc.cluster.local"),
    ("namespace", "bookinfo"),
    ("workload", "reviews-v1-0"),
];
/// `$__rate_interval` and `$__range`: every request of the test is within them.
const WINDOW: &str = "5m";
const RANGE: &str = "10m";

fn waypoint_count(service: &str) -> String {
    format!(
        r#"sum(istio_requests_total{{reporter="waypoint",destination_service="{service}.bookinfo.svc.cluster.local"}})"#
    )
}

/// The queries of the panel titled `title` of dashboard `file`.
fn panel(file: &str, title: &str) -> Vec<String> {
    let (_, dashboard) = dashboards::all()
        .into_iter()
        .find(|(name, _)| name == file)
        .unwrap_or_else(|| panic!("no dashboard {file}"));
    dashboards::panels(&dashboard)
        .into_iter()
        .find(|p| p.title == title)
        .unwrap_or_else(|| panic!("no panel {title:?} in {file}"))
        .exprs
}

/// The first query of a panel over the counters' totals, with the lab's values: what it
/// counted since the lab started.
fn total_of(lab: &Lab, file: &str, title: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let expr = dashboards::substitute(
        &dashboards::totals(&panel(file, title)[0]),
        WINDOW,
        RANGE,
        &VALUES,
    );
    query_all(lab, &expr).unwrap_or_else(|| panic!("{file}: {title}: no answer to {expr}"))
}

fn single(answer: &[(BTreeMap<String, String>, f64)], what: &str) -> f64 {
    assert_eq!(answer.len(), 1, "{what}: {answer:?}");
    answer[0].1
}

/// `source:code → value` of a panel's series.
fn by(answer: &[(BTreeMap<String, String>, f64)], labels: &[&str]) -> BTreeMap<String, f64> {
    answer
        .iter()
        .map(|(l, v)| {
            let key: Vec<&str> = labels
                .iter()
                .map(|k| l.get(*k).map_or("", String::as_str))
                .collect();
            (key.join(":"), *v)
        })
        .collect()
}

/// The request-size panel's bytes over every request from every source (the numerator of
/// its average, over totals).
fn request_bytes(lab: &Lab) -> f64 {
    let average = panel("weft-service.json", "Incoming Request Size By Source")
        .into_iter()
        .find(|e| e.contains("istio_request_bytes_sum"))
        .expect("an average of request sizes");
    let totals = dashboards::totals(&average);
    let numerator = totals.split(" / ").next().unwrap_or_default();
    let expr = format!(
        "sum({})",
        dashboards::substitute(numerator, WINDOW, RANGE, &VALUES)
    );
    query(lab, &expr).unwrap_or_else(|| panic!("no answer to {expr}"))
}

#[test]
fn every_dashboard_panel_answers_and_the_key_ones_count_exactly_what_was_sent() {
    let lab = lab_up("dash", "graph", 2, true);
    let agents: Vec<String> = lab.summary().nodes.iter().map(|n| n.1.clone()).collect();
    let waypoint = pod_ip(&lab, "bookinfo/waypoint-0");
    let _prometheus = start_prometheus(&lab, &agents, &waypoint);
    assert_eq!(until(&lab, "sum(up)", 3.0), Some(3.0), "all targets up");

    // 20 pages: productpage calls details (L4) and reviews, which calls ratings (both
    // through the waypoint).
    send_from(&lab, CURL, PAGE, 20, &[], 200);
    assert_eq!(until(&lab, &waypoint_count("reviews"), 20.0), Some(20.0));
    assert_eq!(until(&lab, &waypoint_count("ratings"), 20.0), Some(20.0));
    let bytes0 = request_bytes(&lab);
    // Uploads straight to reviews: 10 of 10,000 bytes, then 10 of 30,000 (/bytes calls
    // nothing onward).
    let reviews_bytes = format!("{BOOKINFO_REVIEWS}/bytes?n=2000");
    let upload = |n: &'static str| ["--method", "POST", "--body-bytes", n];
    send_from(&lab, CURL, &reviews_bytes, 10, &upload("10000"), 200);
    assert_eq!(until(&lab, &waypoint_count("reviews"), 30.0), Some(30.0));
    let bytes1 = request_bytes(&lab);
    send_from(&lab, CURL, &reviews_bytes, 10, &upload("30000"), 200);
    assert_eq!(until(&lab, &waypoint_count("reviews"), 40.0), Some(40.0));
    let bytes2 = request_bytes(&lab);
    // 5 failures (reviews still calls ratings for them).
    send_from(
        &lab,
        CURL,
        &format!("{BOOKINFO_REVIEWS}/?status=500"),
        5,
        &[],
        500,
    );
    assert_eq!(until(&lab, &waypoint_count("reviews"), 45.0), Some(45.0));
    assert_eq!(until(&lab, &waypoint_count("ratings"), 25.0), Some(25.0));
    std::thread::sleep(Duration::from_secs(3));

    // Every query of every panel, and every variable's values, answer something.
    for (file, dashboard) in dashboards::all() {
        for p in dashboards::panels(&dashboard) {
            for expr in &p.exprs {
                for form in [expr.clone(), dashboards::totals(expr)] {
                    let promql = dashboards::substitute(&form, WINDOW, RANGE, &VALUES);
                    let mut answer = Vec::new();
                    eventually(WAIT, || {
                        answer = query_all(&lab, &promql).unwrap_or_default();
                        answer.iter().any(|(_, v)| v.is_finite())
                    });
                    assert!(
                        answer.iter().any(|(_, v)| v.is_finite()),
                        "{file}: {:?} answers {answer:?} to {promql}",
                        p.title
                    );
                }
            }
        }
        for (name, query) in dashboards::variables(&dashboard) {
            let Some(query) = query else { continue };
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{file}: ${name} is not label_values(…): {query}"));
            let (selector, label) = inner.rsplit_once(',').expect("label_values(query, label)");
            let label = label.trim();
            let promql = dashboards::substitute(
                &format!("count by ({label}) ({selector})"),
                WINDOW,
                RANGE,
                &VALUES,
            );
            let values: Vec<String> = query_all(&lab, &promql)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(l, _)| l.get(label).cloned())
                .collect();
            let want = VALUES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            assert!(
                want.is_some_and(|w| values.iter().any(|v| v == w)),
                "{file}: ${name} offers {values:?}, not {want:?} ({promql})"
            );
        }
    }

    // Exactly what was sent: 45 requests to reviews (40 answered), 25 to ratings.
    let mesh = "weft-mesh.json";
    assert_eq!(
        single(
            &total_of(&lab, mesh, "Global Request Volume"),
            "mesh volume"
        ),
        70.0
    );
    assert_eq!(single(&total_of(&lab, mesh, "5xxs"), "5xx"), 5.0);
    assert_eq!(single(&total_of(&lab, mesh, "4xxs"), "4xx"), 0.0);
    let success = single(
        &total_of(&lab, mesh, "Global Success Rate (non-5xx responses)"),
        "mesh success",
    );
    assert!((success - 65.0 / 70.0).abs() < 1e-9, "success {success}");
    let service = "weft-service.json";
    assert_eq!(
        single(&total_of(&lab, service, "Client Request Volume"), "volume"),
        45.0
    );
    let success = single(
        &total_of(&lab, service, "Client Success Rate (non-5xx responses)"),
        "service success",
    );
    assert!((success - 40.0 / 45.0).abs() < 1e-9, "success {success}");
    assert_eq!(
        by(
            &total_of(
                &lab,
                service,
                "Incoming Requests By Source And Response Code"
            ),
            &["source_workload", "response_code"]
        ),
        BTreeMap::from([
            ("curl:200".to_string(), 20.0),
            ("curl:500".to_string(), 5.0),
            ("productpage-v1-0:200".to_string(), 20.0),
        ])
    );
    assert_eq!(
        by(
            &total_of(&lab, service, "Requests By Destination Workload"),
            &["destination_workload"]
        ),
        BTreeMap::from([("reviews-v1-0".to_string(), 45.0)])
    );
    let workload = "weft-workload.json";
    assert_eq!(
        single(&total_of(&lab, workload, "Incoming Request Volume"), "in"),
        45.0
    );
    assert_eq!(
        by(
            &total_of(
                &lab,
                workload,
                "Outgoing Requests By Destination And Response Code"
            ),
            &["destination_service", "response_code"]
        ),
        BTreeMap::from([("ratings.bookinfo.svc.cluster.local:200".to_string(), 25.0)])
    );
    // The request-size panel's sums: the second batch's bodies were 10 × 20,000 bytes
    // larger than the first's, headers alike.
    assert_eq!(
        (bytes2 - bytes1) - (bytes1 - bytes0),
        200_000.0,
        "request bytes {bytes0} → {bytes1} → {bytes2}"
    );
    let headers = (bytes1 - bytes0) / 10.0 - 10_000.0;
    assert!((50.0..=500.0).contains(&headers), "headers of {headers} B");

    // The service graph from the same Prometheus. `rate()` counts what a series gained
    // between its samples: 10 more pages, so that every hop's series has.
    send_from(&lab, CURL, PAGE, 10, &[], 200);
    assert_eq!(until(&lab, &waypoint_count("reviews"), 55.0), Some(55.0));
    assert_eq!(until(&lab, &waypoint_count("ratings"), 35.0), Some(35.0));
    std::thread::sleep(Duration::from_secs(2));
    let dot = weftctl_graph(
        &lab,
        "node-1",
        &[
            "--prometheus",
            &format!("http://{PROMETHEUS}"),
            "--window",
            WINDOW,
            "--format",
            "dot",
        ],
    );
    let edges = dot_edges(&dot);
    for (from, to, label) in [
        (
            "workload/bookinfo/productpage-v1-0",
            "waypoint/bookinfo/waypoint-0",
            "(to reviews)",
        ),
        (
            "workload/bookinfo/reviews-v1-0",
            "waypoint/bookinfo/waypoint-0",
            "(to ratings)",
        ),
        (
            "waypoint/bookinfo/waypoint-0",
            "service/bookinfo/reviews",
            "req/s",
        ),
        (
            "workload/bookinfo/productpage-v1-0",
            "service/bookinfo/details",
            "B/s",
        ),
    ] {
        assert!(
            edges
                .iter()
                .any(|e| e.from == from && e.to == to && e.label.contains(label) && e.rate() > 0.0),
            "no {from} -> {to} ({label}) in\n{dot}"
        );
    }
}
