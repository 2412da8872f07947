//! HTTP/1.1 Upgrade (WebSocket) through a waypoint, in process and unprivileged: a client's
//! upgrade request for a ServiceEntry host bound to the waypoint (carried into the
//! waypoint's HTTP handler on a duplex pipe, as the agent's CONNECT stream would be) reaches
//! an endpoint on 127.0.0.1 that answers `101 Switching Protocols` and then echoes every
//! byte; the client gets the `101` and its bytes back. The route's policies and timeout
//! apply to the upgrade request, not to the stream after it. (The lab test
//! `tests/tests/websocket.rs` runs real WebSocket peers, Python's `websockets`.)
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::context::WaypointContext;

/// The request heads the endpoint received.
type Heads = Arc<Mutex<Vec<String>>>;

/// An endpoint that switches protocols on `Upgrade: websocket` and then echoes, and answers
/// anything else 426.
async fn upgrading_echo() -> (SocketAddr, Heads) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let heads: Heads = Arc::default();
    let record = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                record.lock().expect("lock").push(head.clone());
                if !head.contains("\r\nupgrade: websocket\r\n") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n",
                    )
                    .await;
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (address, heads)
}

fn fixture(server: SocketAddr, extra: &str) -> String {
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
metadata: {{name: ws, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [ws.external.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ws, namespace: egress}}
spec:
  hosts: [ws.external.test]
  http:
  - timeout: 1s
    headers: {{request: {{set: {{x-routed: "yes"}}}}}}
    route: [{{destination: {{host: ws.external.test}}}}]
{extra}"#,
        port = server.port(),
        ip = server.ip(),
    )
}

/// An upgrade request for `path` from a client in `shop`, on a new connection into the
/// waypoint. The response, with the upgraded stream when the waypoint switched protocols.
async fn upgrade(
    ctx: &Arc<WaypointContext>,
    path: &str,
) -> (
    http::Response<hyper::body::Incoming>,
    Option<TokioIo<hyper::upgrade::Upgraded>>,
) {
    let downstream = entry_downstream(ctx, "ws.external.test", 80);
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(server, downstream, ctx.clone()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection.with_upgrades());
    let request = Request::builder()
        .uri(path)
        .header("host", "ws.external.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let mut response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return (response, None);
    }
    let upgraded = tokio::time::timeout(Duration::from_secs(10), hyper::upgrade::on(&mut response))
        .await
        .expect("upgraded in time")
        .expect("the client's connection upgraded");
    (response, Some(TokioIo::new(upgraded)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_relayed_and_the_stream_outlives_the_route_timeout() {
    let (server, heads) = upgrading_echo().await;
    let ctx = context(&fixture(server, ""));
    let (response, stream) = upgrade(&ctx, "/chat").await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"websocket"[..])
    );
    let mut stream = stream.expect("an upgraded stream");
    {
        let heads = heads.lock().expect("lock");
        assert_eq!(heads.len(), 1);
        let head = &heads[0];
        assert!(head.starts_with("get /chat http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
        assert!(
            head.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-routed: yes\r\n"),
            "the route's header operations apply: {head}"
        );
    }
    // 100 messages each way, the last ones after the route's 1 s timeout has passed.
    for i in 0..100u32 {
        if i == 50 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let message = format!("message {i:03}\n");
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("echoed in time")
            .expect("read the echo");
        assert_eq!(String::from_utf8_lossy(&echoed), message);
    }
    let metrics = ctx.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains(r#"response_code="101""#)
                && l.ends_with(" 1")),
        "the upgrade is counted with its 101: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_policy_refuses_the_upgrade_before_the_endpoint_sees_it() {
    let (server, heads) = upgrading_echo().await;
    let policy = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: egress}
spec:
  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: ws}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;
    let ctx = context(&fixture(server, policy));
    let (response, stream) = upgrade(&ctx, "/admin/chat").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(stream.is_none());
    assert!(heads.lock().expect("lock").is_empty(), "nothing went out");
    // Other paths still upgrade.
    let (response, _stream) = upgrade(&ctx, "/chat").await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
}

/// Only WebSocket is relayed, as Istio configures Envoy: another upgrade protocol is a
/// hop-by-hop header the endpoint never sees, and an `h2c` upgrade loses its
/// `HTTP2-Settings` too (as Envoy's codec removes it); the request is served as HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_upgrade_protocol_is_not_relayed() {
    let (server, heads) = upgrading_echo().await;
    let ctx = context(&fixture(server, ""));
    let downstream = entry_downstream(&ctx, "ws.external.test", 80);
    let (client, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server_io,
        downstream,
        ctx.clone(),
    ));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection.with_upgrades());
    let request = Request::builder()
        .uri("/")
        .header("host", "ws.external.test")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    let heads = heads.lock().expect("lock");
    assert!(!heads[0].contains("upgrade"), "{}", heads[0]);
    assert!(!heads[0].contains("http2-settings"), "{}", heads[0]);
}
