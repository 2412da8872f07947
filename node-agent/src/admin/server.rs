//! Admin endpoint (:15000 on loopback by default): what the agent captured and where it
//! went. `GET /pods` lists enrolled pods with their kernel counters, `GET /connections` the
//! most recent connections the proxy handled.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;

use super::http::{json, reply, serve as serve_http};
use crate::capture::enrollment::Enrollment;
use crate::proxy::records::ConnectionLog;

pub const DEFAULT_ADDR: &str = "127.0.0.1:15000";

pub async fn serve(
    addr: SocketAddr,
    enrollment: Arc<Mutex<Enrollment>>,
    log: ConnectionLog,
) -> anyhow::Result<()> {
    serve_http(addr, move |request| {
        let body = match request.uri().path() {
            "/pods" => {
                let enrollment = enrollment.lock().unwrap_or_else(|p| p.into_inner());
                json(&enrollment.status())
            }
            "/connections" => json(&log.snapshot()),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "endpoints: /pods /connections\n",
            ),
        };
        async move { body }
    })
    .await
}
