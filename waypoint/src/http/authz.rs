//! Which AuthorizationPolicies the waypoint enforces: those attached to it or to the
//! service being called with `targetRefs`, as Istio ambient's waypoints do. Policies with
//! a `selector` are the destination agent's (L4).
use std::sync::Arc;

use weft_config::api::common::PolicyTargetReference;
use weft_config::api::security::AuthorizationPolicy;
use weft_config::registry::Snapshot;

use crate::context::WaypointContext;
use crate::inbound::Target;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

pub fn policies<'s>(
    snapshot: &'s Snapshot,
    ctx: &WaypointContext,
    target: &Target,
) -> Vec<&'s Arc<AuthorizationPolicy>> {
    let attached_to_me = |r: &PolicyTargetReference, policy_ns: &str| {
        r.group == GATEWAY_GROUP
            && r.kind == "Gateway"
            && r.name == ctx.name
            && r.namespace.as_deref().unwrap_or(policy_ns) == ctx.namespace
    };
    let attached_to_service = |r: &PolicyTargetReference, policy_ns: &str| match target {
        Target::Service { service, .. } => {
            r.group.is_empty()
                && r.kind == "Service"
                && r.name == service.name
                && r.namespace.as_deref().unwrap_or(policy_ns) == service.namespace
        }
        Target::Workload { .. } => false,
    };
    let mut namespaces = vec![ctx.namespace.as_str()];
    if let Target::Service { service, .. } = target
        && service.namespace != ctx.namespace
    {
        namespaces.push(service.namespace.as_str());
    }
    namespaces
        .into_iter()
        .flat_map(|ns| snapshot.authorization_policies(ns).iter())
        .filter(|policy| {
            let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            let refs = policy
                .spec
                .target_ref
                .iter()
                .chain(policy.spec.target_refs.iter());
            refs.into_iter()
                .any(|r| attached_to_me(r, policy_ns) || attached_to_service(r, policy_ns))
        })
        .collect()
}
