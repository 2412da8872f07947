//! sk_lookup on the pod's network namespace, which only enrolled pods have:
//! - connections to `<pod IP>:15001` (what connect4 made of a captured `connect()`) go to the
//!   agent's outbound listener;
//! - other TCP connections to the pod's IPs, on any port but the mesh's own, go to the
//!   agent's inbound-plaintext listener (:15006); `getsockname()` on the accepted socket
//!   is still the original destination;
//! - except the agent's own connections to the application from a client's address
//!   (`TRANSPARENT_CONNECTS`), which reach the application.
//!
//! While the agent restarts its listeners are gone (closing a socket removes it from the
//! sockhash). The lookup then fails (SK_DROP, which the kernel answers with a reset) rather
//! than falling back to the normal lookup: plaintext must not reach the application around
//! the agent's policy, nor captured traffic leave the pod unproxied. Fail closed.
use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use weft_ebpf_common::{TransparentConnect, ports};

use super::{IPPROTO_TCP, is_loopback_v4, is_mesh_port};
use crate::maps::{INBOUND_LISTENERS, OUTBOUND_LISTENERS, TRANSPARENT_CONNECTS};

const AF_INET: u32 = 2;

#[sk_lookup]
pub fn weft_inbound_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel passes a valid bpf_sk_lookup for the program's duration.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP
        || lookup.family != AF_INET
        || is_loopback_v4(lookup.local_ip4)
    {
        return SK_PASS;
    }
    let local_port = lookup.local_port as u16;
    if local_port == ports::OUTBOUND {
        return match OUTBOUND_LISTENERS.redirect_sk_lookup(&ctx, lookup.local_ip4, 0) {
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
    match INBOUND_LISTENERS.redirect_sk_lookup(&ctx, lookup.local_ip4, 0) {
        Ok(()) => SK_PASS,
        Err(_) => SK_DROP,
    }
}
