//! Finding a pod's network namespace and cgroup from its UID, behind one interface: in a
//! cluster from the kubelet's layout, in the lab from the records the lab writes. A pod's
//! sandbox announced by weft-cni brings its namespace along (`PodPlace::from_descriptor`).
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use weft_host::pod_locations::PodLocations;

/// Where a pod lives on this machine.
///
/// Two places are the same when their cgroups are and their paths lead to the same network
/// namespace (`/proc/<pid>/ns/net`, `/run/netns/<name>` and a descriptor weft-cni passed may
/// all name one): enrollment compares places, and must not take a pod out of capture and
/// back in because its namespace was found by another path.
#[derive(Clone, Debug)]
pub struct PodPlace {
    /// A file that `setns(CLONE_NEWNET)` accepts.
    pub netns: PathBuf,
    /// The pod-level cgroup v2 directory (its containers' cgroups are below it).
    pub cgroup: PathBuf,
    /// The namespace's inode number (nsfs) when it could be read: unique among live
    /// namespaces.
    netns_inode: Option<u64>,
    /// Keeps `netns` valid when it names a descriptor of this process.
    held: Option<Arc<OwnedFd>>,
}

impl PodPlace {
    pub fn new(netns: PathBuf, cgroup: PathBuf) -> Self {
        let netns_inode = std::fs::metadata(&netns).ok().map(|m| m.ino());
        Self {
            netns,
            cgroup,
            netns_inode,
            held: None,
        }
    }

    /// A namespace this process holds open (passed by weft-cni), named by
    /// `/proc/self/fd/<fd>` for as long as a clone of this place exists.
    pub fn from_descriptor(netns: OwnedFd, cgroup: PathBuf) -> Self {
        let path = PathBuf::from(format!("/proc/self/fd/{}", netns.as_raw_fd()));
        let mut place = Self::new(path, cgroup);
        place.held = Some(Arc::new(netns));
        place
    }
}

impl PartialEq for PodPlace {
    fn eq(&self, other: &Self) -> bool {
        let same_netns = match (self.netns_inode, other.netns_inode) {
            (Some(a), Some(b)) => a == b,
            _ => self.netns == other.netns,
        };
        same_netns && self.cgroup == other.cgroup
    }
}

pub trait PodLocator: Send + Sync {
    fn locate(&self, uid: &str) -> Option<PodPlace>;

    /// The pod's cgroup alone: it exists before the pod's sandbox has a process (the
    /// kubelet makes it first), when weft-cni announces the sandbox.
    fn cgroup(&self, uid: &str) -> Option<PathBuf>;
}

/// Where pods are found: the lab's records (`--pod-locations`, read again at every use, as
/// the lab rewrites them) or the kubelet's layout.
pub enum Locators {
    File(PathBuf),
    Kubelet(KubeletLocator),
}

impl Locators {
    /// Runs `use_it` with the locator, reading the lab's records first.
    pub fn with<R>(&self, use_it: impl FnOnce(&dyn PodLocator) -> R) -> anyhow::Result<R> {
        match self {
            Locators::File(path) => Ok(use_it(&FileLocator::load(path)?)),
            Locators::Kubelet(kubelet) => Ok(use_it(kubelet)),
        }
    }
}

/// Reads the lab's `pod-locations.json`.
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
                .map(|p| (p.uid, PodPlace::new(p.netns, p.cgroup)))
                .collect(),
        })
    }
}

impl PodLocator for FileLocator {
    /// The recorded place once the pod's cgroup exists (the lab makes it when it starts the
    /// pod, as the kubelet does).
    fn locate(&self, uid: &str) -> Option<PodPlace> {
        self.by_uid
            .get(uid)
            .filter(|place| place.cgroup.is_dir())
            .cloned()
    }

    fn cgroup(&self, uid: &str) -> Option<PathBuf> {
        self.by_uid.get(uid).map(|place| place.cgroup.clone())
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
        let cgroup = self.cgroup(uid)?;
        let pid = Self::first_process(&cgroup)?;
        Some(PodPlace::new(
            self.proc_root.join(pid.to_string()).join("ns/net"),
            cgroup,
        ))
    }

    fn cgroup(&self, uid: &str) -> Option<PathBuf> {
        Self::candidate_cgroups(uid)
            .into_iter()
            .map(|relative| self.cgroup_root.join(relative))
            .find(|path| path.is_dir())
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
            Some(PodPlace::new(PathBuf::from("/proc/4242/ns/net"), pod))
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
        let cgroup = locator.cgroup(UID);
        let other = locator.locate("00000000-0000-0000-0000-000000000000");
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(found, None, "no process: the pod's sandbox is not running");
        assert_eq!(
            cgroup,
            Some(pod),
            "the cgroup is there before the sandbox's process (what weft-cni's ADD needs)"
        );
        assert_eq!(other, None);
    }

    #[test]
    fn two_paths_to_one_namespace_are_one_place() {
        let cgroup = PathBuf::from("/sys/fs/cgroup/kubepods/podx");
        let by_pid = PodPlace::new(PathBuf::from("/proc/self/ns/net"), cgroup.clone());
        let netns = std::fs::File::open("/proc/self/ns/net").expect("our own namespace");
        let by_descriptor = PodPlace::from_descriptor(netns.into(), cgroup.clone());
        assert_ne!(by_pid.netns, by_descriptor.netns);
        assert_eq!(by_pid, by_descriptor);
        assert!(by_descriptor.netns.exists(), "the descriptor is held");
        let elsewhere = PodPlace::new(
            PathBuf::from("/proc/self/ns/net"),
            PathBuf::from("/sys/fs/cgroup/kubepods/pody"),
        );
        assert_ne!(by_pid, elsewhere);
        // Unreadable paths are compared as paths.
        let missing = PodPlace::new(PathBuf::from("/nonexistent/a"), cgroup.clone());
        assert_eq!(
            missing,
            PodPlace::new(PathBuf::from("/nonexistent/a"), cgroup.clone())
        );
        assert_ne!(
            missing,
            PodPlace::new(PathBuf::from("/nonexistent/b"), cgroup)
        );
    }
}
