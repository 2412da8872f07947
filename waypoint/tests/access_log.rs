//! Access logs as the waypoint writes them, in process and unprivileged: meshConfig
//! `accessLogFile` (a temporary file here) set in the `istio` ConfigMap, requests from a
//! client in `shop` to ServiceEntry hosts bound to the waypoint (carried in as the agent's
//! CONNECT streams would be), answered by a real server on 127.0.0.1 or by nobody.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_waypoint::context::WaypointContext;

const TIMEOUT: Duration = Duration::from_secs(10);

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

async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address").port()
}

/// `api.external.test` (routed for `/hello` only, by the rule `greet`) and
/// `down.external.test` (nothing listening), bound to the waypoint; the mesh config `mesh`.
fn fixture(http: SocketAddr, closed: u16, mesh: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
{mesh}
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
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {http_port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: down, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [down.external.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {closed}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: egress}}
spec:
  hosts: [api.external.test]
  http:
  - name: greet
    match: [{{uri: {{prefix: /hello}}}}]
    route: [{{destination: {{host: api.external.test, port: {{number: 80}}}}}}]
"#,
        http_port = http.port(),
    )
}

async fn setup(mesh_lines: &[String]) -> Arc<WaypointContext> {
    let mesh: Vec<String> = mesh_lines.iter().map(|l| format!("    {l}")).collect();
    let (http, closed) = (http_server().await, closed_port().await);
    context(&fixture(http, closed, &mesh.join("\n")))
}

/// One HTTP/1.1 request through the waypoint, answered in full.
async fn send(ctx: &Arc<WaypointContext>, host: &str, request: Request<Full<Bytes>>) -> StatusCode {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, host, 80),
        ctx.clone(),
    ));
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

/// The file's lines once it has `want` of them (or after the timeout).
async fn lines(path: &Path, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= want || tokio::time::Instant::now() > deadline {
            // A moment more: a line too many would show.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            return text.lines().map(str::to_string).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_line_in_istios_default_format() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("access.log");
    let ctx = setup(&[format!("accessLogFile: {}", path.display())]).await;
    let hello = Request::get("/hello?who=me")
        .header("host", "api.external.test")
        .header("user-agent", "weft-test/1")
        .header("x-request-id", "req-42")
        .header("authorization", "Bearer do-not-log")
        .body(Full::new(Bytes::from_static(b"ping")))
        .expect("request");
    assert_eq!(send(&ctx, "api.external.test", hello).await, StatusCode::OK);
    let unrouted = Request::get("/elsewhere")
        .header("host", "api.external.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send(&ctx, "api.external.test", unrouted).await,
        StatusCode::NOT_FOUND
    );
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "one line per request: {lines:#?}");
    let ok = &lines[0];
    assert!(
        ok.contains("\"GET /hello?who=me HTTP/1.1\" 200 - via_upstream - \"-\" 4 5 "),
        "{ok}"
    );
    assert!(
        ok.contains("\"weft-test/1\" \"req-42\" \"api.external.test\" \"127.0.0.1:"),
        "{ok}"
    );
    assert!(ok.contains(" outbound|80||api.external.test "), "{ok}");
    assert!(ok.ends_with(" - greet"), "the route's name last: {ok}");
    assert!(!ok.contains("do-not-log"), "no Authorization value: {ok}");
    let unrouted = &lines[1];
    assert!(
        unrouted.contains("\"GET /elsewhere HTTP/1.1\" 404 NR route_not_found "),
        "{unrouted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_format_gives_identities_flags_and_the_request_id() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("access.json");
    let format = r#"{"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "peer": "%DOWNSTREAM_PEER_URI_SAN%", "id": "%REQ(X-REQUEST-ID)%", "cluster": "%UPSTREAM_CLUSTER%", "odd": "%FILTER_STATE(x)%"}"#;
    let ctx = setup(&[
        format!("accessLogFile: {}", path.display()),
        "accessLogEncoding: JSON".into(),
        format!("accessLogFormat: '{format}'"),
    ])
    .await;
    let down = Request::get("/")
        .header("host", "down.external.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send(&ctx, "down.external.test", down).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let lines = lines(&path, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(line["code"], 503);
    // Istio's default retries (connect-failure, twice) ran out: `URX` too.
    assert_eq!(line["flags"], "UF,URX");
    assert_eq!(line["peer"], "spiffe://cluster.local/ns/shop/sa/app");
    assert_eq!(line["cluster"], "outbound|80||down.external.test");
    assert_eq!(line["odd"], serde_json::Value::Null, "unknown: no value");
    let id = line["id"]
        .as_str()
        .expect("the request id the waypoint gave");
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

/// Replaces the `istio` ConfigMap's mesh config, as an edit of it would.
fn set_mesh(ctx: &WaypointContext, mesh: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    {mesh}\n"
    );
    let documents = weft_config::source::yaml::parse(&yaml, Arc::new("mesh.yaml".into()))
        .expect("the mesh config");
    let report = ctx.registry.apply(
        documents
            .candidates
            .into_iter()
            .map(weft_config::registry::Change::Apply),
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_the_mesh_config_turns_logs_off_and_on_without_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let (first, second) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let ctx = setup(&[format!("accessLogFile: {}", first.display())]).await;
    let hello = || {
        Request::get("/hello")
            .header("host", "api.external.test")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    assert_eq!(
        send(&ctx, "api.external.test", hello()).await,
        StatusCode::OK
    );
    assert_eq!(lines(&first, 1).await.len(), 1);
    set_mesh(&ctx, "accessLogFile: \"\"");
    assert_eq!(
        send(&ctx, "api.external.test", hello()).await,
        StatusCode::OK
    );
    set_mesh(&ctx, &format!("accessLogFile: {}", second.display()));
    assert_eq!(
        send(&ctx, "api.external.test", hello()).await,
        StatusCode::OK
    );
    assert_eq!(
        lines(&second, 1).await.len(),
        1,
        "on again, in the new file"
    );
    assert_eq!(
        lines(&first, 1).await.len(),
        1,
        "nothing written while off, nor after the file changed"
    );
}
