//! Request bodies the waypoint may need to send more than once (retries, mirrors): read
//! into memory when they are small and complete, trailers included, and replayed; recorded
//! while they stream when their length is unknown (gRPC, chunked uploads), so a retry can
//! send again what the failed attempt took and go on from there.
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::metered::Incoming;
use crate::forward::connections::{BoxError, UpstreamBody};

/// Bodies larger than this stream through and are not retried or mirrored (Envoy's
/// per-request buffer limit plays the same part); a recorded body that outgrows it is no
/// longer retried.
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

/// The body of a request: complete in memory, recorded as it streams, or streaming.
pub enum RequestBody {
    Complete(Replayable),
    /// Of unknown length: streamed to the first attempt and kept for a retry.
    Recorded(Recorder),
    /// Known to be larger than [`REPLAY_LIMIT`] (or partly read already): sent once
    /// (taken by the first attempt).
    Streaming(Option<UpstreamBody>),
}

impl RequestBody {
    /// Reads the body into memory when it is known to be small: empty, or with a length
    /// within the limit. A body of unknown length (chunked, gRPC streams) is not waited
    /// for (a bidirectional stream may only end after the answer): it is recorded as it
    /// streams.
    pub async fn read(body: Incoming) -> Result<Self, hyper::Error> {
        let upper = body.size_hint().upper();
        let small = body.is_end_stream() || upper.is_some_and(|upper| upper <= REPLAY_LIMIT);
        if !small {
            return Ok(match upper {
                None => RequestBody::Recorded(Recorder::new(streaming(body), REPLAY_LIMIT)),
                Some(_) => RequestBody::Streaming(Some(streaming(body))),
            });
        }
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(RequestBody::Complete(Replayable {
            data: collected.to_bytes(),
            trailers,
        }))
    }

    /// A body read to its end already.
    pub fn complete(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        RequestBody::Complete(Replayable { data, trailers })
    }

    /// A body whose start was read already (for an external authorization check): `head`,
    /// then the rest from the client. Sent once.
    pub fn resumed(head: Bytes, rest: Incoming) -> Self {
        RequestBody::Streaming(Some(
            Resumed {
                head: (!head.is_empty()).then_some(head),
                rest: streaming(rest),
            }
            .boxed(),
        ))
    }

    /// The whole body in memory, for a mirror (which cannot wait on the client's stream).
    pub fn replayable(&self) -> Option<&Replayable> {
        match self {
            RequestBody::Complete(replayable) => Some(replayable),
            RequestBody::Recorded(_) | RequestBody::Streaming(_) => None,
        }
    }

    /// The body for the next attempt; `None` once a body that goes once has gone.
    pub fn for_attempt(&mut self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Complete(replayable) => Some(replayable.body()),
            RequestBody::Recorded(recorder) => Some(recorder.body()),
            RequestBody::Streaming(body) => body.take(),
        }
    }

    /// Whether another attempt could send the body again from its start.
    pub fn can_resend(&self) -> bool {
        match self {
            RequestBody::Complete(_) => true,
            RequestBody::Recorded(recorder) => recorder.replayable(),
            RequestBody::Streaming(_) => false,
        }
    }
}

/// A streaming body shared by the attempts of one request: every frame taken from the
/// client is kept (up to a limit), so the next attempt replays what an earlier one took and
/// then takes the rest from the client itself.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Recording>>);

struct Recording {
    source: UpstreamBody,
    kept: Vec<Kept>,
    kept_bytes: u64,
    limit: u64,
    /// Frames taken from the source so far (kept or not).
    taken: usize,
    /// More was taken than the limit allows: what was kept is gone, no replay.
    overflowed: bool,
    ended: bool,
    /// Only the newest attempt's body may take from the source: an abandoned attempt's
    /// connection may still poll its body.
    current: u64,
}

#[derive(Clone)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Recorder {
    pub fn new(source: UpstreamBody, limit: u64) -> Self {
        Self(Arc::new(Mutex::new(Recording {
            source,
            kept: Vec::new(),
            kept_bytes: 0,
            limit,
            taken: 0,
            overflowed: false,
            ended: false,
            current: 0,
        })))
    }

    fn recording(&self) -> std::sync::MutexGuard<'_, Recording> {
        weft_core::sync::lock(&self.0)
    }

    /// Whether another attempt can still send the body from its start.
    pub fn replayable(&self) -> bool {
        !self.recording().overflowed
    }

    /// The body for the next attempt; earlier attempts' bodies end.
    pub fn body(&self) -> UpstreamBody {
        let generation = {
            let mut recording = self.recording();
            recording.current += 1;
            recording.current
        };
        AttemptBody {
            recorder: self.clone(),
            generation,
            next: 0,
        }
        .boxed()
    }
}

struct AttemptBody {
    recorder: Recorder,
    generation: u64,
    /// Index of the next frame this attempt sends.
    next: usize,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let recorder = self.recorder.clone();
        let mut recording = recorder.recording();
        if recording.current != self.generation {
            return Poll::Ready(Some(Err("a newer attempt sends this body".into())));
        }
        if self.next < recording.taken {
            let Some(kept) = recording.kept.get(self.next).cloned() else {
                return Poll::Ready(Some(
                    Err("the request body outgrew the retry buffer".into()),
                ));
            };
            self.next += 1;
            return Poll::Ready(Some(Ok(match kept {
                Kept::Data(data) => Frame::data(data),
                Kept::Trailers(trailers) => Frame::trailers(trailers),
            })));
        }
        if recording.ended {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut recording.source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                recording.ended = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let kept = match (frame.data_ref(), frame.trailers_ref()) {
            (Some(data), _) => Kept::Data(data.clone()),
            (None, Some(trailers)) => Kept::Trailers(trailers.clone()),
            // No other kind of frame exists today; one would be passed on, not replayed.
            (None, None) => return Poll::Ready(Some(Ok(frame))),
        };
        if let Kept::Data(data) = &kept {
            recording.kept_bytes += data.len() as u64;
        }
        recording.taken += 1;
        self.next += 1;
        if recording.kept_bytes > recording.limit {
            recording.overflowed = true;
            recording.kept = Vec::new();
        } else if !recording.overflowed {
            recording.kept.push(kept);
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

struct Resumed {
    head: Option<Bytes>,
    rest: UpstreamBody,
}

impl Body for Resumed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A client's body, frame by frame.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn client_body(
        chunks: &[&'static str],
        trailer: Option<(&'static str, &'static str)>,
    ) -> UpstreamBody {
        let mut frames: VecDeque<Frame<Bytes>> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
            .collect();
        if let Some((name, value)) = trailer {
            let mut trailers = HeaderMap::new();
            trailers.insert(name, http::HeaderValue::from_static(value));
            frames.push_back(Frame::trailers(trailers));
        }
        Frames(frames).boxed()
    }

    async fn next_data(body: &mut UpstreamBody) -> Option<Bytes> {
        let frame = body.frame().await?.expect("a frame");
        Some(frame.into_data().expect("a data frame"))
    }

    #[tokio::test]
    async fn a_retry_sends_what_the_first_attempt_took_then_the_rest_with_trailers() {
        let recorder = Recorder::new(
            client_body(&["one ", "two ", "three"], Some(("grpc-status", "0"))),
            REPLAY_LIMIT,
        );
        let mut first = recorder.body();
        // The first attempt fails after one frame (an early 503, say).
        assert_eq!(next_data(&mut first).await.as_deref(), Some(&b"one "[..]));
        assert!(recorder.replayable());
        let second = recorder.body().collect().await.expect("the whole body");
        assert_eq!(
            second.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        assert_eq!(second.to_bytes(), "one two three");
        let third = recorder.body().collect().await.expect("replayed again");
        assert_eq!(third.to_bytes(), "one two three", "all of it, from memory");
    }

    #[tokio::test]
    async fn an_abandoned_attempt_cannot_take_from_the_client_any_more() {
        let recorder = Recorder::new(client_body(&["a", "b"], None), REPLAY_LIMIT);
        let mut first = recorder.body();
        let second = recorder.body();
        assert!(first.frame().await.expect("an answer").is_err());
        assert_eq!(second.collect().await.expect("the body").to_bytes(), "ab");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_limit_streams_on_but_is_not_replayed() {
        let recorder = Recorder::new(client_body(&["1234", "5678", "9"], None), 6);
        let first = recorder
            .body()
            .collect()
            .await
            .expect("the first attempt's body");
        assert_eq!(first.to_bytes(), "123456789", "the attempt gets all of it");
        assert!(!recorder.replayable());
        let mut second = recorder.body();
        assert!(
            second.frame().await.expect("an answer").is_err(),
            "nothing to replay: an error, never a truncated body"
        );
    }
}
