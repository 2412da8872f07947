//! Egress through a waypoint with TLS origination, in process and unprivileged: a client's
//! plain HTTP request for a ServiceEntry host bound to the waypoint (as the agent sends
//! it: a CONNECT stream to the entry's allocated address, here a duplex pipe into the
//! waypoint's HTTP handler) is routed by the host's VirtualService from port 80 to 443 and
//! sent, as the host's DestinationRule says (`portLevelSettings` 443 `tls.mode: SIMPLE`,
//! `caCertificates` a PEM file), in TLS to a real TLS server on 127.0.0.1 (rustls, with a
//! certificate from a test CA made by rcgen) that records the SNI of each ClientHello and
//! whether a connection ever started with anything but a TLS handshake.
mod common;

use common::{context, entry_downstream};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::context::WaypointContext;

/// What the TLS server saw on each connection.
#[derive(Debug, Default)]
struct Seen {
    /// The SNI of each ClientHello (`None`: none sent).
    snis: Vec<Option<String>>,
    /// Connections whose first byte was not a TLS handshake record.
    plaintext: usize,
    /// Requests served after a completed handshake.
    served: usize,
}

/// A TLS server on loopback presenting a certificate for `names`, signed by the CA whose
/// PEM is returned.
async fn tls_server(names: &[&str]) -> (SocketAddr, String, Arc<Mutex<Seen>>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params")
        .signed_by(&key, &issuer)
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
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                if first[0] != 0x16 {
                    record.lock().expect("lock").plaintext += 1;
                    return;
                }
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let Ok(start) = acceptor.await else {
                    return;
                };
                let sni = start.client_hello().server_name().map(str::to_string);
                record.lock().expect("lock").snis.push(sni);
                let Ok(mut tls) = start.into_stream(config).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let Ok(n) = tls.read(&mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let host = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("host: ")
                            .or_else(|| l.strip_prefix("Host: "))
                    })
                    .unwrap_or_default()
                    .to_string();
                record.lock().expect("lock").served += 1;
                let body = format!("secure hello for {host}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (address, ca_cert.pem(), seen)
}

/// The egress waypoint `waypoint` of namespace `egress`, with the ServiceEntry
/// `secure.external.test` bound to it: port 80 (HTTP) routed to 443, whose STATIC endpoint
/// is the TLS server, and a DestinationRule originating TLS on 443.
fn fixture(server: SocketAddr, ca_file: &str, extra_tls: &str) -> String {
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
metadata: {{name: secure, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [secure.external.test]
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 443, name: https, protocol: HTTPS, targetPort: {port}}}
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: egress}}
spec:
  hosts: [secure.external.test]
  http:
  - match: [{{port: 80}}]
    route: [{{destination: {{host: secure.external.test, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: egress}}
spec:
  host: secure.external.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: SIMPLE, caCertificates: {ca_file}{extra_tls}}}
"#,
        port = server.port(),
        ip = server.ip(),
    )
}

/// A plain HTTP GET from a client in `shop` to the entry host's allocated address on port
/// 80, carried into the waypoint as its CONNECT stream would be.
async fn get(ctx: &Arc<WaypointContext>) -> (StatusCode, String) {
    let downstream = entry_downstream(ctx, "secure.external.test", 80);
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(server, downstream, ctx.clone()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("/get")
        .header("host", "secure.external.test")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
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

fn ca_file(pem: &str, name: &str) -> String {
    let path = std::env::temp_dir().join(format!("weft-egress-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, pem).expect("write the CA");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_goes_out_as_tls_with_the_entry_host_as_sni() {
    let (server, ca, seen) = tls_server(&["secure.external.test"]).await;
    let ctx = context(&fixture(server, &ca_file(&ca, "good"), ""));
    let (status, body) = get(&ctx).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "secure hello for secure.external.test");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.snis, [Some("secure.external.test".to_string())]);
    assert_eq!(seen.plaintext, 0, "the server never sees plain text");
    assert_eq!(seen.served, 1);
    let metrics = ctx.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains(r#"destination_service="secure.external.test""#)
                && l.contains(r#"response_code="200""#)),
        "the entry host is the destination service: {metrics}"
    );
}

/// An AuthorizationPolicy attached to the ServiceEntry by `targetRefs` applies at the
/// waypoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_attached_to_the_service_entry_applies() {
    let (server, ca, seen) = tls_server(&["secure.external.test"]).await;
    let yaml = format!(
        "{}\n---\n{}",
        fixture(server, &ca_file(&ca, "policy"), ""),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-get, namespace: egress}
spec:
  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: secure}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/get"]}}]}]
"#
    );
    let ctx = context(&yaml);
    let (status, _) = get(&ctx).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        seen.lock().expect("lock").snis.is_empty(),
        "nothing went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_wanted_subject_alt_name_fails_with_503_never_plaintext() {
    let (server, ca, seen) = tls_server(&["secure.external.test"]).await;
    let ctx = context(&fixture(
        server,
        &ca_file(&ca, "san"),
        ", subjectAltNames: [other.external.test]",
    ));
    let (status, _) = get(&ctx).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().expect("lock");
    assert!(!seen.snis.is_empty(), "a TLS handshake was tried");
    assert_eq!(seen.plaintext, 0, "no fallback to plain text");
    assert_eq!(seen.served, 0, "no request reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_file_does_not_vouch_for_fails_with_503() {
    let (server, _ca, seen) = tls_server(&["secure.external.test"]).await;
    let (_, stranger, _) = tls_server(&["secure.external.test"]).await;
    let ctx = context(&fixture(server, &ca_file(&stranger, "stranger"), ""));
    let (status, _) = get(&ctx).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.plaintext, 0);
    assert_eq!(seen.served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_fails_with_503_and_sends_nothing() {
    let (server, _ca, seen) = tls_server(&["secure.external.test"]).await;
    let ctx = context(&fixture(server, "/nonexistent/weft-ca.pem", ""));
    let (status, _) = get(&ctx).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().expect("lock");
    assert!(seen.snis.is_empty(), "no connection was made");
    assert_eq!(seen.plaintext, 0);
}

/// Istio ambient's egress form: one HTTP port whose `targetPort` is the server's TLS
/// port, and the DestinationRule's top-level `tls` (no VirtualService).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_port_and_a_top_level_tls_originate_too() {
    let (server, ca, seen) = tls_server(&["secure.external.test"]).await;
    let yaml = format!(
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
metadata: {{name: secure, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [secure.external.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: egress}}
spec:
  host: secure.external.test
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
        port = server.port(),
        ip = server.ip(),
        ca = ca_file(&ca, "target-port"),
    );
    let ctx = context(&yaml);
    let (status, body) = get(&ctx).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.snis, [Some("secure.external.test".to_string())]);
    assert_eq!(seen.plaintext, 0);
}

/// `openssl s_server -www` on loopback, stopped when dropped.
struct OpenSsl {
    child: std::process::Child,
    address: SocketAddr,
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OpenSSL server that presents a certificate for `secure.external.test` only to a
/// client whose SNI is exactly that (`-servername`, `-cert2`), aborts a handshake with
/// any other SNI (`-servername_fatal`), and presents a certificate for `default.invalid`
/// to a client sending none; both signed by the CA whose PEM is returned. `None` without
/// an `openssl` binary.
async fn openssl_server() -> Option<(OpenSsl, String)> {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let dir = std::env::temp_dir().join(format!("weft-egress-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut files = Vec::new();
    for name in ["default.invalid", "secure.external.test"] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        files.push((cert_file, key_file));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let child = std::process::Command::new("openssl")
        .arg("s_server")
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&files[0].0)
        .arg("-key")
        .arg(&files[0].1)
        .args(["-servername", "secure.external.test", "-servername_fatal"])
        .arg("-cert2")
        .arg(&files[1].0)
        .arg("-key2")
        .arg(&files[1].1)
        .args(["-www", "-quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = OpenSsl {
        child,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(server.address).await.is_ok() {
            return Some((server, ca_cert.pem()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("openssl s_server did not listen on {}", server.address);
}

/// A real OpenSSL server: it completes the handshake with its `secure.external.test`
/// certificate only for that SNI, and the page `-www` serves comes back; an `sni` the
/// DestinationRule sets to another name is refused by the server and answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_server_sees_the_sni_of_the_entry_host() {
    let Some((server, ca)) = openssl_server().await else {
        eprintln!("no openssl binary: skipped");
        return;
    };
    let ca = ca_file(&ca, "openssl");
    let ctx = context(&fixture(server.address, &ca, ""));
    let (status, body) = get(&ctx).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("s_server"), "the -www page: {body}");
    let ctx = context(&fixture(server.address, &ca, ", sni: other.external.test"));
    let (status, _) = get(&ctx).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A TCP port of the entry (not HTTP): the stream is spliced into TLS the waypoint
/// originates, with the entry host as SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_stream_is_spliced_into_originated_tls() {
    let (server, ca, seen) = tls_server(&["secure.external.test"]).await;
    let yaml = format!(
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
metadata: {{name: secure, namespace: egress, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  hosts: [secure.external.test]
  ports: [{{number: 9000, name: tcp-raw, protocol: TCP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: egress}}
spec:
  host: secure.external.test
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
        port = server.port(),
        ip = server.ip(),
        ca = ca_file(&ca, "tcp"),
    );
    let ctx = context(&yaml);
    let downstream = entry_downstream(&ctx, "secure.external.test", 9000);
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::tcp::forward(
        server_side,
        downstream,
        ctx.clone(),
    ));
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: raw\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.ends_with("secure hello for raw"), "{answer}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.snis, [Some("secure.external.test".to_string())]);
    assert_eq!(seen.plaintext, 0);
}
