//! `GET /certs`: the trust bundle in force (its roots, by SHA-256) and the workload
//! certificates the agent holds, never their keys. During a root rotation it tells whether
//! the agent sees the new bundle and which root each certificate chains to.
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use weft_config::registry::Snapshot;
use weft_core::identity::{LiveTrust, TrustBundle, WorkloadCertificate};

use crate::mesh::SharedMesh;

#[derive(Debug, Serialize)]
pub struct CertsView {
    pub trust_bundle: TrustBundleView,
    pub certificates: Vec<CertificateView>,
}

#[derive(Debug, Serialize)]
pub struct TrustBundleView {
    /// The roots new handshakes accept, in the order of the bundle's file.
    pub roots: Vec<RootView>,
    /// How many times the bundle was replaced since the agent started.
    pub changes: u64,
    /// Why the file's current text was refused (the roots above stay in force), if it was.
    pub refused: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RootView {
    /// Colon-separated hex, as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint_sha256: String,
    pub subject: String,
    pub not_after: String,
    pub not_after_unix: i64,
}

#[derive(Debug, Serialize)]
pub struct CertificateView {
    pub identity: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: String,
    pub not_before_unix: i64,
    pub not_after: String,
    pub not_after_unix: i64,
    /// Negative once expired.
    pub expires_in_seconds: i64,
    /// Leaf, intermediates and root, as the CA returned them.
    pub chain_length: usize,
    /// SHA-256 of the last certificate of the chain (the root), colon-separated hex as
    /// `openssl x509 -fingerprint -sha256` prints it, to compare with the mesh's root.
    pub root_fingerprint_sha256: String,
    /// Whether the chain leads to a root of the trust bundle in force (peers with the same
    /// bundle accept it).
    pub chains_to_bundle: bool,
    /// The mesh pods of this node running as this identity.
    pub pods: Vec<String>,
}

pub fn certs(mesh: &SharedMesh, snapshot: &Snapshot, node: &str) -> CertsView {
    let bundle = mesh.trust.current();
    CertsView {
        trust_bundle: trust_bundle(&mesh.trust, &bundle),
        certificates: certificates(mesh, &bundle, snapshot, node),
    }
}

fn trust_bundle(live: &LiveTrust, bundle: &TrustBundle) -> TrustBundleView {
    TrustBundleView {
        roots: bundle
            .roots()
            .iter()
            .map(|root| {
                let not_after = unix(root.not_after);
                RootView {
                    fingerprint_sha256: root.fingerprint_sha256.clone(),
                    subject: root.subject.clone(),
                    not_after: rfc3339(not_after),
                    not_after_unix: not_after,
                }
            })
            .collect(),
        changes: live.version(),
        refused: live.refusal(),
    }
}

fn certificates(
    mesh: &SharedMesh,
    bundle: &TrustBundle,
    snapshot: &Snapshot,
    node: &str,
) -> Vec<CertificateView> {
    let mut pods_by_identity: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for workload in snapshot.workloads_on_node(node).filter(|w| w.in_mesh) {
        pods_by_identity
            .entry(&*workload.identity)
            .or_default()
            .push(format!("{}/{}", workload.namespace, workload.name));
    }
    let now = SystemTime::now();
    mesh.identities
        .certificates()
        .iter()
        .map(|c| {
            let identity = c.identity().to_string();
            let mut pods = pods_by_identity
                .get(identity.as_str())
                .cloned()
                .unwrap_or_default();
            pods.sort();
            view(c, now, bundle, pods)
        })
        .collect()
}

fn view(
    cert: &WorkloadCertificate,
    at: SystemTime,
    bundle: &TrustBundle,
    pods: Vec<String>,
) -> CertificateView {
    let now = unix(at);
    let not_before = unix(cert.not_before());
    let not_after = unix(cert.not_after());
    CertificateView {
        identity: cert.identity().to_string(),
        serial: cert.serial().to_string(),
        not_before: rfc3339(not_before),
        not_before_unix: not_before,
        not_after: rfc3339(not_after),
        not_after_unix: not_after,
        expires_in_seconds: not_after - now,
        chain_length: cert.chain().len(),
        root_fingerprint_sha256: cert.root_fingerprint().unwrap_or_default(),
        chains_to_bundle: cert.chains_to(bundle, at).is_ok(),
        pods,
    }
}

pub fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub use weft_core::audit::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
