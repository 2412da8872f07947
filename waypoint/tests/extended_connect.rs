//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through a waypoint, in process and
//! unprivileged, with real peers: Python's `h2` scripting the RFC 8441 handshake and the
//! WebSocket frames as a browser over HTTP/2 would (`h2_websocket.py`), and Python's
//! `websockets` server (`websocket_echo.py`, HTTP/1.1 only; both in
//! `tests/manifests/websocket/`) as the ServiceEntry's endpoint on 127.0.0.1. The waypoint serves the client's
//! HTTP/2 connection on a loopback socket as it would a CONNECT stream from an agent.
//!
//! Checked: the waypoint advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`; the client's
//! `CONNECT :protocol websocket` reaches the server as an HTTP/1.1 upgrade (with a key
//! the waypoint made, and the route's header), the client gets `200`, 100 messages echo
//! in order and the close handshake completes; a DENY policy on `/admin*` answers 403.
mod common;

use common::{context, entry_downstream};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_waypoint::context::WaypointContext;

/// The Python `cargo xtask setup` installed `h2` and `websockets` for.
fn python() -> PathBuf {
    let python = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xtask/ext-authz/bin/python"
    ));
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    python
}

/// Python's `websockets` echo server on 127.0.0.1, killed when dropped.
struct EchoServer {
    child: Child,
    address: SocketAddr,
}

impl EchoServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let script = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/manifests/websocket/websocket_echo.py"
        ));
        let child = Command::new(python())
            .arg(script)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("the echo server started");
        let server = EchoServer {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let started = Instant::now();
        while TcpStream::connect(server.address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the echo server never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(server: SocketAddr) -> String {
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
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: egress}}
spec:
  targetRefs: [{{kind: ServiceEntry, group: networking.istio.io, name: ws}}]
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin*"]}}}}]}}]
"#,
        port = server.port(),
        ip = server.ip(),
    )
}

/// The waypoint serving every connection to a loopback port as a client's stream to
/// `ws.external.test:80`.
async fn waypoint(ctx: &Arc<WaypointContext>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let downstream = entry_downstream(&ctx, "ws.external.test", 80);
            tokio::spawn(weft_waypoint::http::serve(tcp, downstream, ctx.clone()));
        }
    });
    address
}

/// Runs the HTTP/2 WebSocket client against the waypoint for `path`; its JSON line.
async fn h2_websocket(waypoint: SocketAddr, path: &str, count: u32) -> Value {
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/manifests/websocket/h2_websocket.py"
    ));
    let mut child = Command::new(python())
        .arg(script)
        .args([
            "127.0.0.1",
            &waypoint.port().to_string(),
            "ws.external.test",
            path,
            "--count",
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client started");
    // Waited for off the runtime (the waypoint serves the client on it), 30 s at most.
    let output = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while child.try_wait().expect("the client's status").is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output()
    })
    .await
    .expect("the wait")
    .expect("the client ran");
    assert!(
        output.status.success(),
        "the HTTP/2 WebSocket client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_extended_connect_reaches_an_http1_server_and_echoes() {
    let server = EchoServer::start();
    let ctx = context(&fixture(server.address));
    let waypoint = waypoint(&ctx).await;

    let line = h2_websocket(waypoint, "/chat", 100).await;
    assert_eq!(
        line["connect_protocol"], 1,
        "the waypoint offers extended CONNECT: {line}"
    );
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["echoed"], 100, "{line}");
    assert_eq!(line["mismatched"], 0, "{line}");
    assert_eq!(
        line["closed"], 1000,
        "the close handshake went through: {line}"
    );
    let request = &line["request"];
    assert_eq!(request["path"], "/chat", "{line}");
    let headers = &request["headers"];
    assert_eq!(headers["upgrade"], "websocket", "{line}");
    assert_eq!(headers["connection"], "upgrade", "{line}");
    assert_eq!(headers["host"], "ws.external.test", "{line}");
    assert_eq!(headers["sec-websocket-version"], "13", "{line}");
    assert!(headers["sec-websocket-key"].is_string(), "{line}");
    assert_eq!(
        headers["x-routed"], "yes",
        "the route's header operations apply: {line}"
    );
    let metrics = ctx.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains(r#"response_code="200""#)
                && l.ends_with(" 1")),
        "the stream is counted once, as the client saw it: {metrics}"
    );

    let denied = h2_websocket(waypoint, "/admin/chat", 1).await;
    assert_eq!(denied["status"], 403, "{denied}");
}
