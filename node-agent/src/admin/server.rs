//! Admin endpoint (:15000 on loopback by default): what the agent captured and where it
//! went. `GET /pods` lists enrolled pods with their kernel counters, `GET /connections` the
//! most recent connections the proxy handled.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;

use super::http::{json, reply, serve as serve_http};
use crate::capture::enrollment::Enrollment;
use crate::mesh::SharedMesh;

pub const DEFAULT_ADDR: &str = "127.0.0.1:15000";

pub async fn serve(
    addr: SocketAddr,
    enrollment: Arc<Mutex<Enrollment>>,
    mesh: SharedMesh,
) -> anyhow::Result<()> {
    serve_http(addr, move |request| {
        let body = match request.uri().path() {
            "/pods" => {
                let enrollment = enrollment.lock().unwrap_or_else(|p| p.into_inner());
                json(&enrollment.status())
            }
            "/connections" => json(&mesh.log.snapshot()),
            "/certs" => json(&certificates(&mesh)),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "endpoints: /pods /connections /certs\n",
            ),
        };
        async move { body }
    })
    .await
}

#[derive(serde::Serialize)]
struct CertificateStatus {
    identity: String,
    serial: String,
    not_after_unix: u64,
}

/// The workload certificates the agent holds (never their keys).
fn certificates(mesh: &SharedMesh) -> Vec<CertificateStatus> {
    mesh.identities
        .certificates()
        .iter()
        .map(|c| CertificateStatus {
            identity: c.identity().to_string(),
            serial: c.serial().to_string(),
            not_after_unix: c
                .not_after()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        })
        .collect()
}
