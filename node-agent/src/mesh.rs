//! What every proxy task of the agent shares: the registry, the node's identities and
//! trust, the HBONE connection pool, and the connection log.
use std::sync::Arc;

use weft_config::api::security::MtlsMode;
use weft_config::authz::l4::{Decision, L4Request, evaluate};
use weft_config::registry::Registry;
use weft_core::hbone::HbonePool;
use weft_core::identity::{IdentityManager, LiveTrust};

use crate::proxy::OpenConnections;
use crate::proxy::records::ConnectionLog;

pub struct Mesh {
    pub registry: Registry,
    pub identities: IdentityManager,
    /// The trust bundle in force, kept current from `--trust-bundle`.
    pub trust: LiveTrust,
    pub pool: HbonePool,
    pub log: ConnectionLog,
    pub telemetry: crate::telemetry::Telemetry,
    pub open: OpenConnections,
}

pub type SharedMesh = Arc<Mesh>;

/// Why a connection to a pod is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The pod left the registry (it is being unenrolled).
    Gone,
    /// PeerAuthentication or AuthorizationPolicy says no, with the reason.
    Refused(String),
}

impl Mesh {
    /// Whether a connection to pod `uid` may go in: a pod behind a waypoint takes only
    /// what its waypoint sends; for plaintext (no principal), PeerAuthentication STRICT
    /// refuses it; then AuthorizationPolicy decides.
    pub fn admit(&self, uid: &str, request: &L4Request) -> Result<(), Denied> {
        let snapshot = self.registry.load();
        let workload = snapshot.workload_by_uid(uid).ok_or(Denied::Gone)?;
        // A pod backing Services bound to different waypoints receives each Service's
        // traffic from that Service's waypoint, so any of them may deliver.
        let waypoints = snapshot.required_waypoints(workload);
        if !waypoints.is_empty() {
            let through_waypoint = request.principal.as_deref().is_some_and(|p| {
                waypoints
                    .iter()
                    .flat_map(|w| snapshot.waypoint_identities(w))
                    .any(|identity| principal(identity) == p)
            });
            if !through_waypoint {
                let names: Vec<String> = waypoints
                    .iter()
                    .map(|w| format!("{}/{}", w.namespace, w.name))
                    .collect();
                return Err(Denied::Refused(format!(
                    "traffic to this workload must come through waypoint {}",
                    names.join(" or ")
                )));
            }
        }
        if request.principal.is_none()
            && snapshot.mtls_mode(workload, request.destination_port) == MtlsMode::Strict
        {
            return Err(Denied::Refused(
                "PeerAuthentication STRICT: plaintext refused".into(),
            ));
        }
        match evaluate(&snapshot.authorization_policies_for(workload), request) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(Denied::Refused(reason)),
        }
    }
}

/// Istio's principal form of a SPIFFE id: without the `spiffe://` scheme.
pub fn principal(spiffe_id: &str) -> String {
    spiffe_id
        .strip_prefix("spiffe://")
        .unwrap_or(spiffe_id)
        .to_string()
}
