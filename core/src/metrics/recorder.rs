//! Per-connection accounting: the counters of one connection's label set, fetched once when
//! it opens, and a stream wrapper that feeds them as bytes pass.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use prometheus_client::metrics::family::Family;

use super::labels::{ConnectionLabels, ResponseFlags};

/// One open connection. Bytes go straight to its series' counters; dropping it counts the
/// connection closed (with the response flags set by then).
#[derive(Debug)]
pub struct TcpConnectionRecorder {
    /// `istio_tcp_connections_closed_total`, counted on drop with the labels as they are
    /// then.
    closed: Family<ConnectionLabels, Counter>,
    labels: ConnectionLabels,
    sent: Counter,
    received: Counter,
}

impl TcpConnectionRecorder {
    pub(super) fn new(
        closed: Family<ConnectionLabels, Counter>,
        labels: ConnectionLabels,
        sent: Counter,
        received: Counter,
    ) -> Self {
        Self {
            closed,
            labels,
            sent,
            received,
        }
    }

    /// Bytes from the server to the client (`istio_tcp_sent_bytes_total`).
    pub fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    /// Bytes from the client to the server (`istio_tcp_received_bytes_total`).
    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    /// Why the connection failed, reported with its close (Istio does the same: the
    /// opening was counted before the outcome was known).
    pub fn set_response_flags(&mut self, flags: ResponseFlags) {
        self.labels.response_flags = flags;
    }

    pub fn labels(&self) -> &ConnectionLabels {
        &self.labels
    }
}

impl Drop for TcpConnectionRecorder {
    fn drop(&mut self) {
        self.closed.get_or_create(&self.labels).inc();
    }
}

/// Which end of a connection a [`Metered`] stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's end: what is read from it is the request, what is written to it the
    /// response.
    Downstream,
    /// The server's end: what is written to it is the request, what is read from it the
    /// response.
    Upstream,
}

impl TcpConnectionRecorder {
    /// Wraps one end of the connection so that what passes through it is counted. The
    /// recorder stays with the caller (the close is counted when it is dropped), unless the
    /// stream is made to hold it with [`Metered::holding`].
    pub fn meter<T>(&self, inner: T, side: Side) -> Metered<T> {
        Metered {
            inner,
            side,
            sent: self.sent.clone(),
            received: self.received.clone(),
            _guard: (),
        }
    }
}

/// A stream that counts what passes through it on its connection's series. `G` is dropped
/// with it: the connection's recorder, when the stream outlives the code that opened it.
#[derive(Debug)]
pub struct Metered<T, G = ()> {
    inner: T,
    side: Side,
    sent: Counter,
    received: Counter,
    _guard: G,
}

impl<T, G> Metered<T, G> {
    /// Makes the stream own `guard` (a [`TcpConnectionRecorder`], or anything holding one),
    /// so the connection closes when the stream is dropped.
    pub fn holding<H>(self, guard: H) -> Metered<T, H> {
        Metered {
            inner: self.inner,
            side: self.side,
            sent: self.sent,
            received: self.received,
            _guard: guard,
        }
    }

    fn read(&self, bytes: u64) {
        match self.side {
            Side::Downstream => self.received.inc_by(bytes),
            Side::Upstream => self.sent.inc_by(bytes),
        };
    }

    fn written(&self, bytes: u64) {
        match self.side {
            Side::Downstream => self.sent.inc_by(bytes),
            Side::Upstream => self.received.inc_by(bytes),
        };
    }
}

impl<T: AsyncRead + Unpin, G: Unpin> AsyncRead for Metered<T, G> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.read(read as u64);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin, G: Unpin> AsyncWrite for Metered<T, G> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = &result {
            this.written(*written as u64);
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
    use crate::metrics::Metrics;
    use crate::metrics::Reporter;

    fn series(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn both_sides_count_requests_as_received_and_responses_as_sent() {
        let metrics = Metrics::new();
        let labels = ConnectionLabels::new(Reporter::Source);
        for side in [Side::Downstream, Side::Upstream] {
            let (stream, mut peer) = tokio::io::duplex(64);
            let recorder = metrics.tcp_opened(&labels);
            let mut metered = recorder.meter(stream, side).holding(recorder);
            // Downstream: the peer is the client; upstream: the peer is the server.
            let (request, response): (&[u8], &[u8]) = (b"GET / 0123456789", b"200");
            match side {
                Side::Downstream => {
                    peer.write_all(request).await.expect("write");
                    let mut buf = vec![0; request.len()];
                    metered.read_exact(&mut buf).await.expect("read");
                    metered.write_all(response).await.expect("write");
                }
                Side::Upstream => {
                    metered.write_all(request).await.expect("write");
                    peer.write_all(response).await.expect("write");
                    let mut buf = vec![0; response.len()];
                    metered.read_exact(&mut buf).await.expect("read");
                }
            }
            let text = metrics.encode();
            assert_eq!(
                series(&text, "istio_tcp_connections_closed_total"),
                // Only the first connection (already dropped) has closed.
                (side == Side::Upstream).then_some(1),
                "the stream holds its recorder"
            );
            drop(metered);
        }
        let text = metrics.encode();
        assert_eq!(series(&text, "istio_tcp_received_bytes_total"), Some(32));
        assert_eq!(series(&text, "istio_tcp_sent_bytes_total"), Some(6));
        assert_eq!(series(&text, "istio_tcp_connections_closed_total"), Some(2));
    }
}
