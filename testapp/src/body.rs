//! A body of N filler bytes produced chunk by chunk, so `/bytes?n=1073741824` and
//! `get --body-bytes` never hold the payload in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
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
}
