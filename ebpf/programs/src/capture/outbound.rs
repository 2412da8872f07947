//! cgroup/connect4 and connect6: a TCP `connect()` from an enrolled pod goes to the agent's
//! outbound listener inside the pod (`<pod IP>:15001` for IPv4, `[<pod IPv6>]:15001` for
//! IPv6, or `[::1]:15001` in a pod without an IPv6 address), and the original destination is
//! recorded by socket cookie.
//!
//! The programs are attached to the pod's cgroup, and so run for every cgroup below it too,
//! including those created after the pod was enrolled (its containers, in a cluster: the
//! runtime makes them after the sandbox's CNI ADD, and again when a container restarts).
//! `POD_CAPTURE` is keyed by the pod-level cgroup: the calling process's cgroup and its
//! ancestors are looked up, the shallowest first. A program that finds no entry runs in a
//! pod whose capture is being set up or torn down wrongly, and refuses the `connect()`
//! (EPERM) rather than let it out uncaptured: capture fails closed.
use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weft_ebpf_common::{AF_INET, AF_INET6, OrigDst, PodCapture, ports};

use super::{
    ALLOW, DENY, IPPROTO_TCP, LOOPBACK_V4, LOOPBACK_V6, V4_MAPPED_WORD, enrolled_pod,
    is_loopback_v4, is_mesh_port, read_user_ip6, write_user_ip6,
};
use crate::maps::{ORIG_DST_BY_COOKIE, POD_STATS};

#[cgroup_sock_addr(connect4)]
pub fn weft_connect4(ctx: SockAddrContext) -> i32 {
    let Some(pod) = enrolled_pod() else {
        return DENY;
    };
    count(pod.pod, false);
    // DNS (UDP or TCP to port 53) goes to the agent's DNS proxy when the pod's is captured.
    if super::dns::redirect_connect4(&ctx, &pod) {
        return ALLOW;
    }
    // SAFETY: the kernel passes a valid bpf_sock_addr for the program's duration.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let ip = sa.user_ip4;
    let port = u16::from_be(sa.user_port as u16);
    if !should_capture_v4(&pod, ip, port) {
        return ALLOW;
    }
    let orig = OrigDst {
        addr: [ip, 0, 0, 0],
        port,
        family: AF_INET,
        _pad: 0,
        pod: pod.pod,
    };
    if record(&ctx, &orig) {
        sa.user_ip4 = outbound_ip(&pod);
        sa.user_port = u32::from(ports::OUTBOUND.to_be());
        count(pod.pod, true);
    }
    ALLOW
}

/// Where captured IPv4 connections go: the pod's own address, on which the pod's
/// sk_lookup program delivers them to the agent's outbound listener.
#[inline(always)]
fn outbound_ip(pod: &PodCapture) -> u32 {
    if pod.pod_ip == 0 {
        LOOPBACK_V4
    } else {
        pod.pod_ip
    }
}

#[cgroup_sock_addr(connect6)]
pub fn weft_connect6(ctx: SockAddrContext) -> i32 {
    let Some(pod) = enrolled_pod() else {
        return DENY;
    };
    count(pod.pod, false);
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let ip = read_user_ip6(ctx.sock_addr);
    let port = u16::from_be(sa.user_port as u16);
    // An IPv4-mapped destination (a dual-stack socket dialing IPv4) travels as IPv4: capture
    // it as such and send it to the IPv4 listener through its mapped form.
    let mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_WORD;
    if mapped {
        if !should_capture_v4(&pod, ip[3], port) {
            return ALLOW;
        }
        let orig = OrigDst {
            addr: [ip[3], 0, 0, 0],
            port,
            family: AF_INET,
            _pad: 0,
            pod: pod.pod,
        };
        if record(&ctx, &orig) {
            write_user_ip6(ctx.sock_addr, [0, 0, V4_MAPPED_WORD, outbound_ip(&pod)]);
            sa.user_port = u32::from(ports::OUTBOUND.to_be());
            count(pod.pod, true);
        }
        return ALLOW;
    }
    // A pod with an IPv6 address always has its IPv6 connections captured: they go to
    // `[<pod IPv6>]:15001`, where the pod's sk_lookup program refuses them if the agent has
    // no IPv6 listener there. One without (its IPv6 reaches no further than loopback) only
    // while the agent listens on `[::1]:15001`.
    let has_address = pod.pod_ip6 != [0; 4];
    if (!has_address && pod.ipv6 == 0)
        || ip == LOOPBACK_V6
        || is_mesh_port(port)
        || excluded_port(&pod, port)
    {
        return ALLOW;
    }
    let orig = OrigDst {
        addr: ip,
        port,
        family: AF_INET6,
        _pad: 0,
        pod: pod.pod,
    };
    if record(&ctx, &orig) {
        write_user_ip6(
            ctx.sock_addr,
            if has_address {
                pod.pod_ip6
            } else {
                LOOPBACK_V6
            },
        );
        sa.user_port = u32::from(ports::OUTBOUND.to_be());
        count(pod.pod, true);
    }
    ALLOW
}

#[inline(always)]
fn should_capture_v4(pod: &PodCapture, ip: u32, port: u16) -> bool {
    if is_loopback_v4(ip) || is_mesh_port(port) || excluded_port(pod, port) {
        return false;
    }
    let mut i = 0;
    while i < pod.exclude_cidrs.len() {
        if (i as u32) < pod.exclude_cidr_count && pod.exclude_cidrs[i].contains(ip) {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn excluded_port(pod: &PodCapture, port: u16) -> bool {
    let mut i = 0;
    while i < pod.exclude_ports.len() {
        if (i as u32) < pod.exclude_port_count && pod.exclude_ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Keeps the original destination under the socket's cookie. When the map refuses the
/// entry the connection goes out uncaptured rather than failing.
#[inline(always)]
fn record(ctx: &SockAddrContext, orig: &OrigDst) -> bool {
    // SAFETY: `ctx` is the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ORIG_DST_BY_COOKIE.insert(&cookie, orig, 0).is_ok()
}

#[inline(always)]
fn count(pod: u64, captured: bool) {
    if let Some(stats) = POD_STATS.get_ptr_mut(&pod) {
        // SAFETY: the pointer comes from a map lookup and is valid for this run; two CPUs
        // racing may lose an increment, which counters tolerate.
        unsafe {
            if captured {
                (*stats).captured += 1;
            } else {
                (*stats).connects += 1;
            }
        }
    }
}
