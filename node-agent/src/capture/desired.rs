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
        // A finished pod's address may already be another pod's: never kept.
        let finished = matches!(workload.phase.as_deref(), Some("Succeeded" | "Failed"));
        if !workload.in_mesh || finished {
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
        probe_ports: workload.probe_ports.to_vec(),
        dns_capture: crate::dns::capture_override(&workload.annotations),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weft_config::testing::snapshot_of;

    use super::*;
    use crate::pods::sandboxes::Sandbox;

    const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: running, namespace: shop, uid: u-running}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: starting, namespace: shop, uid: u-starting}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop, uid: u-done}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
status: {phase: Succeeded, podIP: 10.244.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: out, namespace: shop, uid: u-out, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 10.244.1.13}
";

    /// Finds every pod at a path of its own, as the lab's records would.
    struct Everywhere;

    impl PodLocator for Everywhere {
        fn locate(&self, uid: &str) -> Option<PodPlace> {
            Some(PodPlace::new(
                PathBuf::from(format!("/nonexistent/netns/{uid}")),
                PathBuf::from(format!("/nonexistent/cgroup/{uid}")),
            ))
        }

        fn cgroup(&self, uid: &str) -> Option<PathBuf> {
            Some(PathBuf::from(format!("/nonexistent/cgroup/{uid}")))
        }
    }

    fn sandbox(uid: &str, ip: &str) -> Sandbox {
        Sandbox {
            container_id: format!("sandbox-{uid}"),
            place: PodPlace::new(
                PathBuf::from(format!("/nonexistent/sandbox/{uid}")),
                PathBuf::from(format!("/nonexistent/cgroup/{uid}")),
            ),
            ips: PodIps::from_ips(&[ip.parse().expect("ip")]).expect("ips"),
        }
    }

    #[test]
    fn sandboxes_place_starting_pods_and_unplaceable_ones_keep_their_capture() {
        let snapshot = snapshot_of(CLUSTER);
        let sandboxes = Sandboxes::default();
        let wanted = desired(&snapshot, "node-1", &Everywhere, &sandboxes);
        let uids: Vec<&str> = wanted.pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(
            uids,
            ["u-running"],
            "finished and opted-out pods are not wanted"
        );
        assert_eq!(
            wanted
                .undescribed
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["u-starting"],
            "a pod without an address yet is left as it is"
        );

        // weft-cni announced the starting pod's sandbox, with its address.
        sandboxes.record("u-starting", sandbox("u-starting", "10.244.1.11"));
        // A sandbox of a pod that has left the node is forgotten.
        sandboxes.record("u-gone", sandbox("u-gone", "10.244.1.99"));
        let wanted = desired(&snapshot, "node-1", &Everywhere, &sandboxes);
        let starting = wanted
            .pods
            .iter()
            .find(|p| p.uid == "u-starting")
            .expect("placed by its sandbox");
        assert_eq!(
            starting.location.netns,
            PathBuf::from("/nonexistent/sandbox/u-starting")
        );
        assert_eq!(starting.ips.all()[0].to_string(), "10.244.1.11");
        assert_eq!(
            starting.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/default"
        );
        assert!(wanted.undescribed.is_empty());
        assert!(sandboxes.get("u-gone").is_none());
    }
}
