//! Traffic capture: outbound `connect()` rewriting with the original destination kept,
//! transparency for the application, inbound delivery to the agent, and the pods' DNS
//! queries to the agent's DNS proxy.
mod dns;
mod established;
mod inbound;
mod node_probe;
mod outbound;
mod transparency;

use aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id;
use weft_ebpf_common::PodCapture;

use crate::maps::POD_CAPTURE;

/// cgroup sock_addr programs return 1 to let the call proceed, 0 to fail it with EPERM.
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// 127.0.0.1 in network byte order.
const LOOPBACK_V4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::1 in network byte order, as four words.
const LOOPBACK_V6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
/// The ::ffff:0:0/96 prefix of IPv4-mapped IPv6 addresses, third word in network order.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn is_loopback_v4(ip: u32) -> bool {
    // 127.0.0.0/8: the first byte in memory is the most significant in network order.
    ip.to_ne_bytes()[0] == 127
}

#[inline(always)]
fn is_mesh_port(port: u16) -> bool {
    let mut i = 0;
    while i < weft_ebpf_common::ports::MESH.len() {
        if weft_ebpf_common::ports::MESH[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Writes an IPv6 address into a `bpf_sock_addr`, one 32-bit word at a time: the verifier
/// accepts context stores only at constant offsets from the unmodified context pointer,
/// which a whole-array copy does not produce.
#[inline(always)]
fn write_user_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, words: [u32; 4]) {
    // SAFETY: `sa` is the program's context; each store is a 4-byte, 4-aligned field write
    // the verifier allows for this program type.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[0]), words[0]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[1]), words[1]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[2]), words[2]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[3]), words[3]);
    }
}

/// Reads an IPv6 address from a `bpf_sock_addr`, word by word for the same reason.
#[inline(always)]
fn read_user_ip6(sa: *const aya_ebpf::bindings::bpf_sock_addr) -> [u32; 4] {
    // SAFETY: as above, for loads.
    unsafe {
        [
            core::ptr::read_volatile(core::ptr::addr_of!((*sa).user_ip6[0])),
            core::ptr::read_volatile(core::ptr::addr_of!((*sa).user_ip6[1])),
            core::ptr::read_volatile(core::ptr::addr_of!((*sa).user_ip6[2])),
            core::ptr::read_volatile(core::ptr::addr_of!((*sa).user_ip6[3])),
        ]
    }
}

/// How deep below the root of the cgroup hierarchy a pod's cgroup may be (a kubelet's are
/// at level 3 or 4, the lab's at 4; nested clusters add a few).
const MAX_CGROUP_LEVEL: i32 = 24;

/// The capture settings of the pod the calling process belongs to: those of the shallowest
/// cgroup on its path from the root that has an entry.
#[inline(always)]
fn enrolled_pod() -> Option<PodCapture> {
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        // SAFETY: the helper has no preconditions in cgroup programs.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        // 0: the calling process's cgroup is less deep than `level`.
        if cgroup == 0 {
            return None;
        }
        // SAFETY: the value is copied out before the map can change it.
        if let Some(pod) = unsafe { POD_CAPTURE.get(&cgroup) } {
            return Some(*pod);
        }
        level += 1;
    }
    None
}
