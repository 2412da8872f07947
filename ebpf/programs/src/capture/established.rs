//! sock_ops: once a captured connection is established, its original destination is also
//! filed under (pod, client port), the key the agent has when it accepts. When the socket
//! closes its cookie entry goes; the agent removes the client entry when it reads it. Both
//! maps are LRU besides, so nothing a missed event leaves behind can fill them.
use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE,
    },
    helpers::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};
use weft_ebpf_common::ClientKey;

use crate::maps::{ORIG_DST_BY_CLIENT, ORIG_DST_BY_COOKIE};

#[sock_ops]
pub fn weft_sock_ops(ctx: SockOpsContext) -> u32 {
    // SAFETY: `ctx` is the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    match ctx.op() {
        // Ask for state changes on every captured socket, including those that never
        // become established, so that their entries are removed on close.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // SAFETY: only presence is checked.
            if unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }.is_some() {
                let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            // SAFETY: the value is copied before the map can change it.
            if let Some(orig) = unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }.copied() {
                // The listener it reaches has the original destination's family: an
                // IPv4-mapped destination of an IPv6 socket was recorded, and is sent, as IPv4.
                let key = ClientKey {
                    pod: orig.pod,
                    port: ctx.local_port(),
                    family: u32::from(orig.family),
                };
                let _ = ORIG_DST_BY_CLIENT.insert(&key, &orig, 0);
                let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
            }
        }
        // The cookie entry (for getpeername) lives as long as the socket. The client entry
        // is the agent's to remove once it has read it: a client may close before the
        // agent accepts, and the agent must still learn where the connection was going.
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            let _ = ORIG_DST_BY_COOKIE.remove(&cookie);
        }
        _ => {}
    }
    1
}
