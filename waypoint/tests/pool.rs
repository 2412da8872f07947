//! A DestinationRule's connection pool settings on the waypoint's upstream connections, in
//! process and unprivileged: clients' requests and TCP streams for a ServiceEntry host bound
//! to the waypoint (carried into the waypoint on a duplex pipe, as the agent's CONNECT
//! stream would be) reach real HTTP/1.1, HTTP/2 and TCP endpoints on 127.0.0.1, which record
//! the connections they see open and close. Durations are short; every wait is bounded.
mod common;

use common::{context, entry_downstream};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use weft_waypoint::context::WaypointContext;

const HOST: &str = "pool.external.test";
/// The longest any test waits for something to happen.
const BOUND: Duration = Duration::from_secs(5);

/// What an endpoint saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    requests: AtomicUsize,
    changed: Notify,
}

impl Seen {
    fn count(&self, counter: fn(&Seen) -> &AtomicUsize) -> usize {
        counter(self).load(Ordering::SeqCst)
    }

    fn bump(&self, counter: fn(&Seen) -> &AtomicUsize) {
        counter(self).fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether `done` holds within `within`.
    async fn until(&self, within: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        tokio::time::timeout(within, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(self) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .is_ok()
    }
}

#[derive(Clone, Copy)]
enum Speaks {
    Http1,
    /// HTTP/2 with prior knowledge only.
    Http2,
    Both,
}

/// An endpoint answering each request with the HTTP version it arrived in. With `hold`,
/// each answer waits (at most `BOUND`) until that many requests have arrived.
async fn endpoint(speaks: Speaks, hold: usize) -> (SocketAddr, Arc<Seen>) {
    serve(speaks, hold, Duration::ZERO).await
}

/// An endpoint whose every answer takes `delay`.
async fn slow_endpoint(speaks: Speaks, delay: Duration) -> (SocketAddr, Arc<Seen>) {
    serve(speaks, 0, delay).await
}

/// An endpoint on 127.0.0.1 counting the connections it accepts (and, through `handle`, what
/// it sees on each): every accepted connection is handled on a task of its own.
async fn listen<F, Fut>(handle: F) -> (SocketAddr, Arc<Seen>)
where
    F: Fn(tokio::net::TcpStream, Arc<Seen>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            shared.bump(|s| &s.accepted);
            tokio::spawn(handle(tcp, shared.clone()));
        }
    });
    (address, seen)
}

async fn serve(speaks: Speaks, hold: usize, delay: Duration) -> (SocketAddr, Arc<Seen>) {
    listen(move |tcp, seen| async move {
        let service = service_fn({
            let seen = seen.clone();
            move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    seen.bump(|s| &s.requests);
                    if hold > 1 {
                        seen.until(BOUND, |s| s.count(|s| &s.requests) >= hold)
                            .await;
                    }
                    tokio::time::sleep(delay).await;
                    let version = format!("{:?}", request.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(version))))
                }
            }
        });
        let io = TokioIo::new(tcp);
        let _ = match speaks {
            Speaks::Http1 => hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
                .map_err(|e| e.to_string()),
            Speaks::Http2 => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
                .map_err(|e| e.to_string()),
            Speaks::Both => hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
                .map_err(|e| e.to_string()),
        };
        seen.bump(|s| &s.closed);
    })
    .await
}

/// A TCP endpoint that echoes, counting the streams that reached it.
async fn echo() -> (SocketAddr, Arc<Seen>) {
    listen(|mut tcp, seen| async move {
        let (mut read, mut write) = tcp.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        seen.bump(|s| &s.closed);
    })
    .await
}

/// The waypoint serving `HOST` on port 80 (protocol `protocol`) at `server`, under a
/// DestinationRule with `policy` as its trafficPolicy.
fn waypoint(server: SocketAddr, protocol: &str, policy: &str) -> Arc<WaypointContext> {
    waypoint_with(server, protocol, policy, "")
}

/// [`waypoint`] with more objects (YAML documents) in the cluster.
fn waypoint_with(
    server: SocketAddr,
    protocol: &str,
    policy: &str,
    more: &str,
) -> Arc<WaypointContext> {
    context(&format!(
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
metadata: {{name: pool, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 80, name: port, protocol: {protocol}, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool, namespace: egress}}
spec:
  host: {HOST}
  trafficPolicy: {policy}
{more}"#,
        port = server.port(),
        ip = server.ip(),
    ))
}

/// A new HTTP/1.1 client connection into the waypoint.
async fn http1_client(
    ctx: &Arc<WaypointContext>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, HOST, 80),
        ctx.clone(),
    ));
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    sender
}

/// A new HTTP/2 client connection into the waypoint.
async fn http2_client(
    ctx: &Arc<WaypointContext>,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, HOST, 80),
        ctx.clone(),
    ));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("HTTP/2 to the waypoint");
    tokio::spawn(connection);
    sender
}

fn get_http1() -> Request<Empty<Bytes>> {
    Request::builder()
        .uri("/")
        .header("host", HOST)
        .body(Empty::new())
        .expect("request")
}

fn get_http2() -> Request<Empty<Bytes>> {
    Request::builder()
        .version(http::Version::HTTP_2)
        .uri(format!("http://{HOST}/"))
        .body(Empty::new())
        .expect("request")
}

/// The status and the whole body (the version the endpoint saw).
async fn answer(
    response: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
) -> (StatusCode, String) {
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("answered in time")
        .expect("a response");
    let status = response.status();
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_after_the_http_idle_timeout() {
    let (server, seen) = endpoint(Speaks::Http1, 0).await;
    let ctx = waypoint(
        server,
        "HTTP",
        "{connectionPool: {http: {idleTimeout: 300ms}}}",
    );
    let mut client = http1_client(&ctx).await;
    let (status, version) = answer(client.send_request(get_http1())).await;
    assert_eq!((status, version.as_str()), (StatusCode::OK, "HTTP/1.1"));
    assert_eq!(seen.count(|s| &s.accepted), 1);
    assert!(
        seen.until(BOUND, |s| s.count(|s| &s.closed) == 1).await,
        "the endpoint saw its idle connection closed"
    );
    // The next request opens a new connection.
    // An HTTP/1.1 connection takes the next request only once the last is done.
    client
        .ready()
        .await
        .expect("the connection takes another request");
    let (status, _) = answer(client.send_request(get_http1())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.count(|s| &s.accepted), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_duration_replaces_a_busy_upstream_connection() {
    let (server, seen) = endpoint(Speaks::Http1, 0).await;
    let ctx = waypoint(
        server,
        "HTTP",
        "{connectionPool: {tcp: {maxConnectionDuration: 500ms}}}",
    );
    let mut client = http1_client(&ctx).await;
    // Requests every 50ms never leave the connection idle for long (the idle timeout is
    // Istio's 1h): only its maximum duration ends it.
    let replaced = tokio::time::timeout(BOUND, async {
        loop {
            // An HTTP/1.1 connection takes the next request only once the last is done.
            client
                .ready()
                .await
                .expect("the connection takes another request");
            let (status, _) = answer(client.send_request(get_http1())).await;
            assert_eq!(status, StatusCode::OK);
            if seen.count(|s| &s.closed) >= 1 && seen.count(|s| &s.accepted) >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        replaced.is_ok(),
        "the first upstream connection was closed and a second one opened"
    );
}

/// Two requests in flight together on one HTTP/2 client connection: the second is sent
/// once the first has reached the endpoint (whose answers wait for both).
async fn two_requests(
    ctx: &Arc<WaypointContext>,
    seen: &Seen,
) -> ((StatusCode, String), (StatusCode, String)) {
    let client = http2_client(ctx).await;
    let (mut a, mut b) = (client.clone(), client);
    let first = tokio::spawn(async move { answer(a.send_request(get_http2())).await });
    assert!(
        seen.until(BOUND, |s| s.count(|s| &s.requests) == 1).await,
        "the first request arrived"
    );
    let second = answer(b.send_request(get_http2())).await;
    (first.await.expect("first request"), second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_duration_lets_a_request_in_flight_finish() {
    for (speaks, protocol) in [(Speaks::Http1, "HTTP"), (Speaks::Http2, "HTTP2")] {
        let (server, seen) = slow_endpoint(speaks, Duration::from_millis(800)).await;
        let ctx = waypoint(
            server,
            protocol,
            "{connectionPool: {tcp: {maxConnectionDuration: 200ms}}}",
        );
        // Answered 800ms after its connection opened, past its maximum duration.
        let (status, version) = match speaks {
            Speaks::Http1 => answer(http1_client(&ctx).await.send_request(get_http1())).await,
            _ => answer(http2_client(&ctx).await.send_request(get_http2())).await,
        };
        assert_eq!(status, StatusCode::OK, "{protocol}");
        assert_eq!(seen.count(|s| &s.requests), 1, "{protocol}: not retried");
        assert!(version.starts_with("HTTP/"));
        // Then closed.
        assert!(
            seen.until(BOUND, |s| s.count(|s| &s.closed) == 1).await,
            "{protocol}: closed once its request ended"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_http_idle_timeout() {
    let (server, seen) = endpoint(Speaks::Http2, 0).await;
    let ctx = waypoint(
        server,
        "HTTP2",
        "{connectionPool: {http: {idleTimeout: 300ms}}}",
    );
    let mut client = http2_client(&ctx).await;
    let (status, _) = answer(client.send_request(get_http2())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        seen.until(BOUND, |s| s.count(|s| &s.closed) == 1).await,
        "the endpoint saw its idle HTTP/2 connection closed"
    );
    // Wait for the connection to take another request.
    client
        .ready()
        .await
        .expect("the connection takes another request");
    let (status, _) = answer(client.send_request(get_http2())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.count(|s| &s.accepted), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_opens_another_http2_connection() {
    // Each answer waits until both requests arrived: on one connection or two.
    let (server, seen) = endpoint(Speaks::Http2, 2).await;
    let ctx = waypoint(
        server,
        "HTTP2",
        "{connectionPool: {http: {maxConcurrentStreams: 1}}}",
    );
    let (first, second) = two_requests(&ctx, &seen).await;
    assert_eq!(first, (StatusCode::OK, "HTTP/2.0".to_string()));
    assert_eq!(second, (StatusCode::OK, "HTTP/2.0".to_string()));
    assert_eq!(
        seen.count(|s| &s.accepted),
        2,
        "one upstream connection per concurrent request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_concurrent_streams_requests_share_one_http2_connection() {
    let (server, seen) = endpoint(Speaks::Http2, 2).await;
    let ctx = waypoint(server, "HTTP2", "{connectionPool: {http: {maxRetries: 3}}}");
    let (first, second) = two_requests(&ctx, &seen).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(second.0, StatusCode::OK);
    assert_eq!(seen.count(|s| &s.accepted), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upgrade_takes_an_http1_request_to_an_http2_only_endpoint() {
    let (server, _) = endpoint(Speaks::Http2, 0).await;
    let ctx = waypoint(
        server,
        "HTTP",
        "{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}",
    );
    let mut client = http1_client(&ctx).await;
    let (status, version) = answer(client.send_request(get_http1())).await;
    assert_eq!((status, version.as_str()), (StatusCode::OK, "HTTP/2.0"));
}

/// The mesh config's `h2UpgradePolicy: UPGRADE`, as a waypoint reads it.
const MESH_UPGRADE: &str = r#"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    h2UpgradePolicy: UPGRADE
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_default_upgrades_ports_declared_http_unless_the_rule_opts_out() {
    let (server, _) = endpoint(Speaks::Both, 0).await;
    let version_with = |protocol: &str, policy: &str| {
        let ctx = waypoint_with(server, protocol, policy, MESH_UPGRADE);
        async move {
            let mut client = http1_client(&ctx).await;
            // An HTTP/1.1 connection takes the next request only once the last is done.
            client
                .ready()
                .await
                .expect("the connection takes another request");
            answer(client.send_request(get_http1())).await
        }
    };
    let ok = |version: &str| (StatusCode::OK, version.to_string());
    // DEFAULT (unset) follows the mesh for a port declared HTTP.
    assert_eq!(version_with("HTTP", "{}").await, ok("HTTP/2.0"));
    // DO_NOT_UPGRADE opts out.
    assert_eq!(
        version_with(
            "HTTP",
            "{connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}"
        )
        .await,
        ok("HTTP/1.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_client_protocol_keeps_each_clients_version_despite_upgrade() {
    let (server, _) = endpoint(Speaks::Both, 0).await;
    let ctx = waypoint(
        server,
        "HTTP",
        "{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}",
    );
    let mut http1 = http1_client(&ctx).await;
    let (status, version) = answer(http1.send_request(get_http1())).await;
    assert_eq!((status, version.as_str()), (StatusCode::OK, "HTTP/1.1"));
    let mut http2 = http2_client(&ctx).await;
    let (status, version) = answer(http2.send_request(get_http2())).await;
    assert_eq!((status, version.as_str()), (StatusCode::OK, "HTTP/2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_idle_timeout_ends_an_idle_stream_while_an_active_one_lives_on() {
    let (server, seen) = echo().await;
    let ctx = waypoint(
        server,
        "TCP",
        "{connectionPool: {tcp: {idleTimeout: 500ms}}}",
    );
    let open = |ctx: &Arc<WaypointContext>| {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        tokio::spawn(weft_waypoint::tcp::forward(
            server_side,
            entry_downstream(ctx, HOST, 80),
            ctx.clone(),
        ));
        client
    };
    let mut active = open(&ctx);
    let mut idle = open(&ctx);
    let mut byte = [0u8; 1];
    for stream in [&mut active, &mut idle] {
        stream.write_all(b"x").await.expect("write");
        tokio::time::timeout(BOUND, stream.read_exact(&mut byte))
            .await
            .expect("echoed in time")
            .expect("echo");
    }
    assert_eq!(seen.count(|s| &s.accepted), 2);
    // The active stream sends a byte every 100ms for 1.5s, three idle timeouts.
    let keep_busy = async {
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            active.write_all(b"y").await.expect("write");
            tokio::time::timeout(BOUND, active.read_exact(&mut byte))
                .await
                .expect("echoed in time")
                .expect("the active stream still echoes");
        }
    };
    let closed = async {
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, idle.read_to_end(&mut rest))
            .await
            .map(|read| read.map(|_| rest))
    };
    let ((), idle_end) = tokio::join!(keep_busy, closed);
    let rest = idle_end
        .expect("the idle stream was closed in time")
        .expect("closed cleanly");
    assert!(rest.is_empty());
    assert!(
        seen.until(BOUND, |s| s.count(|s| &s.closed) == 1).await,
        "the endpoint saw the idle stream end, and only it"
    );
}

/// An HTTP/1.1 endpoint that answers the first request of each connection (keep-alive)
/// and closes the connection on reading the second, without an answer: what a server's
/// idle close racing a reused connection's next request looks like to the waypoint.
async fn closes_kept_alive_connections() -> (SocketAddr, Arc<Seen>) {
    listen(|mut tcp, seen| async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        for answered in [true, false] {
            // One request head (these requests have no body), bounded in time.
            let read = tokio::time::timeout(BOUND, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                break;
            }
            head.clear();
            seen.bump(|s| &s.requests);
            if !answered {
                break;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nHTTP/1.1";
            if tcp.write_all(answer).await.is_err() {
                break;
            }
        }
        drop(tcp);
        seen.bump(|s| &s.closed);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_meeting_a_closing_kept_alive_connection_is_sent_again() {
    let (server, seen) = closes_kept_alive_connections().await;
    // No retries of the route's own: only the stale connection's one more try.
    let ctx = waypoint_with(
        server,
        "HTTP",
        "{}",
        &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: pool, namespace: egress}}\n\
             spec: {{hosts: [{HOST}], http: [{{route: [{{destination: {{host: {HOST}}}}}], retries: {{attempts: 0}}}}]}}\n"
        ),
    );
    let mut client = http1_client(&ctx).await;
    let (status, _) = answer(client.send_request(get_http1())).await;
    assert_eq!(status, StatusCode::OK);
    client
        .ready()
        .await
        .expect("the connection takes another request");
    // The waypoint reuses its upstream connection; the endpoint closes it unanswered.
    let (status, body) = answer(client.send_request(get_http1())).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "HTTP/1.1"),
        "the GET was sent again on a new connection"
    );
    assert_eq!(seen.count(|s| &s.accepted), 2);
    assert_eq!(seen.count(|s| &s.requests), 3);

    // A POST may have been processed: it is not sent twice.
    client
        .ready()
        .await
        .expect("the connection takes another request");
    let post = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", HOST)
        .body(Empty::new())
        .expect("request");
    let (status, _) = answer(client.send_request(post)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        seen.count(|s| &s.requests),
        4,
        "the POST reached the endpoint once"
    );
}
