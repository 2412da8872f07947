//! Finding a pod's network namespace and cgroup from its UID.
use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use weft_core::host::pod_locations::{PodLocation, PodLocations};

/// Where a pod lives on this machine. A cluster implementation follows the kubelet's
/// layout; the lab's reads the records the lab writes.
pub trait PodLocator: Send + Sync {
    fn locate(&self, uid: &str) -> Option<PodLocation>;
}

/// Reads the lab's `pod-locations.json`.
pub struct FileLocator {
    by_uid: HashMap<String, PodLocation>,
}

impl FileLocator {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pod locations from {}", path.display()))?;
        let file: PodLocations = serde_json::from_str(&text)
            .with_context(|| format!("parsing pod locations in {}", path.display()))?;
        Ok(Self {
            by_uid: file.pods.into_iter().map(|p| (p.uid.clone(), p)).collect(),
        })
    }
}

impl PodLocator for FileLocator {
    fn locate(&self, uid: &str) -> Option<PodLocation> {
        self.by_uid.get(uid).cloned()
    }
}
