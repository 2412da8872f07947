//! Readiness on :15021 (`GET /healthz/ready`), the port and path Istio's ztunnel uses, so a
//! DaemonSet probe and the lab both know when every mesh pod of the node is enrolled.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::StatusCode;
use tokio::net::TcpListener;

use super::http::{reply, serve as serve_http};

pub const DEFAULT_ADDR: &str = "0.0.0.0:15021";
pub const PATH: &str = "/healthz/ready";

#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub async fn serve(listener: TcpListener, readiness: Readiness) -> anyhow::Result<()> {
    serve_http(listener, move |request| {
        let ready = readiness.is_ready();
        async move {
            match (request.uri().path(), ready) {
                (PATH, true) => reply(StatusCode::OK, "text/plain", "ready\n"),
                (PATH, false) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: enrolling pods\n",
                ),
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            }
        }
    })
    .await
}
