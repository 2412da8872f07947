//! Readiness on :15021 (`GET /healthz/ready`), the port and path Istio's ztunnel uses, so a
//! DaemonSet probe and the lab both know when every mesh pod of the node is enrolled.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

pub const DEFAULT_ADDR: &str = "0.0.0.0:15021";
pub const PATH: &str = "/healthz/ready";

#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub async fn serve(addr: SocketAddr, readiness: Readiness) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the readiness endpoint on {addr}"))?;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "accepting a readiness connection");
                continue;
            }
        };
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let readiness = readiness.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &readiness)) }
                });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "readiness connection");
            }
        });
    }
}

fn answer(
    request: &Request<hyper::body::Incoming>,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let (status, body) = match (request.uri().path(), readiness.is_ready()) {
        (PATH, true) => (StatusCode::OK, "ready\n"),
        (PATH, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: enrolling pods\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
