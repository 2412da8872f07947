//! Tracing as the waypoint does it, in process and unprivileged: the mesh config names a
//! Zipkin provider (a ServiceEntry whose endpoint is a collector on 127.0.0.1); requests
//! to a ServiceEntry host bound to the waypoint (carried in as the agent's CONNECT streams
//! would be) continue the client's B3 or W3C trace (else their CONNECT's), forward the child
//! context, and report a span only when sampled.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use weft_core::telemetry::TraceContext;
use weft_waypoint::context::WaypointContext;

const TIMEOUT: Duration = Duration::from_secs(15);

type Kept<T> = Arc<Mutex<Vec<T>>>;

fn lock<T>(kept: &Kept<T>) -> std::sync::MutexGuard<'_, Vec<T>> {
    kept.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP server on 127.0.0.1 that keeps what it is sent (headers, body) and answers
/// `status`.
async fn server(status: u16) -> (SocketAddr, Kept<(HeaderMap, Bytes)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let kept: Kept<(HeaderMap, Bytes)> = Arc::default();
    let seen = kept.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = BodyExt::collect(body)
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        lock(&seen).push((parts.headers, body));
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, kept)
}

/// `api.external.test` (the application) and `zipkin.external.test` (the collector), the
/// mesh config naming the Zipkin provider with `sampling` percent.
fn fixture(app: SocketAddr, collector: SocketAddr, sampling: f64) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: zipkin
      zipkin: {{service: zipkin.external.test, port: 9411}}
    defaultProviders: {{tracing: [zipkin]}}
    defaultConfig:
      tracing:
        sampling: {sampling}
        customTags: {{team: {{literal: {{value: payments}}}}, user: {{header: {{name: x-user, defaultValue: nobody}}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: egress, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: egress, labels: {{istio.io/waypoint-for: service}}}}
spec: {{gatewayClassName: istio-waypoint, listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [api.external.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {app_port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: zipkin, namespace: egress}}
spec:
  hosts: [zipkin.external.test]
  ports: [{{number: 9411, name: http, protocol: HTTP, targetPort: {collector_port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
"#,
        app_port = app.port(),
        collector_port = collector.port(),
    )
}

struct Setup {
    ctx: Arc<WaypointContext>,
    app: Kept<(HeaderMap, Bytes)>,
    collector: Kept<(HeaderMap, Bytes)>,
}

async fn setup(sampling: f64) -> Setup {
    let (app_address, app) = server(200).await;
    let (collector_address, collector) = server(202).await;
    let ctx = context(&fixture(app_address, collector_address, sampling));
    Setup {
        ctx,
        app,
        collector,
    }
}

async fn send(ctx: &Arc<WaypointContext>, headers: &[(&str, &str)]) -> StatusCode {
    send_in_tunnel(ctx, headers, None).await
}

/// [`send`] on a CONNECT stream whose CONNECT carried `tunnel`.
async fn send_in_tunnel(
    ctx: &Arc<WaypointContext>,
    headers: &[(&str, &str)],
    tunnel: Option<TraceContext>,
) -> StatusCode {
    let mut downstream = entry_downstream(ctx, "api.external.test", 80);
    downstream.tunnel_trace = tunnel;
    let mut request = Request::get("/reviews/1").header("host", "api.external.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(server, downstream, ctx.clone()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    let status = response.status();
    let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
    status
}

/// The spans the collector has received once it has `want` (or after the timeout: the
/// exporter sends a batch every 5 seconds).
async fn spans(collector: &Kept<(HeaderMap, Bytes)>, want: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let spans: Vec<Value> = lock(collector)
            .iter()
            .flat_map(|(_, body)| {
                serde_json::from_slice::<Vec<Value>>(body).expect("a JSON list of spans")
            })
            .collect();
        if spans.len() >= want || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b3_trace_is_continued_forwarded_as_b3_and_reported_to_zipkin() {
    let s = setup(1.0).await;
    let status = send(
        &s.ctx,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
            ("x-user", "alice"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (sent, _) = lock(&s.app)
        .first()
        .cloned()
        .expect("the app got the request");
    assert_eq!(
        header(&sent, "x-b3-traceid").as_deref(),
        Some("463ac35c9f6413ad48485a3953bb6124"),
        "the client's trace"
    );
    assert_eq!(
        header(&sent, "x-b3-parentspanid").as_deref(),
        Some("a2fb4a1d1a96d312"),
        "under the client's span"
    );
    let waypoint_span = header(&sent, "x-b3-spanid").expect("the waypoint's span");
    assert_ne!(waypoint_span, "a2fb4a1d1a96d312");
    assert_eq!(header(&sent, "x-b3-sampled").as_deref(), Some("1"));
    assert!(
        header(&sent, "traceparent").is_none(),
        "Zipkin's tracer writes B3 only, and the request came as B3"
    );
    assert!(header(&sent, "x-request-id").is_some());

    let spans = spans(&s.collector, 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span["traceId"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(span["id"], waypoint_span.as_str());
    assert_eq!(span["parentId"], "a2fb4a1d1a96d312");
    assert_eq!(span["kind"], "SERVER");
    assert_eq!(span["localEndpoint"]["serviceName"], "waypoint.egress");
    let tags = &span["tags"];
    assert_eq!(tags["http.method"], "GET");
    assert_eq!(tags["http.url"], "http://api.external.test/reviews/1");
    assert_eq!(tags["http.status_code"], "200");
    assert_eq!(tags["upstream_cluster"], "outbound|80||api.external.test");
    assert_eq!(tags["team"], "payments", "custom literal tag");
    assert_eq!(tags["user"], "alice", "custom header tag");
    let (posted, _) = lock(&s.collector).first().cloned().expect("a POST");
    assert_eq!(
        header(&posted, "content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_request_makes_no_span_and_passes_the_decision_on() {
    let s = setup(100.0).await;
    let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(send(&s.ctx, &[("traceparent", w3c)]).await, StatusCode::OK);
    assert_eq!(
        send(
            &s.ctx,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]
        )
        .await,
        StatusCode::OK
    );
    // A request without a decision: sampled at 100%, reported.
    assert_eq!(send(&s.ctx, &[]).await, StatusCode::OK);
    let sent: Vec<HeaderMap> = lock(&s.app).iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(sent.len(), 3);
    let traceparent = header(&sent[0], "traceparent").expect("W3C in, W3C out");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with("-00"),
        "{traceparent}"
    );
    assert_eq!(
        header(&sent[0], "x-b3-sampled").as_deref(),
        Some("0"),
        "and B3, the provider's"
    );
    let b3 = header(&sent[1], "b3").expect("single header in, single header out");
    assert!(
        b3.starts_with("80f198ee56343ba864fe8b2a57d3eff7-") && b3.ends_with("-0-e457b5a2e4d86bd1"),
        "{b3}"
    );
    let root = header(&sent[2], "x-b3-traceid").expect("a new trace");
    assert_eq!(header(&sent[2], "x-b3-sampled").as_deref(), Some("1"));
    assert!(header(&sent[2], "x-b3-parentspanid").is_none(), "a root");

    let spans = spans(&s.collector, 2).await;
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:#?}");
    assert_eq!(spans[0]["traceId"], root.as_str());
    assert!(spans[0].get("parentId").is_none());
}

/// No tracing provider in the mesh's defaults: a Telemetry resource of the destination's
/// namespace names the provider, samples every new trace and adds a tag; its spans are
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telemetry_resource_chooses_the_provider_and_the_sampling() {
    let (app_address, app) = server(200).await;
    let (collector_address, collector) = server(202).await;
    let mesh_defaults = "    defaultProviders: {tracing: [zipkin]}\n";
    let fixture = fixture(app_address, collector_address, 1.0);
    assert!(fixture.contains(mesh_defaults));
    let telemetry = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: traced, namespace: egress}\nspec:\n  tracing:\n  - providers: [{name: zipkin}]\n    randomSamplingPercentage: 100\n    customTags: {origin: {literal: {value: telemetry}}}\n";
    let ctx = context(&format!(
        "{}{telemetry}",
        fixture.replace(mesh_defaults, "")
    ));
    for _ in 0..3 {
        assert_eq!(send(&ctx, &[]).await, StatusCode::OK);
    }
    assert_eq!(lock(&app).len(), 3);
    let spans = spans(&collector, 3).await;
    assert_eq!(spans.len(), 3, "every new trace sampled: {spans:#?}");
    for span in &spans {
        assert_eq!(span["tags"]["origin"], "telemetry", "{span}");
        assert_eq!(
            span["tags"]["team"], "payments",
            "the mesh's tags stay: {span}"
        );
    }
}

/// A request without context of its own continues its CONNECT's trace (the client's
/// agent's connection), under the agent's span; the agent's "not sampled" is about its
/// connection, and the waypoint samples the request itself. A request's own context wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_context_continues_its_connects_trace() {
    let s = setup(100.0).await;
    let connect = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let tunnel = || Some(TraceContext::parse(connect).expect("valid"));
    assert_eq!(send_in_tunnel(&s.ctx, &[], tunnel()).await, StatusCode::OK);
    let own = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    assert_eq!(
        send_in_tunnel(&s.ctx, &[("b3", own)], tunnel()).await,
        StatusCode::OK
    );
    let sent: Vec<HeaderMap> = lock(&s.app).iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        header(&sent[0], "x-b3-traceid").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the CONNECT's trace"
    );
    assert_eq!(
        header(&sent[0], "x-b3-parentspanid").as_deref(),
        Some("00f067aa0ba902b7"),
        "under the agent's span"
    );
    assert_eq!(
        header(&sent[0], "x-b3-sampled").as_deref(),
        Some("1"),
        "decided here, at 100%"
    );
    assert!(
        header(&sent[0], "b3").is_none() && header(&sent[0], "traceparent").is_none(),
        "in the provider's format only: the request brought none"
    );
    let b3 = header(&sent[1], "b3").expect("its own format");
    assert!(b3.starts_with("80f198ee56343ba864fe8b2a57d3eff7-"), "{b3}");

    let spans = spans(&s.collector, 2).await;
    let continued: Vec<&Value> = spans
        .iter()
        .filter(|span| span["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .collect();
    assert_eq!(continued.len(), 1, "{spans:#?}");
    assert_eq!(continued[0]["parentId"], "00f067aa0ba902b7");
}
