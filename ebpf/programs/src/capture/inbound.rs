//! sk_lookup on the pod's network namespace: TCP connections to one of the pod's IPs, on
//! any port but the mesh's own, are delivered to the agent's inbound listener (:15006).
//! `getsockname()` on the accepted socket still gives the original destination.
use aya_ebpf::{bindings::sk_action::SK_PASS, macros::sk_lookup, programs::SkLookupContext};

use super::{IPPROTO_TCP, is_loopback_v4, is_mesh_port};
use crate::maps::INBOUND_LISTENERS;

const AF_INET: u32 = 2;

#[sk_lookup]
pub fn weft_inbound_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel passes a valid bpf_sk_lookup for the program's duration.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP || lookup.family != AF_INET {
        return SK_PASS;
    }
    let local_port = lookup.local_port as u16;
    // Traffic inside the pod (loopback, or the pod to itself, which is how the agent reaches
    // the application) is the application's own business.
    if is_mesh_port(local_port)
        || is_loopback_v4(lookup.remote_ip4)
        || lookup.remote_ip4 == lookup.local_ip4
    {
        return SK_PASS;
    }
    // Without a listener for this address (not an enrolled pod IP) the normal lookup runs.
    let _ = INBOUND_LISTENERS.redirect_sk_lookup(&ctx, lookup.local_ip4, 0);
    SK_PASS
}
