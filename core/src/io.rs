//! Moving bytes between two streams: the one copy loop the agent, the waypoint's TCP
//! streams and the HBONE server use.
use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes};

/// Per-direction buffer: tokio's 8 KiB default costs a system call pair per 8 KiB, which
/// caps a stream at a few Gbit/s on loopback-speed paths; 64 KiB matches a TCP window's
/// worth of a socket's default buffer.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Copies both ways until both sides are done, passing half-closes along; returns the
/// bytes copied (`a` → `b`, `b` → `a`).
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}
