//! HBONE end to end on 127.0.0.1 with real certificates from a CA served over gRPC.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use weft_core::ca::{CaConfig, CertificateAuthority};
use weft_core::hbone::{HboneError, HbonePool, PoolConfig};
use weft_core::identity::tls::{ManagedCertResolver, spiffe_client_config};
use weft_core::identity::{IdentityManager, ManagerConfig};

fn pool(mesh: &Mesh) -> HbonePool {
    HbonePool::new(
        mesh.client_manager.clone(),
        mesh.trust.clone(),
        PoolConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_through_the_tunnel_and_the_server_sees_the_client() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = pool(&mesh);

        let mut stream = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("tunnel opens");
        // 1 MiB, well past one HTTP/2 frame and one flow-control window's worth of chunks.
        let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo(&mut stream, &payload).await, payload);
        assert_eq!(
            echo(&mut stream, b"second message").await,
            b"second message"
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let seen = &requests[0];
        assert_eq!(
            seen.peer.identity,
            client_id(),
            "the server sees the client's SPIFFE id"
        );
        let client_cert = mesh
            .client_manager
            .current(&client_id())
            .expect("client cert");
        assert_eq!(&seen.peer.serial, client_cert.serial());
        assert_eq!(
            seen.destination, echo_addr,
            ":authority is the original destination"
        );
        assert_eq!(
            seen.source,
            Some("127.0.0.1".parse().expect("ip")),
            "from Forwarded"
        );
        assert_eq!(seen.headers["baggage"], "k8s.namespace.name=ns-a");
        let trace = weft_core::telemetry::TraceContext::extract(&seen.headers)
            .expect("a trace context on the CONNECT");
        assert_eq!(
            trace.sampling(),
            weft_core::telemetry::Sampling::Undecided,
            "nobody decided: as B3 without a sampling state, not a traceparent saying unsampled"
        );
        assert!(!seen.headers.contains_key("traceparent"));
        assert_eq!(seen.server_identity, server_id());

        let server_cert = mesh
            .server_manager
            .current(&server_id())
            .expect("server cert");
        assert_eq!(stream.info().peer.identity, server_id());
        assert_eq!(&stream.info().peer.serial, server_cert.serial());
        assert_eq!(&stream.info().local_serial, client_cert.serial());

        // Half-close: the application sees EOF, answers with its own, the stream ends.
        stream.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("EOF within 10 s")
            .expect("clean EOF");
        assert!(rest.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_the_hbone_port_is_refused() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let mut server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;

        let attempts = [
            format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").into_bytes(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ];
        for attempt in attempts {
            let mut tcp = TcpStream::connect(server.addr).await.expect("TCP connects");
            tcp.write_all(&attempt).await.expect("write");
            let mut answer = Vec::new();
            // The server closes the connection (possibly after a TLS alert); never HTTP.
            let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
                .await
                .expect("closed within 10 s");
            assert!(!answer.starts_with(b"HTTP"), "plaintext got an HTTP answer");
            assert!(!answer.windows(4).any(|w| w == b"HTTP"));
            let outcome = server.next_outcome().await;
            assert!(
                matches!(&outcome, Err(e) if e.starts_with("TLS with")),
                "the server failed the connection at TLS: {outcome:?}"
            );
        }
        assert!(
            server.requests().is_empty(),
            "no CONNECT reached the handler"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let mut server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;

        // Same SPIFFE id, but signed by a CA the mesh does not trust. The client itself
        // trusts the mesh root, so only the server's check can stop it.
        let rogue_ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"));
        let rogue = IdentityManager::new(rogue_ca, ManagerConfig::default());
        let pool = HbonePool::new(rogue, mesh.trust.clone(), PoolConfig::default());
        let result = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await;
        // TLS 1.3: the client learns of the refusal only after its own side of the
        // handshake — from the server's alert, or as a closed connection when the server
        // hangs up before the alert is read. What matters is that it fails, and that the
        // server says why (below).
        assert!(
            result.is_err(),
            "a client certificate from another CA was accepted"
        );

        let outcome = server.next_outcome().await;
        let error = outcome.expect_err("the server refused the connection");
        assert!(error.starts_with("TLS with"), "{error}");
        assert!(
            server.requests().is_empty(),
            "no CONNECT reached the handler"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_presenting_another_identity_is_refused_by_the_client() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = pool(&mesh);

        let mut request = connect_request(server.addr, echo_addr);
        request.destination = id("ns-b", "payments");
        let error = pool
            .connect(request, dial)
            .await
            .expect_err("the server is ns-b/server, not ns-b/payments");
        match &error {
            HboneError::IdentityMismatch { mismatch, address } => {
                assert_eq!(mismatch.expected, id("ns-b", "payments"));
                assert_eq!(mismatch.presented, vec![server_id()]);
                assert_eq!(*address, server.addr);
            }
            other => panic!("expected an identity mismatch, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .contains("spiffe://cluster.local/ns/ns-b/sa/payments"),
            "the error names the expected identity: {error}"
        );
        assert!(server.requests().is_empty());
        assert_eq!(pool.connection_count(), 0, "nothing was pooled");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_share_one_connection() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = pool(&mesh);

        const STREAMS: usize = 50;
        let all_open = Arc::new(tokio::sync::Barrier::new(STREAMS));
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let pool = pool.clone();
            let all_open = Arc::clone(&all_open);
            let request = connect_request(server.addr, echo_addr);
            tasks.push(tokio::spawn(async move {
                let mut stream = pool.connect(request, dial).await.expect("stream opens");
                let payload = format!("stream {i}").into_bytes();
                assert_eq!(echo(&mut stream, &payload).await, payload);
                // Hold every stream open until all are: they are truly concurrent.
                all_open.wait().await;
                stream.info().connection_id
            }));
        }
        let mut connection_ids = Vec::new();
        for task in tasks {
            connection_ids.push(task.await.expect("stream task"));
        }
        connection_ids.dedup();
        assert_eq!(connection_ids.len(), 1, "all streams on one connection");
        assert_eq!(server.accepted(), 1, "one TCP connection for 50 streams");
        assert_eq!(server.requests().len(), STREAMS);
        assert_eq!(pool.connection_count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_makes_the_next_stream_open_another() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = HbonePool::new(
            mesh.client_manager.clone(),
            mesh.trust.clone(),
            PoolConfig {
                max_streams_per_connection: 4,
                ..PoolConfig::default()
            },
        );
        let mut streams = Vec::new();
        for i in 0..10 {
            let mut stream = pool
                .connect(connect_request(server.addr, echo_addr), dial)
                .await
                .expect("stream opens");
            assert_eq!(echo(&mut stream, &[i]).await, vec![i]);
            streams.push(stream);
        }
        assert_eq!(server.accepted(), 3, "10 streams at 4 per connection");
        let mut ids: Vec<u64> = streams.iter().map(|s| s.info().connection_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // A stream that ends frees its slot: the next one reuses that connection.
        let first_connection = streams[0].info().connection_id;
        streams.remove(0);
        let stream = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("stream opens");
        assert_eq!(stream.info().connection_id, first_connection);
        assert_eq!(server.accepted(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_server_keeps_open_streams_and_sends_new_ones_elsewhere() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = pool(&mesh);
        let mut open = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("stream opens");
        assert_eq!(echo(&mut open, b"before").await, b"before");
        let first = open.info().connection_id;
        assert_eq!(server.server.open_connections(), 1);

        // As an agent handing its listeners to a successor does: the successor accepts from
        // now on, then the old server sends GOAWAY on its connections.
        server.hand_over();
        server.server.retire();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut next = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("a new stream opens despite the GOAWAY");
        assert_ne!(
            next.info().connection_id,
            first,
            "not on the connection that is going away"
        );
        assert_eq!(server.accepted(), 2);
        assert_eq!(echo(&mut next, b"next").await, b"next");
        assert_eq!(
            echo(&mut open, b"still open").await,
            b"still open",
            "the stream opened before the GOAWAY runs on"
        );

        // The retired server's connection closes once its stream has ended, while the
        // successor's stays open.
        drop(open);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while server.server.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.server.open_connections(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_handler_are_403_and_503() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = pool(&mesh);

        let forbidden: SocketAddr = format!("127.0.0.1:{FORBIDDEN_PORT}").parse().expect("addr");
        let error = pool
            .connect(connect_request(server.addr, forbidden), dial)
            .await
            .expect_err("policy refuses");
        assert!(
            matches!(error, HboneError::Refused { status: StatusCode::FORBIDDEN, target, .. } if target == forbidden),
            "{error:?}"
        );

        // A port nothing listens on: the handler cannot reach the application.
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let error = pool
            .connect(connect_request(server.addr, closed), dial)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, HboneError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, .. }),
            "{error:?}"
        );
        // Both refusals were streams on one connection, which stays usable.
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.connection_count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_and_malformed_authorities_400() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;

        // A raw mutual-TLS HTTP/2 client, to send what HbonePool never would.
        mesh.client_manager
            .fetch(&client_id())
            .await
            .expect("client cert");
        let resolver = Arc::new(ManagedCertResolver::new(
            mesh.client_manager.clone(),
            client_id(),
        ));
        let config = spiffe_client_config(&mesh.trust.clone().into(), server_id(), resolver)
            .expect("config");
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(server.addr.ip().into()), tcp)
            .await
            .expect("TLS");
        let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2");
        tokio::spawn(connection);

        let send = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Empty::new())
                .expect("request")
        };
        let mut status = async |request| {
            sender
                .send_request(request)
                .await
                .expect("response")
                .status()
        };
        assert_eq!(
            status(send(Method::GET, "https://127.0.0.1/")).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(send(Method::POST, "https://127.0.0.1/upload")).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        for authority in [
            "web.shop.svc.cluster.local:80",
            "127.0.0.1:0",
            "localhost:8080",
        ] {
            assert_eq!(
                status(send(Method::CONNECT, authority)).await,
                StatusCode::BAD_REQUEST,
                "{authority}"
            );
        }
        assert!(
            server.requests().is_empty(),
            "none of these reached the handler"
        );
    })
    .await;
}
