//! A body of N filler bytes produced chunk by chunk, so `/bytes?n=1073741824` and
//! `get --body-bytes` never hold the payload in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

const CHUNK_LEN: usize = 64 * 1024;

/// Every chunk is a slice of this one static buffer: `Bytes::from_static` makes each frame free.
/// The load generators write their payloads from it too.
pub static CHUNK: [u8; CHUNK_LEN] = [b'x'; CHUNK_LEN];

#[derive(Debug, Clone, Copy)]
pub struct FillerBody {
    remaining: u64,
}

impl FillerBody {
    pub fn new(len: u64) -> Self {
        Self { remaining: len }
    }
}

impl Body for FillerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        // The min with CHUNK_LEN makes the cast lossless.
        let n = self.remaining.min(CHUNK_LEN as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    // An exact hint lets hyper send content-length instead of chunked encoding, which is what
    // throughput tests and proxies expect.
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `inner`'s frames, then (if any) one trailers frame: the server's echo of request trailers
/// and the client's `--trailer`.
#[derive(Debug)]
pub struct WithTrailers<B> {
    inner: B,
    trailers: Option<HeaderMap>,
}

impl<B> WithTrailers<B> {
    /// Empty trailers are no trailers: the body then behaves exactly like `inner`.
    pub fn new(inner: B, trailers: HeaderMap) -> Self {
        Self {
            inner,
            trailers: (!trailers.is_empty()).then_some(trailers),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for WithTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() && self.inner.is_end_stream()
    }

    // With trailers the length is left open, so HTTP/1.1 uses chunked encoding, the only
    // framing that can carry them.
    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        if self.trailers.is_none() {
            return inner;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower());
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn yields_exactly_n_bytes() {
        for n in [0, 1, CHUNK_LEN as u64, CHUNK_LEN as u64 * 3 + 17] {
            let collected = FillerBody::new(n).collect().await.map(|c| c.to_bytes());
            let Ok(bytes) = collected;
            assert_eq!(bytes.len() as u64, n);
        }
    }

    #[tokio::test]
    async fn trailers_come_after_the_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", hyper::header::HeaderValue::from_static("42"));
        let body = WithTrailers::new(FillerBody::new(3), trailers.clone());
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), None);
        let Ok(collected) = body.collect().await;
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes().len(), 3);

        let plain = WithTrailers::new(FillerBody::new(0), HeaderMap::new());
        assert!(plain.is_end_stream());
        assert_eq!(plain.size_hint().exact(), Some(0));
    }
}
