//! cgroup/getpeername4 and getpeername6: a captured socket reports the address the
//! application dialed, not the agent's listener it was redirected to.
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weft_ebpf_common::{AF_INET, AF_INET6, OrigDst, ports};

use super::{ALLOW, V4_MAPPED_WORD, read_user_ip6, write_user_ip6};
use crate::maps::ORIG_DST_BY_COOKIE;

#[inline(always)]
fn original(ctx: &SockAddrContext) -> Option<OrigDst> {
    // SAFETY: `ctx` is the program's context; the value is copied out.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        ORIG_DST_BY_COOKIE.get(&cookie).copied()
    }
}

#[cgroup_sock_addr(getpeername4)]
pub fn weft_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock_addr for the program's duration.
    let sa = unsafe { &mut *ctx.sock_addr };
    // A socket connect4 sent to the DNS proxy shows its nameserver.
    if u16::from_be(sa.user_port as u16) == ports::DNS {
        if let Some(orig) = super::dns::original(&ctx) {
            sa.user_ip4 = orig.addr[0];
            sa.user_port = u32::from(orig.port.to_be());
        }
        return ALLOW;
    }
    // Port 15001 is never captured, so a socket with a recorded original destination that
    // is connected there is one connect4 redirected.
    if u16::from_be(sa.user_port as u16) != ports::OUTBOUND {
        return ALLOW;
    }
    if let Some(orig) = original(&ctx)
        && orig.family == AF_INET
    {
        sa.user_ip4 = orig.addr[0];
        sa.user_port = u32::from(orig.port.to_be());
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn weft_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    if u16::from_be(sa.user_port as u16) != ports::OUTBOUND {
        return ALLOW;
    }
    // Redirected to `[<pod IPv6>]:15001` or `[::1]:15001`, or IPv4-mapped to the IPv4
    // listener: only sockets connect6 captured have a recorded original destination.
    let ip = read_user_ip6(ctx.sock_addr);
    let mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_WORD;
    if let Some(orig) = original(&ctx) {
        match orig.family {
            AF_INET if mapped => {
                write_user_ip6(ctx.sock_addr, [0, 0, V4_MAPPED_WORD, orig.addr[0]]);
            }
            AF_INET6 if !mapped => write_user_ip6(ctx.sock_addr, orig.addr),
            _ => return ALLOW,
        }
        sa.user_port = u32::from(orig.port.to_be());
    }
    ALLOW
}
