//! The HBONE server against hostile clients holding a valid mesh certificate (an enrolled
//! pod is the realistic attacker): HTTP/2 frames written by hand over mutual TLS, on
//! 127.0.0.1, to show each limit of `HboneServerConfig` cutting an attack off.
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weft_core::hbone::HboneServerConfig;
use weft_core::identity::tls::{ManagedCertResolver, spiffe_client_config};

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(buf: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a small frame");
    buf.extend_from_slice(&len.to_be_bytes()[1..]);
    buf.push(kind);
    buf.push(flags);
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.extend_from_slice(payload);
}

/// One header field as an HPACK literal without indexing, new name, no Huffman.
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    block.push(u8::try_from(name.len()).expect("short name"));
    block.extend_from_slice(name.as_bytes());
    block.push(u8::try_from(value.len()).expect("short value"));
    block.extend_from_slice(value.as_bytes());
}

/// The header block of a CONNECT to `authority`.
fn connect(authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, ":method", "CONNECT");
    literal(&mut block, ":authority", authority);
    block
}

/// The client's preface and its (empty) SETTINGS.
fn preface() -> Vec<u8> {
    let mut buf = PREFACE.to_vec();
    frame(&mut buf, SETTINGS, 0, 0, &[]);
    buf
}

/// Mutual TLS to the server with the client's valid mesh certificate.
async fn attacker(mesh: &Mesh, server: &HboneFixture) -> std::io::Result<TlsStream<TcpStream>> {
    mesh.client_manager
        .fetch(&client_id())
        .await
        .expect("client cert");
    let resolver = Arc::new(ManagedCertResolver::new(
        mesh.client_manager.clone(),
        client_id(),
    ));
    let config =
        spiffe_client_config(&mesh.trust.clone().into(), server_id(), resolver).expect("config");
    let tcp = TcpStream::connect(server.addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(server.addr.ip().into()), tcp)
        .await
}

/// What the server sent, frame by frame, until it closed or went quiet.
#[derive(Debug, Default)]
struct Seen {
    /// (kind, flags, stream, payload)
    frames: Vec<(u8, u8, u32, Vec<u8>)>,
    /// The GOAWAY's error code and debug data, if one came.
    goaway: Option<(u32, String)>,
    /// The server closed the connection.
    closed: bool,
}

impl Seen {
    fn resets_with(&self, code: u32) -> usize {
        self.frames
            .iter()
            .filter(|f| f.0 == RST_STREAM && f.3.get(..4) == Some(&code.to_be_bytes()[..]))
            .count()
    }
}

/// Reads frames until the server closes the connection, or nothing arrives for `quiet`.
async fn read_frames(reader: &mut (impl AsyncRead + Unpin), quiet: Duration) -> Seen {
    let mut seen = Seen::default();
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout(quiet, reader.read_exact(&mut head)).await {
            Err(_) => return seen,
            Ok(Err(_)) => {
                seen.closed = true;
                return seen;
            }
            Ok(Ok(_)) => {}
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if tokio::time::timeout(quiet, reader.read_exact(&mut payload))
            .await
            .map_or(true, |read| read.is_err())
        {
            seen.closed = true;
            return seen;
        }
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if head[3] == GOAWAY && payload.len() >= 8 {
            let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            let debug = String::from_utf8_lossy(&payload[8..]).into_owned();
            seen.goaway = Some((code, debug));
        }
        seen.frames.push((head[3], head[4], stream, payload));
    }
}

/// Writes `attack` (the server may close before it is all written) and reads what comes.
async fn attack(tls: TlsStream<TcpStream>, attack: Vec<u8>, quiet: Duration) -> Seen {
    let (mut reader, mut writer) = tokio::io::split(tls);
    let written = tokio::spawn(async move {
        let _ = writer.write_all(&attack).await;
        let _ = writer.flush().await;
        // Keep the write half open: the server, not the client, ends the connection.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let seen = read_frames(&mut reader, quiet).await;
    written.abort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_with_goaway() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let (echo, _echo) = echo_server().await;
        let tls = attacker(&mesh, &server).await.expect("TLS");

        const STREAMS: u32 = 5000;
        let mut buf = preface();
        let block = connect(&echo.to_string());
        for i in 0..STREAMS {
            let stream = 2 * i + 1;
            frame(&mut buf, HEADERS, END_HEADERS, stream, &block);
            frame(&mut buf, RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
        }
        let seen = attack(tls, buf, Duration::from_secs(5)).await;
        let (code, debug) = seen.goaway.clone().expect("GOAWAY");
        assert_eq!(code, ENHANCE_YOUR_CALM, "{debug}");
        assert_eq!(debug, "too_many_resets");
        let handled = server.requests().len();
        assert!(
            handled < 1000,
            "{handled} of {STREAMS} reset streams reached the handler"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_server_must_reset_are_cut_off_with_goaway() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let tls = attacker(&mesh, &server).await.expect("TLS");

        // MadeYouReset: each stream is made malformed by the client (two Content-Lengths
        // that differ), so the server resets it and the client never does.
        const STREAMS: u32 = 3000;
        let mut buf = preface();
        let mut block = connect("127.0.0.1:1");
        literal(&mut block, "content-length", "1");
        literal(&mut block, "content-length", "2");
        for i in 0..STREAMS {
            frame(&mut buf, HEADERS, END_HEADERS, 2 * i + 1, &block);
        }
        let seen = attack(tls, buf, Duration::from_secs(5)).await;
        let (code, debug) = seen.goaway.clone().expect("GOAWAY");
        assert_eq!(code, ENHANCE_YOUR_CALM, "{debug}");
        assert_eq!(debug, "too_many_internal_resets");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_with_goaway() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let tls = attacker(&mesh, &server).await.expect("TLS");

        // A header block that never ends: HEADERS, then CONTINUATION after CONTINUATION,
        // none with END_HEADERS, each a complete small header field.
        let mut buf = preface();
        frame(&mut buf, HEADERS, 0, 1, &connect("127.0.0.1:1"));
        let mut field = Vec::new();
        literal(&mut field, "x-flood", "aaaaaaaaaaaaaaaa");
        for _ in 0..10_000 {
            frame(&mut buf, CONTINUATION, 0, 1, &field);
        }
        let seen = attack(tls, buf, Duration::from_secs(5)).await;
        let (code, debug) = seen.goaway.clone().expect("GOAWAY");
        assert_eq!(code, ENHANCE_YOUR_CALM, "{debug}");
        assert_eq!(debug, "too_many_continuations");
        assert!(server.requests().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_concurrent_limit_are_refused() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let limit = HboneServerConfig::default().limits.max_concurrent_streams;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let (echo, _echo) = echo_server().await;
        let tls = attacker(&mesh, &server).await.expect("TLS");

        // Tunnels to the echo application that stay open, 100 more than the limit.
        let mut buf = preface();
        let block = connect(&echo.to_string());
        for i in 0..limit + 100 {
            frame(&mut buf, HEADERS, END_HEADERS, 2 * i + 1, &block);
        }
        let seen = attack(tls, buf, Duration::from_secs(3)).await;
        let refused = seen.resets_with(REFUSED_STREAM);
        assert!(refused >= 100, "{refused} streams refused");
        assert!(
            server.requests().len() <= limit as usize,
            "{} streams reached the handler",
            server.requests().len()
        );
        assert!(
            seen.goaway.is_none(),
            "a client over the limit is not cut off"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_first_request_is_closed() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let mut config = HboneServerConfig::default();
        config.timeouts.first_request = Duration::from_secs(1);
        let server =
            hbone_server_with(&mesh.server_manager, &mesh.trust, server_id(), config).await;
        let tls = attacker(&mesh, &server).await.expect("TLS");
        let (mut reader, mut writer) = tokio::io::split(tls);

        // Slowloris: the preface at once, then a CONNECT's HEADERS frame a byte every
        // 200 ms (it would take 10 s and more to complete).
        writer.write_all(&preface()).await.expect("preface");
        let mut headers = Vec::new();
        frame(
            &mut headers,
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &connect("127.0.0.1:1"),
        );
        let trickle = tokio::spawn(async move {
            for byte in headers {
                if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        // Nothing from the server for this long, or the end, stops the reading.
        let seen = read_frames(&mut reader, Duration::from_secs(8)).await;
        trickle.abort();
        assert!(seen.closed, "the server closed the connection: {seen:?}");
        assert_eq!(seen.goaway.map(|g| g.0), Some(0), "GOAWAY (NO_ERROR) first");
        assert!(server.requests().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_streams_is_closed_once_idle() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let mut config = HboneServerConfig::default();
        config.timeouts.idle = Duration::from_secs(1);
        let server =
            hbone_server_with(&mesh.server_manager, &mesh.trust, server_id(), config).await;
        let tls = attacker(&mesh, &server).await.expect("TLS");
        let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2");
        let connection = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("127.0.0.1:{FORBIDDEN_PORT}"))
            .body(Empty::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // The stream is done: after the idle timeout the server closes the connection.
        let ended = tokio::time::timeout(Duration::from_secs(8), connection).await;
        assert!(ended.is_ok(), "the server closed the idle connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holding_its_maximum_of_connections_is_refused_another() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let config = HboneServerConfig {
            max_connections_per_peer: 2,
            ..HboneServerConfig::default()
        };
        let server =
            hbone_server_with(&mesh.server_manager, &mesh.trust, server_id(), config).await;
        let first = attacker(&mesh, &server).await.expect("first");
        let _second = attacker(&mesh, &server).await.expect("second");
        assert!(
            attacker(&mesh, &server).await.is_err(),
            "a third connection from 127.0.0.1 is closed before TLS"
        );
        // A connection closed frees its place (once the server notices).
        drop(first);
        let mut admitted = false;
        for _ in 0..50 {
            if attacker(&mesh, &server).await.is_ok() {
                admitted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(admitted, "a place freed is given to the next connection");
    })
    .await;
}
