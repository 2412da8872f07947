//! Access logs as Istio users turn them on: meshConfig `accessLogFile: /dev/stdout` in the
//! `istio` ConfigMap, read by the lab's waypoint and agents without a restart. A request
//! from `shop/client` (node-1) to `reviews` (its waypoint, then `reviews-v1` on node-2) is
//! one line at the waypoint, carrying the client's request id and trace id, and one line
//! per connection at the agents: the client's agent (outbound, to the waypoint) and the
//! destination's (inbound, from the waypoint). A request that brings no trace context
//! continues its client's agent's connection's trace: the waypoint's line and both agents'
//! lines name the same trace id. `accessLogFile: ""` turns them off.
//!
//! The lines are read where the lab puts each process's standard output:
//! `/run/weft-lab/<lab>/logs/` (`agent-<node>.log`, `<namespace>-<pod>-<container>.log`).
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up, testapp_json};
use weft_lab::Lab;

const REVIEWS: &str = "http://reviews.shop.svc.cluster.local:9080";
/// Where the probes go, so that the first request to `reviews` is the one checked (its
/// upstream connection opened under the DestinationRule below).
const FLAKY: &str = "http://flaky.shop.svc.cluster.local:9080";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/shop/sa/reviews";
const REVIEWS_HOST: &str = "reviews.shop.svc.cluster.local";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WAIT: Duration = Duration::from_secs(60);

/// The waypoint's format: who, what, and the ids to correlate with.
const FORMAT: &str = r#"{"request_id": "%REQ(X-REQUEST-ID)%", "trace_id": "%TRACE_ID%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "source": "%DOWNSTREAM_PEER_URI_SAN%", "upstream_identity": "%UPSTREAM_PEER_URI_SAN%", "cluster": "%UPSTREAM_CLUSTER%"}"#;

fn set_mesh(lab: &Lab, mesh: &[&str]) {
    let body: Vec<String> = mesh.iter().map(|l| format!("    {l}")).collect();
    lab.apply_yaml(
        "mesh",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{}\n",
            body.join("\n")
        ),
    )
    .expect("apply the mesh config");
}

fn log_text(lab: &Lab, file: &str) -> String {
    std::fs::read_to_string(lab.paths.logs().join(file)).unwrap_or_default()
}

/// The waypoint pod's log (its standard output).
fn waypoint_log(lab: &Lab) -> String {
    let logs: PathBuf = lab.paths.logs();
    let mut text = String::new();
    for entry in std::fs::read_dir(&logs).expect("the lab's logs").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("shop-waypoint") && name.ends_with(".log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

/// The JSON lines of `text` that have `key`.
fn json_lines(text: &str, key: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get(key).is_some())
        .collect()
}

fn request_lines(lab: &Lab, id: &str) -> Vec<Value> {
    json_lines(&waypoint_log(lab), "request_id")
        .into_iter()
        .filter(|v| v["request_id"] == id)
        .collect()
}

/// The agent's access lines on `node` in `direction` whose fields include `want`.
fn agent_lines(lab: &Lab, node: &str, direction: &str, want: &[(&str, &str)]) -> usize {
    json_lines(&log_text(lab, &format!("agent-{node}.log")), "scope")
        .into_iter()
        .filter(|v| v["scope"] == "access" && v["direction"] == direction)
        .filter(|v| want.iter().all(|(k, w)| v[*k] == *w))
        .count()
}

fn get(lab: &Lab, id: &str) -> u64 {
    get_from(lab, REVIEWS, id)
}

fn get_from(lab: &Lab, url: &str, id: &str) -> u64 {
    let traceparent = format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01");
    let lines = testapp_json(
        lab,
        "shop/client",
        &[
            "get",
            url,
            "-H",
            &format!("x-request-id: {id}"),
            "-H",
            &traceparent,
        ],
    );
    lines
        .first()
        .and_then(|l| l["status"].as_u64())
        .unwrap_or(0)
}

/// Sends probes until one shows at the waypoint: the mesh config reached it.
fn until_logged(lab: &Lab, tag: &str) -> bool {
    let mut n = 0;
    eventually(WAIT, || {
        n += 1;
        let id = format!("{tag}-{n}");
        get_from(lab, FLAKY, &id);
        eventually(Duration::from_secs(2), || {
            !request_lines(lab, &id).is_empty()
        })
    })
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

#[test]
fn a_request_through_the_waypoint_is_one_line_there_and_one_per_agent_connection() {
    let lab = lab_up("traceid", "waypoint", 2, true);
    // One request per upstream connection: each request's CONNECT stream to the
    // destination agent ends with it, and so is logged there. Applied before the mesh
    // config, so in force once the mesh config is; no request goes to `reviews` before.
    lab.apply_yaml(
        "reviews-pool",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec:\n  host: reviews\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n",
    )
    .expect("the DestinationRule");
    get_from(&lab, FLAKY, "before-1");
    assert!(request_lines(&lab, "before-1").is_empty(), "off by default");

    let format = format!("accessLogFormat: '{FORMAT}'");
    set_mesh(
        &lab,
        &[
            "accessLogFile: /dev/stdout",
            "accessLogEncoding: JSON",
            &format,
        ],
    );
    assert!(
        until_logged(&lab, "probe"),
        "the waypoint never logged a request"
    );
    let outbound = [
        ("src.identity", CLIENT_ID),
        ("dst.identity", WAYPOINT_ID),
        ("dst.service", REVIEWS_HOST),
        ("protocol", "HBONE"),
    ];
    let inbound = [
        ("src.identity", WAYPOINT_ID),
        ("dst.identity", REVIEWS_ID),
        ("dst.service", REVIEWS_HOST),
        ("protocol", "HBONE"),
    ];
    let (out_before, in_before) = (
        settled(|| agent_lines(&lab, "node-1", "outbound", &outbound)),
        settled(|| agent_lines(&lab, "node-2", "inbound", &inbound)),
    );
    assert!(
        eventually(WAIT, || agent_lines(
            &lab,
            "node-1",
            "outbound",
            &[("dst.service", "flaky.shop.svc.cluster.local")]
        ) > 0),
        "the client's agent logs its connections (the probes')"
    );

    assert_eq!(get(&lab, "main-request"), 200);
    assert!(
        eventually(WAIT, || !request_lines(&lab, "main-request").is_empty()),
        "the request's line at the waypoint"
    );
    let lines = request_lines(&lab, "main-request");
    assert_eq!(lines.len(), 1, "exactly one line: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["code"], 200, "{line}");
    assert_eq!(line["flags"], "-", "{line}");
    assert_eq!(line["source"], CLIENT_ID, "{line}");
    assert_eq!(line["upstream_identity"], REVIEWS_ID, "{line}");
    assert_eq!(line["trace_id"], TRACE_ID, "the client's trace: {line}");
    assert_eq!(
        line["cluster"],
        format!("outbound|9080|v1|{REVIEWS_HOST}"),
        "{line}"
    );
    assert_eq!(
        settled(|| agent_lines(&lab, "node-1", "outbound", &outbound)),
        out_before + 1,
        "one line for the client's connection at its agent"
    );
    assert_eq!(
        settled(|| agent_lines(&lab, "node-2", "inbound", &inbound)),
        in_before + 1,
        "one line for the waypoint's connection at the destination's agent: {:#?}",
        json_lines(&log_text(&lab, "agent-node-2.log"), "scope")
    );

    // Without trace context of its own, the request continues the client's agent's
    // connection: that connection's line, the waypoint's, and the destination's agent's
    // line of the connection the waypoint opened for it (one request per connection, by the
    // DestinationRule) name one trace.
    let untraced = testapp_json(
        &lab,
        "shop/client",
        &["get", REVIEWS, "-H", "x-request-id: untraced"],
    );
    assert_eq!(
        untraced.first().and_then(|l| l["status"].as_u64()),
        Some(200)
    );
    assert!(
        eventually(WAIT, || !request_lines(&lab, "untraced").is_empty()),
        "the untraced request's line at the waypoint"
    );
    let line = request_lines(&lab, "untraced").remove(0);
    let trace = line["trace_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(trace.len(), 32, "a trace id: {line}");
    assert_ne!(trace, TRACE_ID, "{line}");
    let with_trace = |fields: &[(&'static str, &'static str)]| {
        let mut want: Vec<(&str, &str)> = fields.to_vec();
        want.push(("trace_id", trace.as_str()));
        want
    };
    for (node, direction, fields) in [
        ("node-1", "outbound", &outbound),
        ("node-2", "inbound", &inbound),
    ] {
        let count = || agent_lines(&lab, node, direction, &with_trace(fields));
        eventually(WAIT, || count() > 0);
        assert_eq!(
            settled(count),
            1,
            "the {direction} line at {node}'s agent names the waypoint's trace {trace}: {:#?}",
            json_lines(&log_text(&lab, &format!("agent-{node}.log")), "scope")
        );
    }

    // Off, marked by a path normalization the application can see; then on again, TEXT.
    set_mesh(
        &lab,
        &[
            "accessLogFile: \"\"",
            "pathNormalization: {normalization: MERGE_SLASHES}",
        ],
    );
    let merged = || {
        testapp_json(&lab, "shop/client", &["get", &format!("{REVIEWS}//merged")])
            .first()
            .is_some_and(|l| l["body"]["path"] == "/merged")
    };
    assert!(
        eventually(WAIT, merged),
        "the mesh config reached the waypoint"
    );
    assert_eq!(get(&lab, "while-off"), 200);
    set_mesh(&lab, &["accessLogFile: /dev/stdout"]);
    let text_logged = || {
        get(&lab, "text-on");
        waypoint_log(&lab).lines().any(|l| {
            l.contains("\"GET / HTTP/1.1\" 200 - via_upstream") && l.contains("\"text-on\"")
        })
    };
    assert!(eventually(WAIT, text_logged), "Istio's default TEXT line");
    assert!(
        !waypoint_log(&lab).contains("while-off"),
        "nothing logged while accessLogFile is empty"
    );
}
