//! The agent's proxy inside each enrolled pod: outbound (:15001), inbound plaintext
//! (:15006) and inbound HBONE (:15008); between two pods of this agent, the same-node fast
//! path (`same_node`).
pub mod connection;
pub mod counted;
pub mod error;
pub mod hbone_inbound;
pub mod inbound;
pub mod outbound;
pub mod records;
pub mod resolve;
pub mod same_node;
pub mod transparent;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};
use weft_host::netns_sockets::NetnsSockets;

/// Connects to `dst` from a socket created inside the pod's network namespace, so the
/// source address on the wire is the pod's own.
pub async fn connect_from_pod(
    sockets: &NetnsSockets,
    dst: SocketAddr,
) -> std::io::Result<TcpStream> {
    let std_socket = sockets
        .tcp_socket(dst)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let socket = TcpSocket::from_std_stream(std_socket);
    socket.set_nodelay(true)?;
    socket.connect(dst).await
}

/// Connects to the application at `app` (the pod's own address) for a client at `client`:
/// from the client's address where the pod is set up for it (the same family as `app`, that
/// family's rule installed), so the application sees who connected; else, or if that cannot
/// be prepared, from the pod's own address.
pub async fn connect_to_app(
    sockets: &NetnsSockets,
    transparent: Option<&transparent::Transparent>,
    client: IpAddr,
    app: SocketAddr,
) -> std::io::Result<TcpStream> {
    if let Some(transparent) = transparent
        && transparent.serves(client, app)
        && client != app.ip()
        && !client.is_loopback()
        && !client.is_unspecified()
    {
        match transparent.prepare(sockets, client, app).await {
            Ok((socket, filed)) => {
                let connected = socket.connect(app).await;
                drop(filed);
                return connected;
            }
            Err(error) => tracing::warn!(
                %client,
                %app,
                %error,
                "cannot connect from the client's address; the application sees the pod's"
            ),
        }
    }
    connect_from_pod(sockets, app).await
}

/// Plaintext connections the proxy is carrying (outbound and inbound; HBONE connections are
/// counted by their server): what an agent that handed its listeners to a successor waits
/// for before it exits.
#[derive(Clone, Debug, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Counts one connection until the guard is dropped.
    pub fn track(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        OpenGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
