//! The limits weft's HTTP servers put on their clients, against the denial-of-service
//! attacks HTTP servers keep shipping fixes for: Rapid Reset (CVE-2023-44487), MadeYouReset
//! (CVE-2025-8671), CONTINUATION floods, slowloris (headers trickled, connections opened
//! and left quiet) and one peer taking every connection.
//!
//! - [`H2Limits`]: what hyper's HTTP/2 server enforces per connection (concurrent streams,
//!   header list size, which also bounds CONTINUATION frames, resets, keep-alive pings).
//! - [`Http1Limits`]: HTTP/1.1's header-read timeout and header count.
//! - [`ConnectionTimeouts`] with [`StreamActivity`]: a connection without a stream is
//!   closed, soon if it never carried one (slowloris), later once it has (idle).
//! - [`PeerConnections`]: connections one source address may hold open at once.
//!
//! Each server keeps its values in one place: the HBONE server in
//! `hbone::HboneServerConfig`, the waypoint's HTTP in an [`HttpServerLimits`] of its context.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use tokio::sync::watch;

/// hyper's HTTP/2 server settings that bound what one client connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond it are refused (REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (decoded bytes). h2 also derives from it, and the
    /// frame size, how many CONTINUATION frames one header block may take (at least 5):
    /// beyond either, the connection gets GOAWAY.
    pub max_header_list_size: u32,
    /// Streams the client may reset before the server has accepted them (Rapid Reset):
    /// one more and the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset because of the client's errors (MadeYouReset):
    /// one more and the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub max_local_error_reset_streams: usize,
    /// PINGs on a connection; one not answered within the timeout closes it.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl H2Limits {
    /// The HBONE server's: ztunnel's (200 streams, as hyper's default; a 64 KiB header
    /// list: CONNECT carries a handful of headers) and h2's and hyper's reset limits
    /// (20 pending-accept, 1024 local-error), pings every 10 s answered within 20 s (the
    /// HBONE client's).
    pub const HBONE: Self = Self {
        max_concurrent_streams: 200,
        max_header_list_size: 64 * 1024,
        max_pending_accept_reset_streams: 20,
        max_local_error_reset_streams: 1024,
        keep_alive_interval: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(20),
    };

    /// The waypoint's and the ingress gateway's HTTP: Envoy's edge recommendations (100
    /// streams per connection, its default 60 KiB of request headers) and the same reset
    /// limits and pings as HBONE.
    pub const HTTP: Self = Self {
        max_concurrent_streams: 100,
        max_header_list_size: 60 * 1024,
        ..Self::HBONE
    };

    /// Sets these limits on a hyper HTTP/2 server (with the timer the pings need).
    pub fn apply<E>(&self, builder: &mut hyper::server::conn::http2::Builder<E>) {
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams)
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
    }

    /// The same on the HTTP/2 half of a server speaking both versions.
    pub fn apply_auto<E>(&self, builder: &mut hyper_util::server::conn::auto::Builder<E>) {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams)
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
    }
}

/// hyper's HTTP/1.1 server settings that bound a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http1Limits {
    /// From the first byte hyper waits for of a request's head to its end (slowloris). It
    /// also runs while a keep-alive connection waits for its next request, so it is the
    /// longest an HTTP/1.1 connection stays open idle between requests.
    pub header_read_timeout: Duration,
    /// Header lines in one request; more are answered 431.
    pub max_headers: usize,
}

impl Http1Limits {
    /// hyper's: 30 s to read a request head, 100 headers (the head, with its headers, must
    /// also fit hyper's ~400 KiB read buffer).
    pub const HTTP: Self = Self {
        header_read_timeout: Duration::from_secs(30),
        max_headers: 100,
    };

    /// A hyper HTTP/1.1 server with these limits (the endpoints that speak only HTTP/1.1:
    /// metrics, readiness, the agent's admin).
    pub fn http1_builder(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_headers(self.max_headers);
        builder
    }

    /// Sets these limits on the HTTP/1.1 half of a server speaking both versions.
    pub fn apply_auto<E>(&self, builder: &mut hyper_util::server::conn::auto::Builder<E>) {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_headers(self.max_headers);
    }
}

/// Everything a server speaking HTTP/1.1 and HTTP/2 (the waypoint's HTTP, the ingress
/// gateway's listeners) limits, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpServerLimits {
    pub h2: H2Limits,
    pub http1: Http1Limits,
    pub timeouts: ConnectionTimeouts,
}

impl HttpServerLimits {
    pub const HTTP: Self = Self {
        h2: H2Limits::HTTP,
        http1: Http1Limits::HTTP,
        timeouts: ConnectionTimeouts::HTTP,
    };

    /// Sets the HTTP/1.1 and HTTP/2 limits on a server speaking both versions (the
    /// timeouts are the caller's to watch, with [`StreamActivity`]).
    pub fn apply_auto<E>(&self, builder: &mut hyper_util::server::conn::auto::Builder<E>) {
        self.h2.apply_auto(builder);
        self.http1.apply_auto(builder);
    }
}

impl Default for HttpServerLimits {
    fn default() -> Self {
        Self::HTTP
    }
}

/// How long a connection may go without an open stream (HTTP/2) or request (HTTP/1.1
/// upgrades aside) before the server closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From the connection's start to its first request's complete headers: a client
    /// trickling a header block, or sending nothing, is cut off after this.
    pub first_request: Duration,
    /// Without any open stream, once it has carried one.
    pub idle: Duration,
}

impl ConnectionTimeouts {
    /// HBONE clients (agents, waypoints) open a connection to carry a stream at once and
    /// close it themselves after 5 minutes without streams: the server waits longer.
    pub const HBONE: Self = Self {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(600),
    };

    /// HTTP clients may open a connection ahead of their first request (gRPC channels
    /// do); Envoy's idle timeout is an hour.
    pub const HTTP: Self = Self {
        first_request: Duration::from_secs(30),
        idle: Duration::from_secs(3600),
    };

    /// How long a connection may stay without streams, given whether it has had one.
    pub fn quiet_allowed(&self, carried_a_stream: bool) -> Duration {
        if carried_a_stream {
            self.idle
        } else {
            self.first_request
        }
    }
}

/// How long a connection closed for never completing a request gets to take its GOAWAY
/// (HTTP/2 servers wait for the PING that follows it to be answered; an attacker does not
/// answer).
pub const NO_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Why a connection was closed for being quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// It never completed a request in time.
    NoFirstRequest(Duration),
    /// It carried none for this long.
    Idle(Duration),
}

#[derive(Debug, Clone, Copy, Default)]
struct Streams {
    open: usize,
    /// Streams ever opened; tells a stream that opened and closed between two looks.
    opened: u64,
}

/// The streams open on one connection, for [`ConnectionTimeouts`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamActivity {
    streams: Arc<watch::Sender<Streams>>,
}

impl Default for StreamActivity {
    fn default() -> Self {
        Self::new()
    }
}

/// One open stream; dropping it closes it.
#[derive(Debug)]
pub struct OpenStream {
    streams: Arc<watch::Sender<Streams>>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.streams
            .send_modify(|s| s.open = s.open.saturating_sub(1));
    }
}

impl StreamActivity {
    pub fn new() -> Self {
        Self {
            streams: Arc::new(watch::Sender::new(Streams::default())),
        }
    }

    /// A stream opens (its request's headers complete); it is open until the guard drops.
    pub fn opened(&self) -> OpenStream {
        self.streams.send_modify(|s| {
            s.open += 1;
            s.opened += 1;
        });
        OpenStream {
            streams: Arc::clone(&self.streams),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.streams.borrow().open
    }

    /// Resolves once the connection has gone without an open stream for longer than
    /// `timeouts` allow.
    pub async fn quiet_for_too_long(&self, timeouts: ConnectionTimeouts) -> Quiet {
        let mut streams = self.streams.subscribe();
        loop {
            // The borrow the watch returns is dropped at once: it must not be held across
            // an await. An error is unreachable: `self` holds the sender.
            let seen = streams.wait_for(|s| s.open == 0).await.map(|quiet| *quiet);
            let Ok(seen) = seen else {
                return std::future::pending().await;
            };
            let carried = seen.opened > 0;
            let allowed = timeouts.quiet_allowed(carried);
            let woke = streams.wait_for(|s| s.open > 0 || s.opened != seen.opened);
            if tokio::time::timeout(allowed, woke).await.is_err() {
                return if carried {
                    Quiet::Idle(allowed)
                } else {
                    Quiet::NoFirstRequest(allowed)
                };
            }
        }
    }
}

/// Connections open per source address, up to a maximum each. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerConnections {
    max_per_peer: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection of a peer; dropping it frees its place.
#[derive(Debug)]
pub struct PeerSlot {
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.open);
        if let Some(count) = open.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl PeerConnections {
    pub fn new(max_per_peer: usize) -> Self {
        Self {
            max_per_peer,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for one more connection of `peer`, or `None` when it holds the maximum.
    pub fn admit(&self, peer: IpAddr) -> Option<PeerSlot> {
        let mut open = crate::sync::lock(&self.open);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.max_per_peer {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peer,
            open: Arc::clone(&self.open),
        })
    }

    /// Connections `peer` holds open now.
    pub fn open(&self, peer: IpAddr) -> usize {
        crate::sync::lock(&self.open)
            .get(&peer)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_maximum_and_a_closed_connection_frees_a_place() {
        let peers = PeerConnections::new(2);
        let a: IpAddr = "10.244.1.5".parse().expect("ip");
        let b: IpAddr = "10.244.1.6".parse().expect("ip");
        let first = peers.admit(a).expect("first");
        let _second = peers.admit(a).expect("second");
        assert!(peers.admit(a).is_none(), "a third is refused");
        assert!(peers.admit(b).is_some(), "another peer is not affected");
        drop(first);
        assert_eq!(peers.open(a), 1);
        assert!(peers.admit(a).is_some(), "a freed place is taken again");
    }

    #[test]
    fn a_connection_gets_the_first_request_timeout_until_it_carries_a_stream() {
        let timeouts = ConnectionTimeouts {
            first_request: Duration::from_secs(1),
            idle: Duration::from_secs(9),
        };
        assert_eq!(timeouts.quiet_allowed(false), Duration::from_secs(1));
        assert_eq!(timeouts.quiet_allowed(true), Duration::from_secs(9));
    }

    #[tokio::test]
    async fn an_http1_endpoint_closes_a_connection_trickling_its_head() {
        use tokio::io::AsyncWriteExt;
        let limits = Http1Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Http1Limits::HTTP
        };
        let (mut client, server) = tokio::io::duplex(4096);
        let service = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        });
        let served = tokio::spawn(
            limits
                .http1_builder()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service),
        );
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        // The head never ends; the client stays connected.
        let ended = tokio::time::timeout(Duration::from_secs(10), served).await;
        assert!(ended.is_ok(), "the endpoint closed the connection");
        drop(client);
    }

    fn short() -> ConnectionTimeouts {
        ConnectionTimeouts {
            first_request: Duration::from_millis(200),
            idle: Duration::from_millis(400),
        }
    }

    #[tokio::test]
    async fn a_connection_without_a_stream_is_quiet_after_the_first_request_timeout() {
        let activity = StreamActivity::new();
        let quiet = tokio::time::timeout(
            Duration::from_secs(10),
            activity.quiet_for_too_long(short()),
        )
        .await
        .expect("resolves");
        assert_eq!(quiet, Quiet::NoFirstRequest(Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn an_open_stream_keeps_the_connection_and_its_end_starts_the_idle_timeout() {
        let activity = StreamActivity::new();
        let stream = activity.opened();
        let watch = activity.quiet_for_too_long(short());
        tokio::pin!(watch);
        // Three times the idle timeout with a stream open: not quiet.
        assert!(
            tokio::time::timeout(Duration::from_millis(1200), watch.as_mut())
                .await
                .is_err(),
            "a connection with an open stream is not quiet"
        );
        drop(stream);
        let quiet = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("resolves");
        assert_eq!(quiet, Quiet::Idle(Duration::from_millis(400)));
    }

    #[tokio::test]
    async fn a_stream_opened_and_closed_between_two_looks_still_counts() {
        let activity = StreamActivity::new();
        let watch = activity.quiet_for_too_long(short());
        tokio::pin!(watch);
        // Let the watch start waiting with the first-request timeout.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), watch.as_mut())
                .await
                .is_err()
        );
        drop(activity.opened());
        let quiet = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("resolves");
        assert_eq!(quiet, Quiet::Idle(Duration::from_millis(400)));
    }
}
