//! The agent's L4 proxy inside each enrolled pod: outbound (:15001) and inbound
//! plaintext (:15006).
pub mod inbound;
pub mod outbound;
pub mod records;

use std::net::SocketAddr;

use tokio::io::copy_bidirectional_with_sizes;
use tokio::net::{TcpSocket, TcpStream};
use weft_core::host::netns_sockets::NetnsSockets;

/// Connects to `dst` from a socket created inside the pod's network namespace, so the
/// source address on the wire is the pod's own.
pub async fn connect_from_pod(
    sockets: &NetnsSockets,
    dst: SocketAddr,
) -> anyhow::Result<TcpStream> {
    let std_socket = sockets.tcp_socket(dst).await?;
    let socket = TcpSocket::from_std_stream(std_socket);
    socket.set_nodelay(true)?;
    Ok(socket.connect(dst).await?)
}

/// Per-direction copy buffer: tokio's 8 KiB default costs a system call pair per 8 KiB,
/// which caps a stream at a few Gbit/s on loopback-speed paths.
const COPY_BUFFER: usize = 64 * 1024;

/// Copies both ways until both sides are done; returns (bytes client→server, server→client).
pub async fn splice(mut client: TcpStream, mut server: TcpStream) -> std::io::Result<(u64, u64)> {
    copy_bidirectional_with_sizes(&mut client, &mut server, COPY_BUFFER, COPY_BUFFER).await
}
