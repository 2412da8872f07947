//! Sampled tracing on the lab, against receivers built on the published definitions
//! (`tests/manifests/tracing/collector.py`: an OTLP/gRPC TraceService from the official
//! `opentelemetry-proto` package, and a Zipkin collector validating every body against
//! Zipkin's `zipkin2-api.yaml` with `jsonschema`), never weft's own encoding read back by
//! its own decoder.
//!
//! Checked, with the mesh config as Istio users write it (`extensionProviders`,
//! `defaultProviders.tracing`, `defaultConfig.tracing.sampling`):
//! - Zipkin provider: a B3 trace a client starts is kept across productpage → reviews →
//!   ratings (weft-testapp forwards B3 as Bookinfo does), the waypoint's three spans
//!   chained parent to child under the client's span, every body valid against the schema;
//! - OpenTelemetry provider, sampling 10: of 2,000 requests without a sampling decision
//!   through the waypoint, 10% ± 3 make a span at the receiver, each continuing the trace of
//!   the client's connection under its agent's span.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up_with_commands, manifests, pod_ip, python, testapp_json};
use weft_lab::Lab;

const PRODUCTPAGE: &str = "http://productpage.shop.svc.cluster.local:9080/";
const RATINGS: &str = "http://ratings.shop.svc.cluster.local:9080/";
const WAIT: Duration = Duration::from_secs(90);
/// The waypoint's spans' service (`<name>.<namespace>`).
const WAYPOINT: &str = "waypoint.shop";

fn set_mesh(lab: &Lab, mesh: &str) {
    let body: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    lab.apply_yaml(
        "mesh",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}"
        ),
    )
    .expect("apply the mesh config");
}

const PROVIDERS: &str = "extensionProviders:
- name: zipkin
  zipkin: {service: collector.observability.test, port: 9411}
- name: otel
  opentelemetry: {service: observability/collector.observability.test, port: 4317}
";

/// The receivers' host, a ServiceEntry at the collector pod's address.
fn name_the_collector(lab: &Lab) {
    let ip = pod_ip(lab, "observability/collector");
    lab.apply_yaml(
        "collector-entry",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: collector, namespace: observability}}\nspec:\n  hosts: [collector.observability.test]\n  ports: [{{number: 4317, name: grpc, protocol: GRPC}}, {{number: 9411, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {ip}}}]\n"
        ),
    )
    .expect("apply the collector's ServiceEntry");
}

/// Every span line the receiver printed.
fn received(lab: &Lab) -> Vec<Value> {
    let text = std::fs::read_to_string(
        lab.paths
            .logs()
            .join("observability-collector-receiver.log"),
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("format").is_some())
        .collect()
}

fn get(lab: &Lab, url: &str, headers: &[String], count: u32) -> Vec<Value> {
    let count = count.to_string();
    let mut args = vec!["get", url, "--count", &count];
    for header in headers {
        args.push("-H");
        args.push(header);
    }
    testapp_json(lab, "shop/client", &args)
}

/// A sampled W3C request to `url` whose trace id is `trace`, until the receiver shows a
/// span of it in `format`: the mesh config reached the waypoint.
fn until_traced(lab: &Lab, url: &str, trace: &str, format: &str) -> bool {
    let mut n = 0u64;
    eventually(WAIT, || {
        n += 1;
        let traceparent = format!("traceparent: 00-{trace}-{n:016x}-01");
        get(lab, url, &[traceparent], 1);
        eventually(Duration::from_secs(7), || {
            received(lab)
                .iter()
                .any(|s| s["format"] == format && s["trace_id"] == trace)
        })
    })
}

#[test]
fn b3_traces_cross_the_chain_to_zipkin_and_sampling_holds_at_ten_percent() {
    let dir = manifests("tracing");
    let lab = lab_up_with_commands(
        "tracing",
        "tracing",
        2,
        &[
            ("TRACE_PYTHON", python()),
            ("TRACE_COLLECTOR", dir.join("collector.py")),
            ("TRACE_SCHEMA", dir.join("zipkin2-api.schema")),
        ],
    );
    // The chain answers through the waypoint before anything is traced.
    assert!(
        eventually(WAIT, || {
            get(&lab, PRODUCTPAGE, &[], 1)
                .first()
                .is_some_and(|l| l["status"] == 200)
        }),
        "productpage never answered through the waypoint"
    );

    // Zipkin, and a B3 trace started by the client.
    name_the_collector(&lab);
    set_mesh(
        &lab,
        &format!("{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n"),
    );
    assert!(
        until_traced(&lab, RATINGS, "0af7651916cd43dd8448eb211c80319c", "zipkin"),
        "no Zipkin span arrived"
    );
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let client_span = "a2fb4a1d1a96d312";
    let answer = get(
        &lab,
        PRODUCTPAGE,
        &[
            format!("x-b3-traceid: {trace}"),
            format!("x-b3-spanid: {client_span}"),
            "x-b3-sampled: 1".into(),
        ],
        1,
    );
    assert_eq!(answer[0]["status"], 200, "{answer:?}");
    let of_trace = || -> Vec<Value> {
        received(&lab)
            .into_iter()
            .filter(|s| s["trace_id"] == trace && s["service"] == WAYPOINT)
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || of_trace().len() >= 3),
        "the waypoint's spans of the trace: {:#?}",
        of_trace()
    );
    let spans = of_trace();
    assert_eq!(spans.len(), 3, "one per hop: {spans:#?}");
    assert!(
        received(&lab)
            .iter()
            .filter(|s| s["format"] == "zipkin")
            .all(|s| s["valid"] == true),
        "every Zipkin body valid against zipkin2-api.yaml: {:#?}",
        received(&lab)
            .iter()
            .filter(|s| s["valid"] == false)
            .collect::<Vec<_>>()
    );
    let by_parent: HashMap<String, &Value> = spans
        .iter()
        .map(|s| (s["parent_id"].as_str().unwrap_or_default().to_string(), s))
        .collect();
    // client → (waypoint) productpage → (waypoint) reviews → (waypoint) ratings.
    let mut parent = client_span.to_string();
    for host in ["productpage", "reviews", "ratings"] {
        let span = by_parent
            .get(&parent)
            .unwrap_or_else(|| panic!("no span under {parent}: {spans:#?}"));
        assert_eq!(span["kind"], "SERVER");
        let url = span["tags"]["http.url"].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&format!("http://{host}.shop.svc.cluster.local:9080/")),
            "{url} for {host}"
        );
        parent = span["span_id"].as_str().unwrap_or_default().to_string();
    }

    // OpenTelemetry at 10%: requests without a decision are sampled by the waypoint.
    set_mesh(
        &lab,
        &format!(
            "{PROVIDERS}defaultProviders: {{tracing: [otel]}}\ndefaultConfig: {{tracing: {{sampling: 10}}}}\n"
        ),
    );
    let probe = "5bf92f3577b34da6a3ce929d0e0e4736";
    assert!(
        until_traced(&lab, RATINGS, probe, "otlp"),
        "no OTLP span arrived"
    );
    // The requests bring no context: they continue their connection's trace (the client's
    // agent's span, whose CONNECT carried it), each sampled on its own at the waypoint.
    let spans_of_run = || -> Vec<Value> {
        received(&lab)
            .into_iter()
            .filter(|s| s["format"] == "otlp" && s["service"] == WAYPOINT)
            .filter(|s| s["trace_id"] != probe)
            .collect()
    };
    let sampled = || spans_of_run().len();
    let before = sampled();
    let answers = get(&lab, RATINGS, &[], 2000);
    assert_eq!(answers.len(), 2000);
    assert!(answers.iter().all(|a| a["status"] == 200));
    // Batches leave every 5 seconds: wait until the count settles.
    let mut last = usize::MAX;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(2));
        let now = sampled();
        if now == last && now > before {
            break;
        }
        last = now;
    }
    let spans = sampled() - before;
    assert!(
        (140..=260).contains(&spans),
        "10% ± 3 of 2,000 requests: {spans} spans"
    );
    let run: Vec<Value> = spans_of_run().split_off(before);
    let first = &run[0];
    assert!(
        first["parent_id"].is_string(),
        "under the connection's span: {first}"
    );
    for span in &run {
        assert_eq!(
            span["trace_id"], first["trace_id"],
            "one connection, one trace: {span}"
        );
        assert_eq!(span["parent_id"], first["parent_id"], "{span}");
    }
}
