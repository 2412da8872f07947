//! Finding a pod's network namespace and cgroup from its UID, behind one interface: in a
//! cluster from the kubelet's layout, in the lab from the records the lab writes.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weft_host::pod_locations::PodLocations;

/// Where a pod lives on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlace {
    /// A file that `setns(CLONE_NEWNET)` accepts.
    pub netns: PathBuf,
    /// The pod-level cgroup v2 directory (its containers' cgroups are below it).
    pub cgroup: PathBuf,
}

pub trait PodLocator: Send + Sync {
    fn locate(&self, uid: &str) -> Option<PodPlace>;
}

/// Reads the lab's `pod-locations.json` (re-read on every resync by the caller).
pub struct FileLocator {
    by_uid: HashMap<String, PodPlace>,
}

impl FileLocator {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pod locations from {}", path.display()))?;
        let file: PodLocations = serde_json::from_str(&text)
            .with_context(|| format!("parsing pod locations in {}", path.display()))?;
        Ok(Self {
            by_uid: file
                .pods
                .into_iter()
                .map(|p| {
                    let place = PodPlace {
                        netns: p.netns,
                        cgroup: p.cgroup,
                    };
                    (p.uid, place)
                })
                .collect(),
        })
    }
}

impl PodLocator for FileLocator {
    fn locate(&self, uid: &str) -> Option<PodPlace> {
        self.by_uid.get(uid).cloned()
    }
}

/// Finds pods as the kubelet lays them out on cgroup v2, with either cgroup driver and any
/// QoS class, and their network namespace through a process of theirs (every pod has one:
/// the sandbox's pause process).
pub struct KubeletLocator {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

const QOS_CLASSES: [&str; 2] = ["burstable", "besteffort"];

impl KubeletLocator {
    pub fn new(cgroup_root: PathBuf, proc_root: PathBuf) -> Self {
        Self {
            cgroup_root,
            proc_root,
        }
    }

    /// Every place the kubelet may have put the cgroup of pod `uid`, relative to the cgroup2
    /// root: Guaranteed pods sit directly under `kubepods`, the others under their QoS class.
    pub fn candidate_cgroups(uid: &str) -> Vec<PathBuf> {
        // The systemd driver escapes '-' in unit names as '_'.
        let systemd_uid = uid.replace('-', "_");
        let mut candidates = vec![
            PathBuf::from(format!("kubepods.slice/kubepods-pod{systemd_uid}.slice")),
            PathBuf::from(format!("kubepods/pod{uid}")),
        ];
        for qos in QOS_CLASSES {
            candidates.push(PathBuf::from(format!(
                "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{systemd_uid}.slice"
            )));
            candidates.push(PathBuf::from(format!("kubepods/{qos}/pod{uid}")));
        }
        candidates
    }

    fn first_process(cgroup: &Path) -> Option<u32> {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
        if let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok()) {
            return Some(pid);
        }
        std::fs::read_dir(cgroup)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| Self::first_process(&e.path()))
    }
}

impl PodLocator for KubeletLocator {
    fn locate(&self, uid: &str) -> Option<PodPlace> {
        let cgroup = Self::candidate_cgroups(uid)
            .into_iter()
            .map(|relative| self.cgroup_root.join(relative))
            .find(|path| path.is_dir())?;
        let pid = Self::first_process(&cgroup)?;
        Some(PodPlace {
            netns: self.proc_root.join(pid.to_string()).join("ns/net"),
            cgroup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f9b1c2e-7a44-4d1e-9c55-0b8e2f6a1d00";

    fn tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("weft-locator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn finds_a_burstable_pod_under_the_systemd_driver() {
        let root = tree("systemd");
        let pod = root.join(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f9b1c2e_7a44_4d1e_9c55_0b8e2f6a1d00.slice",
        );
        let container = pod.join("cri-containerd-abc.scope");
        std::fs::create_dir_all(&container).expect("tree");
        std::fs::write(pod.join("cgroup.procs"), "").expect("procs");
        std::fs::write(container.join("cgroup.procs"), "4242\n").expect("procs");
        let place = KubeletLocator::new(root.clone(), PathBuf::from("/proc")).locate(UID);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            place,
            Some(PodPlace {
                netns: PathBuf::from("/proc/4242/ns/net"),
                cgroup: pod,
            })
        );
    }

    #[test]
    fn finds_a_guaranteed_pod_under_the_cgroupfs_driver() {
        let root = tree("cgroupfs");
        let pod = root.join(format!("kubepods/pod{UID}"));
        std::fs::create_dir_all(&pod).expect("tree");
        std::fs::write(pod.join("cgroup.procs"), "77\n78\n").expect("procs");
        let place = KubeletLocator::new(root.clone(), PathBuf::from("/host/proc")).locate(UID);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            place.map(|p| p.netns),
            Some(PathBuf::from("/host/proc/77/ns/net"))
        );
    }

    #[test]
    fn a_pod_without_a_cgroup_or_a_process_is_not_found() {
        let root = tree("empty");
        let pod = root.join(format!("kubepods/besteffort/pod{UID}"));
        std::fs::create_dir_all(&pod).expect("tree");
        let locator = KubeletLocator::new(root.clone(), PathBuf::from("/proc"));
        let found = locator.locate(UID);
        let other = locator.locate("00000000-0000-0000-0000-000000000000");
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(found, None, "no process: the pod's sandbox is not running");
        assert_eq!(other, None);
    }
}
