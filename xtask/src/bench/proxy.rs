//! The trivial proxy of the capture scenario: accept, find where the client was going,
//! connect there, copy both ways until both sides close. It is the same code behind both
//! captures measured against each other — nftables REDIRECT (the original destination from
//! conntrack, `SO_ORIGINAL_DST`) and weft's eBPF capture (the original destination from the
//! agent's `ORIG_DST_BY_CLIENT` map) — so the difference between them is the capture.
//!
//! Blocking sockets on a fixed pool of threads, which inherit the network namespace of the
//! thread that starts the proxy: its sockets live in the client pod. Its outbound sockets
//! carry the mark 0x539 (Istio's), which the nftables rule lets through; they are outside
//! the pod's cgroup, so weft's cgroup hooks do not see them either.
use std::io::{self, Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_ebpf_common::{AF_INET, ClientKey, OrigDst};

use super::bpf;

/// The mark the proxy's own connections carry (Istio ambient's), exempt from the redirect.
pub const PROXY_MARK: u32 = 0x539;

/// How the proxy learns where an accepted connection was going.
pub enum Destination {
    /// Conntrack's record of the NAT the REDIRECT rule did (`getsockopt(SO_ORIGINAL_DST)`).
    Conntrack,
    /// weft's `ORIG_DST_BY_CLIENT` map, read and deleted as the agent does.
    WeftMap { map: OwnedFd, pod_id: u64 },
}

pub struct Proxy {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    tids: Arc<Mutex<Vec<libc::pid_t>>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    failed: AtomicU64,
}

impl Proxy {
    /// Listens on `listen` in the calling thread's network namespace, with `workers` threads.
    pub fn start(listen: SocketAddr, destination: Destination, workers: usize) -> io::Result<Self> {
        let listener = Arc::new(TcpListener::bind(listen)?);
        let destination = Arc::new(destination);
        let stop = Arc::new(AtomicBool::new(false));
        let tids = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let workers = (0..workers)
            .map(|_| {
                let (listener, destination, stop, tids, counters) = (
                    listener.clone(),
                    destination.clone(),
                    stop.clone(),
                    tids.clone(),
                    counters.clone(),
                );
                std::thread::spawn(move || {
                    // SAFETY: gettid(2) has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    tids.lock().unwrap_or_else(|p| p.into_inner()).push(tid);
                    serve(&listener, &destination, &stop, &counters);
                })
            })
            .collect();
        Ok(Self {
            listener,
            stop,
            workers,
            tids,
            counters,
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Connections accepted so far (and proxied or failed).
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections that could not be proxied (no original destination, upstream refused).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// CPU time the proxy's threads have used so far (the scheduler's own account).
    pub fn cpu(&self) -> Duration {
        let tids = self.tids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tids.iter().map(|tid| thread_cpu(*tid)).sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes every thread blocked in accept(2) (it fails with EINVAL from now on).
        // SAFETY: shutdown(2) on a socket this value owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn thread_cpu(tid: libc::pid_t) -> Duration {
    let path = format!("/proc/self/task/{tid}/schedstat");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn serve(listener: &TcpListener, destination: &Destination, stop: &AtomicBool, c: &Counters) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok((client, peer)) = accepted else {
            continue;
        };
        c.accepted.fetch_add(1, Ordering::Relaxed);
        if proxy(client, peer, destination, &mut buf).is_err() {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    destination: &Destination,
    buf: &mut [u8],
) -> io::Result<()> {
    let target = match destination {
        Destination::Conntrack => conntrack_original_destination(&client)?,
        Destination::WeftMap { map, pod_id } => weft_original_destination(map, *pod_id, peer)?,
    };
    let upstream = connect_marked(target)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    relay(&client, &upstream, buf)
}

fn conntrack_original_destination(client: &TcpStream) -> io::Result<SocketAddr> {
    // SAFETY: an all-zero sockaddr_in is valid.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`.
    let ret = unsafe {
        libc::getsockopt(
            client.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            &mut addr as *mut libc::sockaddr_in as *mut libc::c_void,
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    )))
}

/// What the agent's `take_original_destination` does: look up by (pod, client port), then
/// delete.
fn weft_original_destination(
    map: &OwnedFd,
    pod_id: u64,
    peer: SocketAddr,
) -> io::Result<SocketAddr> {
    let key = ClientKey {
        pod: pod_id,
        port: u32::from(peer.port()),
        family: u32::from(AF_INET),
    };
    let orig: OrigDst = bpf::lookup(map.as_fd(), &key)?;
    let _ = bpf::delete(map.as_fd(), &key);
    if orig.family != AF_INET {
        return Err(io::Error::other("not an IPv4 destination"));
    }
    Ok(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(orig.addr[0])),
        orig.port,
    )))
}

fn connect_marked(target: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = target else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mark = PROXY_MARK;
    // SAFETY: setsockopt reads size_of::<u32>() bytes from `mark`.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &mark as *const u32 as *const libc::c_void,
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect(2) reads a sockaddr_in of the length given.
    let ret = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(socket))
}

/// Copies both ways; a side that ends its sending is passed on as a half-close, and the
/// relay ends when both have.
fn relay(a: &TcpStream, b: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let streams = [a, b];
    let mut open = [true, true];
    while open[0] || open[1] {
        let mut fds: Vec<libc::pollfd> = (0..2)
            .filter(|i| open[*i])
            .map(|i| libc::pollfd {
                fd: streams[i].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll(2) on a live array of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for fd in fds.iter().filter(|f| f.revents != 0) {
            let from = if fd.fd == a.as_raw_fd() { 0 } else { 1 };
            let (mut src, mut dst) = (streams[from], streams[1 - from]);
            match src.read(buf) {
                Ok(0) => {
                    open[from] = false;
                    let _ = dst.shutdown(Shutdown::Write);
                }
                Ok(n) => dst.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
