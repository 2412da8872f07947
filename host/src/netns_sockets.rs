//! Creating sockets inside a pod's network namespace from anywhere in the agent.
//!
//! A socket belongs to the network namespace of the thread that created it, for life. Each
//! enrolled pod gets one thread that entered the pod's namespace once and creates sockets
//! on request; tokio tasks ask it and get back ordinary sockets to use from any thread.
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("creating a socket in {netns}: {source}")]
    Create {
        netns: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {addr} in {netns}: {source}")]
    Bind {
        addr: SocketAddr,
        netns: PathBuf,
        source: std::io::Error,
    },
    #[error("the socket thread of {0} has stopped")]
    Stopped(PathBuf),
}

enum Request {
    /// An unconnected TCP socket of the address's family.
    Tcp(SocketAddr, oneshot::Sender<std::io::Result<OwnedFd>>),
    /// A listening TCP socket bound to the address.
    Listen(
        SocketAddr,
        mpsc::SyncSender<std::io::Result<std::net::TcpListener>>,
    ),
    /// A UDP socket bound to the address.
    Udp(
        SocketAddr,
        mpsc::SyncSender<std::io::Result<std::net::UdpSocket>>,
    ),
}

/// Handle to the socket thread of one network namespace. Dropping every clone stops it.
#[derive(Clone, Debug)]
pub struct NetnsSockets {
    netns: PathBuf,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Tcp(addr, _) => write!(f, "Tcp({addr})"),
            Request::Listen(addr, _) => write!(f, "Listen({addr})"),
            Request::Udp(addr, _) => write!(f, "Udp({addr})"),
        }
    }
}

impl NetnsSockets {
    /// Starts the thread and waits until it is inside `netns`.
    pub fn spawn(netns: &Path) -> Result<Self, SocketError> {
        let file = std::fs::File::open(netns).map_err(|source| NetnsError::Open {
            path: netns.to_path_buf(),
            source,
        })?;
        let (requests, inbox) = mpsc::channel::<Request>();
        let (entered_tx, entered_rx) = mpsc::sync_channel::<std::io::Result<()>>(1);
        let name = format!(
            "netns-{}",
            netns
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let thread_name: String = name.chars().take(15).collect();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: `file` is an open namespace file.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                let entered = if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                };
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                if !ok {
                    return;
                }
                drop(file);
                for request in inbox {
                    serve(request);
                }
            })
            .map_err(|source| SocketError::Create {
                netns: netns.to_path_buf(),
                source,
            })?;
        match entered_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                netns: netns.to_path_buf(),
                requests,
            }),
            Ok(Err(source)) => Err(NetnsError::Enter {
                path: netns.to_path_buf(),
                source,
            }
            .into()),
            Err(_) => Err(SocketError::Stopped(netns.to_path_buf())),
        }
    }

    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// A new TCP socket in the namespace, ready for `tokio::net::TcpSocket::from_std_stream`.
    pub async fn tcp_socket(
        &self,
        for_addr: SocketAddr,
    ) -> Result<std::net::TcpStream, SocketError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Tcp(for_addr, tx))
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?;
        let fd = rx
            .await
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?
            .map_err(|source| SocketError::Create {
                netns: self.netns.clone(),
                source,
            })?;
        Ok(std::net::TcpStream::from(fd))
    }

    /// A non-blocking TCP listener bound to `addr` in the namespace. Blocking: call it from
    /// set-up code, not from a hot async path.
    pub fn listen(&self, addr: SocketAddr) -> Result<std::net::TcpListener, SocketError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.requests
            .send(Request::Listen(addr, tx))
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?;
        rx.recv()
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?
            .map_err(|source| SocketError::Bind {
                addr,
                netns: self.netns.clone(),
                source,
            })
    }
}

impl NetnsSockets {
    /// A non-blocking UDP socket bound to `addr` in the namespace (the DNS proxy's).
    /// Blocking: call it from set-up code.
    pub fn bind_udp(&self, addr: SocketAddr) -> Result<std::net::UdpSocket, SocketError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.requests
            .send(Request::Udp(addr, tx))
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?;
        rx.recv()
            .map_err(|_| SocketError::Stopped(self.netns.clone()))?
            .map_err(|source| SocketError::Bind {
                addr,
                netns: self.netns.clone(),
                source,
            })
    }
}

fn serve(request: Request) {
    match request {
        Request::Udp(addr, reply) => {
            let socket = std::net::UdpSocket::bind(addr).and_then(|socket| {
                socket.set_nonblocking(true)?;
                Ok(socket)
            });
            let _ = reply.send(socket);
        }
        Request::Tcp(addr, reply) => {
            let _ = reply.send(new_tcp_socket(addr));
        }
        Request::Listen(addr, reply) => {
            let _ = reply.send(tcp_listener(addr));
        }
    }
}

fn new_tcp_socket(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, owned descriptor.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A listener of the address's family. An IPv6 one is IPv6-only (`IPV6_V6ONLY`): `[::]:port`
/// then takes IPv6 alone, beside an IPv4 listener on `0.0.0.0:port`, instead of claiming
/// both families and failing with EADDRINUSE. Non-blocking, for tokio.
pub fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let SocketAddr::V6(v6) = addr else {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        return Ok(listener);
    };
    let fd = new_tcp_socket(addr)?;
    super::sockopt::set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    // What std sets on its listeners, so a restarted agent can bind while old connections
    // linger in TIME_WAIT.
    super::sockopt::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let sockaddr = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo(),
        sin6_addr: libc::in6_addr {
            s6_addr: v6.ip().octets(),
        },
        sin6_scope_id: v6.scope_id(),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `sockaddr` outlives the call and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sockaddr).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a bound socket this function owns.
    if unsafe { libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_listener_leaves_the_ipv4_port_free() {
        let any6: SocketAddr = "[::]:0".parse().expect("address");
        let v6 = tcp_listener(any6).expect("IPv6 listener");
        let port = v6.local_addr().expect("bound").port();
        let v4 = tcp_listener(SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(v4.is_ok(), "IPv4 on the same port: {v4:?}");
        let mapped = std::net::TcpStream::connect(("::ffff:127.0.0.1", port));
        assert!(
            mapped.is_ok(),
            "an IPv4-mapped connection reaches the IPv4 listener"
        );
        let (_, peer) = v4.expect("listener").accept().expect("accepted on IPv4");
        assert!(peer.is_ipv4(), "{peer}");
    }
}
