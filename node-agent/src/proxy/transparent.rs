//! Connecting to the application from the client's own address, so that it sees who
//! connected (as with Istio's ztunnel in-pod), not the pod's own address.
//!
//! The socket is created in the pod, marked, made transparent (IP_TRANSPARENT: it may be
//! bound to an address that is not the pod's) and bound to the client's address. The pod's
//! policy rule (installed at enrollment: `weft_core::host::pod_routing`) delivers the
//! application's marked replies locally, to this socket. While the SYN is on its way the
//! 4-tuple sits in TRANSPARENT_CONNECTS, so the pod's sk_lookup program lets it reach the
//! application instead of capturing it as a client's.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::net::TcpSocket;
use weft_core::host::netns_sockets::NetnsSockets;
use weft_core::host::sockopt::set_int_option;
use weft_ebpf_common::{TRANSPARENT_MARK, TransparentConnect};

pub type TransparentConnectsMap = Arc<Mutex<BpfHashMap<MapData, TransparentConnect, u8>>>;

/// A pod whose namespace delivers marked replies locally: connections to its application
/// can carry the client's address.
#[derive(Clone)]
pub struct Transparent {
    pub connects: TransparentConnectsMap,
}

impl Transparent {
    /// A socket inside the pod bound to `client`, ready to connect to `app` (the pod's own
    /// address), and its TRANSPARENT_CONNECTS entry, to hold until connected.
    pub async fn prepare(
        &self,
        sockets: &NetnsSockets,
        client: Ipv4Addr,
        app: SocketAddrV4,
    ) -> std::io::Result<(TcpSocket, Filed)> {
        let std_socket = sockets
            .tcp_socket(SocketAddr::V4(app))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        set_int_option(&std_socket, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
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
        socket.bind(SocketAddr::from((client, 0)))?;
        let port = socket.local_addr()?.port();
        let key = TransparentConnect {
            remote_ip: u32::from(client).to_be(),
            local_ip: u32::from(*app.ip()).to_be(),
            remote_port: port,
            local_port: app.port(),
        };
        let filed = Filed::new(self.connects.clone(), key)?;
        Ok((socket, filed))
    }
}

/// A TRANSPARENT_CONNECTS entry, removed when dropped (connected, failed or cancelled).
pub struct Filed {
    map: TransparentConnectsMap,
    key: TransparentConnect,
}

impl Filed {
    fn new(map: TransparentConnectsMap, key: TransparentConnect) -> std::io::Result<Self> {
        weft_core::sync::lock(&map)
            .insert(key, 1, 0)
            .map_err(|e| std::io::Error::other(format!("filing in TRANSPARENT_CONNECTS: {e}")))?;
        Ok(Self { map, key })
    }
}

impl Drop for Filed {
    fn drop(&mut self) {
        let _ = weft_core::sync::lock(&self.map).remove(&self.key);
    }
}
