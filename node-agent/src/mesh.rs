//! What every proxy task of the agent shares: the registry, the node's identities and
//! trust, the HBONE connection pool, and the connection log.
use std::sync::Arc;

use weft_config::authz::l4::{Decision, L4Request, evaluate};
use weft_config::registry::Registry;
use weft_config::registry::model::Workload;
use weft_core::hbone::HbonePool;
use weft_core::identity::{IdentityManager, TrustBundle};

use crate::proxy::records::ConnectionLog;

pub struct Mesh {
    pub registry: Registry,
    pub identities: IdentityManager,
    pub trust: TrustBundle,
    pub pool: HbonePool,
    pub log: ConnectionLog,
}

pub type SharedMesh = Arc<Mesh>;

impl Mesh {
    /// The L4 AuthorizationPolicy decision for a connection to `workload`.
    pub fn authorize(&self, workload: &Workload, request: &L4Request) -> Decision {
        let snapshot = self.registry.load();
        let policies = snapshot.authorization_policies_for(workload);
        evaluate(&policies, request)
    }
}

/// Istio's principal form of a SPIFFE id: without the `spiffe://` scheme.
pub fn principal(spiffe_id: &str) -> String {
    spiffe_id
        .strip_prefix("spiffe://")
        .unwrap_or(spiffe_id)
        .to_string()
}
