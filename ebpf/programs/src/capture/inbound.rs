//! sk_lookup on the pod's network namespace, which only enrolled pods have. For TCP, IPv4
//! and IPv6 alike:
//! - connections to `<pod IP>:15001` (what connect4/connect6 made of a captured `connect()`)
//!   go to the agent's outbound listener of that family, from the pod itself only: from
//!   anywhere else they are dropped;
//! - other TCP connections to the pod's IPs, on any port but the mesh's own, go to the
//!   agent's inbound-plaintext listener of that family (:15006); `getsockname()` on the
//!   accepted socket is still the original destination;
//! - except the agent's own connections to the application from a client's address
//!   (`TRANSPARENT_CONNECTS`, `TRANSPARENT_CONNECTS6`), and the node's own connections to
//!   the pod's probe ports (the kubelet's probes, filed in `NODE_CONNECTS`,
//!   `NODE_CONNECTS6` by `weft_node_probe`, which finds the node's socket that sent them;
//!   see `node_probe.rs` for why nothing else can be filed), which reach the application.
//!
//! While the agent restarts its listeners are gone (closing a socket removes it from the
//! sockhash). The lookup then fails (SK_DROP, which the kernel answers with a reset) rather
//! than falling back to the normal lookup: plaintext must not reach the application around
//! the agent's policy, nor captured traffic leave the pod unproxied. Fail closed. The same
//! holds for an address of the pod the agent registered no listener for (an IPv6 address
//! whose listeners could not be opened, a link-local address): refused, never passed.
use aya_ebpf::{
    bindings::{
        bpf_sk_lookup,
        sk_action::{SK_DROP, SK_PASS},
    },
    helpers::bpf_ktime_get_ns,
    macros::sk_lookup,
    programs::SkLookupContext,
};
use weft_ebpf_common::{NODE_CONNECT_TTL_NS, TransparentConnect, TransparentConnect6, ports};

use super::{IPPROTO_TCP, LOOPBACK_V6, is_loopback_v4, is_mesh_port};
use crate::maps::{
    INBOUND_LISTENERS, INBOUND_LISTENERS6, NODE_CONNECTS, NODE_CONNECTS6, OUTBOUND_LISTENERS,
    OUTBOUND_LISTENERS6, TRANSPARENT_CONNECTS, TRANSPARENT_CONNECTS6,
};

/// Whether a `NODE_CONNECTS` entry was filed recently enough to be the SYN being looked up
/// (or its retransmission, or the last ACK of its handshake).
#[inline(always)]
fn fresh(filed: Option<*const u64>) -> bool {
    match filed {
        Some(at) => {
            // SAFETY: a pointer into the map's value, valid during the program; the clock
            // helper has no preconditions.
            let (at, now) = unsafe { (*at, bpf_ktime_get_ns()) };
            now.wrapping_sub(at) < NODE_CONNECT_TTL_NS
        }
        None => false,
    }
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[sk_lookup]
pub fn weft_inbound_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel passes a valid bpf_sk_lookup for the program's duration.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    match lookup.family {
        AF_INET => lookup_v4(&ctx, lookup),
        AF_INET6 => lookup_v6(&ctx),
        _ => SK_PASS,
    }
}

#[inline(always)]
fn lookup_v4(ctx: &SkLookupContext, lookup: &bpf_sk_lookup) -> u32 {
    if is_loopback_v4(lookup.local_ip4) {
        return SK_PASS;
    }
    let local_port = lookup.local_port as u16;
    if local_port == ports::OUTBOUND {
        // Only the pod's own captured connects (connect4 sends them from the pod's address
        // to `<pod IP>:15001`) reach the outbound listener: anyone else dialing the port
        // could otherwise race a pending connect for its original destination and leave
        // with the pod's identity.
        if lookup.remote_ip4 != lookup.local_ip4 {
            return SK_DROP;
        }
        return match OUTBOUND_LISTENERS.redirect_sk_lookup(ctx, lookup.local_ip4, 0) {
            Ok(()) => SK_PASS,
            Err(_) => SK_DROP,
        };
    }
    // The mesh's own ports, and traffic inside the pod (loopback, or the pod to itself,
    // which is how the agent reaches the application) keep the normal lookup.
    if is_mesh_port(local_port)
        || is_loopback_v4(lookup.remote_ip4)
        || lookup.remote_ip4 == lookup.local_ip4
    {
        return SK_PASS;
    }
    // The agent itself, connecting to the application from the client's address.
    let agent = TransparentConnect {
        remote_ip: lookup.remote_ip4,
        local_ip: lookup.local_ip4,
        remote_port: u16::from_be(lookup.remote_port),
        local_port,
    };
    if TRANSPARENT_CONNECTS.get_ptr(agent).is_some() {
        return SK_PASS;
    }
    // The node's own connection to a probe port (the kubelet's probe): to the application.
    if fresh(NODE_CONNECTS.get_ptr(agent)) {
        return SK_PASS;
    }
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, lookup.local_ip4, 0) {
        Ok(()) => SK_PASS,
        Err(_) => SK_DROP,
    }
}

/// The same decisions for IPv6. The addresses are read one 32-bit word at a time: the
/// verifier allows only loads of at most four bytes from `local_ip6`/`remote_ip6`.
#[inline(always)]
fn lookup_v6(ctx: &SkLookupContext) -> u32 {
    let lookup = ctx.lookup;
    // SAFETY: `lookup` is the program's context; each load is a 4-byte, 4-aligned field read
    // the verifier allows for this program type.
    let (local, remote, local_port, remote_port) = unsafe {
        (
            [
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).local_ip6[0])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).local_ip6[1])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).local_ip6[2])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).local_ip6[3])),
            ],
            [
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).remote_ip6[0])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).remote_ip6[1])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).remote_ip6[2])),
                core::ptr::read_volatile(core::ptr::addr_of!((*lookup).remote_ip6[3])),
            ],
            (*lookup).local_port as u16,
            u16::from_be((*lookup).remote_port),
        )
    };
    if local == LOOPBACK_V6 {
        return SK_PASS;
    }
    if local_port == ports::OUTBOUND {
        // As for IPv4: only the pod's own captured connects.
        if remote != local {
            return SK_DROP;
        }
        return match OUTBOUND_LISTENERS6.redirect_sk_lookup(ctx, local, 0) {
            Ok(()) => SK_PASS,
            Err(_) => SK_DROP,
        };
    }
    if is_mesh_port(local_port) || remote == LOOPBACK_V6 || remote == local {
        return SK_PASS;
    }
    let agent = TransparentConnect6 {
        remote_ip: remote,
        local_ip: local,
        remote_port,
        local_port,
    };
    if TRANSPARENT_CONNECTS6.get_ptr(agent).is_some() {
        return SK_PASS;
    }
    if fresh(NODE_CONNECTS6.get_ptr(agent)) {
        return SK_PASS;
    }
    match INBOUND_LISTENERS6.redirect_sk_lookup(ctx, local, 0) {
        Ok(()) => SK_PASS,
        Err(_) => SK_DROP,
    }
}
