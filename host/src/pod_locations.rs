//! Where a pod's network namespace and cgroup are, by pod UID.
//!
//! In a cluster the agent derives these from the kubelet's layout; the lab writes them to a
//! JSON file. This type is that file's format, shared by the lab (writer) and the agent.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLocation {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// A file that `setns(CLONE_NEWNET)` accepts (e.g. `/run/netns/NAME`).
    pub netns: PathBuf,
    /// The pod's cgroup v2 directory.
    pub cgroup: PathBuf,
}

/// The whole file: every pod of the cluster the writer knows of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLocations {
    pub pods: Vec<PodLocation>,
}
