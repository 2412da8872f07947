//! What every proxy task of the agent shares: the registry, the node's identities and
//! trust, the HBONE connection pool, the external authorization clients, and the
//! connection log; and the admission of a connection into a pod.
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};
use weft_config::api::security::MtlsMode;
use weft_config::authz::Custom;
use weft_config::authz::Decision;
use weft_config::authz::l4::{self, L4Request, evaluate};
use weft_config::registry::{Registry, Snapshot};
use weft_core::audit::AuditRecord;
use weft_core::ext_authz::{PeerInfo, Verdict};
use weft_core::hbone::HbonePool;
use weft_core::identity::{IdentityManager, LiveTrust};

use crate::ext_authz::{CheckFrom, Providers};
use crate::proxy::OpenConnections;
use crate::proxy::error::Error;
use crate::proxy::records::ConnectionLog;

pub struct Mesh {
    pub registry: Registry,
    pub identities: IdentityManager,
    /// The trust bundle in force, kept current from `--trust-bundle`.
    pub trust: LiveTrust,
    pub pool: HbonePool,
    /// Clients of the CUSTOM policies' providers, per provider and pod.
    pub ext_authz: Providers,
    pub log: ConnectionLog,
    pub telemetry: crate::telemetry::Telemetry,
    pub open: OpenConnections,
    /// The resolvers the DNS proxy forwards to, and ServiceEntry hosts are looked up with.
    pub dns: Arc<crate::dns::upstream::Upstream>,
    /// Whether enrolled pods' DNS is captured unless they say otherwise.
    pub dns_capture: bool,
    /// Whether connections between two pods of this agent skip HBONE (`proxy::same_node`).
    pub same_node_fast_path: bool,
}

pub type SharedMesh = Arc<Mesh>;

impl Mesh {
    /// Whether a connection to pod `uid` may go in: a pod behind a waypoint takes only
    /// what its waypoint sends; for plaintext (no principal), PeerAuthentication STRICT
    /// refuses it; then AuthorizationPolicy decides in Istio's order: CUSTOM (the
    /// provider is asked from the pod, `from`), AUDIT (recorded), DENY, ALLOW.
    pub async fn admit(
        &self,
        snapshot: &Snapshot,
        uid: &str,
        request: &L4Request,
        from: &CheckFrom,
    ) -> Result<(), Error> {
        let workload = snapshot.workload_by_uid(uid).ok_or(Error::PodGone)?;
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
                return Err(Error::Denied(format!(
                    "traffic to this workload must come through waypoint {}",
                    names.join(" or ")
                )));
            }
        }
        if request.principal.is_none()
            && snapshot.mtls_mode(workload, request.destination_port) == MtlsMode::Strict
        {
            return Err(Error::Denied(
                "PeerAuthentication STRICT: plaintext refused".into(),
            ));
        }
        // A policy only a waypoint can apply, on a Service without one: fail closed.
        if let Some(reason) = snapshot.unenforceable_policy(workload) {
            warn!(pod = %workload.name, %reason, "AuthorizationPolicy cannot be honoured; connection refused");
            return Err(Error::Denied(reason));
        }
        let policies = snapshot.authorization_policies_for(workload);
        match l4::custom(&policies, request) {
            Custom::Skip => {}
            Custom::Deny(reason) => {
                warn!(pod = %workload.name, %reason, "CUSTOM AuthorizationPolicy cannot be honoured; connection refused");
                return Err(Error::Denied(reason));
            }
            Custom::Check { provider, policies } => {
                let client = self.ext_authz.client(
                    snapshot,
                    &provider,
                    uid,
                    &workload.identity,
                    from,
                )
                .map_err(|reason| {
                    let reason = format!("AuthorizationPolicy {}: {reason}", policies.join(", "));
                    warn!(pod = %workload.name, %reason, "CUSTOM AuthorizationPolicy cannot be honoured; connection refused");
                    Error::Denied(reason)
                })?;
                let source = PeerInfo {
                    address: request.source_ip.map(|ip| SocketAddr::new(ip, 0)),
                    principal: request.principal.as_ref().map(|p| format!("spiffe://{p}")),
                    labels: request
                        .source_ip
                        .and_then(|ip| snapshot.workload_by_ip(ip))
                        .filter(|w| {
                            request.principal.as_deref() == Some(principal(&w.identity).as_str())
                        })
                        .map(|w| w.labels.to_map())
                        .unwrap_or_default(),
                };
                let destination = PeerInfo {
                    address: Some(SocketAddr::new(
                        request.destination_ip,
                        request.destination_port,
                    )),
                    principal: Some(workload.identity.to_string()),
                    labels: workload.labels.to_map(),
                };
                match client.check_network(&source, &destination).await {
                    Verdict::Deny(denied) => {
                        info!(pod = %workload.name, provider = %provider, reason = %denied.reason, "connection denied by external authorization");
                        return Err(Error::Denied(denied.reason));
                    }
                    Verdict::Allow(allowed) => {
                        if let Some(reason) = allowed.failed_open {
                            warn!(pod = %workload.name, provider = %provider, %reason, "external authorization failed; allowed (failOpen)");
                        }
                    }
                }
            }
        }
        let audited = l4::audited(&policies, request);
        let decision = evaluate(&policies, request);
        if !audited.is_empty() {
            let mut record = AuditRecord::now("agent", "tcp", audited);
            record.source_principal = request.principal.as_ref().map(|p| format!("spiffe://{p}"));
            record.source_ip = request.source_ip;
            record.destination = Some(SocketAddr::new(
                request.destination_ip,
                request.destination_port,
            ));
            record.destination_name = Some(format!("{}/{}", workload.namespace, workload.name));
            let denied = match &decision {
                Decision::Deny(reason) => Some(reason.as_str()),
                Decision::Allow => None,
            };
            record.decided(denied).log();
        }
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(Error::Denied(reason)),
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
