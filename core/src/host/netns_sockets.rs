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

fn serve(request: Request) {
    match request {
        Request::Tcp(addr, reply) => {
            let _ = reply.send(new_tcp_socket(addr));
        }
        Request::Listen(addr, reply) => {
            let _ = reply.send(new_listener(addr));
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

fn new_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
