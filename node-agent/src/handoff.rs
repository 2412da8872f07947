//! Upgrading the agent of a node without losing a connection.
//!
//! The new agent starts while the old one still serves (a DaemonSet with `maxSurge: 1`,
//! `maxUnavailable: 0`). It asks the old one, over a root-only unix socket, for every
//! listening socket it holds: the pods' :15001/:15006/:15008 and the node's admin,
//! metrics and readiness ports. These are the same kernel sockets, so connections waiting
//! in their accept queues are not lost and the eBPF maps that point at them stay valid.
//! Once it serves them (pods enrolled, certificates at hand), it acknowledges; only then
//! does the old agent stop accepting. The old agent then asks its HBONE clients to move
//! (GOAWAY), lets its open connections run to their end, and exits when it is told to stop
//! (SIGTERM) and they have drained, or the drain time is up.
//!
//! Without a previous agent (a first start, or after a crash), the new agent binds fresh
//! listeners and adopts the pinned eBPF state, as before.
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;
use weft_host::handoff::{Inherited, Offered};

/// Where agents of a node meet to hand over (a hostPath directory in the DaemonSet).
pub const DEFAULT_SOCKET: &str = "/var/run/weft/agent-handoff.sock";

/// How long the old agent waits for the new one's acknowledgement: the new one enrolls the
/// node's pods and fetches their certificates first.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new agent waits for the old one's sockets.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's own endpoints, by handoff name.
pub const ADMIN: &str = "node/admin";
pub const METRICS: &str = "node/metrics";
pub const READINESS: &str = "node/readiness";

/// A listener on `addr`: the previous agent's when it offered one of that name on that
/// address, else a new one from `bind`. Returns it (non-blocking) with a second handle of it
/// to offer a successor.
pub fn inherit_or_bind(
    inherited: &mut Inherited,
    name: &str,
    addr: SocketAddr,
    bind: impl FnOnce() -> anyhow::Result<std::net::TcpListener>,
) -> anyhow::Result<(std::net::TcpListener, OwnedFd)> {
    let listener = match inherited.take_tcp(name) {
        Some(listener) if listener.local_addr().ok() == Some(addr) => listener,
        _ => bind()?,
    };
    let handle = OwnedFd::from(
        listener
            .try_clone()
            .with_context(|| format!("duplicating the listener on {addr}"))?,
    );
    Ok((listener, handle))
}

/// A node endpoint's listener (in the node's network namespace), inherited or bound, ready
/// for tokio, with its handoff name and second handle.
pub fn node_listener(
    inherited: &mut Inherited,
    name: &str,
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, (String, OwnedFd))> {
    let (listener, handle) = inherit_or_bind(inherited, name, addr, || {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding {addr} ({name})"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("making {addr} non-blocking"))?;
        Ok(listener)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .with_context(|| format!("registering the listener on {addr}"))?;
    Ok((listener, (name.to_string(), handle)))
}

/// Borrows each held listener for an offer.
pub fn offer_of(held: &[(String, OwnedFd)]) -> Vec<Offered<'_>> {
    held.iter()
        .map(|(name, fd)| Offered {
            name: name.clone(),
            fd: fd.as_fd(),
        })
        .collect()
}
