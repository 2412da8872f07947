//! Connecting to the application from the client's own address, so that it sees who
//! connected (as with Istio's ztunnel in-pod), not the pod's own address.
//!
//! The socket is created in the pod, marked, made transparent (IP_TRANSPARENT or
//! IPV6_TRANSPARENT: it may be bound to an address that is not the pod's) and bound to the
//! client's address. The pod's policy rule of that family (installed at enrollment:
//! `weft_core::host::pod_routing`) delivers the application's marked replies locally, to
//! this socket. While the SYN is on its way the 4-tuple sits in TRANSPARENT_CONNECTS (IPv4)
//! or TRANSPARENT_CONNECTS6 (IPv6), so the pod's sk_lookup program lets it reach the
//! application instead of capturing it as a client's.
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::net::TcpSocket;
use weft_core::host::netns_sockets::NetnsSockets;
use weft_core::host::sockopt::set_int_option;
use weft_ebpf_common::{TRANSPARENT_MARK, TransparentConnect, TransparentConnect6, ip6_words};

pub type TransparentConnectsMap = Arc<Mutex<BpfHashMap<MapData, TransparentConnect, u8>>>;
pub type TransparentConnects6Map = Arc<Mutex<BpfHashMap<MapData, TransparentConnect6, u8>>>;

/// Both families' maps.
#[derive(Clone)]
pub struct TransparentConnects {
    pub v4: TransparentConnectsMap,
    pub v6: TransparentConnects6Map,
}

/// A pod whose namespace delivers marked replies locally, for the families whose rule is
/// installed: connections to its application can carry the client's address.
#[derive(Clone)]
pub struct Transparent {
    pub connects: TransparentConnects,
    pub v4: bool,
    pub v6: bool,
}

/// The key that lets one connection from `client` (bound to `client_port`) to `app` pass the
/// pod's sk_lookup program; `None` when the two are not of one family.
pub fn key_for(client: IpAddr, client_port: u16, app: SocketAddr) -> Option<Key> {
    match (client, app.ip()) {
        (IpAddr::V4(client), IpAddr::V4(local)) => Some(Key::V4(TransparentConnect {
            remote_ip: u32::from(client).to_be(),
            local_ip: u32::from(local).to_be(),
            remote_port: client_port,
            local_port: app.port(),
        })),
        (IpAddr::V6(client), IpAddr::V6(local)) => Some(Key::V6(TransparentConnect6 {
            remote_ip: ip6_words(client.octets()),
            local_ip: ip6_words(local.octets()),
            remote_port: client_port,
            local_port: app.port(),
        })),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    V4(TransparentConnect),
    V6(TransparentConnect6),
}

impl Transparent {
    /// Whether a connection from `client` to `app` can carry the client's address: same
    /// family, and that family's rule installed.
    pub fn serves(&self, client: IpAddr, app: SocketAddr) -> bool {
        match (client, app.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => self.v4,
            (IpAddr::V6(_), IpAddr::V6(_)) => self.v6,
            _ => false,
        }
    }

    /// A socket inside the pod bound to `client`, ready to connect to `app` (the pod's own
    /// address), and its TRANSPARENT_CONNECTS(6) entry, to hold until connected.
    pub async fn prepare(
        &self,
        sockets: &NetnsSockets,
        client: IpAddr,
        app: SocketAddr,
    ) -> std::io::Result<(TcpSocket, Filed)> {
        if !self.serves(client, app) {
            return Err(std::io::Error::other(format!(
                "no local delivery in the pod for a connection from {client} to {app}"
            )));
        }
        let std_socket = sockets
            .tcp_socket(app)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (level, option) = match app {
            SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_TRANSPARENT),
            SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_TRANSPARENT),
        };
        set_int_option(&std_socket, level, option, 1)?;
        set_int_option(
            &std_socket,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            TRANSPARENT_MARK as libc::c_int,
        )?;
        let socket = TcpSocket::from_std_stream(std_socket);
        socket.set_nodelay(true)?;
        // Bound now rather than at connect(): the port must be known to file the 4-tuple
        // before the SYN leaves.
        socket.bind(SocketAddr::new(client, 0))?;
        let port = socket.local_addr()?.port();
        let key = key_for(client, port, app)
            .ok_or_else(|| std::io::Error::other("client and application differ in family"))?;
        let filed = Filed::new(self.connects.clone(), key)?;
        Ok((socket, filed))
    }
}

/// A TRANSPARENT_CONNECTS(6) entry, removed when dropped (connected, failed or cancelled).
pub struct Filed {
    maps: TransparentConnects,
    key: Key,
}

impl Filed {
    fn new(maps: TransparentConnects, key: Key) -> std::io::Result<Self> {
        let filed = match key {
            Key::V4(key) => weft_core::sync::lock(&maps.v4).insert(key, 1, 0),
            Key::V6(key) => weft_core::sync::lock(&maps.v6).insert(key, 1, 0),
        };
        filed.map_err(|e| std::io::Error::other(format!("filing in TRANSPARENT_CONNECTS: {e}")))?;
        Ok(Self { maps, key })
    }
}

impl Drop for Filed {
    fn drop(&mut self) {
        let _ = match &self.key {
            Key::V4(key) => weft_core::sync::lock(&self.maps.v4).remove(key),
            Key::V6(key) => weft_core::sync::lock(&self.maps.v6).remove(key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_four_tuple_in_the_kernel_s_byte_orders() {
        let app: SocketAddr = "[fd00:10:244:2::b]:8080".parse().expect("address");
        let client: IpAddr = "fd00:10:244:1::a".parse().expect("address");
        let Some(Key::V6(key)) = key_for(client, 40000, app) else {
            panic!("an IPv6 key");
        };
        assert_eq!(key.remote_port, 40000);
        assert_eq!(key.local_port, 8080);
        assert_eq!(key.local_ip[3].to_ne_bytes(), [0, 0, 0, 0x0b]);
        assert_eq!(key.remote_ip[0].to_ne_bytes(), [0xfd, 0, 0, 0x10]);
        let Some(Key::V4(key)) = key_for(
            "10.244.1.10".parse().expect("address"),
            40000,
            "10.244.2.11:8080".parse().expect("address"),
        ) else {
            panic!("an IPv4 key");
        };
        assert_eq!(key.remote_ip.to_ne_bytes(), [10, 244, 1, 10]);
        assert_eq!(
            key_for(client, 1, "10.0.0.1:80".parse().expect("address")),
            None
        );
    }
}
