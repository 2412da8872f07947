//! What a request's metrics need that only its bodies know: the bytes the client sent
//! ([`Incoming`] counts them as they are read), the bytes, trailers and end of the
//! response ([`Recorded`], which reports the request once its response is done).
//!
//! Sizes are counted as Envoy's `request.total_size` and `response.total_size` (what
//! Istio's `istio_request_bytes` and `istio_response_bytes` record): the headers as Envoy's
//! header map holds them (each name and value, the pseudo-headers `:method`, `:path`,
//! `:authority`, `:scheme` or `:status` for every HTTP version) and the body, with the
//! trailers for a response.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use weft_core::metrics::{HttpRequestRecord, Metrics, RequestLabels, ResponseFlags};

use super::local::ResponseBody;
use crate::forward::connections::BoxError;

/// A request body from the client, counting what was read of it.
pub struct Incoming {
    inner: hyper::body::Incoming,
    received: Arc<AtomicU64>,
}

impl Incoming {
    /// The body, and the count of its bytes read so far.
    pub fn counted(inner: hyper::body::Incoming) -> (Self, Arc<AtomicU64>) {
        let received = Arc::new(AtomicU64::new(0));
        (
            Self {
                inner,
                received: received.clone(),
            },
            received,
        )
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The size of a header map as Envoy's `HeaderMap::byteSize` counts it: names and values.
pub fn headers_size(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len()) as u64)
        .sum()
}

/// The size of a request's headers, as Envoy holds them: HTTP/1.1's `Host` is its
/// `:authority`.
pub fn request_headers_size(parts: &http::request::Parts) -> u64 {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().len())
        .or_else(|| parts.headers.get(http::header::HOST).map(|h| h.len()))
        .unwrap_or(0);
    let path = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let scheme = parts.uri.scheme_str().unwrap_or("http").len();
    let pseudo = ":method".len()
        + parts.method.as_str().len()
        + ":path".len()
        + path
        + ":authority".len()
        + authority
        + ":scheme".len()
        + scheme;
    let host = parts
        .headers
        .get(http::header::HOST)
        .map_or(0, |h| ("host".len() + h.len()) as u64);
    pseudo as u64 + headers_size(&parts.headers) - host
}

/// The size of a response's headers, `:status` included.
pub fn response_headers_size(headers: &HeaderMap) -> u64 {
    (":status".len() + 3) as u64 + headers_size(headers)
}

/// A response's `grpc-status`, from its headers (trailers-only) or its trailers.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What is known of a request when its response headers are ready; the rest (bytes,
/// trailers, how the response ended) comes from the response body.
pub struct Pending {
    pub metrics: Arc<Metrics>,
    pub labels: RequestLabels,
    pub status: u16,
    pub grpc: bool,
    pub started: Instant,
    pub request_headers: u64,
    pub request_body: Arc<AtomicU64>,
    /// The request's access log line, when access logs are on.
    pub access_log: Option<super::access_log::Logged>,
    /// The Telemetry API's changes to the request's metrics.
    pub overrides: weft_core::metrics::RequestOverrides,
}

/// A response body that reports its request when it ends or is dropped: a response
/// dropped before its end (the client went away) is reported with Envoy's `DC`.
pub struct Recorded {
    inner: ResponseBody,
    pending: Option<Pending>,
    response_bytes: u64,
    /// The body's bytes alone (Envoy's `%BYTES_SENT%`).
    body_bytes: u64,
    grpc_status: Option<u32>,
    ended: bool,
}

impl Recorded {
    pub fn new(inner: ResponseBody, pending: Pending, headers: &HeaderMap) -> Self {
        Self {
            grpc_status: pending.grpc.then(|| grpc_status(headers)).flatten(),
            response_bytes: response_headers_size(headers),
            body_bytes: 0,
            inner,
            pending: Some(pending),
            ended: false,
        }
    }

    fn report(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let ended = self.ended || self.inner.is_end_stream();
        let mut labels = pending.labels;
        if !ended && labels.response_flags == ResponseFlags::NONE {
            labels.response_flags = ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        }
        let duration = pending.started.elapsed();
        let request_body = pending.request_body.load(Ordering::Relaxed);
        pending.metrics.http_request_with(
            &labels,
            &HttpRequestRecord {
                status: pending.status,
                grpc_status: self.grpc_status,
                duration,
                request_bytes: pending.request_headers + request_body,
                response_bytes: self.response_bytes,
            },
            &pending.overrides,
        );
        if let Some(logged) = pending.access_log.take() {
            super::access_log::finish(
                logged,
                labels.response_flags,
                request_body,
                self.body_bytes,
                duration,
            );
        }
    }
}

impl Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.response_bytes += data.len() as u64;
                    self.body_bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.response_bytes += headers_size(trailers);
                    if self.pending.as_ref().is_some_and(|p| p.grpc) {
                        self.grpc_status = grpc_status(trailers).or(self.grpc_status);
                    }
                }
                if self.inner.is_end_stream() {
                    self.ended = true;
                    self.report();
                }
            }
            Poll::Ready(None) => {
                self.ended = true;
                self.report();
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.report();
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use weft_core::metrics::{ConnectionLabels, Reporter, RequestProtocol};

    use super::*;

    fn series_value(text: &str, prefix: &str, has: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(has))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn pending(metrics: &Arc<Metrics>, grpc: bool, body: u64) -> Pending {
        Pending {
            metrics: metrics.clone(),
            labels: ConnectionLabels::new(Reporter::Waypoint).with_protocol(if grpc {
                RequestProtocol::Grpc
            } else {
                RequestProtocol::Http
            }),
            status: 200,
            grpc,
            started: Instant::now(),
            request_headers: 100,
            request_body: Arc::new(AtomicU64::new(body)),
            access_log: None,
            overrides: Default::default(),
        }
    }

    /// A body of the given frames, or one that never ends when there are none.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>, bool);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None if self.1 => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn body_of(data: &'static [u8], trailers: Option<HeaderMap>) -> ResponseBody {
        let frames = [Frame::data(Bytes::from_static(data))]
            .into_iter()
            .chain(trailers.map(Frame::trailers))
            .collect();
        Frames(frames, true).boxed()
    }

    #[test]
    fn request_headers_are_sized_as_envoy_holds_them() {
        let h1 = http::Request::builder()
            .method("POST")
            .uri("/up?x=1")
            .header("host", "reviews:9080")
            .header("content-length", "10000")
            .body(())
            .expect("a request")
            .into_parts()
            .0;
        // :method POST, :path /up?x=1, :authority reviews:9080, :scheme http,
        // content-length 10000.
        let want = (7 + 4) + (5 + 7) + (10 + 12) + (7 + 4) + (14 + 5);
        assert_eq!(request_headers_size(&h1), want);
        let h2 = http::Request::builder()
            .method("POST")
            .uri("http://reviews:9080/up?x=1")
            .header("content-length", "10000")
            .body(())
            .expect("a request")
            .into_parts()
            .0;
        assert_eq!(
            request_headers_size(&h2),
            want,
            "the same request in HTTP/2"
        );
    }

    #[tokio::test]
    async fn a_finished_response_reports_its_request_with_both_sizes() {
        let metrics = Metrics::new();
        let mut headers = HeaderMap::new();
        headers.insert("content-length", http::HeaderValue::from_static("5"));
        let body = Recorded::new(
            body_of(b"hello", None),
            pending(&metrics, false, 1000),
            &headers,
        );
        let collected = body.collect().await.expect("the body");
        assert_eq!(collected.to_bytes(), "hello");
        let text = metrics.encode();
        assert_eq!(
            series_value(&text, "istio_request_bytes_sum{", ""),
            Some(1100.0),
            "headers and body of the request: {text}"
        );
        // :status 200, content-length 5, the body.
        assert_eq!(
            series_value(&text, "istio_response_bytes_sum{", ""),
            Some((7 + 3 + 14 + 1 + 5) as f64)
        );
        assert_eq!(
            series_value(&text, "istio_requests_total{", "response_flags=\"-\""),
            Some(1.0)
        );
    }

    #[tokio::test]
    async fn grpc_status_comes_from_the_trailers() {
        let metrics = Metrics::new();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let body = Recorded::new(
            body_of(b"x", Some(trailers)),
            pending(&metrics, true, 0),
            &HeaderMap::new(),
        );
        let _ = body.collect().await.expect("the body");
        let text = metrics.encode();
        assert_eq!(
            series_value(
                &text,
                "istio_requests_total{",
                "grpc_response_status=\"14\""
            ),
            Some(1.0),
            "{text}"
        );
        assert!(text.contains("request_protocol=\"grpc\""), "{text}");
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_is_a_downstream_disconnect() {
        let metrics = Metrics::new();
        let streaming = Frames(Default::default(), false).boxed();
        let body = Recorded::new(streaming, pending(&metrics, false, 0), &HeaderMap::new());
        assert!(!metrics.encode().contains("istio_requests_total{"));
        drop(body);
        let text = metrics.encode();
        assert_eq!(
            series_value(&text, "istio_requests_total{", "response_flags=\"DC\""),
            Some(1.0),
            "{text}"
        );
    }
}
