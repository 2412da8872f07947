//! The application's end of a connection, accounting its bytes to its pod when it is
//! dropped, whoever copies them (the agent's copy loop or the HBONE server's); wrapped by
//! `connection.rs`.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    carried: Option<Arc<CarriedBytes>>,
}

/// One connection's bytes so far, for its access log line (read when it ends).
#[derive(Debug, Default)]
pub struct CarriedBytes {
    pub from_app: AtomicU64,
    pub to_app: AtomicU64,
}

impl CarriedBytes {
    /// (from the application, to the application).
    pub fn get(&self) -> (u64, u64) {
        (
            self.from_app.load(Ordering::Relaxed),
            self.to_app.load(Ordering::Relaxed),
        )
    }
}

impl<T> Counted<T> {
    pub fn new(inner: T, direction: Direction, traffic: Arc<PodTraffic>) -> Self {
        Self {
            inner,
            direction,
            traffic,
            from_app: 0,
            to_app: 0,
            carried: None,
        }
    }

    /// Also counting into `carried` as bytes pass.
    pub fn carrying(mut self, carried: Arc<CarriedBytes>) -> Self {
        self.carried = Some(carried);
        self
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
        let read = (buf.filled().len() - before) as u64;
        this.from_app += read;
        if let Some(carried) = &this.carried {
            carried.from_app.fetch_add(read, Ordering::Relaxed);
        }
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
            if let Some(carried) = &this.carried {
                carried.to_app.fetch_add(*written as u64, Ordering::Relaxed);
            }
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
