//! Every map the programs share with the agent, in one place. All are pinned by name, so a
//! restarted agent finds the same maps the still-attached programs use.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, SockHash},
};
use weft_ebpf_common::{
    ClientKey, MAX_CONNECTIONS, MAX_PODS, MAX_PROBE_TARGETS, MAX_TRANSPARENT_CONNECTS, OrigDst,
    PodCapture, PodStats, ProbeNode, ProbeTarget, TransparentConnect, TransparentConnect6,
};

/// Capture settings per cgroup id of an enrolled pod (absent: not captured).
#[map(name = "POD_CAPTURE")]
pub static POD_CAPTURE: HashMap<u64, PodCapture> = HashMap::pinned(MAX_PODS * 4, 0);

/// Counters per pod id.
#[map(name = "POD_STATS")]
pub static POD_STATS: HashMap<u64, PodStats> = HashMap::pinned(MAX_PODS, 0);

/// Original destination by the connecting socket's cookie, from `connect()` to close.
#[map(name = "ORIG_DST_BY_COOKIE")]
pub static ORIG_DST_BY_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// Original destination by (pod, client port), which is what the agent knows on accept.
#[map(name = "ORIG_DST_BY_CLIENT")]
pub static ORIG_DST_BY_CLIENT: LruHashMap<ClientKey, OrigDst> =
    LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// The agent's inbound-plaintext listener (:15006) of each pod, by the pod's IPv4 address
/// (network byte order).
#[map(name = "INBOUND_LISTENERS")]
pub static INBOUND_LISTENERS: SockHash<u32> = SockHash::pinned(MAX_PODS, 0);

/// The agent's outbound listener (:15001) of each pod, by the pod's IPv4 address.
#[map(name = "OUTBOUND_LISTENERS")]
pub static OUTBOUND_LISTENERS: SockHash<u32> = SockHash::pinned(MAX_PODS, 0);

/// Connections the agent is opening from a client's address (see `TransparentConnect`).
/// LRU: an agent that dies between adding and removing an entry leaves nothing for good.
#[map(name = "TRANSPARENT_CONNECTS")]
pub static TRANSPARENT_CONNECTS: LruHashMap<TransparentConnect, u8> =
    LruHashMap::pinned(MAX_TRANSPARENT_CONNECTS, 0);

/// The agent's inbound-plaintext listener for IPv6 (`[::]:15006`) of each pod, by the pod's
/// IPv6 address (`ip6_words`). An IPv6 connection is only ever handed to an IPv6 socket.
#[map(name = "INBOUND_LISTENERS6")]
pub static INBOUND_LISTENERS6: SockHash<[u32; 4]> = SockHash::pinned(MAX_PODS, 0);

/// The agent's IPv6 outbound listener (`[::1]:15001`) of each pod, by the pod's IPv6 address.
#[map(name = "OUTBOUND_LISTENERS6")]
pub static OUTBOUND_LISTENERS6: SockHash<[u32; 4]> = SockHash::pinned(MAX_PODS, 0);

/// `TRANSPARENT_CONNECTS` for IPv6 connections.
#[map(name = "TRANSPARENT_CONNECTS6")]
pub static TRANSPARENT_CONNECTS6: LruHashMap<TransparentConnect6, u8> =
    LruHashMap::pinned(MAX_TRANSPARENT_CONNECTS, 0);

/// The pod addresses and ports the kubelet probes, with the node's network namespace as
/// each pod's namespace names it. Written by the agent at enrollment; read by
/// `weft_node_probe`.
#[map(name = "PROBE_TARGETS")]
pub static PROBE_TARGETS: HashMap<ProbeTarget, ProbeNode> = HashMap::pinned(MAX_PROBE_TARGETS, 0);

/// Connections a socket of the node is opening to a probe target, by 4-tuple (as
/// `TransparentConnect`: the node's address and port remote, the pod's local), valued with
/// the time of their SYN. Written by `weft_node_probe`, read by `weft_inbound_lookup`. LRU:
/// entries are never removed, only outlived (`NODE_CONNECT_TTL_NS`).
#[map(name = "NODE_CONNECTS")]
pub static NODE_CONNECTS: LruHashMap<TransparentConnect, u64> =
    LruHashMap::pinned(MAX_TRANSPARENT_CONNECTS, 0);

/// `NODE_CONNECTS` for IPv6.
#[map(name = "NODE_CONNECTS6")]
pub static NODE_CONNECTS6: LruHashMap<TransparentConnect6, u64> =
    LruHashMap::pinned(MAX_TRANSPARENT_CONNECTS, 0);
