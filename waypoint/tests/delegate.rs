//! VirtualService delegation at a waypoint, in process and unprivileged: the root
//! VirtualService of a ServiceEntry host bound to the waypoint delegates `/api` to a
//! VirtualService without hosts in another namespace, whose own rules (a header match
//! under the root's prefix) choose between two plain HTTP servers on 127.0.0.1 that answer
//! with their names. A request is carried into the waypoint's HTTP handler as its CONNECT
//! stream would be.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::context::WaypointContext;

/// An HTTP/1.1 server on loopback answering every request with `from <who>`.
async fn server(who: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("from {who}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    address
}

fn fixture(v1: SocketAddr, v2: SocketAddr, delegate: &str) -> String {
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
metadata: {{name: web, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [web.example.test]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 192.0.2.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: v1, namespace: egress}}
spec:
  hosts: [v1.backend.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {v1_port}}}]
  resolution: STATIC
  endpoints: [{{address: {v1_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: v2, namespace: egress}}
spec:
  hosts: [v2.backend.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {v2_port}}}]
  resolution: STATIC
  endpoints: [{{address: {v2_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: egress}}
spec:
  hosts: [web.example.test]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    delegate: {{name: {delegate}, namespace: team}}
  - route: [{{destination: {{host: v1.backend.test}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:
  - match: [{{headers: {{x-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: v2.backend.test}}}}]
"#,
        v1_ip = v1.ip(),
        v1_port = v1.port(),
        v2_ip = v2.ip(),
        v2_port = v2.port(),
    )
}

/// A GET of `path` to `web.example.test` from a client in `shop`: status and body.
async fn get(ctx: &Arc<WaypointContext>, path: &str, user: Option<&str>) -> (StatusCode, String) {
    let downstream = entry_downstream(ctx, "web.example.test", 80);
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server_side,
        downstream,
        ctx.clone(),
    ));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .uri(path)
        .header("host", "web.example.test");
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    let request = request.body(Empty::<bytes::Bytes>::new()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegate_rules_route_under_the_root_match() {
    let ctx = context(&fixture(server("v1").await, server("v2").await, "api"));
    let ok = |body: &str| (StatusCode::OK, body.to_string());
    assert_eq!(get(&ctx, "/api/x", Some("jason")).await, ok("from v2"));
    // The delegate has no rule for other users: the root rule matches nothing for them,
    // and pilot adds no fallback inside it, so Envoy's next route (the catch-all) serves.
    assert_eq!(get(&ctx, "/api/x", None).await, ok("from v1"));
    // Outside the root's `/api` the delegate's header rule does not apply.
    assert_eq!(get(&ctx, "/other", Some("jason")).await, ok("from v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_delegate_makes_its_rule_match_nothing() {
    let ctx = context(&fixture(server("v1").await, server("v2").await, "nowhere"));
    assert_eq!(
        get(&ctx, "/api/x", Some("jason")).await,
        (StatusCode::OK, "from v1".to_string())
    );
    let snapshot = ctx.registry.load();
    let warned: Vec<String> = snapshot
        .warnings()
        .map(|w| w.to_string())
        .filter(|w| w.contains("delegate"))
        .collect();
    assert_eq!(
        warned,
        [
            "VirtualService egress/web: spec.http[0].delegate: VirtualService team/nowhere does not exist: the rule matches nothing"
        ]
    );
}
