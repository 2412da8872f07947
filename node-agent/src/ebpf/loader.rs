//! Loads weft's kernel programs (built from `ebpf/programs` and embedded at build time) and
//! attaches them to enrolled pods' cgroups.
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use weft_ebpf_common::{PodStats, map_names};

/// The object file produced by node-agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-ebpf"));

/// Programs attached to every enrolled pod's cgroup.
const POD_CGROUP_PROGRAMS: &[&str] = &["weft_count_connect4", "weft_count_connect6"];

pub struct Datapath {
    ebpf: Ebpf,
    pod_stats: BpfHashMap<MapData, u64, PodStats>,
    pin_root: PathBuf,
    enrolled: HashMap<String, EnrolledPod>,
}

struct EnrolledPod {
    cgroup_id: u64,
}

/// A cgroup's id as `bpf_get_current_cgroup_id()` reports it: its cgroup2 inode number.
pub fn cgroup_id(cgroup: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(cgroup)
        .with_context(|| format!("reading cgroup {}", cgroup.display()))?
        .ino())
}

impl Datapath {
    /// Loads the programs into the kernel and pins the shared maps under `pin_root`.
    pub fn load(pin_root: &Path) -> anyhow::Result<Self> {
        let mut ebpf = Ebpf::load(OBJECT).context(
            "loading weft's eBPF object into the kernel (needs CAP_BPF and CAP_NET_ADMIN, or root)",
        )?;
        for name in POD_CGROUP_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
                .try_into()
                .with_context(|| format!("{name} is not a cgroup sock_addr program"))?;
            program
                .load()
                .with_context(|| format!("verifying and loading {name}"))?;
        }
        let maps_dir = pin_root.join("maps");
        std::fs::create_dir_all(&maps_dir)
            .with_context(|| format!("creating {} (is bpffs mounted?)", maps_dir.display()))?;
        let map = ebpf
            .take_map(map_names::POD_STATS)
            .ok_or_else(|| anyhow!("the eBPF object has no map {}", map_names::POD_STATS))?;
        let pin = maps_dir.join(map_names::POD_STATS);
        // A pin left by an earlier run of this agent is replaced; re-adopting it across
        // restarts comes with pinned links.
        if pin.exists() {
            std::fs::remove_file(&pin)
                .with_context(|| format!("removing stale pin {}", pin.display()))?;
        }
        map.pin(&pin)
            .with_context(|| format!("pinning {} at {}", map_names::POD_STATS, pin.display()))?;
        let pod_stats = BpfHashMap::try_from(map).context("opening the POD_STATS map")?;
        Ok(Self {
            ebpf,
            pod_stats,
            pin_root: pin_root.to_path_buf(),
            enrolled: HashMap::new(),
        })
    }

    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Attaches the per-pod programs to the pod's cgroup and starts its counters.
    pub fn enroll(&mut self, uid: &str, cgroup: &Path) -> anyhow::Result<u64> {
        if let Some(pod) = self.enrolled.get(uid) {
            return Ok(pod.cgroup_id);
        }
        let cgroup_id = cgroup_id(cgroup)?;
        self.pod_stats
            .insert(cgroup_id, PodStats::default(), 0)
            .context("adding the pod to POD_STATS")?;
        let dir =
            File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        for name in POD_CGROUP_PROGRAMS {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
                .try_into()?;
            // A bpf_link (kernel >= 5.7) always coexists with other programs on the cgroup
            // (a CNI's, say); the kernel refuses attach flags on links, hence `Single`.
            // The link lives as long as this process; pinned links arrive with capture.
            program
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
        }
        self.enrolled
            .insert(uid.to_string(), EnrolledPod { cgroup_id });
        Ok(cgroup_id)
    }

    /// Counters of every enrolled pod, by pod UID.
    pub fn stats(&self) -> Vec<(String, PodStats)> {
        self.enrolled
            .iter()
            .filter_map(|(uid, pod)| {
                Some((uid.clone(), self.pod_stats.get(&pod.cgroup_id, 0).ok()?))
            })
            .collect()
    }
}
