//! The pod's DNS queries to the agent's DNS proxy, `127.0.0.1:15053` inside the pod.
//!
//! - `weft_dns_sendmsg4` (cgroup/sendmsg4): a datagram sent with an address (an unconnected
//!   UDP socket) to port 53 of anything but loopback goes to the proxy instead; the address
//!   it was sent to is filed under the socket's cookie.
//! - `weft_connect4` calls [`redirect_connect4`] first: a UDP socket connected to port 53
//!   (glibc's resolver connects its sockets) or a TCP connection to port 53 goes to the
//!   proxy, the nameserver filed the same way.
//! - `weft_dns_recvmsg4` (cgroup/recvmsg4): an answer from the proxy shows the nameserver as
//!   its source, so the resolver, which checks who answered, accepts it.
//! - `weft_getpeername4` shows a connected socket's nameserver as its peer.
//!
//! Only pods the agent filed in `DNS_PODS` are redirected; the agent files a pod once its
//! proxy listens there. With the agent away, queries meet no listener and fail (ICMP port
//! unreachable, a refused TCP connection): none leaves the pod uncaptured.
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weft_ebpf_common::{AF_INET, OrigDst, PodCapture, ports};

use super::{ALLOW, IPPROTO_TCP, IPPROTO_UDP, LOOPBACK_V4, enrolled_pod, is_loopback_v4};
use crate::maps::{DNS_ORIG_BY_COOKIE, DNS_PODS};

/// Whether the pod's DNS goes to the agent.
#[inline(always)]
fn captures_dns(pod: &PodCapture) -> bool {
    // SAFETY: the value is copied out before the map can change it.
    unsafe { DNS_PODS.get(&pod.pod).is_some() }
}

/// Sends a query to `ip:port` (network byte order address, host order port) to the proxy
/// instead, when the pod's DNS is captured. Returns whether it did.
#[inline(always)]
fn redirect(ctx: &SockAddrContext, pod: &PodCapture, ip: u32, port: u16) -> bool {
    if port != ports::DNS_SERVER || is_loopback_v4(ip) || !captures_dns(pod) {
        return false;
    }
    let orig = OrigDst {
        addr: [ip, 0, 0, 0],
        port,
        family: AF_INET,
        _pad: 0,
        pod: pod.pod,
    };
    // SAFETY: `ctx` is the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if DNS_ORIG_BY_COOKIE.insert(&cookie, &orig, 0).is_err() {
        // Without the nameserver on file the answer could not be shown as its; the query
        // goes out as sent rather than failing.
        return false;
    }
    // SAFETY: the kernel passes a valid bpf_sock_addr for the program's duration.
    let sa = unsafe { &mut *ctx.sock_addr };
    sa.user_ip4 = LOOPBACK_V4;
    sa.user_port = u32::from(ports::DNS.to_be());
    true
}

/// connect4's DNS case: UDP or TCP to port 53. Returns whether the connect was redirected.
#[inline(always)]
pub(super) fn redirect_connect4(ctx: &SockAddrContext, pod: &PodCapture) -> bool {
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    if sa.protocol != IPPROTO_UDP && sa.protocol != IPPROTO_TCP {
        return false;
    }
    let ip = sa.user_ip4;
    let port = u16::from_be(sa.user_port as u16);
    redirect(ctx, pod, ip, port)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn weft_dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    // A datagram of a process outside any enrolled pod's cgroup is not the mesh's business.
    let Some(pod) = enrolled_pod() else {
        return ALLOW;
    };
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    let ip = sa.user_ip4;
    let port = u16::from_be(sa.user_port as u16);
    redirect(&ctx, &pod, ip, port);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn weft_dns_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_ip4 != LOOPBACK_V4 || u16::from_be(sa.user_port as u16) != ports::DNS {
        return ALLOW;
    }
    if let Some(orig) = original(&ctx) {
        sa.user_ip4 = orig.addr[0];
        sa.user_port = u32::from(orig.port.to_be());
    }
    ALLOW
}

/// The nameserver a redirected socket's queries were sent to.
#[inline(always)]
pub(super) fn original(ctx: &SockAddrContext) -> Option<OrigDst> {
    // SAFETY: `ctx` is the program's context; the value is copied out.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        DNS_ORIG_BY_COOKIE.get(&cookie).copied()
    }
}
