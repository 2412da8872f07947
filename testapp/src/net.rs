//! Socket helpers shared by the servers and the clients.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::net::{TcpListener, TcpStream, lookup_host};

/// A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`; tests compare against the
/// plain IPv4 address the pod actually has, so report that.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Listens on every address of both families on `port` (0 = pick one, shared by both).
///
/// `[::]` comes first: with the Linux default `net.ipv6.bindv6only=0` it is dual-stack and the
/// following `0.0.0.0` bind then fails with `AddrInUse`, which means IPv4 is already covered.
/// A pod netns may have no IPv6 at all; then `[::]` fails and IPv4 alone is fine.
pub fn bind_all(port: u16) -> Result<Vec<TcpListener>> {
    let v6 = bind_std(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port));
    let (mut listeners, port) = match v6 {
        Ok(l) => {
            let port = l
                .local_addr()
                .context("local address of [::] listener")?
                .port();
            (vec![l], port)
        }
        Err(e6) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            let l = bind_std(v4)
                .with_context(|| format!("bind {v4} (after [::]:{port} failed: {e6})"))?;
            return Ok(vec![l]);
        }
    };
    let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    match bind_std(v4) {
        Ok(l) => listeners.push(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        Err(e) => eprintln!("weft-testapp: warning: bind {v4}: {e}; serving on [::]:{port} only"),
    }
    Ok(listeners)
}

/// std's bind sets SO_REUSEADDR, so a restarted server can rebind while old connections sit in
/// TIME_WAIT; the listener then moves to tokio.
fn bind_std(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Resolves `host:port` with the system resolver (so /etc/hosts in the lab works) and connects
/// to the first address that answers, all within `timeout`.
pub async fn connect(target: &str, timeout: Duration) -> Result<TcpStream> {
    let attempt = async {
        let addrs = resolve(target).await?;
        connect_first(&addrs).await.map(|(stream, _)| stream)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => bail!(
            "connect {target}: timed out after {} ms",
            timeout.as_millis()
        ),
    }
}

/// The load generators resolve once and reconnect to the address that answered: a lookup per
/// connection (a blocking-pool hop for names) would be measured as connection time.
pub async fn resolve(target: &str) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = lookup_host(target)
        .await
        .with_context(|| format!("resolve {target}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{target} resolved to no address");
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that answers and says which one it was (the caller's
/// address, not getpeername's, which the mesh may rewrite).
pub async fn connect_first(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr)> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last = Some(anyhow!(e).context(format!("connect {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no address to connect to")))
}

/// Local and peer address of a connected client socket, as the kernel reports them:
/// `peer_addr` is getpeername(2), which tests use to observe the eBPF getpeername hook.
pub fn endpoints(stream: &TcpStream) -> Result<(SocketAddr, SocketAddr)> {
    let local = stream.local_addr().context("getsockname")?;
    let peer = stream.peer_addr().context("getpeername")?;
    Ok((local, peer))
}

/// Accepts until the task is dropped at shutdown, handing each connection to `on_conn`.
/// Accept errors (EMFILE under connection-churn tests, say) are transient: report and back off
/// briefly instead of spinning or dying.
pub async fn accept_loop(listener: TcpListener, mut on_conn: impl FnMut(TcpStream)) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => on_conn(stream),
            Err(e) => {
                let at = listener
                    .local_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                eprintln!("weft-testapp: accept on {at}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
