//! The application's end of a connection, accounting its bytes to its pod when it is
//! dropped, whoever copies them (the agent's copy loop or the HBONE server's); wrapped by
//! `connection.rs`.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::records::{Direction, PodTraffic};

/// The application side of a connection: bytes read from it were sent by the application,
/// bytes written to it were received.
pub struct Counted<T> {
    inner: T,
    direction: Direction,
    traffic: Arc<PodTraffic>,
    from_app: u64,
    to_app: u64,
}

impl<T> Counted<T> {
    pub fn new(inner: T, direction: Direction, traffic: Arc<PodTraffic>) -> Self {
        Self {
            inner,
            direction,
            traffic,
            from_app: 0,
            to_app: 0,
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.traffic
            .record(self.direction, self.from_app, self.to_app);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.from_app += (buf.filled().len() - before) as u64;
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = &result {
            this.to_app += *written as u64;
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::proxy::records::PodTraffic;

    #[tokio::test]
    async fn accounts_both_directions_when_dropped() {
        let traffic = Arc::new(PodTraffic::default());
        let (app, mut peer) = tokio::io::duplex(64);
        let mut counted = Counted::new(app, Direction::Inbound, traffic.clone());
        peer.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        counted.read_exact(&mut buf).await.expect("read");
        counted.write_all(b"hi").await.expect("write");
        assert_eq!(
            PodTraffic::get(&traffic.inbound_connections),
            0,
            "counted on drop"
        );
        drop(counted);
        assert_eq!(PodTraffic::get(&traffic.inbound_connections), 1);
        assert_eq!(
            PodTraffic::get(&traffic.bytes_sent),
            5,
            "the application sent 5 bytes"
        );
        assert_eq!(PodTraffic::get(&traffic.bytes_received), 2);
    }
}
