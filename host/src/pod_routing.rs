//! Routing inside a pod's network namespace that lets the agent connect to the application
//! from the original client's address.
//!
//! The agent hands inbound connections to the application from a socket in the pod's network
//! namespace that has `IP_TRANSPARENT` set and is bound to the client's IP, so the application
//! sees the real peer (as Istio's ztunnel does in in-pod mode). Sending from a foreign address
//! is the easy half; the application's replies are addressed to that foreign address, and the
//! pod's ordinary routes would send them out of `eth0`, where they are lost. Three things,
//! all local to the pod's namespace, bring them back to the agent's socket instead:
//!
//! - the agent's socket carries `SO_MARK`, and `net.ipv4.tcp_fwmark_accept=1` makes the
//!   application's accepted socket inherit the mark of the SYN that created it, so every
//!   packet the application sends on that connection (the SYN-ACK included) is marked too;
//! - a policy rule sends marked packets to a dedicated table;
//! - that table holds `local 0.0.0.0/0 dev lo`, which declares every destination local, so the
//!   replies are delivered to the socket bound to the client's address instead of routed.
//!
//! IPv6 takes the same three: the rule and the route (`local ::/0 dev lo`) exist per family
//! and are installed for each family the pod has an address of ([`IpFamily`]);
//! `tcp_fwmark_accept` lives under `net.ipv4` but governs IPv6 TCP sockets as well.
//!
//! Unmarked traffic never consults the table, and a mark only reaches the application's
//! sockets through the agent's SYNs, so the pod's own connections are untouched. Marks and
//! `ip rule` do this without iptables: no rule set to own or reconcile against whatever else
//! in the pod (a CNI, another mesh) edits the netfilter tables, and nothing that needs the
//! `iptables` binary or netfilter modules present.
//!
//! Everything here acts on the network namespace of the calling thread; enter the pod's with
//! [`super::netns::run_in_netns`] first. Requests go over raw rtnetlink because that is the
//! whole of what is needed and it avoids spawning `ip` per pod.
use super::sockopt::set_int_option;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Per network namespace; opened by the calling thread, so it names that thread's namespace.
const FWMARK_ACCEPT: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";

// linux/fib_rules.h, which libc does not carry.
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;

/// include/net/flow.h: the loopback device is registered first in every network namespace,
/// so its index is always 1, and looking it up by name would only add a failure mode.
const LOOPBACK_IFINDEX: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
/// `struct rtmsg` and `struct fib_rule_hdr` are both 12 bytes.
const RTMSG_LEN: usize = 12;
/// linux/netlink.h `NLMSGERR_ATTR_MSG`: the human-readable reason in an extended ack.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The top two bits of an attribute type are flags (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The kernel answers a route request at once; a missing ack means something is badly wrong,
/// and the agent must not hang on it.
const ACK_TIMEOUT_SECS: libc::time_t = 5;

/// The address family a rule and route are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    fn af(self) -> u8 {
        match self {
            IpFamily::V4 => libc::AF_INET as u8,
            IpFamily::V6 => libc::AF_INET6 as u8,
        }
    }

    /// The `ip` command's family switch, for messages.
    fn ip_switch(self) -> &'static str {
        match self {
            IpFamily::V4 => "ip -4",
            IpFamily::V6 => "ip -6",
        }
    }

    /// The default destination, for messages.
    fn any(self) -> &'static str {
        match self {
            IpFamily::V4 => "0.0.0.0/0",
            IpFamily::V6 => "::/0",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// What the agent installs in each pod's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalDelivery {
    pub mark: u32,
    pub mask: u32,
    pub table: u32,
    pub priority: u32,
}

/// A request the kernel refused, or that it never answered.
#[derive(Debug)]
pub struct NetlinkError {
    pub errno: io::Error,
    /// The extended-ack text, when the kernel gave one ("Nexthop device is not up", ...).
    pub kernel_message: Option<String>,
}

impl NetlinkError {
    fn is(&self, errno: i32) -> bool {
        self.errno.raw_os_error() == Some(errno)
    }
}

impl From<io::Error> for NetlinkError {
    fn from(errno: io::Error) -> Self {
        Self {
            errno,
            kernel_message: None,
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.errno)?;
        if let Some(message) = &self.kernel_message {
            write!(f, " (kernel: {message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.errno)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PodRoutingError {
    #[error(
        "refusing to install local delivery {delivery:?} in the pod's network namespace: \
         {reason}; configure a different mark or table"
    )]
    Unsafe {
        delivery: LocalDelivery,
        reason: &'static str,
    },
    #[error(
        "opening an rtnetlink socket in the pod's network namespace: {source}; \
         the agent needs CAP_NET_ADMIN there"
    )]
    Socket { source: io::Error },
    #[error(
        "writing 1 to {FWMARK_ACCEPT} in the pod's network namespace (accepted connections must \
         inherit the mark of their SYN for replies to follow the policy rule): {source}; \
         the agent needs CAP_NET_ADMIN and a writable /proc/sys"
    )]
    FwmarkAccept { source: io::Error },
    #[error(
        "adding the policy rule `{} rule fwmark {:#x}/{:#x} lookup {} priority {}` in the pod's \
         network namespace: {source}; the agent needs CAP_NET_ADMIN there",
        .family.ip_switch(), .delivery.mark, .delivery.mask, .delivery.table, .delivery.priority
    )]
    AddRule {
        delivery: LocalDelivery,
        family: IpFamily,
        source: NetlinkError,
    },
    #[error(
        "removing the policy rule `{} rule fwmark {:#x}/{:#x} lookup {} priority {}` from the \
         pod's network namespace: {source}; the agent needs CAP_NET_ADMIN there",
        .family.ip_switch(), .delivery.mark, .delivery.mask, .delivery.table, .delivery.priority
    )]
    RemoveRule {
        delivery: LocalDelivery,
        family: IpFamily,
        source: NetlinkError,
    },
    #[error(
        "adding the route `local {} dev lo table {table}` in the pod's network namespace: \
         {source}; the agent needs CAP_NET_ADMIN there",
        .family.any()
    )]
    AddRoute {
        table: u32,
        family: IpFamily,
        source: NetlinkError,
    },
    #[error(
        "removing the route `local {} dev lo table {table}` from the pod's network namespace: \
         {source}; the agent needs CAP_NET_ADMIN there",
        .family.any()
    )]
    RemoveRoute {
        table: u32,
        family: IpFamily,
        source: NetlinkError,
    },
}

impl LocalDelivery {
    /// Idempotent: an existing identical rule/route is fine (EEXIST is success).
    /// 1. writes "1" to /proc/sys/net/ipv4/tcp_fwmark_accept (per-netns; opened by this
    ///    thread, so it is this thread's netns; it applies to IPv6 TCP as well),
    /// 2. adds the `family` policy rule `fwmark mark/mask lookup table priority priority`
    ///    (RTM_NEWRULE, AF_INET or AF_INET6),
    /// 3. adds the route `local 0.0.0.0/0 dev lo table <table>` (`local ::/0` for IPv6;
    ///    RTM_NEWROUTE, rtm_type RTN_LOCAL, scope host, RTA_OIF = loopback ifindex 1,
    ///    RTA_TABLE for tables > 255).
    ///
    /// For IPv4 `lo` need not be up yet: a host-scoped route is accepted on a down device and
    /// starts delivering once `lo` comes up. The kernel refuses an IPv6 route on a down device
    /// (ENETDOWN, "Nexthop device is not up"), so IPv6 needs the pod's `lo` up, as it is
    /// once the pod has an address.
    ///
    /// The kernel reports EEXIST for the route whenever the table already has a default route
    /// of any kind, so a table shared with something else would go unnoticed here; the table
    /// must be reserved for the agent.
    pub fn install(&self, family: IpFamily) -> Result<(), PodRoutingError> {
        self.check()?;
        enable_fwmark_accept().map_err(|source| PodRoutingError::FwmarkAccept { source })?;
        let mut socket =
            RouteSocket::open().map_err(|source| PodRoutingError::Socket { source })?;
        // EXCL makes the kernel compare against existing entries: without it, a second
        // RTM_NEWRULE appends a duplicate rule instead of failing.
        let create = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        match socket.request(libc::RTM_NEWRULE, create, &self.rule_message(family)) {
            Err(e) if !e.is(libc::EEXIST) => {
                return Err(PodRoutingError::AddRule {
                    delivery: *self,
                    family,
                    source: e,
                });
            }
            _ => {}
        }
        let route = self.route_message(family, libc::RTPROT_STATIC);
        match socket.request(libc::RTM_NEWROUTE, create, &route) {
            Err(e) if !e.is(libc::EEXIST) => Err(PodRoutingError::AddRoute {
                table: self.table,
                family,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes the rule and the route (ENOENT/ESRCH is success); leaves the sysctl (harmless:
    /// only marked SYNs carry a mark into accepted sockets).
    pub fn remove(&self, family: IpFamily) -> Result<(), PodRoutingError> {
        self.check()?;
        let mut socket =
            RouteSocket::open().map_err(|source| PodRoutingError::Socket { source })?;
        // Both are attempted even when the first fails, so that one failure does not leave
        // the other entry behind as well.
        let rule = match socket.request(libc::RTM_DELRULE, 0, &self.rule_message(family)) {
            Err(e) if !e.is(libc::ENOENT) => Err(PodRoutingError::RemoveRule {
                delivery: *self,
                family,
                source: e,
            }),
            _ => Ok(()),
        };
        // Protocol 0 matches a route of any origin, like the EEXIST that install accepts. A
        // missing route is ESRCH for IPv4, ENOENT for IPv6.
        let route = match socket.request(libc::RTM_DELROUTE, 0, &self.route_message(family, 0)) {
            Err(e) if !e.is(libc::ESRCH) && !e.is(libc::ENOENT) => {
                Err(PodRoutingError::RemoveRoute {
                    table: self.table,
                    family,
                    source: e,
                })
            }
            _ => Ok(()),
        };
        rule.and(route)
    }

    /// Refuses the values that would deliver all of the pod's traffic to itself.
    fn check(&self) -> Result<(), PodRoutingError> {
        let reason = if self.mark & self.mask == 0 {
            "the rule would match every unmarked packet"
        } else if matches!(self.table, 0 | 253..=255) {
            // 0 is read as "main" by the kernel when adding a route.
            "a local default route in the kernel's own unspec/default/main/local table \
             would capture all of the pod's traffic"
        } else {
            return Ok(());
        };
        Err(PodRoutingError::Unsafe {
            delivery: *self,
            reason,
        })
    }

    /// The table as the 8-bit header field; larger tables only fit in the attribute, which
    /// the kernel prefers when present.
    fn header_table(&self) -> u8 {
        u8::try_from(self.table).unwrap_or(libc::RT_TABLE_UNSPEC)
    }

    fn rule_message(&self, family: IpFamily) -> Vec<u8> {
        let mut body = Vec::with_capacity(RTMSG_LEN + 4 * 8);
        // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags.
        body.extend_from_slice(&[
            family.af(),
            0,
            0,
            0,
            self.header_table(),
            0,
            0,
            FR_ACT_TO_TBL,
        ]);
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attribute(&mut body, FRA_PRIORITY, &self.priority.to_ne_bytes());
        push_attribute(&mut body, FRA_FWMARK, &self.mark.to_ne_bytes());
        push_attribute(&mut body, FRA_FWMASK, &self.mask.to_ne_bytes());
        push_attribute(&mut body, FRA_TABLE, &self.table.to_ne_bytes());
        body
    }

    fn route_message(&self, family: IpFamily, protocol: u8) -> Vec<u8> {
        let mut body = Vec::with_capacity(RTMSG_LEN + 2 * 8);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        // A zero dst_len with no RTA_DST is 0.0.0.0/0 (::/0).
        body.extend_from_slice(&[
            family.af(),
            0,
            0,
            0,
            self.header_table(),
            protocol,
            libc::RT_SCOPE_HOST,
            libc::RTN_LOCAL,
        ]);
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attribute(&mut body, libc::RTA_TABLE, &self.table.to_ne_bytes());
        push_attribute(&mut body, libc::RTA_OIF, &LOOPBACK_IFINDEX.to_ne_bytes());
        body
    }
}

fn enable_fwmark_accept() -> io::Result<()> {
    // In a container /proc/sys is usually a read-only mount; `sysctl::write` gets past it.
    super::sysctl::write(std::path::Path::new(FWMARK_ACCEPT), "1")
}

// linux/net_namespace.h and linux/rtnetlink.h: network namespace ids.
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// `NETNSA_NSID_NOT_ASSIGNED`: the namespace has no id for the peer yet.
const NSID_NOT_ASSIGNED: i32 = -1;

/// The id the calling thread's network namespace gives `peer` (another network namespace,
/// by a descriptor of it), assigning one when it has none yet, as `ip netns set … auto`
/// does. eBPF helpers that look sockets up in another namespace (`bpf_sk_lookup_tcp`) name
/// it by this id, relative to the namespace the program runs in. A veth pair across two
/// namespaces has usually made one already (`ip link` shows it as `link-netnsid`).
pub fn netns_id(peer: BorrowedFd<'_>) -> Result<u32, NetlinkError> {
    let mut socket = RouteSocket::open()?;
    if let Some(id) = get_netns_id(&mut socket, peer)? {
        return Ok(id);
    }
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    push_attribute(
        &mut body,
        NETNSA_FD,
        &(peer.as_raw_fd() as u32).to_ne_bytes(),
    );
    push_attribute(&mut body, NETNSA_NSID, &NSID_NOT_ASSIGNED.to_ne_bytes());
    match socket.request(RTM_NEWNSID, 0, &body) {
        // Assigned meanwhile by someone else: the id stands either way.
        Err(e) if e.is(libc::EEXIST) => {}
        other => other?,
    }
    get_netns_id(&mut socket, peer)?.ok_or_else(|| {
        NetlinkError::from(io::Error::other(
            "the kernel assigned no id to the namespace it was asked to",
        ))
    })
}

/// `RTM_GETNSID`: the id of `peer`, or `None` when it has none.
fn get_netns_id(
    socket: &mut RouteSocket,
    peer: BorrowedFd<'_>,
) -> Result<Option<u32>, NetlinkError> {
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    push_attribute(
        &mut body,
        NETNSA_FD,
        &(peer.as_raw_fd() as u32).to_ne_bytes(),
    );
    let seq = socket.send(RTM_GETNSID, 0, &body)?;
    loop {
        let len = socket.recv()?;
        for message in messages(&socket.buf[..len])? {
            if message.seq != seq {
                continue;
            }
            if message.kind == libc::NLMSG_ERROR as u16 {
                ack_result(&message)?;
                continue;
            }
            if message.kind != RTM_NEWNSID {
                continue;
            }
            let id = attributes(message.payload.get(4..).unwrap_or_default())
                .into_iter()
                .find(|(kind, _)| *kind == NETNSA_NSID)
                .and_then(|(_, value)| ne_u32(value, 0))
                .map(|id| id as i32);
            return Ok(id.and_then(|id| u32::try_from(id).ok()));
        }
    }
}

/// The names of the calling thread's network interfaces that hold one of `ips`, without
/// duplicates: the pod's own interfaces (its `eth0`), where traffic from the node comes in.
pub fn interfaces_holding(ips: &[std::net::IpAddr]) -> io::Result<Vec<String>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list it allocated, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed; its
        // address, when present, is a sockaddr of the family it names, and its name a C string.
        let (address, name) = unsafe {
            let node = &*entry;
            entry = node.ifa_next;
            let address = if node.ifa_addr.is_null() {
                None
            } else {
                match i32::from((*node.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(node.ifa_addr as *const libc::sockaddr_in);
                        Some(std::net::IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(node.ifa_addr as *const libc::sockaddr_in6);
                        Some(std::net::IpAddr::from(sin6.sin6_addr.s6_addr))
                    }
                    _ => None,
                }
            };
            let name = std::ffi::CStr::from_ptr(node.ifa_name)
                .to_string_lossy()
                .into_owned();
            (address, name)
        };
        if address.is_some_and(|a| ips.contains(&a)) && !names.contains(&name) {
            names.push(name);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(names)
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends one netlink attribute, padded so the next one starts 4-byte aligned.
fn push_attribute(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    // Attributes here are a few bytes; the u16 length field cannot overflow.
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + align4(len) - len, 0);
}

fn ne_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The attributes in `bytes`, as (type without flag bits, payload); stops at the first
/// malformed one.
fn attributes(bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) = (ne_u16(bytes, at), ne_u16(bytes, at + 2)) {
        let len = usize::from(len);
        let Some(payload) = bytes.get(at + 4..at + len.max(4)) else {
            break;
        };
        if len < 4 {
            break;
        }
        found.push((kind & NLA_TYPE_MASK, payload));
        at += align4(len);
    }
    found
}

/// One netlink message out of a received datagram.
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn messages(buf: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message");
    let mut found = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = ne_u32(buf, at).ok_or_else(malformed)? as usize;
        if len < NLMSG_HDRLEN {
            return Err(malformed());
        }
        let whole = buf.get(at..at + len).ok_or_else(malformed)?;
        found.push(Message {
            kind: ne_u16(whole, 4).ok_or_else(malformed)?,
            flags: ne_u16(whole, 6).ok_or_else(malformed)?,
            seq: ne_u32(whole, 8).ok_or_else(malformed)?,
            payload: &whole[NLMSG_HDRLEN..],
        });
        at += align4(len);
    }
    Ok(found)
}

/// The outcome carried by an NLMSG_ERROR payload: `struct nlmsgerr` (errno, then the
/// request's header, then its body unless capped), then extended-ack attributes.
fn ack_result(message: &Message<'_>) -> Result<(), NetlinkError> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "truncated netlink ack");
    let error = ne_u32(message.payload, 0).ok_or_else(malformed)? as i32;
    if error == 0 {
        return Ok(());
    }
    let mut kernel_message = None;
    if message.flags & libc::NLM_F_ACK_TLVS as u16 != 0 {
        let echoed = if message.flags & libc::NLM_F_CAPPED as u16 != 0 {
            NLMSG_HDRLEN
        } else {
            ne_u32(message.payload, 4).ok_or_else(malformed)? as usize
        };
        let tlvs = message
            .payload
            .get(4 + align4(echoed)..)
            .unwrap_or_default();
        kernel_message = attributes(tlvs)
            .into_iter()
            .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
            .map(|(_, text)| {
                let text = text.split(|b| *b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            });
    }
    Err(NetlinkError {
        errno: io::Error::from_raw_os_error(-error),
        kernel_message,
    })
}

/// An rtnetlink socket in the calling thread's network namespace.
struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: a plain syscall on constant arguments; the descriptor is owned just below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned by socket(2) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Extended acks only improve error messages and are missing on old kernels, so a
        // refusal is not an error. Capping keeps acks small by not echoing the request.
        let _ = set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let _ = set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let timeout = libc::timeval {
            tv_sec: ACK_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: `timeout` outlives the call and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            seq: 0,
            // Dump replies are sized to at most 32 KiB per datagram; anything larger would be
            // silently truncated.
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends one request with `flags` on top of REQUEST and returns its sequence number.
    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + body.len();
        let mut msg = Vec::with_capacity(len);
        // Requests here are a few dozen bytes.
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        // Port 0: the kernel fills in the autobound port id.
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // An unbound, unconnected netlink socket sends to the kernel.
        // SAFETY: `msg` is valid for reads of its length for the duration of the call.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short send on a netlink socket",
            ));
        }
        Ok(self.seq)
    }

    /// Receives one datagram into the socket's buffer and returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length for the duration of the call.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if got >= 0 {
                return Ok(got as usize);
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {ACK_TIMEOUT_SECS} s"),
                    ));
                }
                _ => return Err(error),
            }
        }
    }

    /// Sends one request asking for an ack and returns the kernel's verdict on it.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> Result<(), NetlinkError> {
        let seq = self.send(kind, flags | libc::NLM_F_ACK as u16, body)?;
        loop {
            let len = self.recv()?;
            for message in messages(&self.buf[..len])? {
                if message.seq == seq && message.kind == libc::NLMSG_ERROR as u16 {
                    return ack_result(&message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    const DELIVERY: LocalDelivery = LocalDelivery {
        mark: 0x539,
        mask: 0xfff,
        table: 100,
        priority: 100,
    };
    /// A table only reachable through RTA_TABLE / FRA_TABLE.
    const WIDE_TABLE: LocalDelivery = LocalDelivery {
        mark: 0x10000,
        mask: 0x10000,
        table: 1000,
        priority: 200,
    };
    const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];
    /// linux/if_addr.h, which libc does not carry for Linux.
    const IFA_F_NODAD: u8 = 0x02;

    /// The pod's own address, on lo so that it is an ordinary local address.
    fn server_ip(family: IpFamily) -> IpAddr {
        match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2)),
        }
    }

    /// The original client, not an address of the namespace.
    fn client_ip(family: IpFamily) -> IpAddr {
        match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, 77, 0, 5)),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 5)),
        }
    }

    /// Runs `work` on a thread of its own in a new, empty network namespace, which goes away
    /// with the thread: no cleanup, and tests cannot see each other's routes.
    fn in_fresh_netns<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let thread = std::thread::spawn(move || {
            // SAFETY: only the calling thread's namespace changes, and it is this new thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET) (these tests run as root): {}",
                io::Error::last_os_error()
            );
            work()
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Every message of a dump of `kind` for `family`.
    fn dump(kind: u16, family: IpFamily) -> Vec<(u16, Vec<u8>)> {
        let mut socket = RouteSocket::open().expect("rtnetlink socket");
        // Rule and route dumps both start with a 12-byte header whose first byte is the family.
        let mut header = [0u8; RTMSG_LEN];
        header[0] = family.af();
        let seq = socket
            .send(kind, libc::NLM_F_DUMP as u16, &header)
            .expect("sending the dump request");
        let mut found = Vec::new();
        loop {
            let len = socket.recv().expect("receiving the dump");
            for message in messages(&socket.buf[..len]).expect("parsing the dump") {
                if message.seq != seq {
                    continue;
                }
                if message.kind == libc::NLMSG_DONE as u16 {
                    return found;
                }
                if message.kind == libc::NLMSG_ERROR as u16 {
                    ack_result(&message).expect("the dump failed");
                }
                found.push((message.kind, message.payload.to_vec()));
            }
        }
    }

    fn attribute_u32(payload: &[u8], kind: u16) -> Option<u32> {
        attributes(&payload[RTMSG_LEN..])
            .into_iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, value)| ne_u32(value, 0))
    }

    fn rules_like(delivery: &LocalDelivery, family: IpFamily) -> usize {
        dump(libc::RTM_GETRULE, family)
            .iter()
            .filter(|(kind, rule)| {
                *kind == libc::RTM_NEWRULE
                    && rule[0] == family.af()
                    && rule[7] == FR_ACT_TO_TBL
                    && attribute_u32(rule, FRA_FWMARK) == Some(delivery.mark)
                    && attribute_u32(rule, FRA_FWMASK) == Some(delivery.mask)
                    && attribute_u32(rule, FRA_TABLE) == Some(delivery.table)
                    && attribute_u32(rule, FRA_PRIORITY) == Some(delivery.priority)
            })
            .count()
    }

    /// Routes of any kind in the table, so a stray extra one is noticed too.
    fn routes_in(table: u32, family: IpFamily) -> Vec<Vec<u8>> {
        dump(libc::RTM_GETROUTE, family)
            .into_iter()
            .filter(|(kind, route)| {
                *kind == libc::RTM_NEWROUTE
                    && route[0] == family.af()
                    && attribute_u32(route, libc::RTA_TABLE) == Some(table)
            })
            .map(|(_, route)| route)
            .collect()
    }

    /// (IPv6 routes are reported with universe scope whatever was asked: IPv6 has no route
    /// scopes.)
    fn is_local_default_via_lo(route: &[u8]) -> bool {
        route[1] == 0
            && (route[0] == libc::AF_INET6 as u8 || route[6] == libc::RT_SCOPE_HOST)
            && route[7] == libc::RTN_LOCAL
            && attribute_u32(route, libc::RTA_OIF) == Some(LOOPBACK_IFINDEX)
    }

    fn fwmark_accept() -> String {
        std::fs::read_to_string(FWMARK_ACCEPT)
            .expect("reading tcp_fwmark_accept")
            .trim()
            .to_owned()
    }

    fn bring_lo_up() {
        let mut socket = RouteSocket::open().expect("rtnetlink socket");
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut link = vec![libc::AF_UNSPEC as u8, 0];
        link.extend_from_slice(&0u16.to_ne_bytes());
        link.extend_from_slice(&(LOOPBACK_IFINDEX as i32).to_ne_bytes());
        link.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        link.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        socket
            .request(libc::RTM_NEWLINK, 0, &link)
            .expect("bringing lo up");
    }

    fn add_address_to_lo(address: IpAddr) {
        let mut socket = RouteSocket::open().expect("rtnetlink socket");
        let (family, prefix, octets) = match address {
            IpAddr::V4(v4) => (libc::AF_INET as u8, 32, v4.octets().to_vec()),
            IpAddr::V6(v6) => (libc::AF_INET6 as u8, 128, v6.octets().to_vec()),
        };
        // struct ifaddrmsg: family, prefixlen, flags, scope, index. IFA_F_NODAD: usable at
        // once, not tentative while duplicate address detection runs.
        let mut addr = vec![family, prefix, IFA_F_NODAD, libc::RT_SCOPE_UNIVERSE];
        addr.extend_from_slice(&LOOPBACK_IFINDEX.to_ne_bytes());
        push_attribute(&mut addr, libc::IFA_LOCAL, &octets);
        push_attribute(&mut addr, libc::IFA_ADDRESS, &octets);
        let create = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        socket
            .request(libc::RTM_NEWADDR, create, &addr)
            .expect("adding the address to lo");
    }

    /// `addr` as a socket address for bind(2)/connect(2), with its length.
    fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }

    fn check(rc: libc::c_int, what: &str) {
        assert_eq!(rc, 0, "{what}: {}", io::Error::last_os_error());
    }

    /// Connects to `target` the way the agent does, from `source` with `mark`; `None` when
    /// the handshake has not completed within `within`.
    fn transparent_connect(
        source: IpAddr,
        mark: u32,
        target: SocketAddr,
        within: Duration,
    ) -> Option<TcpStream> {
        let (domain, level, option) = match source {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_IP, libc::IP_TRANSPARENT),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT),
        };
        // SAFETY: a plain syscall on constant arguments; the descriptor is owned just below.
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a descriptor just returned by socket(2) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int_option(&fd, level, option, 1).expect("IP(V6)_TRANSPARENT");
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int).expect("SO_MARK");
        let (local, len) = sockaddr(SocketAddr::new(source, 0));
        // SAFETY: `local` outlives the call and `len` is the size of the address in it.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), len) };
        check(rc, "binding the transparent socket");
        let (remote, len) = sockaddr(target);
        // SAFETY: `remote` outlives the call and `len` is the size of the address in it.
        let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), len) };
        let error = io::Error::last_os_error();
        assert!(
            rc == 0 || error.raw_os_error() == Some(libc::EINPROGRESS),
            "connect: {error}"
        );
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&raw mut poll, 1, within.as_millis() as libc::c_int) };
        assert!(ready >= 0, "poll: {}", io::Error::last_os_error());
        if ready == 0 {
            return None;
        }
        let mut error: libc::c_int = 0;
        let mut error_len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `error` and `error_len` outlive the call and describe an int-sized buffer.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut error).cast(),
                &raw mut error_len,
            )
        };
        check(rc, "SO_ERROR");
        assert_eq!(
            error,
            0,
            "connect failed: {}",
            io::Error::from_raw_os_error(error)
        );
        let stream = TcpStream::from(fd);
        stream.set_nonblocking(false).expect("blocking mode");
        Some(stream)
    }

    fn accept_within(listener: &TcpListener, within: Duration) -> (TcpStream, SocketAddr) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let deadline = Instant::now() + within;
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false).expect("blocking mode");
                    return (stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "nothing to accept within {within:?}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    fn exchange(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
        to.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        from.write_all(bytes).expect("write");
        let mut got = vec![0; bytes.len()];
        to.read_exact(&mut got).expect("read");
        assert_eq!(got, bytes);
    }

    /// A listener on the pod's address, with lo up as it is in every running pod.
    fn listening_pod(family: IpFamily) -> TcpListener {
        bring_lo_up();
        add_address_to_lo(server_ip(family));
        TcpListener::bind((server_ip(family), 0)).expect("listening on the pod's address")
    }

    #[test]
    fn install_is_idempotent_and_adds_one_rule_and_route() {
        for delivery in [DELIVERY, WIDE_TABLE] {
            for family in FAMILIES {
                in_fresh_netns(move || {
                    // For IPv4 lo stays down: a host-scoped route does not need its device up.
                    if family == IpFamily::V6 {
                        bring_lo_up();
                    }
                    delivery.install(family).expect("first install");
                    delivery.install(family).expect("second install");
                    assert_eq!(
                        rules_like(&delivery, family),
                        1,
                        "{family} rules for {delivery:?}"
                    );
                    let routes = routes_in(delivery.table, family);
                    assert_eq!(routes.len(), 1, "{family} routes in {}", delivery.table);
                    assert!(is_local_default_via_lo(&routes[0]));
                    assert_eq!(fwmark_accept(), "1");
                    let other = match family {
                        IpFamily::V4 => IpFamily::V6,
                        IpFamily::V6 => IpFamily::V4,
                    };
                    assert_eq!(rules_like(&delivery, other), 0, "only {family}");
                    assert!(routes_in(delivery.table, other).is_empty(), "only {family}");
                });
            }
        }
    }

    #[test]
    fn remove_is_idempotent_and_removes_rule_and_route() {
        for delivery in [DELIVERY, WIDE_TABLE] {
            for family in FAMILIES {
                in_fresh_netns(move || {
                    bring_lo_up();
                    for installed in FAMILIES {
                        delivery.install(installed).expect("install");
                    }
                    delivery.remove(family).expect("first remove");
                    delivery.remove(family).expect("second remove");
                    assert_eq!(rules_like(&delivery, family), 0, "{family} {delivery:?}");
                    assert!(routes_in(delivery.table, family).is_empty());
                    let other = match family {
                        IpFamily::V4 => IpFamily::V6,
                        IpFamily::V6 => IpFamily::V4,
                    };
                    assert_eq!(rules_like(&delivery, other), 1, "the other family stays");
                });
            }
        }
    }

    #[test]
    fn remove_without_install_succeeds() {
        for family in FAMILIES {
            in_fresh_netns(move || DELIVERY.remove(family).expect("remove"));
        }
    }

    #[test]
    fn transparent_connect_reaches_listener_from_client_address() {
        for family in FAMILIES {
            in_fresh_netns(move || {
                // For IPv4 before lo is up, as when the agent enrolls a pod whose namespace
                // is still being set up: the route needs no live device to be added, and
                // works once lo is up. IPv6 needs lo up first.
                if family == IpFamily::V6 {
                    bring_lo_up();
                }
                DELIVERY.install(family).expect("install");
                let listener = listening_pod(family);
                let target = listener.local_addr().expect("listener address");
                let mut client = transparent_connect(
                    client_ip(family),
                    DELIVERY.mark,
                    target,
                    Duration::from_secs(2),
                )
                .expect("the handshake completes with local delivery installed");
                let (mut server, peer) = accept_within(&listener, Duration::from_secs(2));
                assert_eq!(peer.ip(), client_ip(family));
                assert_eq!(
                    peer,
                    client.local_addr().expect("client address"),
                    "the application sees exactly the transparent socket's address"
                );
                exchange(&mut client, &mut server, b"request");
                exchange(&mut server, &mut client, b"response");
            });
        }
    }

    #[test]
    fn transparent_connect_stalls_without_the_rule() {
        for family in FAMILIES {
            in_fresh_netns(move || {
                let listener = listening_pod(family);
                DELIVERY.install(family).expect("install");
                DELIVERY.remove(family).expect("remove");
                let target = listener.local_addr().expect("listener address");
                let connected = transparent_connect(
                    client_ip(family),
                    DELIVERY.mark,
                    target,
                    Duration::from_secs(1),
                );
                assert!(
                    connected.is_none(),
                    "{family} connected without local delivery"
                );
            });
        }
    }

    #[test]
    fn the_ipv6_route_needs_lo_up_and_says_so() {
        in_fresh_netns(|| {
            let error = DELIVERY
                .install(IpFamily::V6)
                .expect_err("the kernel refuses an IPv6 route on a down device");
            assert!(
                error.to_string().contains("local ::/0 dev lo"),
                "the error names the route: {error}"
            );
        });
    }

    #[test]
    fn an_ipv6_connect_needs_the_ipv6_rule() {
        in_fresh_netns(|| {
            let listener = listening_pod(IpFamily::V6);
            DELIVERY.install(IpFamily::V4).expect("install IPv4 only");
            let target = listener.local_addr().expect("listener address");
            let connected = transparent_connect(
                client_ip(IpFamily::V6),
                DELIVERY.mark,
                target,
                Duration::from_secs(1),
            );
            assert!(connected.is_none(), "the IPv4 rule does not serve IPv6");
        });
    }

    #[test]
    fn transparent_connect_stalls_without_fwmark_accept() {
        for family in FAMILIES {
            in_fresh_netns(move || {
                let listener = listening_pod(family);
                DELIVERY.install(family).expect("install");
                std::fs::write(FWMARK_ACCEPT, "0").expect("clearing tcp_fwmark_accept");
                let target = listener.local_addr().expect("listener address");
                let connected = transparent_connect(
                    client_ip(family),
                    DELIVERY.mark,
                    target,
                    Duration::from_secs(1),
                );
                assert!(
                    connected.is_none(),
                    "{family} connected with unmarked SYN-ACKs"
                );
            });
        }
    }

    #[test]
    fn refuses_deliveries_that_capture_all_traffic() {
        let unmarked = LocalDelivery {
            mark: 0,
            ..DELIVERY
        };
        let main = LocalDelivery {
            table: 254,
            ..DELIVERY
        };
        let unspec = LocalDelivery {
            table: 0,
            ..DELIVERY
        };
        for delivery in [unmarked, main, unspec] {
            for family in FAMILIES {
                assert!(matches!(
                    delivery.install(family),
                    Err(PodRoutingError::Unsafe { .. })
                ));
            }
        }
    }

    #[test]
    fn errors_name_the_rule_and_the_kernel_reason() {
        let error = PodRoutingError::AddRule {
            delivery: DELIVERY,
            family: IpFamily::V6,
            source: NetlinkError {
                errno: io::Error::from_raw_os_error(libc::EPERM),
                kernel_message: Some("no".into()),
            },
        };
        let text = error.to_string();
        assert!(
            text.contains("ip -6 rule fwmark 0x539/0xfff lookup 100 priority 100"),
            "{text}"
        );
        assert!(text.contains("(kernel: no)"), "{text}");
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        let route = PodRoutingError::AddRoute {
            table: 100,
            family: IpFamily::V6,
            source: io::Error::from_raw_os_error(libc::EPERM).into(),
        };
        assert!(
            route.to_string().contains("local ::/0 dev lo table 100"),
            "{route}"
        );
    }

    #[test]
    fn names_another_namespace_once_and_for_good() {
        // The namespace this test starts in stands for the node, a fresh one for the pod.
        let node = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let (first, again) = in_fresh_netns(move || {
            use std::os::fd::AsFd;
            let first = netns_id(node.as_fd()).expect("an id is assigned");
            let again = netns_id(node.as_fd()).expect("and found again");
            (first, again)
        });
        assert_eq!(first, again, "the same id both times");
    }

    #[test]
    fn finds_the_interfaces_holding_addresses() {
        let names = in_fresh_netns(|| {
            let mut socket = RouteSocket::open().expect("rtnetlink socket");
            // `ip link set lo up` gives lo its 127.0.0.1 and ::1.
            let mut body = vec![0u8; 16];
            body[4..8].copy_from_slice(&(LOOPBACK_IFINDEX as i32).to_ne_bytes());
            body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
            body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
            socket.request(libc::RTM_NEWLINK, 0, &body).expect("lo up");
            let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
            let elsewhere: IpAddr = Ipv4Addr::new(10, 9, 9, 9).into();
            (
                interfaces_holding(&[loopback]).expect("listed"),
                interfaces_holding(&[elsewhere]).expect("listed"),
            )
        });
        assert_eq!(names.0, vec!["lo".to_string()]);
        assert!(names.1.is_empty(), "{:?}", names.1);
    }
}
