//! Access log providers as the waypoint uses them, in process and unprivileged: the mesh
//! config's `defaultProviders.accessLogging` naming an `envoyOtelAls` provider (a gRPC
//! OTLP logs collector on 127.0.0.1, found through its ServiceEntry) and an
//! `envoyFileAccessLog` one; a request through the waypoint is one OTLP log record with the
//! provider's body and labels and the request's trace id; a TCP stream through it is one
//! line with its bytes, upstream and identities.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codegen::BoxFuture;
use weft_core::access_log::otlp_proto::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, LogRecord, LogsService, LogsServiceServer,
    Resource, any_value,
};

const TIMEOUT: Duration = Duration::from_secs(10);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A collector that keeps what it receives.
#[derive(Default)]
struct Collector {
    requests: Mutex<Vec<ExportLogsServiceRequest>>,
}

impl LogsService for Collector {
    fn export(
        self: Arc<Self>,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> BoxFuture<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.requests
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Box::pin(async { Ok(tonic::Response::new(ExportLogsServiceResponse::default())) })
    }
}

impl Collector {
    fn records(&self) -> Vec<(Option<Resource>, LogRecord)> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| r.resource_logs.clone())
            .flat_map(|r| {
                let resource = r.resource.clone();
                r.scope_logs
                    .into_iter()
                    .flat_map(|s| s.log_records)
                    .map(move |l| (resource.clone(), l))
            })
            .collect()
    }
}

async fn collector() -> (Arc<Collector>, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let collector = Arc::new(Collector::default());
    let service = LogsServiceServer::from_arc(collector.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (collector, port)
}

/// Answers `hello` to everything.
async fn http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<_>| async move {
                    let _ = BodyExt::collect(request.into_body()).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

/// Reads everything, answers `pong!`, closes.
async fn tcp_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = tcp.read_to_end(&mut buf).await;
                let _ = tcp.write_all(b"pong!").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    address
}

/// `api.external.test` (HTTP), `db.external.test` (TCP) and `otel.external.test` (the
/// collector), bound to the waypoint; the mesh config `mesh`.
fn fixture(http: SocketAddr, tcp: SocketAddr, otel: u16, mesh: &str) -> String {
    let entry = |name: &str, protocol: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}\nspec:\n  hosts: [{name}.external.test]\n  ports: [{{number: 80, name: p, protocol: {protocol}, targetPort: {port}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{mesh}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: egress, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: waypoint, namespace: egress, labels: {{istio.io/waypoint-for: service}}}}\nspec: {{gatewayClassName: istio-waypoint, listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]}}\n---\n{}---\n{}---\n{}",
        entry("api", "HTTP", http.port()),
        entry("db", "TCP", tcp.port()),
        entry("otel", "GRPC", otel),
    )
}

fn mesh(file: &Path) -> String {
    format!(
        r#"    extensionProviders:
    - name: otel
      envoyOtelAls:
        service: egress/otel.external.test
        port: 80
        logName: weft-test
        logFormat:
          text: '%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%'
          labels:
            code: '%RESPONSE_CODE%'
            source: '%DOWNSTREAM_PEER_URI_SAN%'
            cluster: '%UPSTREAM_CLUSTER%'
    - name: file
      envoyFileAccessLog:
        path: {}
        logFormat:
          labels:
            protocol: '%PROTOCOL%'
            received: '%BYTES_RECEIVED%'
            sent: '%BYTES_SENT%'
            upstream: '%UPSTREAM_HOST%'
            cluster: '%UPSTREAM_CLUSTER%'
            source: '%DOWNSTREAM_PEER_URI_SAN%'
            code: '%RESPONSE_CODE%'
            flags: '%RESPONSE_FLAGS%'
            start: '%START_TIME%'
    defaultProviders:
      accessLogging: [otel, file]"#,
        file.display()
    )
}

fn text(value: &Option<weft_core::access_log::otlp_proto::AnyValue>) -> Option<String> {
    match value.as_ref().and_then(|v| v.value.clone()) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_otlp_record_and_a_tcp_stream_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let (collector, otel_port) = collector().await;
    let (http, tcp) = (http_server().await, tcp_server().await);
    let ctx = context(&fixture(http, tcp, otel_port, &mesh(&file)));

    // One HTTP request, with the client's trace.
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(&ctx, "api.external.test", 80),
        ctx.clone(),
    ));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    let request = Request::get("http://api.external.test/hello")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    assert_eq!(response.status(), 200);
    let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while collector.records().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more: a record too many would show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = collector.records();
    assert_eq!(records.len(), 1, "exactly one record: {records:?}");
    let (resource, record) = &records[0];
    assert_eq!(text(&record.body).as_deref(), Some("GET /hello 200"));
    let attribute = |key: &str| {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| text(&kv.value))
    };
    assert_eq!(attribute("code").as_deref(), Some("200"));
    assert_eq!(
        attribute("source").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/app")
    );
    assert_eq!(
        attribute("cluster").as_deref(),
        Some("outbound|80||api.external.test")
    );
    let trace: String = record.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(trace, TRACE_ID);
    let resource = resource.clone().expect("resource");
    assert!(
        resource
            .attributes
            .iter()
            .any(|kv| kv.key == "log_name" && text(&kv.value).as_deref() == Some("weft-test")),
        "{resource:?}"
    );

    // The request's line in the file provider too (JSON, from its labels).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    while read().lines().count() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http_line: serde_json::Value =
        serde_json::from_str(read().lines().next().expect("a line")).expect("JSON");
    assert_eq!(http_line["protocol"], "HTTP/1.1");
    assert_eq!(http_line["code"], 200);

    // One TCP stream: 5 bytes out, 5 back.
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::tcp::forward(
        server,
        entry_downstream(&ctx, "db.external.test", 80),
        ctx.clone(),
    ));
    client.write_all(b"ping!").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(answer, b"pong!");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while read().lines().count() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = read();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "one line for the stream: {text}");
    let stream = &lines[1];
    assert_eq!(stream["protocol"], serde_json::Value::Null, "{stream}");
    assert_eq!(stream["received"], 5, "{stream}");
    assert_eq!(stream["sent"], 5, "{stream}");
    assert_eq!(stream["upstream"], tcp.to_string(), "{stream}");
    assert_eq!(
        stream["cluster"], "outbound|80||db.external.test",
        "{stream}"
    );
    assert_eq!(
        stream["source"], "spiffe://cluster.local/ns/shop/sa/app",
        "{stream}"
    );
    assert_eq!(stream["code"], 0, "{stream}");
    assert_eq!(stream["flags"], "-", "{stream}");
    assert!(stream["start"].as_str().is_some_and(|s| s.ends_with('Z')));
}

/// A Telemetry resource (not the mesh's defaults) names the OTLP provider with a filter:
/// only the request the filter keeps becomes a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telemetry_resource_sends_filtered_records_to_the_otlp_provider() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("unused.log");
    let (collector, otel_port) = collector().await;
    let (http, tcp) = (http_server().await, tcp_server().await);
    // The providers defined, none in force by default: the Telemetry decides.
    let mesh = mesh(&file).replace(
        "    defaultProviders:\n      accessLogging: [otel, file]",
        "",
    );
    let telemetry = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: tagged-only, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: otel}]\n    filter: {expression: \"request.headers['x-log'] == 'yes'\"}\n";
    let ctx = context(&format!(
        "{}{telemetry}",
        fixture(http, tcp, otel_port, &mesh)
    ));

    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(&ctx, "api.external.test", 80),
        ctx.clone(),
    ));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    for (path, tag) in [("/quiet", "no"), ("/logged", "yes"), ("/untagged", "")] {
        let mut request = Request::get(format!("http://api.external.test{path}"));
        if !tag.is_empty() {
            request = request.header("x-log", tag);
        }
        let request = request.body(Full::new(Bytes::new())).expect("request");
        // An HTTP/1.1 connection takes the next request only once the last is done.
        sender
            .ready()
            .await
            .expect("the connection takes another request");
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .expect("answered in time")
            .expect("a response");
        assert_eq!(response.status(), 200);
        let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
    }

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while collector.records().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bodies: Vec<_> = collector
        .records()
        .iter()
        .map(|(_, record)| text(&record.body))
        .collect();
    assert_eq!(bodies, vec![Some("GET /logged 200".to_string())]);
    assert!(
        !file.exists(),
        "the file provider is not in force: {:?}",
        std::fs::read_to_string(&file)
    );
}
