//! Istio's standard metrics as the waypoint records them, in process and unprivileged:
//! requests and TCP streams from a client in `shop` to ServiceEntry hosts bound to the
//! waypoint (carried in as the agent's CONNECT streams would be, here duplex pipes into the
//! waypoint's HTTP and TCP handlers), answered by real servers on 127.0.0.1 (hyper, a TCP
//! socket), and the waypoint's registry read as a scrape would read it.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::context::WaypointContext;

const TIMEOUT: Duration = Duration::from_secs(10);

type ServerBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The upstream: `/bytes?n=N` answers N bytes, `/grpc` answers as a gRPC server that
/// failed with UNAVAILABLE (a message, then `grpc-status: 14` in the trailers).
async fn answer(request: Request<hyper::body::Incoming>) -> Response<ServerBody> {
    let path = request.uri().path().to_string();
    let n: usize = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Read the upload to its end.
    let _ = request.into_body().collect().await;
    if path == "/grpc" {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        let body = Full::new(Bytes::from_static(b"\0\0\0\0\x01x"))
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        return Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .expect("a response");
    }
    Response::new(Full::new(Bytes::from(vec![b'r'; n])).boxed())
}

async fn http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request| async move {
                    Ok::<_, std::convert::Infallible>(answer(request).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

/// A TCP server that reads its client to the end, then answers `ten bytes!` and closes.
async fn tcp_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tcp.read_to_end(&mut sink).await;
                let _ = tcp.write_all(b"ten bytes!").await;
            });
        }
    });
    address
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address").port()
}

/// The egress waypoint `waypoint` of `egress`, with `api.external.test` (HTTP on 80 routed
/// for `/bytes` and `/grpc` only, TCP on 9000) and `down.external.test` (nothing listening)
/// bound to it.
fn fixture(http: SocketAddr, tcp: SocketAddr, closed: u16) -> String {
    format!(
        r#"
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
  ports:
  - {{number: 80, name: http, protocol: HTTP, targetPort: {http_port}}}
  - {{number: 9000, name: tcp, protocol: TCP, targetPort: {tcp_port}}}
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: down, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [down.external.test]
  ports:
  - {{number: 80, name: http, protocol: HTTP, targetPort: {closed}}}
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: egress}}
spec:
  hosts: [api.external.test]
  http:
  - match: [{{uri: {{prefix: /bytes}}}}, {{uri: {{prefix: /grpc}}}}]
    route: [{{destination: {{host: api.external.test, port: {{number: 80}}}}}}]
"#,
        http_port = http.port(),
        tcp_port = tcp.port(),
    )
}

async fn setup() -> Arc<WaypointContext> {
    let (http, tcp, closed) = (http_server().await, tcp_server().await, closed_port().await);
    context(&fixture(http, tcp, closed))
}

/// One request through the waypoint, answered in full; the response's head and body.
async fn send(
    ctx: &Arc<WaypointContext>,
    host: &str,
    http2: bool,
    request: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes, Option<HeaderMap>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, host, 80),
        ctx.clone(),
    ));
    let io = TokioIo::new(client);
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("HTTP/2 to the waypoint");
        tokio::spawn(connection);
        tokio::time::timeout(TIMEOUT, sender.send_request(request)).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1 to the waypoint");
        tokio::spawn(connection);
        tokio::time::timeout(TIMEOUT, sender.send_request(request)).await
    }
    .expect("answered in time")
    .expect("a response");
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(TIMEOUT, body.collect())
        .await
        .expect("the body in time")
        .expect("the body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

/// The value of the one series of `name` whose labels include every one of `has`.
fn value(text: &str, name: &str, has: &[&str]) -> Option<f64> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && has.iter().all(|h| l.contains(h)))
        .collect();
    assert!(lines.len() <= 1, "several {name} {has:?} in\n{text}");
    lines
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (boundedly) until `name` with `has` is `want`: a request is reported when its
/// response has been sent to its end.
async fn settled(ctx: &WaypointContext, name: &str, has: &[&str], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = ctx.metrics.encode();
        if value(&text, name, has) == Some(want) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn headers_size(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_sizes_are_the_headers_and_bodies_exchanged() {
    let ctx = setup().await;
    let mut response_total = 0;
    for (upload, download) in [(10_000u64, 2_000usize), (20_000, 3_000), (30_000, 4_000)] {
        let request = Request::post(format!("/bytes?n={download}"))
            .header("host", "api.external.test")
            .header("content-length", upload.to_string())
            .body(Full::new(Bytes::from(vec![b'q'; upload as usize])))
            .expect("a request");
        let (parts, body, _) = send(&ctx, "api.external.test", false, request).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body.len(), download);
        // As Envoy counts them: `:status` and the headers the client got, and the body.
        response_total += (":status".len() + 3) as u64 + headers_size(&parts.headers);
        response_total += download as u64;
    }
    let ok = ["response_code=\"200\"", "reporter=\"waypoint\""];
    let text = settled(&ctx, "istio_requests_total", &ok, 3.0).await;
    assert_eq!(
        value(&text, "istio_requests_total", &ok),
        Some(3.0),
        "{text}"
    );
    // Each request's headers as the waypoint got them: :method POST, :path /bytes?n=NNNN,
    // :authority api.external.test, :scheme http, content-length NNNNN; and its body.
    let headers = (7 + 4) + (5 + 13) + (10 + 17) + (7 + 4) + (14 + 5);
    assert_eq!(
        value(&text, "istio_request_bytes_sum", &ok),
        Some((3 * headers + 60_000) as f64),
        "{text}"
    );
    assert_eq!(value(&text, "istio_request_bytes_count", &ok), Some(3.0));
    assert_eq!(
        value(&text, "istio_response_bytes_sum", &ok),
        Some(response_total as f64),
        "{text}"
    );
    assert!(
        text.contains("destination_service=\"api.external.test\""),
        "{text}"
    );
    assert!(
        value(
            &text,
            "istio_requests_total",
            &[
                "request_protocol=\"http\"",
                "connection_security_policy=\"mutual_tls\"",
                "grpc_response_status=\"\""
            ]
        )
        .is_some(),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_is_counted_with_the_grpc_status_of_its_trailers() {
    let ctx = setup().await;
    let request = Request::post("http://api.external.test/grpc")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01q")))
        .expect("a request");
    let (parts, _, trailers) = send(&ctx, "api.external.test", true, request).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("grpc-status")),
        Some(&HeaderValue::from_static("14")),
        "the trailers reach the client"
    );
    let grpc = [
        "request_protocol=\"grpc\"",
        "grpc_response_status=\"14\"",
        "response_code=\"200\"",
    ];
    let text = settled(&ctx, "istio_requests_total", &grpc, 1.0).await;
    assert_eq!(
        value(&text, "istio_requests_total", &grpc),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_carry_envoys_response_flags() {
    let ctx = setup().await;
    let nowhere = Request::get("/nowhere")
        .header("host", "api.external.test")
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let (parts, _, _) = send(&ctx, "api.external.test", false, nowhere).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let down = Request::get("/")
        .header("host", "down.external.test")
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let (parts, _, _) = send(&ctx, "down.external.test", false, down).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let nr = ["response_flags=\"NR\"", "response_code=\"404\""];
    // Istio's default retry policy retried the connection failure, to no avail.
    let uf = [
        "response_flags=\"UF,URX\"",
        "response_code=\"503\"",
        "destination_service=\"down.external.test\"",
    ];
    settled(&ctx, "istio_requests_total", &uf, 1.0).await;
    let text = settled(&ctx, "istio_requests_total", &nr, 1.0).await;
    assert_eq!(
        value(&text, "istio_requests_total", &nr),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "istio_requests_total", &uf),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_stream_is_counted_opened_closed_and_by_its_bytes() {
    let ctx = setup().await;
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let stream = tokio::spawn(weft_waypoint::tcp::forward(
        server,
        entry_downstream(&ctx, "api.external.test", 9000),
        ctx.clone(),
    ));
    client
        .write_all(&[b't'; 1234])
        .await
        .expect("write to the waypoint");
    client.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .expect("the answer");
    assert_eq!(answer, b"ten bytes!");
    tokio::time::timeout(TIMEOUT, stream)
        .await
        .expect("the stream ends")
        .expect("the stream's task");
    let text = ctx.metrics.encode();
    let tcp = [
        "reporter=\"waypoint\"",
        "request_protocol=\"tcp\"",
        "destination_service=\"api.external.test\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/app\"",
        "connection_security_policy=\"mutual_tls\"",
        "response_flags=\"-\"",
    ];
    for (name, want) in [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_received_bytes_total", 1234.0),
        ("istio_tcp_sent_bytes_total", 10.0),
    ] {
        assert_eq!(value(&text, name, &tcp), Some(want), "{name} in\n{text}");
    }
}
