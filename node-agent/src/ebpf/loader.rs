//! Loads weft's kernel programs (built from `ebpf/programs` and embedded at build time)
//! with every map pinned by name under `<pin root>/maps`, so that a restarted agent uses the
//! very maps that the programs still attached from its previous run use.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use aya::maps::{HashMap as BpfHashMap, MapData, SockHash};
use aya::programs::{CgroupSockAddr, SchedClassifier, SkLookup, SockOps};
use aya::{Ebpf, EbpfLoader};
use tracing::warn;
use weft_ebpf_common::{PodCapture, PodStats, ProbeNode, ProbeTarget, map_names, program_names};

/// The object file produced by node-agent/build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-ebpf"));

/// Typed handles on the maps the agent reads and writes.
pub struct Maps {
    pub pod_capture: BpfHashMap<MapData, u64, PodCapture>,
    pub pod_stats: BpfHashMap<MapData, u64, PodStats>,
    /// Read and emptied by the proxy tasks.
    pub orig_dst_by_client: crate::proxy::outbound::OrigDstMap,
    /// By the pod's IPv4 address (network byte order).
    pub inbound_listeners: SockHash<MapData, u32>,
    pub outbound_listeners: SockHash<MapData, u32>,
    /// By the pod's IPv6 address (`weft_ebpf_common::ip6_words`).
    pub inbound_listeners6: SockHash<MapData, [u32; 4]>,
    pub outbound_listeners6: SockHash<MapData, [u32; 4]>,
    /// Written by the inbound proxy tasks around each connection from a client's address.
    pub transparent_connects: crate::proxy::transparent::TransparentConnects,
    /// The pods' probe targets, for `weft_node_probe`.
    pub probe_targets: BpfHashMap<MapData, ProbeTarget, ProbeNode>,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
    pub pin_root: PathBuf,
    /// Whether `weft_node_probe` passed the verifier (tc programs and `bpf_sk_lookup_tcp`);
    /// without it the node's probes are not told apart and are captured like any client.
    pub node_probe: bool,
}

pub fn maps_dir(pin_root: &Path) -> PathBuf {
    pin_root.join("maps")
}

/// Loads and verifies every program, creating or re-opening the pinned maps.
pub fn load(pin_root: &Path) -> anyhow::Result<Loaded> {
    let maps_dir = maps_dir(pin_root);
    std::fs::create_dir_all(&maps_dir)
        .with_context(|| format!("creating {} (is bpffs mounted?)", maps_dir.display()))?;
    super::pinned_layout::check(OBJECT, &maps_dir)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps_dir)
        .load(OBJECT)
        .context(
            "loading weft's eBPF object into the kernel (needs CAP_BPF and CAP_NET_ADMIN, or root)",
        )?;
    for name in [
        program_names::CONNECT4,
        program_names::CONNECT6,
        program_names::GETPEERNAME4,
        program_names::GETPEERNAME6,
    ] {
        let program: &mut CgroupSockAddr = program(&mut ebpf, name)?.try_into()?;
        program
            .load()
            .with_context(|| format!("verifying {name}"))?;
    }
    let sock_ops: &mut SockOps = program(&mut ebpf, program_names::SOCK_OPS)?.try_into()?;
    sock_ops.load().context("verifying the sock_ops program")?;
    let lookup: &mut SkLookup = program(&mut ebpf, program_names::INBOUND_LOOKUP)?.try_into()?;
    lookup.load().context("verifying the sk_lookup program")?;
    let node_probe: &mut SchedClassifier =
        program(&mut ebpf, program_names::NODE_PROBE)?.try_into()?;
    let node_probe = match node_probe.load() {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "the kernel refused the tc program that recognizes the node's probe connections: under PeerAuthentication STRICT or behind a waypoint, kubelet probes will fail");
            false
        }
    };

    let maps = Maps {
        pod_capture: typed_map(&mut ebpf, map_names::POD_CAPTURE)?,
        pod_stats: typed_map(&mut ebpf, map_names::POD_STATS)?,
        orig_dst_by_client: Arc::new(Mutex::new(typed_map(
            &mut ebpf,
            map_names::ORIG_DST_BY_CLIENT,
        )?)),
        inbound_listeners: typed_map(&mut ebpf, map_names::INBOUND_LISTENERS)?,
        outbound_listeners: typed_map(&mut ebpf, map_names::OUTBOUND_LISTENERS)?,
        inbound_listeners6: typed_map(&mut ebpf, map_names::INBOUND_LISTENERS6)?,
        outbound_listeners6: typed_map(&mut ebpf, map_names::OUTBOUND_LISTENERS6)?,
        transparent_connects: crate::proxy::transparent::TransparentConnects {
            v4: Arc::new(Mutex::new(typed_map(
                &mut ebpf,
                map_names::TRANSPARENT_CONNECTS,
            )?)),
            v6: Arc::new(Mutex::new(typed_map(
                &mut ebpf,
                map_names::TRANSPARENT_CONNECTS6,
            )?)),
        },
        probe_targets: typed_map(&mut ebpf, map_names::PROBE_TARGETS)?,
    };
    Ok(Loaded {
        ebpf,
        maps,
        pin_root: pin_root.to_path_buf(),
        node_probe,
    })
}

pub fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

fn typed_map<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("opening map {name}"))
}
