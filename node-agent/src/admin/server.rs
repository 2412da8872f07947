//! Admin endpoint (:15000 on loopback by default): what the agent knows, holds and put in
//! the kernel, as JSON for `weftctl` (the questions `istioctl ztunnel-config` answers).
//! `GET /` lists the endpoints.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hyper::{Method, StatusCode};
use serde::Serialize;
use weft_config::registry::Snapshot;

use super::http::{Reply, json, reply, serve as serve_http};
use super::readiness::Readiness;
use super::{certs, ebpf, registry};
use crate::capture::enrollment::Enrollment;
use crate::mesh::SharedMesh;

pub const DEFAULT_ADDR: &str = "127.0.0.1:15000";

/// What the endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub node: String,
    pub enrollment: Arc<Mutex<Enrollment>>,
    pub mesh: SharedMesh,
    pub readiness: Readiness,
    pub started: Instant,
    /// Listening sockets taken over from the previous agent at start (0: a fresh start).
    pub inherited_sockets: usize,
}

const ENDPOINTS: [(&str, &str); 10] = [
    ("/", "this list"),
    (
        "/status",
        "version, node, readiness and counts (what `weftctl status` shows)",
    ),
    (
        "/workloads",
        "every workload of the registry; `captured` marks those enrolled here",
    ),
    (
        "/services",
        "services with their VIPs, ports, endpoint counts and waypoint",
    ),
    (
        "/policies",
        "AuthorizationPolicies and PeerAuthentications, with the pods of this node they select",
    ),
    (
        "/certs",
        "the trust bundle's roots (SHA-256) and the workload certificates held (identity, serial, validity, chain, root; never keys)",
    ),
    (
        "/config_dump",
        "the whole registry snapshot, refused objects and why",
    ),
    (
        "/ebpf",
        "enrolled pods' attached programs and links, pinned maps with sizes",
    ),
    ("/pods", "enrolled pods with kernel and proxy counters"),
    ("/connections", "the most recent proxied connections"),
];

#[derive(Serialize)]
struct EndpointEntry {
    path: &'static str,
    description: &'static str,
}

#[derive(Serialize)]
struct Index<'a> {
    agent: &'static str,
    version: &'static str,
    node: &'a str,
    endpoints: Vec<EndpointEntry>,
}

#[derive(Serialize)]
struct StatusView<'a> {
    agent: &'static str,
    version: &'static str,
    node: &'a str,
    /// What the readiness probe on :15021 answers.
    ready: bool,
    /// This agent's process, and the listening sockets it took over from the agent before
    /// it (a lossless upgrade; 0 after a fresh start).
    pid: u32,
    inherited_sockets: usize,
    uptime_seconds: u64,
    registry_version: u64,
    /// Workloads the registry knows, cluster-wide.
    workloads: usize,
    /// Mesh workloads scheduled on this node (what should be enrolled).
    mesh_workloads_on_node: usize,
    enrolled_pods: usize,
    services: usize,
    certificates: usize,
    /// Identities of enrolled pods still waiting for their first certificate.
    identities_without_certificate: usize,
    /// Certificates with less than a quarter of their lifetime left: rotation, due at about
    /// half of it, is late (the CA is unreachable or refuses).
    certificates_expiring_soon: usize,
    certificates_expired: usize,
    /// Objects whose latest version was refused.
    refused_objects: usize,
    warnings: usize,
}

pub async fn serve(listener: tokio::net::TcpListener, admin: Admin) -> anyhow::Result<()> {
    serve_http(listener, move |request| {
        let admin = admin.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        async move {
            if method != Method::GET && method != Method::HEAD {
                return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
            }
            // Off the proxy's worker threads: a config dump of a large cluster and a walk
            // of the eBPF maps take milliseconds of CPU and system calls.
            match tokio::task::spawn_blocking(move || route(&admin, &path)).await {
                Ok(reply) => reply,
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("the handler failed: {e}\n"),
                ),
            }
        }
    })
    .await
}

fn captured_uids(admin: &Admin) -> HashSet<String> {
    lock(&admin.enrollment)
        .attachments()
        .into_iter()
        .map(|p| p.uid)
        .collect()
}

fn lock(enrollment: &Mutex<Enrollment>) -> std::sync::MutexGuard<'_, Enrollment> {
    weft_core::sync::lock(enrollment)
}

fn route(admin: &Admin, path: &str) -> Reply {
    let snapshot = admin.mesh.registry.snapshot();
    match path {
        "/" => json(&Index {
            agent: "weft-agent",
            version: env!("CARGO_PKG_VERSION"),
            node: &admin.node,
            endpoints: ENDPOINTS
                .iter()
                .map(|&(path, description)| EndpointEntry { path, description })
                .collect(),
        }),
        "/status" => json(&status(admin, &snapshot)),
        "/pods" => json(&lock(&admin.enrollment).status()),
        "/connections" => json(&admin.mesh.log.snapshot()),
        "/certs" => json(&certs::certs(&admin.mesh, &snapshot, &admin.node)),
        "/workloads" => json(&registry::workloads(
            &snapshot,
            &captured_uids(admin),
            false,
        )),
        "/services" => json(&registry::services(&snapshot, false)),
        "/policies" => json(&registry::policies(&snapshot, &admin.node)),
        "/config_dump" => json(&registry::config_dump(
            &snapshot,
            &admin.node,
            &captured_uids(admin),
        )),
        "/ebpf" => {
            // The enrollment lock is held only to copy what it knows; the kernel is read
            // after it is released.
            let (pin_root, pods) = {
                let enrollment = lock(&admin.enrollment);
                (
                    enrollment.pin_root().to_path_buf(),
                    enrollment.attachments(),
                )
            };
            json(&ebpf::ebpf(&pin_root, pods))
        }
        _ => {
            let mut text = String::from("not found; endpoints:\n");
            for (path, description) in ENDPOINTS {
                text.push_str(&format!("  {path:<14} {description}\n"));
            }
            reply(StatusCode::NOT_FOUND, "text/plain", text)
        }
    }
}

fn status<'a>(admin: &'a Admin, snapshot: &Snapshot) -> StatusView<'a> {
    let enrolled = lock(&admin.enrollment).attachments();
    let certificates = admin.mesh.identities.certificates();
    let held: HashSet<String> = certificates
        .iter()
        .map(|c| c.identity().to_string())
        .collect();
    let wanted: HashSet<String> = snapshot
        .workloads_on_node(&admin.node)
        .filter(|w| w.in_mesh && enrolled.iter().any(|p| *p.uid == *w.uid))
        .map(|w| w.identity.to_string())
        .collect();
    let now = certs::unix(SystemTime::now());
    let remaining = |c: &weft_core::identity::WorkloadCertificate| {
        let not_before = certs::unix(c.not_before());
        let not_after = certs::unix(c.not_after());
        (not_after - now, not_after - not_before)
    };
    StatusView {
        agent: "weft-agent",
        version: env!("CARGO_PKG_VERSION"),
        node: &admin.node,
        ready: admin.readiness.is_ready(),
        pid: std::process::id(),
        inherited_sockets: admin.inherited_sockets,
        uptime_seconds: admin.started.elapsed().as_secs(),
        registry_version: snapshot.version(),
        workloads: snapshot.workload_count(),
        mesh_workloads_on_node: snapshot
            .workloads_on_node(&admin.node)
            .filter(|w| w.in_mesh)
            .count(),
        enrolled_pods: enrolled.len(),
        services: snapshot.service_count(),
        certificates: certificates.len(),
        identities_without_certificate: wanted.difference(&held).count(),
        certificates_expiring_soon: certificates
            .iter()
            .filter(|c| {
                let (left, lifetime) = remaining(c);
                left > 0 && left < lifetime / 4
            })
            .count(),
        certificates_expired: certificates.iter().filter(|c| remaining(c).0 <= 0).count(),
        refused_objects: registry::refused_objects(snapshot),
        warnings: snapshot.warnings().count(),
    }
}
