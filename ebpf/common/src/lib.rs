//! Types laid out identically in the kernel programs and in the agent.
//!
//! Every type here is `#[repr(C)]`, `Copy`, padded explicitly, and valid for any bit
//! pattern, because the kernel and userspace read the same bytes.
#![cfg_attr(not(test), no_std)]

/// Ports the agent owns inside every enrolled pod (Istio ambient's numbers).
pub mod ports {
    /// Outbound: the app's captured `connect()`s land here (127.0.0.1 / ::1).
    pub const OUTBOUND: u16 = 15001;
    /// Inbound plaintext: connections to the pod's IPs from outside the mesh.
    pub const INBOUND_PLAINTEXT: u16 = 15006;
    /// Inbound HBONE (mTLS): never captured, it is the mesh's own entry.
    pub const HBONE: u16 = 15008;
    pub const ADMIN: u16 = 15000;
    pub const METRICS: u16 = 15020;
    pub const READINESS: u16 = 15021;

    /// Destination ports that are never captured, in either direction.
    pub const MESH: [u16; 6] = [
        OUTBOUND,
        INBOUND_PLAINTEXT,
        HBONE,
        ADMIN,
        METRICS,
        READINESS,
    ];
}

/// Names of the maps as they appear in the ELF object and under bpffs.
pub mod map_names {
    pub const POD_STATS: &str = "POD_STATS";
    pub const POD_CAPTURE: &str = "POD_CAPTURE";
    pub const ORIG_DST_BY_COOKIE: &str = "ORIG_DST_BY_COOKIE";
    pub const ORIG_DST_BY_CLIENT: &str = "ORIG_DST_BY_CLIENT";
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    pub const OUTBOUND_LISTENERS: &str = "OUTBOUND_LISTENERS";
    pub const TRANSPARENT_CONNECTS: &str = "TRANSPARENT_CONNECTS";
    pub const INBOUND_LISTENERS6: &str = "INBOUND_LISTENERS6";
    pub const OUTBOUND_LISTENERS6: &str = "OUTBOUND_LISTENERS6";
    pub const TRANSPARENT_CONNECTS6: &str = "TRANSPARENT_CONNECTS6";
    pub const PROBE_TARGETS: &str = "PROBE_TARGETS";
    pub const NODE_CONNECTS: &str = "NODE_CONNECTS";
    pub const NODE_CONNECTS6: &str = "NODE_CONNECTS6";
}

/// Program names (distinct from their ELF sections: a function named like its section
/// breaks the link step).
pub mod program_names {
    pub const CONNECT4: &str = "weft_connect4";
    pub const CONNECT6: &str = "weft_connect6";
    pub const GETPEERNAME4: &str = "weft_getpeername4";
    pub const GETPEERNAME6: &str = "weft_getpeername6";
    pub const SOCK_OPS: &str = "weft_sock_ops";
    pub const INBOUND_LOOKUP: &str = "weft_inbound_lookup";
    pub const NODE_PROBE: &str = "weft_node_probe";
}

/// Upper bound on pods per node the per-pod maps are sized for.
pub const MAX_PODS: u32 = 4096;
/// Upper bound on captured connections open at once on a node. The maps holding them are
/// LRU, so a missed close can never exhaust them.
pub const MAX_CONNECTIONS: u32 = 65536;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// An IPv6 address as the kernel's `__u32[4]` fields hold it (`bpf_sk_lookup.local_ip6`,
/// `bpf_sock_addr.user_ip6`): the 16 bytes in network order, read as four native words.
#[inline(always)]
pub fn ip6_words(octets: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([octets[0], octets[1], octets[2], octets[3]]),
        u32::from_ne_bytes([octets[4], octets[5], octets[6], octets[7]]),
        u32::from_ne_bytes([octets[8], octets[9], octets[10], octets[11]]),
        u32::from_ne_bytes([octets[12], octets[13], octets[14], octets[15]]),
    ]
}

/// The inverse of [`ip6_words`].
#[inline(always)]
pub fn ip6_octets(words: [u32; 4]) -> [u8; 16] {
    let mut octets = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let bytes = words[i].to_ne_bytes();
        octets[i * 4] = bytes[0];
        octets[i * 4 + 1] = bytes[1];
        octets[i * 4 + 2] = bytes[2];
        octets[i * 4 + 3] = bytes[3];
        i += 1;
    }
    octets
}

/// Counters kept per enrolled pod, keyed by the pod id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    /// `connect()` calls made by the pod's processes (TCP and UDP, IPv4 and IPv6).
    pub connects: u64,
    /// TCP connections redirected to the agent.
    pub captured: u64,
}

pub const MAX_EXCLUDED_PORTS: usize = 16;
pub const MAX_EXCLUDED_CIDRS: usize = 8;

/// An IPv4 range; both fields in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: u32,
    pub mask: u32,
}

impl Ipv4Cidr {
    /// Whether `ip` (network byte order) is inside the range.
    #[inline(always)]
    pub fn contains(&self, ip: u32) -> bool {
        ip & self.mask == self.addr & self.mask
    }
}

/// What capture does for one cgroup of an enrolled pod. Keyed by cgroup id: the agent adds
/// an entry for the pod's cgroup and for each cgroup below it (containers), all carrying
/// the same pod id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCapture {
    /// The pod's id: the cgroup id of the pod-level cgroup.
    pub pod: u64,
    /// Outbound destination ports left alone (`traffic.sidecar.istio.io/excludeOutboundPorts`).
    pub exclude_ports: [u16; MAX_EXCLUDED_PORTS],
    /// Outbound destination ranges left alone (`…/excludeOutboundIPRanges`).
    pub exclude_cidrs: [Ipv4Cidr; MAX_EXCLUDED_CIDRS],
    pub exclude_port_count: u32,
    pub exclude_cidr_count: u32,
    /// Whether the agent listens on [::1]:15001 in this pod (IPv6 capture for a pod without
    /// an IPv6 address of its own; one with an address uses `pod_ip6`).
    pub ipv6: u32,
    /// The pod's IPv4 address (network byte order): captured IPv4 connections are sent to
    /// `<pod IP>:15001`, where the pod's sk_lookup program delivers them to the agent's
    /// listener (and refuses them while there is none), and where the application's
    /// `getsockname()` shows its own pod address, as on a direct connection.
    pub pod_ip: u32,
    /// The pod's IPv6 address ([`ip6_words`]; all zero when it has none): captured IPv6
    /// connections are sent to `[<pod IPv6>]:15001`, the same way.
    pub pod_ip6: [u32; 4],
}

/// Where a captured connection was going.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// The address in network byte order: IPv4 in `addr[0]`, IPv6 in all four words.
    pub addr: [u32; 4],
    /// Host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: u32,
    /// The pod id of the connecting pod.
    pub pod: u64,
}

/// A captured connection as the agent sees it on accept: which pod's listener, the client's
/// source port (host byte order) and the family of the listener it reached (`AF_INET` or
/// `AF_INET6`, that of the original destination): an IPv4 and an IPv6 connection of one pod
/// may have the same source port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub pod: u64,
    pub port: u32,
    pub family: u32,
}

/// A connection the agent is opening to an application from the client's own address
/// (IP_TRANSPARENT), so the application sees who connected. Its SYN arrives in the pod like
/// a client's; the pod's sk_lookup program passes it to the application instead of
/// capturing it again. The whole 4-tuple is the key, present only while connecting, so no
/// other connection can match it. Addresses in network byte order, ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransparentConnect {
    /// The client's address the agent connects from.
    pub remote_ip: u32,
    /// The pod's address the application listens on.
    pub local_ip: u32,
    pub remote_port: u16,
    pub local_port: u16,
}

/// [`TransparentConnect`] for IPv6: addresses as [`ip6_words`], ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransparentConnect6 {
    pub remote_ip: [u32; 4],
    pub local_ip: [u32; 4],
    pub remote_port: u16,
    pub local_port: u16,
}

/// Connections being opened from a client's address at once, all pods of a node together
/// (per family).
pub const MAX_TRANSPARENT_CONNECTS: u32 = 16384;

/// The mark of the agent's transparent sockets, and of the application's replies to them
/// (`net.ipv4.tcp_fwmark_accept`): the pod's policy rule delivers packets with it locally,
/// where the agent's socket is, instead of routing them towards the client's real address.
pub const TRANSPARENT_MARK: u32 = 0x0057_4600;
pub const TRANSPARENT_MARK_MASK: u32 = 0x00ff_ff00;
/// The pod's routing table for marked packets, and the rule's priority (before `main`).
pub const TRANSPARENT_TABLE: u32 = 15_006;
pub const TRANSPARENT_RULE_PRIORITY: u32 = 32_700;

/// A pod address and port the kubelet's probes connect to (from the Pod's
/// `readinessProbe`, `livenessProbe` and `startupProbe`): the pod's `weft_node_probe`
/// program checks SYNs to it for a socket of the node that sent them. The address as in
/// [`OrigDst`] (IPv4 in `addr[0]`), the port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    pub addr: [u32; 4],
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
}

/// What `PROBE_TARGETS` holds for a target: where the node's sockets are, as the pod's
/// network namespace names the node's (its `nsid`, what `ip netns list-id` shows inside the
/// pod), for `bpf_sk_lookup_tcp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeNode {
    pub netns_id: u32,
    pub _pad: u32,
}

/// Probe targets of all pods of a node (each pod address with each probe port).
pub const MAX_PROBE_TARGETS: u32 = 16384;

/// How long a node connection filed by `weft_node_probe` (`NODE_CONNECTS`, keyed like
/// [`TransparentConnect`], valued with `bpf_ktime_get_ns` at the SYN) lets `sk_lookup` pass
/// packets of that 4-tuple to the application: the SYN itself, its retransmissions (each
/// files it again) and, under a SYN flood, the handshake's last ACK, which then meets the
/// listener lookup again (SYN cookies). Older entries are ignored, so a 4-tuple reused later
/// by a connection that is not the node's is not passed.
pub const NODE_CONNECT_TTL_NS: u64 = 3_000_000_000;

#[cfg(feature = "user")]
mod user {
    /// Each type is repr(C), Copy, explicitly padded and valid for every bit pattern.
    macro_rules! plain_old_data {
        ($($t:ident),*) => {$(
            // SAFETY: see the macro's comment; the kernel and the agent read the same bytes.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }
    plain_old_data!(
        PodStats,
        PodCapture,
        OrigDst,
        ClientKey,
        TransparentConnect,
        TransparentConnect6,
        ProbeTarget,
        ProbeNode
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_words_are_the_address_bytes_in_order() {
        let octets = [
            0xfd, 0x00, 0x00, 0x10, 0x02, 0x44, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x0a,
        ];
        let words = ip6_words(octets);
        assert_eq!(words[0].to_ne_bytes(), [0xfd, 0x00, 0x00, 0x10]);
        assert_eq!(words[3].to_ne_bytes(), [0, 0, 0, 0x0a]);
        assert_eq!(ip6_octets(words), octets);
    }
}
