//! `GET /certs`: the workload certificates the agent holds, never their keys.
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use weft_config::registry::Snapshot;
use weft_core::identity::WorkloadCertificate;

use crate::mesh::SharedMesh;

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
    /// The mesh pods of this node running as this identity.
    pub pods: Vec<String>,
}

pub fn certificates(mesh: &SharedMesh, snapshot: &Snapshot, node: &str) -> Vec<CertificateView> {
    let mut pods_by_identity: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for workload in snapshot.workloads_on_node(node).filter(|w| w.in_mesh) {
        pods_by_identity
            .entry(workload.identity.as_str())
            .or_default()
            .push(format!("{}/{}", workload.namespace, workload.name));
    }
    let now = unix(SystemTime::now());
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
            view(c, now, pods)
        })
        .collect()
}

fn view(cert: &WorkloadCertificate, now: i64, pods: Vec<String>) -> CertificateView {
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
        root_fingerprint_sha256: cert
            .chain()
            .last()
            .map(|root| fingerprint(root.as_ref()))
            .unwrap_or_default(),
        pods,
    }
}

pub fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
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

    #[test]
    fn fingerprint_is_colon_separated_upper_hex_sha256() {
        // SHA-256("abc")
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
