//! Request bodies the waypoint may need to send more than once (retries, mirrors): read
//! into memory when they are small and complete, trailers included, and replayed.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::forward::connections::{BoxError, UpstreamBody};

/// Bodies larger than this stream through and are not retried or mirrored (Envoy's
/// per-request buffer limit plays the same part).
pub const REPLAY_LIMIT: u64 = 1024 * 1024;

/// A complete request body, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Replayable {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Replayable {
    pub fn body(&self) -> UpstreamBody {
        ReplayBody {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
        }
        .boxed()
    }
}

/// The body of a request: complete in memory, or still streaming from the client.
pub enum RequestBody {
    Complete(Replayable),
    Streaming(Incoming),
}

impl RequestBody {
    /// Reads the body into memory when it is known to be small: empty, or with a length
    /// within the limit. A body of unknown length (chunked, gRPC streams) keeps streaming.
    pub async fn read(body: Incoming) -> Result<Self, hyper::Error> {
        let small = body.is_end_stream()
            || body
                .size_hint()
                .upper()
                .is_some_and(|upper| upper <= REPLAY_LIMIT);
        if !small {
            return Ok(RequestBody::Streaming(body));
        }
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(RequestBody::Complete(Replayable {
            data: collected.to_bytes(),
            trailers,
        }))
    }

    pub fn replayable(&self) -> Option<&Replayable> {
        match self {
            RequestBody::Complete(replayable) => Some(replayable),
            RequestBody::Streaming(_) => None,
        }
    }
}

pub fn streaming(body: Incoming) -> UpstreamBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
