//! Readiness on 15021, as a Deployment probes it: the waypoint only listens once it holds
//! its certificate and configuration, so answering means ready, until it is told to stop
//! (then 503, so its endpoint is withdrawn while it drains).
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use weft_core::lifecycle::Draining;

/// Ready until the waypoint starts draining.
pub async fn serve(addr: SocketAddr, draining: Draining) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for readiness probes on {addr}"))?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let ready = !draining.is_draining();
                async move {
                    let status = match (request.uri().path(), ready) {
                        ("/healthz/ready" | "/ready", true) => StatusCode::OK,
                        ("/healthz/ready" | "/ready", false) => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::NOT_FOUND,
                    };
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = weft_core::hardening::Http1Limits::HTTP
                .http1_builder()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
