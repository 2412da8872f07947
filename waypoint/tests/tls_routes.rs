//! VirtualService `tls` routes at a waypoint, in process and unprivileged: a client doing
//! TLS itself (rustls) to a ServiceEntry host bound to the waypoint on its TLS port (as
//! the agent sends it: a CONNECT stream to the entry's allocated address, here a duplex
//! pipe into the waypoint's TCP handler) is routed by the SNI of its ClientHello to one of
//! two real TLS servers on 127.0.0.1, each answering with its own name; the waypoint never
//! terminates the TLS (the client verifies the server's certificate end to end). A
//! ClientHello no rule names is closed before any server is dialed.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::context::WaypointContext;

/// A test CA: its certificate (DER) and what signs with it.
struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        der: CertificateDer::from(cert.der().to_vec()),
        issuer: Issuer::new(params, key),
    }
}

/// What one TLS server saw: the SNI of each handshake it completed.
#[derive(Default)]
struct Seen {
    snis: Mutex<Vec<Option<String>>>,
    connections: AtomicUsize,
}

/// A TLS server on loopback with a certificate for `names`, answering each connection's
/// first read with `hello from <who>`.
async fn tls_server(ca: &Ca, names: &[&str], who: &'static str) -> (SocketAddr, Arc<Seen>) {
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params")
        .signed_by(&key, &ca.issuer)
        .expect("server certificate");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let seen = Arc::new(Seen::default());
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            record.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                record.snis.lock().expect("lock").push(sni);
                let mut buf = [0u8; 64];
                if tls.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = tls.write_all(format!("hello from {who}").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (address, seen)
}

/// The waypoint `egress/waypoint` with `front.tls.test` bound to it (TLS port 443), whose
/// VirtualService sends SNI `a.tls.test` to the entry `a.backend.test` and `*.b.tls.test`
/// to `b.backend.test`, each a STATIC entry of one TLS server.
fn fixture(a: SocketAddr, b: SocketAddr, port_line: &str) -> String {
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
metadata: {{name: front, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [front.tls.test]
  ports: [{port_line}]
  resolution: STATIC
  endpoints: [{{address: {a_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: egress}}
spec:
  hosts: [a.backend.test]
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {a_port}}}]
  resolution: STATIC
  endpoints: [{{address: {a_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: egress}}
spec:
  hosts: [b.backend.test]
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {b_port}}}]
  resolution: STATIC
  endpoints: [{{address: {b_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: front, namespace: egress}}
spec:
  hosts: [front.tls.test]
  tls:
  - match: [{{port: 443, sniHosts: [a.tls.test]}}]
    route: [{{destination: {{host: a.backend.test, port: {{number: 443}}}}}}]
  - match: [{{port: 443, sniHosts: ["*.b.tls.test"]}}]
    route: [{{destination: {{host: b.backend.test, port: {{number: 443}}}}}}]
"#,
        a_ip = a.ip(),
        a_port = a.port(),
        b_ip = b.ip(),
        b_port = b.port(),
    )
}

const TLS_PORT: &str = "{number: 443, name: tls, protocol: TLS}";

/// A TLS client in `shop` connecting to `front.tls.test:443` through the waypoint with
/// `sni`, trusting `ca`: what the server answered, or the handshake's error.
async fn connect(ctx: &Arc<WaypointContext>, ca: &Ca, sni: &str) -> Result<String, String> {
    let downstream = entry_downstream(ctx, "front.tls.test", 443);
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::tcp::forward(
        server_side,
        downstream,
        ctx.clone(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let exchange = async {
        let mut tls = connector
            .connect(name, client)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"hi").await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&answer).to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("done in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_hello_sni_chooses_the_tls_route_and_tls_passes_through() {
    let ca = ca();
    let names = ["a.tls.test", "x.b.tls.test", "c.tls.test"];
    let (a, seen_a) = tls_server(&ca, &names, "a").await;
    let (b, seen_b) = tls_server(&ca, &names, "b").await;
    let ctx = context(&fixture(a, b, TLS_PORT));

    assert_eq!(
        connect(&ctx, &ca, "a.tls.test").await,
        Ok("hello from a".into())
    );
    assert_eq!(
        connect(&ctx, &ca, "x.b.tls.test").await,
        Ok("hello from b".into())
    );
    assert_eq!(
        connect(&ctx, &ca, "a.tls.test").await,
        Ok("hello from a".into())
    );
    assert_eq!(
        *seen_a.snis.lock().expect("lock"),
        [
            Some("a.tls.test".to_string()),
            Some("a.tls.test".to_string())
        ],
        "the servers terminate the client's own TLS, SNI intact"
    );
    assert_eq!(
        *seen_b.snis.lock().expect("lock"),
        [Some("x.b.tls.test".to_string())]
    );

    // No rule names this SNI: closed at the waypoint, no server dialed.
    let refused = connect(&ctx, &ca, "c.tls.test").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(seen_a.connections.load(Ordering::SeqCst), 2);
    assert_eq!(seen_b.connections.load(Ordering::SeqCst), 1);
}

/// Istio builds `tls` routes for TLS and HTTPS ports only: on a TCP port the connection
/// goes to the entry itself (here server A) whatever its SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_do_not_apply_to_a_tcp_port() {
    let ca = ca();
    let names = ["a.tls.test", "x.b.tls.test"];
    let (a, _) = tls_server(&ca, &names, "a").await;
    let (b, seen_b) = tls_server(&ca, &names, "b").await;
    let port = format!(
        "{{number: 443, name: tcp, protocol: TCP, targetPort: {}}}",
        a.port()
    );
    let ctx = context(&fixture(a, b, &port));
    assert_eq!(
        connect(&ctx, &ca, "x.b.tls.test").await,
        Ok("hello from a".into())
    );
    assert_eq!(seen_b.connections.load(Ordering::SeqCst), 0);
}
