//! `GET /ebpf`: what the agent put in the kernel, read back from the kernel rather than from
//! the agent's memory: each enrolled pod's links (through their pins), and the pinned maps
//! with their sizes.
//!
//! Map entries are counted by walking the keys of a separate handle opened from the pin,
//! so neither the enrollment lock nor the proxy's map lock is held meanwhile. A walk costs
//! one system call per entry (bounded by `max_entries`: about 65 k for the connection maps,
//! tens of milliseconds at worst), which is why it runs on a blocking thread. Under churn the
//! kernel may restart a walk whose current key was deleted, so counts are approximate and
//! capped at `max_entries`.
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, MapType, SockHash};
use aya::programs::links::{FdLink, PinnedLink};
use serde::Serialize;
use weft_ebpf_common::{
    ClientKey, OrigDst, PodCapture, PodStats, ProbeNode, ProbeTarget, TransparentConnect,
    TransparentConnect6, map_names, program_names,
};

use crate::capture::enrollment::PodAttachment;
use crate::ebpf::attach::{Attachment, POD_PROGRAMS};
use crate::ebpf::loader::maps_dir;

#[derive(Debug, Serialize)]
pub struct EbpfView {
    pub pin_root: String,
    pub pods: Vec<PodView>,
    pub maps: Vec<MapView>,
}

#[derive(Debug, Serialize)]
pub struct PodView {
    pub pod: String,
    pub uid: String,
    /// The pod's id in the maps: the cgroup id of its pod-level cgroup.
    pub pod_id: u64,
    pub cgroup: String,
    pub netns: String,
    /// Cgroups with a POD_CAPTURE entry (the pod's and its containers').
    pub cgroups: usize,
    /// `fresh`: attached by this run; `adopted`: pinned by an earlier run and kept.
    pub attachment: Attachment,
    pub programs: Vec<ProgramView>,
}

#[derive(Debug, Serialize)]
pub struct ProgramView {
    pub name: &'static str,
    /// The kernel's program type (`bpftool prog` names it so).
    pub program_type: &'static str,
    /// The attach type (`bpftool cgroup tree` and `bpftool net` name it so).
    pub attach_type: &'static str,
    /// `cgroup` or `netns`: what `target` is.
    pub attached_to: &'static str,
    pub target: String,
    /// Read from the pinned link; absent when the pin is gone (the pod is being detached).
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    pub pin: String,
}

#[derive(Debug, Serialize)]
pub struct MapView {
    pub name: &'static str,
    /// The kernel's map type.
    pub map_type: String,
    pub max_entries: Option<u32>,
    /// Approximate (see the module's notes); absent when the map could not be opened.
    pub entries: Option<u32>,
    pub pin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn attach_type(program: &str) -> &'static str {
    match program {
        program_names::CONNECT4 => "cgroup_inet4_connect",
        program_names::CONNECT6 => "cgroup_inet6_connect",
        program_names::GETPEERNAME4 => "cgroup_inet4_getpeername",
        program_names::GETPEERNAME6 => "cgroup_inet6_getpeername",
        program_names::SOCK_OPS => "cgroup_sock_ops",
        program_names::INBOUND_LOOKUP => "sk_lookup",
        _ => "unknown",
    }
}

/// The kernel's ids of a pinned link and of its program.
fn link_ids(pin: &Path) -> Option<(u32, u32)> {
    // aya panics on a path holding a NUL byte; a pod uid is data from the cluster.
    if pin.as_os_str().as_encoded_bytes().contains(&0) {
        return None;
    }
    let link = FdLink::from(PinnedLink::from_pin(pin).ok()?);
    let info = link.info().ok()?;
    Some((info.id(), info.program_id()))
}

fn pod_view(pod: PodAttachment) -> PodView {
    let programs = POD_PROGRAMS
        .iter()
        .map(|(name, hook)| {
            let pin = pod.pin_dir.join(name);
            let ids = link_ids(&pin);
            let (attached_to, target) = if hook.attaches_to_netns() {
                ("netns", &pod.netns)
            } else {
                ("cgroup", &pod.cgroup)
            };
            ProgramView {
                name,
                program_type: hook.program_type(),
                attach_type: attach_type(name),
                attached_to,
                target: target.display().to_string(),
                link_id: ids.map(|(link, _)| link),
                program_id: ids.map(|(_, program)| program),
                pin: pin.display().to_string(),
            }
        })
        .collect();
    PodView {
        pod: pod.pod,
        uid: pod.uid,
        pod_id: pod.pod_id,
        cgroup: pod.cgroup.display().to_string(),
        netns: pod.netns.display().to_string(),
        cgroups: pod.cgroups,
        attachment: pod.attachment,
        programs,
    }
}

/// Counts the keys of a map, stopping at `limit` (a walk restarted by deletions could
/// otherwise go on).
fn count_keys<K: aya::Pod>(
    keys: impl Iterator<Item = Result<K, MapError>>,
    limit: u32,
) -> Result<u32, MapError> {
    let mut count = 0;
    for key in keys {
        key?;
        count += 1;
        if count >= limit {
            break;
        }
    }
    Ok(count)
}

fn count_entries(name: &str, data: MapData, limit: u32) -> Result<u32, MapError> {
    match name {
        map_names::POD_CAPTURE => {
            let map: BpfHashMap<_, u64, PodCapture> = BpfHashMap::try_from(Map::HashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::POD_STATS => {
            let map: BpfHashMap<_, u64, PodStats> = BpfHashMap::try_from(Map::HashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::ORIG_DST_BY_COOKIE => {
            let map: BpfHashMap<_, u64, OrigDst> = BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::ORIG_DST_BY_CLIENT => {
            let map: BpfHashMap<_, ClientKey, OrigDst> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::TRANSPARENT_CONNECTS => {
            let map: BpfHashMap<_, TransparentConnect, u8> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::TRANSPARENT_CONNECTS6 => {
            let map: BpfHashMap<_, TransparentConnect6, u8> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::PROBE_TARGETS => {
            let map: BpfHashMap<_, ProbeTarget, ProbeNode> =
                BpfHashMap::try_from(Map::HashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::NODE_CONNECTS => {
            let map: BpfHashMap<_, TransparentConnect, u64> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::NODE_CONNECTS6 => {
            let map: BpfHashMap<_, TransparentConnect6, u64> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            count_keys(map.keys(), limit)
        }
        map_names::INBOUND_LISTENERS6 | map_names::OUTBOUND_LISTENERS6 => {
            let map: SockHash<_, [u32; 4]> = SockHash::try_from(Map::SockHash(data))?;
            count_keys(map.keys(), limit)
        }
        _ => {
            let map: SockHash<_, u32> = SockHash::try_from(Map::SockHash(data))?;
            count_keys(map.keys(), limit)
        }
    }
}

const MAPS: [&str; 13] = [
    map_names::POD_CAPTURE,
    map_names::POD_STATS,
    map_names::ORIG_DST_BY_COOKIE,
    map_names::ORIG_DST_BY_CLIENT,
    map_names::INBOUND_LISTENERS,
    map_names::OUTBOUND_LISTENERS,
    map_names::TRANSPARENT_CONNECTS,
    map_names::INBOUND_LISTENERS6,
    map_names::OUTBOUND_LISTENERS6,
    map_names::TRANSPARENT_CONNECTS6,
    map_names::PROBE_TARGETS,
    map_names::NODE_CONNECTS,
    map_names::NODE_CONNECTS6,
];

fn map_view(dir: &Path, name: &'static str) -> MapView {
    let pin = dir.join(name);
    let mut view = MapView {
        name,
        map_type: String::new(),
        max_entries: None,
        entries: None,
        pin: pin.display().to_string(),
        error: None,
    };
    let opened = MapData::from_pin(&pin).and_then(|data| {
        let info = data.info()?;
        Ok((data, info))
    });
    let (data, info) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            view.error = Some(format!("opening the pinned map: {e}"));
            return view;
        }
    };
    // `bpftool map` names.
    view.map_type = match info.map_type() {
        Ok(MapType::Hash) => "hash".into(),
        Ok(MapType::LruHash) => "lru_hash".into(),
        Ok(MapType::SockHash) => "sockhash".into(),
        Ok(other) => format!("{other:?}"),
        Err(_) => "unknown".into(),
    };
    let max = info.max_entries();
    view.max_entries = Some(max);
    match count_entries(name, data, max) {
        Ok(count) => view.entries = Some(count),
        Err(e) => view.error = Some(format!("counting entries: {e}")),
    }
    view
}

/// Blocking: system calls per program and per map entry.
pub fn ebpf(pin_root: &Path, pods: Vec<PodAttachment>) -> EbpfView {
    let dir = maps_dir(pin_root);
    EbpfView {
        pin_root: pin_root.display().to_string(),
        pods: pods.into_iter().map(pod_view).collect(),
        maps: MAPS.into_iter().map(|name| map_view(&dir, name)).collect(),
    }
}
