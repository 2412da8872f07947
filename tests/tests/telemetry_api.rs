//! The Telemetry API's access logging on the lab, as Istio users write it: meshConfig
//! `accessLogFile: /dev/stdout` for the mesh, a `telemetry.istio.io/v1` Telemetry in
//! `quiet` with `accessLogging: [{disabled: true}]`, one in `loud` writing by the built-in
//! `envoy` provider only when `response.code >= 400`, and none in `shop`, where the client
//! is (node-1) beside a server reached without a waypoint (node-2). `quiet` and `loud` each
//! have their own waypoint and server (node-2).
//!
//! What selects the Telemetry: at a waypoint, Istio computes it for the waypoint proxy
//! (`pilot/pkg/model/telemetry.go`, `applicableTelemetries`: the root namespace's, then
//! the proxy's namespace's, then those selecting it or, by `targetRefs`, the service); weft
//! judges a request by its destination's namespace. With a waypoint per namespace, as
//! here, both are the same namespace. At the agents a connection is judged by the pod's
//! workload it is reported for: the client's outbound connections by `shop` (no Telemetry:
//! the mesh's `accessLogFile`), what arrives at a server by the server's namespace (a
//! connection has no response code: `loud`'s filter is false for it, as Envoy's is for a
//! TCP connection).
//!
//! Checked: requests answered 200, 404 and 503 in each namespace give no line at `quiet`'s
//! waypoint, exactly the 404 and 503 at `loud`'s, one line per connection at the client's
//! agent to both, and no line at the servers' agent for `quiet`'s and `loud`'s pods while
//! `shop`'s server's connection is logged there.
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up, testapp_json};
use weft_lab::Lab;

const WAIT: Duration = Duration::from_secs(60);
const QUIET: &str = "http://web.quiet.svc.cluster.local:9080";
const LOUD: &str = "http://web.loud.svc.cluster.local:9080";
const SHOP: &str = "http://web.shop.svc.cluster.local:9080";

/// The mesh config, with a path normalization the application can see (the waypoint
/// that shows it has read this file, Telemetry resources included), and the Telemetry
/// resources: one file, so that a proxy reads all of it at once.
const CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    accessLogFormat: '{"request_id": "%REQ(X-REQUEST-ID)%", "code": "%RESPONSE_CODE%"}'
    pathNormalization: {normalization: MERGE_SLASHES}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: off, namespace: quiet}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: loud}
spec:
  accessLogging:
    - providers: [{name: envoy}]
      filter: {expression: "response.code >= 400"}
"#;

fn log_text(lab: &Lab, file: &str) -> String {
    std::fs::read_to_string(lab.paths.logs().join(file)).unwrap_or_default()
}

/// The JSON lines of `text` that have `key`.
fn json_lines(text: &str, key: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get(key).is_some())
        .collect()
}

/// The request lines of the waypoint of `namespace` (its pod's standard output).
fn waypoint_lines(lab: &Lab, namespace: &str) -> Vec<Value> {
    let mut text = String::new();
    let prefix = format!("{namespace}-waypoint");
    for entry in std::fs::read_dir(lab.paths.logs())
        .expect("the lab's logs")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) && name.ends_with(".log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    json_lines(&text, "request_id")
}

/// The request ids of the waypoint of `namespace`'s lines that start with `tag`.
fn logged_ids(lab: &Lab, namespace: &str, tag: &str) -> Vec<String> {
    let mut ids: Vec<String> = waypoint_lines(lab, namespace)
        .iter()
        .filter_map(|v| v["request_id"].as_str())
        .filter(|id| id.starts_with(tag))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The agent's access lines on `node` in `direction` whose fields include `want`.
fn agent_lines(lab: &Lab, node: &str, direction: &str, want: &[(&str, &str)]) -> usize {
    json_lines(&log_text(lab, &format!("agent-{node}.log")), "scope")
        .into_iter()
        .filter(|v| v["scope"] == "access" && v["direction"] == direction)
        .filter(|v| want.iter().all(|(k, w)| v[*k] == *w))
        .count()
}

/// `count()` once it has not changed for a second.
fn settled(count: impl Fn() -> usize) -> usize {
    let mut last = count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// One request from `shop/client` (its own connection), answered `status`.
fn get(lab: &Lab, url: &str, id: &str, status: u16) -> u64 {
    let url = format!("{url}/?status={status}");
    testapp_json(
        lab,
        "shop/client",
        &["get", &url, "-H", &format!("x-request-id: {id}")],
    )
    .first()
    .and_then(|l| l["status"].as_u64())
    .unwrap_or(0)
}

/// The waypoint in front of `url` merges slashes: it has read [`CONFIG`].
fn merges_slashes(lab: &Lab, url: &str) -> bool {
    testapp_json(lab, "shop/client", &["get", &format!("{url}//merged")])
        .first()
        .is_some_and(|l| l["body"]["path"] == "/merged")
}

#[test]
fn a_telemetry_resource_turns_access_logs_off_in_one_namespace_and_filters_another() {
    let lab = lab_up("traceid", "telemetry_api", 2, true);
    lab.apply_yaml("telemetry", CONFIG)
        .expect("the mesh config and Telemetry resources");
    for url in [QUIET, LOUD] {
        assert!(
            eventually(WAIT, || merges_slashes(&lab, url)),
            "the configuration never reached the waypoint of {url}"
        );
    }
    // The agents have read it too: the client's logs its connection (shop has no
    // Telemetry), and the servers' agent logs the one arriving at shop's server.
    let shop_inbound = [("dst.namespace", "shop")];
    let shop_outbound = [("dst.service", "web.shop.svc.cluster.local")];
    let mut n = 0;
    assert!(
        eventually(WAIT, || {
            n += 1;
            get(&lab, SHOP, &format!("probe-{n}"), 200);
            eventually(Duration::from_secs(3), || {
                agent_lines(&lab, "node-2", "inbound", &shop_inbound) > 0
                    && agent_lines(&lab, "node-1", "outbound", &shop_outbound) > 0
            })
        }),
        "the agents never logged a connection to shop's server"
    );

    let to = |namespace: &str| {
        [
            ("dst.service", format!("web.{namespace}.svc.cluster.local")),
            ("src.workload", "client".to_string()),
        ]
    };
    let outbound = |namespace: &str| {
        let want = to(namespace);
        let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
        agent_lines(&lab, "node-1", "outbound", &want)
    };
    let before = [
        settled(|| outbound("quiet")),
        settled(|| outbound("loud")),
        settled(|| agent_lines(&lab, "node-2", "inbound", &shop_inbound)),
    ];
    for (url, namespace) in [(QUIET, "quiet"), (LOUD, "loud")] {
        for status in [200, 404, 503] {
            let id = format!("{namespace}-{status}");
            assert_eq!(get(&lab, url, &id, status), u64::from(status), "{id}");
        }
    }
    assert_eq!(get(&lab, SHOP, "shop-200", 200), 200);

    // The waypoints: `loud` writes its errors and nothing else, `quiet` nothing.
    assert!(
        eventually(WAIT, || logged_ids(&lab, "loud", "loud-").len() >= 2),
        "loud's waypoint logged its errors: {:?}",
        waypoint_lines(&lab, "loud")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        logged_ids(&lab, "loud", ""),
        ["loud-404", "loud-503"],
        "only the errors, each once: {:?}",
        waypoint_lines(&lab, "loud")
    );
    assert_eq!(
        waypoint_lines(&lab, "quiet"),
        Vec::<Value>::new(),
        "quiet's waypoint logs nothing"
    );

    // The agents: each connection is judged by the pod's own namespace.
    assert_eq!(
        settled(|| outbound("quiet")),
        before[0] + 3,
        "the client's agent logs its three connections to quiet (shop decides)"
    );
    assert_eq!(
        settled(|| outbound("loud")),
        before[1] + 3,
        "and its three to loud"
    );
    assert_eq!(
        settled(|| agent_lines(&lab, "node-2", "inbound", &shop_inbound)),
        before[2] + 1,
        "the servers' agent logs the connection to shop's server"
    );
    for namespace in ["quiet", "loud"] {
        assert_eq!(
            agent_lines(&lab, "node-2", "inbound", &[("dst.namespace", namespace)])
                + agent_lines(&lab, "node-1", "inbound", &[("dst.namespace", namespace)]),
            0,
            "nothing arriving at {namespace}'s pods is logged: {:#?}",
            json_lines(&log_text(&lab, "agent-node-2.log"), "scope")
        );
    }
}
