//! Circuit breaking for one cluster (service host + subset), with Envoy's accounting.
//!
//! Four counters, each bounded by a [`PoolLimits`] threshold and held by an RAII permit:
//!
//! | counter | threshold (DestinationRule) | held while | over the limit |
//! |---|---|---|---|
//! | requests | `http.http2MaxRequests` | a request is on a connection, until its response ends | 503, UO |
//! | pending | `http.http1MaxPendingRequests` | a request waits for a ready connection | 503, UO |
//! | connections | `tcp.maxConnections` | an upstream connection is open | the request waits (pending) |
//! | retries | `http.maxRetries` | a retry is scheduled or in flight | no retry; the last result goes back, flagged UO |
//!
//! How the proxy uses it, per request, after picking an endpoint:
//!
//! 1. The endpoint has a ready connection (HTTP/1.1: idle; HTTP/2: a free stream slot):
//!    [`CircuitBreaker::try_request`]. `Err(Overflow)` → answer [`Overflow::response`].
//! 2. Otherwise the request must wait, even when a new connection is about to be opened for
//!    it (as in Envoy, where every request not attached at once is pending):
//!    [`CircuitBreaker::try_pending`], `Err` → answer the overflow. Then ask
//!    [`CircuitBreaker::try_connection`] whether to open one more connection to the
//!    endpoint; `None` means the cluster is at `maxConnections` and the request waits for a
//!    connection of the endpoint to become ready. When one is ready, turn the wait into a
//!    request with [`PendingPermit::into_request`] (`Err` → overflow). Dropping the pending
//!    permit (timeout, client gone) just leaves the queue.
//! 3. Before sending on a connection, [`ConnectionPermit::start_request`]; once it answers
//!    [`Reuse::Close`] (`maxRequestsPerConnection` reached) finish that request and close the
//!    connection instead of putting it back in the pool.
//! 4. Drop the [`RequestPermit`] when the response is complete or the stream is reset, and
//!    the [`ConnectionPermit`] when the connection closes.
//! 5. Before a retry, [`CircuitBreaker::try_retry`]; `None` → don't retry, return the last
//!    result. Hold the [`RetryPermit`] until the retried attempt finishes (it also needs its
//!    own request permit, as any attempt).
//!
//! The connection counter is cluster-wide while connections are pooled per endpoint; as in
//! Envoy, an endpoint with no connection at all may always open one, so that a request
//! queued for it is never stuck behind other endpoints' connections.
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::{HeaderValue, Response, StatusCode};

use super::policy::PoolLimits;

/// Which threshold refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowKind {
    Requests,
    PendingRequests,
}

/// A request refused by the circuit breaker: answered by the proxy itself, without
/// touching the endpoint (and without counting against it in outlier detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upstream overflow: {kind:?} limit reached")]
pub struct Overflow {
    pub kind: OverflowKind,
}

impl Overflow {
    pub const STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
    /// Envoy marks its own overflow replies with `x-envoy-overloaded: true`.
    pub const HEADER: &'static str = "x-envoy-overloaded";
    /// The access-log response flag for upstream overflow.
    pub const RESPONSE_FLAG: &'static str = "UO";
    /// Envoy's body for a request refused before reaching the upstream.
    pub const BODY: &'static str =
        "upstream connect error or disconnect/reset before headers. reset reason: overflow";

    /// The reply Envoy sends: 503, `x-envoy-overloaded: true`.
    pub fn response<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = Self::STATUS;
        response
            .headers_mut()
            .insert(Self::HEADER, HeaderValue::from_static("true"));
        response
    }
}

/// The circuit breaker of one cluster, shared by every task sending to it.
#[derive(Debug)]
pub struct CircuitBreaker {
    max_requests: AtomicU32,
    max_pending: AtomicU32,
    max_connections: AtomicU32,
    max_retries: AtomicU32,
    /// 0 = unlimited.
    max_requests_per_connection: AtomicU32,
    requests: AtomicU32,
    pending: AtomicU32,
    connections: AtomicU32,
    retries: AtomicU32,
}

/// Current counts, for metrics and the admin endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: u32,
    pub pending: u32,
    pub connections: u32,
    pub retries: u32,
}

fn acquire(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then(|| n + 1)
        })
        .is_ok()
}

fn release(counter: &AtomicU32) {
    // Saturating: a permit always pairs with an increment, but never wrap if that breaks.
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

impl CircuitBreaker {
    pub fn new(limits: &PoolLimits) -> Arc<Self> {
        let breaker = Arc::new(Self {
            max_requests: AtomicU32::new(0),
            max_pending: AtomicU32::new(0),
            max_connections: AtomicU32::new(0),
            max_retries: AtomicU32::new(0),
            max_requests_per_connection: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        });
        breaker.update(limits);
        breaker
    }

    /// New thresholds after a DestinationRule change. Counts carry over: permits already
    /// held stay valid, and new ones are refused until the counts drop below the new
    /// thresholds. Connections opened before keep their per-connection request limit.
    pub fn update(&self, limits: &PoolLimits) {
        self.max_requests
            .store(limits.max_requests, Ordering::Release);
        self.max_pending
            .store(limits.max_pending_requests, Ordering::Release);
        self.max_connections
            .store(limits.max_connections, Ordering::Release);
        self.max_retries
            .store(limits.max_retries, Ordering::Release);
        self.max_requests_per_connection.store(
            limits
                .max_requests_per_connection
                .map_or(0, NonZeroU32::get),
            Ordering::Release,
        );
    }

    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Acquire),
            pending: self.pending.load(Ordering::Acquire),
            connections: self.connections.load(Ordering::Acquire),
            retries: self.retries.load(Ordering::Acquire),
        }
    }

    /// `maxRequestsPerConnection` for connections opened now; `None` is unlimited.
    pub fn max_requests_per_connection(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.max_requests_per_connection.load(Ordering::Acquire))
    }

    /// A request going onto a ready connection.
    pub fn try_request(self: &Arc<Self>) -> Result<RequestPermit, Overflow> {
        if acquire(&self.requests, self.max_requests.load(Ordering::Acquire)) {
            Ok(RequestPermit(self.clone()))
        } else {
            Err(Overflow {
                kind: OverflowKind::Requests,
            })
        }
    }

    /// A request that has to wait for a connection.
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingPermit, Overflow> {
        if acquire(&self.pending, self.max_pending.load(Ordering::Acquire)) {
            Ok(PendingPermit(Some(self.clone())))
        } else {
            Err(Overflow {
                kind: OverflowKind::PendingRequests,
            })
        }
    }

    /// Whether one more connection may be opened to an endpoint that currently has
    /// `endpoint_has_connections` (any, ready or busy or connecting). Over the cluster's
    /// limit the answer is `None`, except for an endpoint without any connection, which
    /// always gets one (Envoy's rule) and is counted like the others.
    pub fn try_connection(
        self: &Arc<Self>,
        endpoint_has_connections: bool,
    ) -> Option<ConnectionPermit> {
        let granted = acquire(
            &self.connections,
            self.max_connections.load(Ordering::Acquire),
        ) || (!endpoint_has_connections && acquire(&self.connections, u32::MAX));
        granted.then(|| ConnectionPermit {
            breaker: self.clone(),
            requests: AtomicU32::new(0),
            max_requests: self.max_requests_per_connection(),
        })
    }

    /// A retry, if the cluster's concurrent retries allow one.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryPermit> {
        acquire(&self.retries, self.max_retries.load(Ordering::Acquire))
            .then(|| RetryPermit(self.clone()))
    }
}

/// A request in flight on a connection. Drop it when the response has ended.
#[derive(Debug)]
#[must_use = "the request is only counted while the permit lives"]
pub struct RequestPermit(Arc<CircuitBreaker>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        release(&self.0.requests);
    }
}

/// A request waiting for a connection. Convert it when a connection is ready, or drop it
/// to leave the queue.
#[derive(Debug)]
#[must_use = "the request is only counted as pending while the permit lives"]
pub struct PendingPermit(Option<Arc<CircuitBreaker>>);

impl PendingPermit {
    /// The request got a connection: it stops pending and needs a request slot.
    pub fn into_request(mut self) -> Result<RequestPermit, Overflow> {
        let breaker = self.0.take();
        match breaker {
            Some(breaker) => {
                release(&breaker.pending);
                breaker.try_request()
            }
            // Unreachable: only `into_request` empties it, and it consumes the permit.
            None => Err(Overflow {
                kind: OverflowKind::Requests,
            }),
        }
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if let Some(breaker) = &self.0 {
            release(&breaker.pending);
        }
    }
}

/// Whether a connection may go back to the pool after the current request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    Keep,
    /// `maxRequestsPerConnection` reached: finish this request, then close.
    Close,
}

/// An open upstream connection (for weft, an HBONE stream carrying HTTP to one endpoint).
/// Shared by the requests multiplexed on it; drop it when the connection closes.
#[derive(Debug)]
#[must_use = "the connection is only counted while the permit lives"]
pub struct ConnectionPermit {
    breaker: Arc<CircuitBreaker>,
    requests: AtomicU32,
    max_requests: Option<NonZeroU32>,
}

impl ConnectionPermit {
    /// Counts a request sent on this connection.
    pub fn start_request(&self) -> Reuse {
        let sent = self
            .requests
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        match self.max_requests {
            Some(max) if sent >= max.get() => Reuse::Close,
            _ => Reuse::Keep,
        }
    }

    /// Requests sent on this connection so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        release(&self.breaker.connections);
    }
}

/// A retry in flight. Drop it when the retried attempt has finished.
#[derive(Debug)]
#[must_use = "the retry is only counted while the permit lives"]
pub struct RetryPermit(Arc<CircuitBreaker>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        release(&self.0.retries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, pending: u32, requests: u32, retries: u32) -> PoolLimits {
        PoolLimits {
            max_connections: connections,
            max_pending_requests: pending,
            max_requests: requests,
            max_retries: retries,
            ..PoolLimits::default()
        }
    }

    #[test]
    fn requests_overflow_at_the_limit_and_come_back_on_drop() {
        let breaker = CircuitBreaker::new(&limits(10, 10, 3, 3));
        let held: Vec<_> = (0..3)
            .map(|_| breaker.try_request().expect("within the limit"))
            .collect();
        let overflow = breaker.try_request().expect_err("4th request");
        assert_eq!(overflow.kind, OverflowKind::Requests);
        drop(held);
        assert_eq!(breaker.usage(), Usage::default());
        assert!(breaker.try_request().is_ok());
    }

    #[test]
    fn pending_overflow_and_conversion() {
        let breaker = CircuitBreaker::new(&limits(1, 2, 2, 3));
        let a = breaker.try_pending().expect("first waits");
        let b = breaker.try_pending().expect("second waits");
        assert_eq!(
            breaker.try_pending().expect_err("third").kind,
            OverflowKind::PendingRequests
        );
        let a = a.into_request().expect("a connection is ready");
        assert_eq!(breaker.usage().pending, 1);
        assert_eq!(breaker.usage().requests, 1);
        drop(b);
        assert_eq!(breaker.usage().pending, 0);

        // A waiting request that gets a connection while the cluster is at
        // http2MaxRequests still overflows.
        let _second = breaker.try_request().expect("second request");
        let waiting = breaker.try_pending().expect("waits");
        assert_eq!(
            waiting.into_request().expect_err("no request slot").kind,
            OverflowKind::Requests
        );
        assert_eq!(breaker.usage().pending, 0, "the failed wait left the queue");
        drop(a);
    }

    #[test]
    fn connections_are_bounded_except_for_an_endpoint_without_any() {
        let breaker = CircuitBreaker::new(&limits(2, 10, 10, 3));
        let one = breaker.try_connection(false).expect("first");
        let two = breaker.try_connection(true).expect("second");
        assert!(breaker.try_connection(true).is_none(), "at maxConnections");
        // An endpoint with nothing open still gets its first connection.
        let three = breaker.try_connection(false).expect("endpoint's first");
        assert_eq!(breaker.usage().connections, 3);
        drop(one);
        assert!(breaker.try_connection(true).is_none(), "still 2 of 2");
        drop(three);
        assert!(breaker.try_connection(true).is_some());
        drop(two);
    }

    #[test]
    fn max_requests_per_connection_closes_after_n() {
        let mut pool = limits(10, 10, 10, 3);
        pool.max_requests_per_connection = NonZeroU32::new(2);
        let breaker = CircuitBreaker::new(&pool);
        let connection = breaker.try_connection(false).expect("connection");
        assert_eq!(connection.start_request(), Reuse::Keep);
        assert_eq!(connection.start_request(), Reuse::Close);
        assert_eq!(connection.requests(), 2);

        let unlimited = CircuitBreaker::new(&PoolLimits::default());
        let connection = unlimited.try_connection(false).expect("connection");
        for _ in 0..1000 {
            assert_eq!(connection.start_request(), Reuse::Keep);
        }
    }

    #[test]
    fn retries_are_bounded() {
        let breaker = CircuitBreaker::new(&limits(10, 10, 10, 1));
        let retry = breaker.try_retry().expect("first retry");
        assert!(breaker.try_retry().is_none());
        drop(retry);
        assert!(breaker.try_retry().is_some());
    }

    #[test]
    fn defaults_are_effectively_unlimited() {
        let breaker = CircuitBreaker::new(&PoolLimits::default());
        let permits: Vec<_> = (0..10_000)
            .map(|_| breaker.try_request().expect("no limit"))
            .collect();
        assert_eq!(breaker.usage().requests, 10_000);
        drop(permits);
        assert_eq!(breaker.max_requests_per_connection(), None);
    }

    #[test]
    fn new_limits_apply_to_new_permits() {
        let breaker = CircuitBreaker::new(&limits(10, 10, 2, 3));
        let a = breaker.try_request().expect("a");
        let b = breaker.try_request().expect("b");
        breaker.update(&limits(10, 10, 1, 3));
        assert!(breaker.try_request().is_err());
        drop(a);
        assert!(breaker.try_request().is_err(), "1 in flight, limit 1");
        drop(b);
        assert!(breaker.try_request().is_ok());
    }

    #[test]
    fn overflow_reply_is_envoys() {
        let overflow = Overflow {
            kind: OverflowKind::PendingRequests,
        };
        let response = overflow.response(Overflow::BODY);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get("x-envoy-overloaded"),
            Some(&HeaderValue::from_static("true"))
        );
    }

    #[test]
    fn permits_are_send_and_the_breaker_is_shared() {
        fn shared<T: Send + Sync>() {}
        shared::<CircuitBreaker>();
        shared::<RequestPermit>();
        shared::<PendingPermit>();
        shared::<ConnectionPermit>();
        shared::<RetryPermit>();
        shared::<super::super::balance::Balancer>();
        shared::<super::super::outlier::OutlierDetector>();
    }
}
