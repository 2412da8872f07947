//! Whether the pod of a sandbox weft-cni announced belongs to the mesh, from one registry
//! snapshot: the same rule enrollment follows (Istio's `istio.io/dataplane-mode`, the pod's
//! label before its namespace's), and "cannot tell yet" whenever the snapshot lacks what
//! the rule needs. The kubelet runs CNI as soon as it learns of the pod from the API
//! server, and this agent's view may trail the kubelet's by a moment: the caller waits for
//! a snapshot that can tell, and fails the ADD rather than let a pod of the mesh start
//! uncaptured.
use std::sync::Arc;

use weft_cni::protocol::PodSandbox;
use weft_config::registry::{Snapshot, Workload};
use weft_core::mesh::enrollment::DATAPLANE_MODE_LABEL;

#[derive(Debug)]
pub enum Verdict {
    /// In the mesh: capture it before it starts.
    Capture(Arc<Workload>),
    /// Not in the mesh (the reason, for the log).
    Pass(&'static str),
    /// The snapshot cannot tell yet.
    Undecided(String),
}

pub fn verdict(snapshot: &Snapshot, node: &str, sandbox: &PodSandbox) -> Verdict {
    let key = sandbox.key();
    let by_name = snapshot.workload(&sandbox.namespace, &sandbox.name);
    let workload = match &sandbox.uid {
        Some(uid) => match snapshot.workload_by_uid(uid) {
            Some(workload) => workload,
            None => {
                return Verdict::Undecided(match by_name {
                    // A pod of the same name that was deleted and created again (a
                    // StatefulSet's, say): the new one has not reached the registry.
                    Some(other) => format!(
                        "the registry has pod {key} with uid {}, not yet the one with uid {uid}",
                        other.uid
                    ),
                    None => format!("the registry has no pod {key} (uid {uid}) yet"),
                });
            }
        },
        None => match by_name {
            Some(workload) => workload,
            None => return Verdict::Undecided(format!("the registry has no pod {key} yet")),
        },
    };
    if *workload.namespace != *sandbox.namespace || *workload.name != *sandbox.name {
        return Verdict::Undecided(format!(
            "uid {} is pod {}/{} in the registry, not {key}",
            workload.uid, workload.namespace, workload.name
        ));
    }
    if workload.node.as_deref() != Some(node) {
        return Verdict::Undecided(format!(
            "the registry does not show pod {key} scheduled on {node} yet"
        ));
    }
    if workload.host_network {
        return Verdict::Pass("it uses the node's network");
    }
    if !workload.labels.contains_key(DATAPLANE_MODE_LABEL)
        && !snapshot.has_namespace(&workload.namespace)
    {
        return Verdict::Undecided(format!(
            "the registry has no namespace {} yet, whose labels decide",
            workload.namespace
        ));
    }
    if workload.in_mesh {
        Verdict::Capture(workload.clone())
    } else {
        Verdict::Pass("not in the mesh (istio.io/dataplane-mode)")
    }
}

#[cfg(test)]
mod tests {
    use weft_config::testing::snapshot_of;

    use super::*;

    const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u-web}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: shop, uid: u-out, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: plain, uid: u-tool}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: early, namespace: fresh, uid: u-early}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: labelled, namespace: fresh, uid: u-labelled, labels: {istio.io/dataplane-mode: ambient}}
spec: {nodeName: node-1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop, uid: u-pending}
spec: {containers: [{name: app, image: app}]}
";

    fn sandbox(namespace: &str, name: &str, uid: Option<&str>) -> PodSandbox {
        PodSandbox {
            container_id: "c".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.map(String::from),
            ips: Vec::new(),
            netns: None,
        }
    }

    fn decide(namespace: &str, name: &str, uid: Option<&str>) -> Verdict {
        verdict(
            &snapshot_of(CLUSTER),
            "node-1",
            &sandbox(namespace, name, uid),
        )
    }

    #[test]
    fn pods_of_the_mesh_are_captured_and_others_passed() {
        assert!(matches!(
            decide("shop", "web-0", Some("u-web")),
            Verdict::Capture(w) if &*w.uid == "u-web"
        ));
        // Without K8S_POD_UID, by name.
        assert!(matches!(decide("shop", "web-0", None), Verdict::Capture(_)));
        assert!(matches!(
            decide("shop", "opted-out", Some("u-out")),
            Verdict::Pass(_)
        ));
        assert!(matches!(
            decide("plain", "tool", Some("u-tool")),
            Verdict::Pass(_)
        ));
        // The pod's own label decides even before its namespace is known.
        assert!(matches!(
            decide("fresh", "labelled", Some("u-labelled")),
            Verdict::Capture(_)
        ));
    }

    #[test]
    fn what_the_registry_cannot_tell_yet_is_undecided() {
        let cases = [
            (decide("shop", "web-1", Some("u-new")), "no pod shop/web-1"),
            (
                decide("shop", "web-0", Some("u-recreated")),
                "not yet the one with uid u-recreated",
            ),
            (decide("shop", "web-1", None), "no pod shop/web-1"),
            (
                decide("fresh", "early", Some("u-early")),
                "no namespace fresh",
            ),
            (
                decide("shop", "pending", Some("u-pending")),
                "scheduled on node-1",
            ),
            (
                decide("shop", "other-name", Some("u-web")),
                "not shop/other-name",
            ),
        ];
        for (verdict, expected) in cases {
            match verdict {
                Verdict::Undecided(why) => assert!(why.contains(expected), "{why}"),
                other => panic!("expected undecided ({expected}), got {other:?}"),
            }
        }
    }
}
