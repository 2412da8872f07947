//! The waypoint's HTTP (also what the ingress gateway's listeners serve) against hostile
//! clients, in process and unprivileged: bytes written by hand into the waypoint's HTTP
//! handler as a CONNECT stream would carry them, a real HTTP server on 127.0.0.1 behind it
//! that records every request it gets. Request smuggling is refused with 400 and the
//! connection closed (a Content-Length beside a Transfer-Encoding, two Content-Lengths
//! that differ, a Transfer-Encoding other than a final chunked), the backend never sees
//! it; slow clients are cut off, HTTP/2 reset floods get GOAWAY.
mod common;

use common::{context, entry_downstream};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use weft_waypoint::context::WaypointContext;

const TIMEOUT: Duration = Duration::from_secs(10);
const HOST: &str = "api.external.test";

/// The paths of the requests the backend got, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers `hello` to everything, recording each request's path.
async fn backend() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let seen: Seen = Arc::default();
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let recorded = Arc::clone(&recorded);
                    async move {
                        recorded
                            .lock()
                            .expect("lock")
                            .push(request.uri().path().to_owned());
                        let _ = BodyExt::collect(request.into_body()).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, seen)
}

/// `api.external.test` bound to the waypoint, its endpoint the backend.
fn fixture(backend: SocketAddr) -> String {
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
  hosts: [{HOST}]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
"#,
        port = backend.port(),
    )
}

/// The waypoint with its HTTP limits as `adjust` leaves them, and the backend's record.
async fn setup(adjust: impl FnOnce(&mut WaypointContext)) -> (Arc<WaypointContext>, Seen) {
    let (address, seen) = backend().await;
    let mut ctx = context(&fixture(address));
    adjust(Arc::get_mut(&mut ctx).expect("the test holds the only reference"));
    (ctx, seen)
}

/// A connection into the waypoint's HTTP handler, as a CONNECT stream to `HOST` arrives.
fn connection(ctx: &Arc<WaypointContext>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(1024 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, HOST, 80),
        ctx.clone(),
    ));
    client
}

/// Everything the waypoint writes until it closes the connection (or `TIMEOUT`), and
/// whether it closed it.
async fn read_to_close(reader: &mut (impl AsyncRead + Unpin)) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(TIMEOUT, reader.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn responses(text: &str) -> Vec<&str> {
    text.split("\r\n")
        .filter(|line| line.starts_with("HTTP/1."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_with_400_before_the_backend() {
    let (ctx, seen) = setup(|_| {}).await;
    let cases = [
        (
            "two Content-Lengths that differ",
            "POST /hello HTTP/1.1\r\nHost: api.external.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a Transfer-Encoding not ending in chunked",
            "POST /hello HTTP/1.1\r\nHost: api.external.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a Transfer-Encoding other than chunked",
            "POST /hello HTTP/1.1\r\nHost: api.external.test\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        ),
        (
            "a Transfer-Encoding in HTTP/1.0",
            "POST /hello HTTP/1.0\r\nHost: api.external.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "an obs-fold header line",
            "GET /hello HTTP/1.1\r\nHost: api.external.test\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "a space before the colon",
            "GET /hello HTTP/1.1\r\nHost: api.external.test\r\nContent-Length : 0\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let mut client = connection(&ctx);
        client.write_all(request.as_bytes()).await.expect("write");
        let (text, closed) = read_to_close(&mut client).await;
        assert_eq!(
            responses(&text),
            ["HTTP/1.1 400 Bad Request"],
            "{what}: {text}"
        );
        assert!(closed, "{what}: the connection is closed after the 400");
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "none reached the backend: {:?}",
        seen.lock().expect("lock")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_beside_a_transfer_encoding_is_refused_before_the_backend() {
    let (ctx, seen) = setup(|_| {}).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: api.external.test\r\n\r\n";
    // CL.TE and TE.CL: a front end reading the other header would see the smuggled
    // request as the body, or as the next request.
    let cases = [
        (
            "CL.TE",
            format!(
                "POST /hello HTTP/1.1\r\nHost: api.external.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /hello HTTP/1.1\r\nHost: api.external.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ];
    for (what, request) in cases {
        seen.lock().expect("lock").clear();
        let mut client = connection(&ctx);
        client.write_all(request.as_bytes()).await.expect("write");
        let (text, closed) = read_to_close(&mut client).await;
        // RFC 9112 §6.3: such a message "ought to be handled as an error": answered 400
        // and the connection closed, so neither it nor whatever follows is forwarded.
        assert_eq!(
            responses(&text),
            ["HTTP/1.1 400 Bad Request"],
            "{what}: {text}"
        );
        assert!(closed, "{what}: the connection is closed after the 400");
        assert!(
            seen.lock().expect("lock").is_empty(),
            "{what}: the backend got nothing: {:?}",
            seen.lock().expect("lock")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_request_head_is_cut_off() {
    let (ctx, seen) = setup(|ctx| {
        ctx.http_limits.http1.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let client = connection(&ctx);
    let (mut reader, mut writer) = tokio::io::split(client);
    // Slowloris: a header line every 200 ms, the head never ending (40 lines, 8 s).
    let trickle = tokio::spawn(async move {
        let _ = writer
            .write_all(b"GET /hello HTTP/1.1\r\nHost: api.external.test\r\n")
            .await;
        for i in 0..40 {
            if writer
                .write_all(format!("x-slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (text, closed) = read_to_close(&mut reader).await;
    trickle.abort();
    assert!(closed, "the waypoint closed the connection: {text:?}");
    assert!(seen.lock().expect("lock").is_empty());
}

/// An HTTP/2 frame.
fn frame(buf: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a small frame");
    buf.extend_from_slice(&len.to_be_bytes()[1..]);
    buf.push(kind);
    buf.push(flags);
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.extend_from_slice(payload);
}

/// The client's preface and its (empty) SETTINGS.
fn h2_preface() -> Vec<u8> {
    let mut buf = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut buf, 0x4, 0, 0, &[]);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_sending_no_request_is_cut_off() {
    let (ctx, _) = setup(|ctx| {
        ctx.http_limits.timeouts.first_request = Duration::from_secs(1);
    })
    .await;
    let client = connection(&ctx);
    let (mut reader, mut writer) = tokio::io::split(client);
    writer.write_all(&h2_preface()).await.expect("preface");
    // The writer stays open: the waypoint, not the client, ends the connection.
    let (_, closed) = read_to_close(&mut reader).await;
    drop(writer);
    assert!(closed, "the waypoint closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_gets_goaway() {
    let (ctx, seen) = setup(|_| {}).await;
    let client = connection(&ctx);
    let (mut reader, mut writer) = tokio::io::split(client);
    // HPACK literals without indexing, new names: a GET of /hello.
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/hello"),
        (":authority", HOST),
    ] {
        block.push(0x00);
        block.push(u8::try_from(name.len()).expect("short"));
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    }
    let mut buf = h2_preface();
    const STREAMS: u32 = 5000;
    for i in 0..STREAMS {
        let stream = 2 * i + 1;
        // HEADERS (END_STREAM | END_HEADERS), then RST_STREAM (CANCEL).
        frame(&mut buf, 0x1, 0x5, stream, &block);
        frame(&mut buf, 0x3, 0, stream, &8u32.to_be_bytes());
    }
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&buf).await;
        tokio::time::sleep(TIMEOUT).await;
    });
    let (text, closed) = read_to_close(&mut reader).await;
    write.abort();
    assert!(closed, "the waypoint closed the connection");
    assert!(
        text.contains("too_many_resets"),
        "GOAWAY (ENHANCE_YOUR_CALM, too_many_resets)"
    );
    let forwarded = seen.lock().expect("lock").len();
    assert!(
        forwarded < 1000,
        "{forwarded} of {STREAMS} reset requests reached the backend"
    );
}
