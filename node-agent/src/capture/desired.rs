//! Which pods this node's agent should capture, and how: the registry's pods of the mesh
//! scheduled on the node, with their identity and exclusions, placed by the sandboxes
//! weft-cni announced or else by the pods' locator.
use std::collections::HashSet;

use tracing::{debug, error};
use weft_config::registry::{Snapshot, Workload};
use weft_core::identity::Identity;

use super::addresses::PodIps;
use super::enrollment::{Desired, PodToEnroll};
use super::exclusions;
use crate::pods::locator::{PodLocator, PodPlace};
use crate::pods::sandboxes::Sandboxes;

/// What to enroll now. Sandboxes of pods that left the node are forgotten on the way.
pub fn desired(
    snapshot: &Snapshot,
    node: &str,
    locator: &dyn PodLocator,
    sandboxes: &Sandboxes,
) -> Desired {
    let mut desired = Desired::default();
    let mut on_node = HashSet::new();
    for workload in snapshot.workloads_on_node(node) {
        on_node.insert(workload.uid.to_string());
        if !workload.in_mesh {
            continue;
        }
        let key = format!("{}/{}", workload.namespace, workload.name);
        // A sandbox announced by weft-cni is the truth about the pod's namespace and
        // addresses; without one, the registry's addresses and the locator.
        let sandbox = sandboxes.get(&workload.uid);
        let ips = sandbox
            .as_ref()
            .map(|s| s.ips)
            .or_else(|| PodIps::from_ips(&workload.ips));
        let place = match sandbox {
            Some(sandbox) => Some(sandbox.place),
            None => locator.locate(&workload.uid),
        };
        let (Some(ips), Some(place)) = (ips, place) else {
            // Not started yet (no sandbox, no address): normal for a moment.
            debug!(pod = %key, uid = %workload.uid, "mesh pod not located yet; not enrolled");
            desired.undescribed.insert(workload.uid.to_string());
            continue;
        };
        match pod_to_enroll(workload, ips, place) {
            Ok(pod) => desired.pods.push(pod),
            Err(reason) => error!(pod = %key, %reason, "not enrolled"),
        }
    }
    sandboxes.retain(|uid| on_node.contains(uid));
    desired
}

/// The enrollment of `workload` at `place` with addresses `ips`; refused when its identity
/// is not a SPIFFE id. Exclusion annotations that cannot be read are ignored with an error
/// in the log: capturing more than asked is the safe side, nothing bypasses policy.
pub fn pod_to_enroll(
    workload: &Workload,
    ips: PodIps,
    place: PodPlace,
) -> Result<PodToEnroll, String> {
    let key = format!("{}/{}", workload.namespace, workload.name);
    let identity: Identity = workload.identity.parse().map_err(|e| {
        format!(
            "the pod's identity {} is not a SPIFFE id: {e}",
            workload.identity
        )
    })?;
    let exclusions = exclusions::from_annotations(&workload.annotations).unwrap_or_else(|e| {
        error!(pod = %key, error = %e, "ignoring the pod's exclusions");
        exclusions::Exclusions::default()
    });
    Ok(PodToEnroll {
        uid: workload.uid.to_string(),
        key,
        ips,
        identity,
        location: place,
        exclusions,
    })
}
