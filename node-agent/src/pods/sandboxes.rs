//! The pod sandboxes weft-cni announced (ADD) and that are still up: each pod's network
//! namespace, held open since the plugin passed it, and the addresses the network plugin
//! gave it. A new pod's namespace has no process to be found by yet, and its addresses
//! reach the API server only after the sandbox is up; until then this is where they are.
use std::collections::HashMap;
use std::sync::Mutex;

use crate::capture::addresses::PodIps;
use crate::pods::locator::PodPlace;

#[derive(Clone, Debug)]
pub struct Sandbox {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    pub place: PodPlace,
    pub ips: PodIps,
}

/// By pod uid: a pod has one sandbox at a time.
#[derive(Debug, Default)]
pub struct Sandboxes {
    by_uid: Mutex<HashMap<String, Sandbox>>,
}

impl Sandboxes {
    /// Records the sandbox of pod `uid`, replacing an earlier one of the same pod.
    pub fn record(&self, uid: &str, sandbox: Sandbox) {
        weft_core::sync::lock(&self.by_uid).insert(uid.to_string(), sandbox);
    }

    pub fn get(&self, uid: &str) -> Option<Sandbox> {
        weft_core::sync::lock(&self.by_uid).get(uid).cloned()
    }

    /// Forgets the sandbox `container_id` (DEL); returns its pod's uid and the sandbox.
    pub fn forget_container(&self, container_id: &str) -> Option<(String, Sandbox)> {
        let mut by_uid = weft_core::sync::lock(&self.by_uid);
        let uid = by_uid
            .iter()
            .find(|(_, s)| s.container_id == container_id)
            .map(|(uid, _)| uid.clone())?;
        by_uid.remove(&uid).map(|sandbox| (uid, sandbox))
    }

    /// Forgets the sandbox of pod `uid` if it is `container_id`'s.
    pub fn forget(&self, uid: &str, container_id: &str) {
        let mut by_uid = weft_core::sync::lock(&self.by_uid);
        if by_uid
            .get(uid)
            .is_some_and(|s| s.container_id == container_id)
        {
            by_uid.remove(uid);
        }
    }

    /// Keeps only the sandboxes of pods `keep` says are still here (the others' pods left
    /// the node); their namespaces are released.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        weft_core::sync::lock(&self.by_uid).retain(|uid, _| keep(uid));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        weft_core::sync::lock(&self.by_uid).len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn sandbox(container: &str) -> Sandbox {
        Sandbox {
            container_id: container.into(),
            place: PodPlace::new(PathBuf::from("/nonexistent"), PathBuf::from("/cg")),
            ips: PodIps::from_ips(&["10.244.1.7".parse().expect("ip")]).expect("ips"),
        }
    }

    #[test]
    fn a_pod_has_its_latest_sandbox_until_it_is_deleted() {
        let sandboxes = Sandboxes::default();
        sandboxes.record("u1", sandbox("a"));
        sandboxes.record("u1", sandbox("b"));
        sandboxes.record("u2", sandbox("c"));
        assert_eq!(sandboxes.len(), 2);
        // DEL of the replaced sandbox finds nothing; of the current one, the pod.
        assert!(sandboxes.forget_container("a").is_none());
        sandboxes.forget("u1", "a");
        assert_eq!(
            sandboxes.get("u1").map(|s| s.container_id),
            Some("b".into())
        );
        let (uid, gone) = sandboxes.forget_container("b").expect("u1's");
        assert_eq!((uid.as_str(), gone.container_id.as_str()), ("u1", "b"));
        sandboxes.retain(|uid| uid != "u2");
        assert_eq!(sandboxes.len(), 0);
    }
}
