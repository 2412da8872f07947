//! A `jwksUri` over HTTPS: the waypoint's fetch verifies the server against the system's
//! trust roots (here `SSL_CERT_FILE`, which rustls-native-certs reads instead of
//! `/etc/ssl/certs`) and refuses a server those roots do not vouch for. Real TLS 1.3 on
//! loopback with certificates made by rcgen.
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_waypoint::jwks::{FetchError, fetch};

const SET: &str = r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;

struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn authority() -> Authority {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    Authority {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A TLS server on loopback for `localhost`, certified by `ca`, answering one JWKS per
/// connection.
async fn serve(ca: &Authority) -> u16 {
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &ca.issuer)
        .expect("server certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = tls.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{SET}",
                SET.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    port
}

#[test]
fn https_jwks_is_fetched_from_a_trusted_server_only() {
    let trusted = authority();
    let stranger = authority();
    let roots = std::env::temp_dir().join(format!("weft-jwks-roots-{}.pem", std::process::id()));
    std::fs::write(&roots, &trusted.pem).expect("write roots");
    // SAFETY: this is the only test of this binary and it sets the variable before it
    // starts any thread of its own; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("SSL_CERT_FILE", &roots) };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let good = serve(&trusted).await;
        let set = fetch(
            &format!("https://localhost:{good}/jwks.json"),
            Duration::from_secs(5),
        )
        .await
        .expect("fetched over HTTPS");
        assert_eq!(set.keys.len(), 1);

        let bad = serve(&stranger).await;
        let refused = fetch(
            &format!("https://localhost:{bad}/jwks.json"),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(refused, Err(FetchError::Tls { .. })),
            "a server the roots do not vouch for: {refused:?}"
        );
    });
    let _ = std::fs::remove_file(&roots);
}
