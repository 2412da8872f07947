//! tc ingress (tcx) on the pod's own interface, inside the pod's network namespace, for pods
//! whose containers declare kubelet probes: recognizes the node's own probe connections so
//! that `weft_inbound_lookup` lets them reach the application past the mesh (PeerAuthentication
//! STRICT, waypoints), as Istio ambient passes the kubelet's probes.
//!
//! For a TCP SYN (no ACK) to one of the pod's probe targets (`PROBE_TARGETS`: a pod address
//! and a port a readiness, liveness or startup probe names), it looks the connection up in the
//! *node's* network namespace with `bpf_sk_lookup_tcp`, as the node would see the reply: a
//! socket of the node in `SYN_SENT` with exactly this 4-tuple is the node's own connection
//! (the kubelet's), and the 4-tuple is filed in `NODE_CONNECTS` with the time. Nothing else
//! is filed, and every packet goes on unchanged (`TCX_NEXT`, so programs after this one
//! still run).
//!
//! This is the in-kernel equivalent of Istio's `-m owner --socket-exists` (`cni/pkg/iptables`,
//! which then SNATs the node's own packets to 169.254.7.127 and accepts that source in the
//! pod), decided on the pod's side, without a rule on the node:
//! - a connection the node only forwards or NATs carries the node's address too (kube-proxy
//!   masquerades NodePort and hairpin traffic to the address of the interface towards the
//!   pod, the very address the kubelet's connections have), but no socket of the node sent
//!   it: not filed, captured as any other plaintext;
//! - a pod forging the node's address finds no socket either; were it to guess a 4-tuple the
//!   node is connecting with at that moment, the pod's answer still goes to the node (the
//!   address is the node's, and the pod routes everything through the node), which owns the
//!   handshake: the forger never sees the SYN-ACK, and an unexpected one makes the node reset
//!   it. For IPv4 the node's IP layer does not even forward a packet arriving with one of
//!   its own addresses as source (a "martian"); IPv6 forwards it, and the reply argument
//!   alone holds.
//! - filed 4-tuples are honoured for `NODE_CONNECT_TTL_NS` only, so a later connection that
//!   happens to reuse a node probe's 4-tuple is not passed.
use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{
    bindings::{
        BPF_TCP_SYN_SENT, bpf_hdr_start_off::BPF_HDR_START_NET, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_sk_lookup_tcp, bpf_sk_release, bpf_skb_load_bytes_relative},
    macros::classifier,
    programs::TcContext,
};
use weft_ebpf_common::{AF_INET, AF_INET6, ProbeTarget, TransparentConnect, TransparentConnect6};

use crate::maps::{NODE_CONNECTS, NODE_CONNECTS6, PROBE_TARGETS};

/// tcx's "continue with the next program" (`TC_ACT_UNSPEC` for cls_bpf).
const TCX_NEXT: i32 = -1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Header {
    version_ihl: u8,
    tos: u8,
    total_length: u16,
    id: u16,
    fragment: u16,
    ttl: u8,
    protocol: u8,
    checksum: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Header {
    version_class_flow: u32,
    payload_length: u16,
    next_header: u8,
    hop_limit: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

/// The TCP header up to the flags (ports in network order).
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHeader {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    offset: u8,
    flags: u8,
    window: u16,
}

#[classifier]
pub fn weft_node_probe(ctx: TcContext) -> i32 {
    // SAFETY: the kernel passes a valid __sk_buff for the program's duration.
    let protocol = unsafe { (*ctx.skb.skb).protocol } as u16;
    match u16::from_be(protocol) {
        ETH_P_IP => {
            let _ = file_v4(&ctx);
        }
        ETH_P_IPV6 => {
            let _ = file_v6(&ctx);
        }
        _ => {}
    }
    TCX_NEXT
}

/// Reads a `T` at `offset` from the start of the network header (whatever the link layer).
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: u32) -> Option<T> {
    let mut value = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `value`, a stack buffer
    // of exactly that size, and reports failure instead of writing part of it.
    let loaded = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            offset,
            value.as_mut_ptr() as *mut c_void,
            size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    if loaded == 0 {
        // SAFETY: the helper filled every byte; T is plain data valid for any bytes.
        Some(unsafe { value.assume_init() })
    } else {
        None
    }
}

/// Whether the node's network namespace (`netns_id`, as the pod's namespace names it) has
/// a socket in SYN_SENT for `tuple` (written as the node receives: the pod's side as source).
#[inline(always)]
fn node_is_connecting(
    ctx: &TcContext,
    tuple: &mut bpf_sock_tuple,
    size: usize,
    netns_id: u32,
) -> bool {
    // SAFETY: `tuple` is a stack value of at least `size` bytes; the helper returns a
    // referenced socket or null, and every non-null one is released below.
    let sk = unsafe {
        bpf_sk_lookup_tcp(
            ctx.skb.skb as *mut c_void,
            tuple as *mut bpf_sock_tuple,
            size as u32,
            u64::from(netns_id),
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is a valid socket reference until released.
    let state = unsafe { (*sk).state };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk as *mut c_void) };
    state == BPF_TCP_SYN_SENT
}

#[inline(always)]
fn file_v4(ctx: &TcContext) -> Option<()> {
    let ip: Ipv4Header = load(ctx, 0)?;
    // Fragments (offset or more-fragments set) never carry a SYN of the kubelet's.
    if ip.version_ihl >> 4 != 4
        || ip.protocol != IPPROTO_TCP
        || u16::from_be(ip.fragment) & 0x3fff != 0
    {
        return None;
    }
    let tcp: TcpHeader = load(ctx, u32::from(ip.version_ihl & 0x0f) * 4)?;
    if tcp.flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    let local_port = u16::from_be(tcp.dport);
    let target = ProbeTarget {
        addr: [ip.daddr, 0, 0, 0],
        port: local_port,
        family: AF_INET,
    };
    let node = PROBE_TARGETS.get_ptr(target)?;
    // SAFETY: a pointer into the map's value, valid during the program.
    let netns_id = unsafe { (*node).netns_id };
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: ip.daddr,
                daddr: ip.saddr,
                sport: tcp.dport,
                dport: tcp.sport,
            },
        },
    };
    let size = size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>();
    if !node_is_connecting(ctx, &mut tuple, size, netns_id) {
        return None;
    }
    let key = TransparentConnect {
        remote_ip: ip.saddr,
        local_ip: ip.daddr,
        remote_port: u16::from_be(tcp.sport),
        local_port,
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    NODE_CONNECTS.insert(key, now, 0).ok()
}

#[inline(always)]
fn file_v6(ctx: &TcContext) -> Option<()> {
    let ip: Ipv6Header = load(ctx, 0)?;
    // The kubelet's SYNs carry no extension headers; anything else is not looked at.
    if ip.next_header != IPPROTO_TCP {
        return None;
    }
    let tcp: TcpHeader = load(ctx, size_of::<Ipv6Header>() as u32)?;
    if tcp.flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    let local_port = u16::from_be(tcp.dport);
    let target = ProbeTarget {
        addr: ip.daddr,
        port: local_port,
        family: AF_INET6,
    };
    let node = PROBE_TARGETS.get_ptr(target)?;
    // SAFETY: a pointer into the map's value, valid during the program.
    let netns_id = unsafe { (*node).netns_id };
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: ip.daddr,
                daddr: ip.saddr,
                sport: tcp.dport,
                dport: tcp.sport,
            },
        },
    };
    let size = size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>();
    if !node_is_connecting(ctx, &mut tuple, size, netns_id) {
        return None;
    }
    let key = TransparentConnect6 {
        remote_ip: ip.saddr,
        local_ip: ip.daddr,
        remote_port: u16::from_be(tcp.sport),
        local_port,
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    NODE_CONNECTS6.insert(key, now, 0).ok()
}
