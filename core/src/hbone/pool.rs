//! Which pooled connection a new stream may use: the pure rules of the HBONE client pool.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::identity::Identity;

/// Connections are shared only between streams that would make the very same connection:
/// same certificate presented, same peer identity required, same address dialled, and
/// the same source address (the connector creates sockets inside the source pod's network
/// namespace, so two pods never share a connection even under one service account).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: Identity,
    pub destination: Identity,
    pub address: SocketAddr,
    pub source_ip: Option<IpAddr>,
}

/// What a pooled connection looks like at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionState {
    pub active_streams: usize,
    pub closed: bool,
    /// Whether the certificate this connection presented is still the identity's current
    /// one; after a rotation new streams go to a connection made with the new certificate.
    pub presented_current: bool,
    /// Whether the peer was verified under the trust bundle in force; after a change of
    /// the bundle (a root added or removed) new streams go to a connection verified under
    /// the new one, so none rides a chain to a removed root.
    pub verified_under_current_trust: bool,
    pub peer_not_after: SystemTime,
    /// When the certificate this connection presented expires. With the CA away it is not
    /// replaced and stays "current"; a stream started after its expiry must not ride a
    /// connection authenticated by it (a new connection would fail its handshake).
    pub local_not_after: SystemTime,
    pub idle_since: Option<Instant>,
}

/// Why a connection takes no more new streams, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    Closed,
    Rotated,
    TrustChanged,
    PeerExpired,
    LocalExpired,
    Idle,
}

impl Retire {
    pub fn as_str(self) -> &'static str {
        match self {
            Retire::Closed => "closed",
            Retire::Rotated => "local certificate rotated",
            Retire::TrustChanged => "trust bundle changed",
            Retire::PeerExpired => "peer certificate expired",
            Retire::LocalExpired => "local certificate expired",
            Retire::Idle => "idle",
        }
    }
}

/// Whether to drop the connection from the pool. Streams already on it continue; it closes
/// when the last one ends. `idle_timeout` is checked only by the periodic sweep: a stream
/// asking for a connection is better served by an idle one than by a new one.
pub(crate) fn retire(
    state: &ConnectionState,
    now: SystemTime,
    instant: Instant,
    idle_timeout: Option<Duration>,
) -> Option<Retire> {
    if state.closed {
        return Some(Retire::Closed);
    }
    if !state.presented_current {
        return Some(Retire::Rotated);
    }
    if !state.verified_under_current_trust {
        return Some(Retire::TrustChanged);
    }
    if state.peer_not_after <= now {
        return Some(Retire::PeerExpired);
    }
    if state.local_not_after <= now {
        return Some(Retire::LocalExpired);
    }
    if let (Some(timeout), Some(since), 0) = (idle_timeout, state.idle_since, state.active_streams)
        && instant.saturating_duration_since(since) >= timeout
    {
        return Some(Retire::Idle);
    }
    None
}

/// Whether a connection kept in the pool can carry one more stream.
pub(crate) fn has_room(state: &ConnectionState, max_streams: usize) -> bool {
    state.active_streams < max_streams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sa: &str) -> Identity {
        Identity::in_default_trust_domain("ns", sa).expect("valid")
    }

    fn key(src: &str, dst: &str, addr: &str, source_ip: Option<&str>) -> PoolKey {
        PoolKey {
            source: id(src),
            destination: id(dst),
            address: addr.parse().expect("addr"),
            source_ip: source_ip.map(|s| s.parse().expect("ip")),
        }
    }

    fn healthy() -> ConnectionState {
        ConnectionState {
            active_streams: 3,
            closed: false,
            presented_current: true,
            verified_under_current_trust: true,
            peer_not_after: SystemTime::now() + Duration::from_secs(3600),
            local_not_after: SystemTime::now() + Duration::from_secs(3600),
            idle_since: None,
        }
    }

    #[test]
    fn keys_differ_in_every_component() {
        use std::collections::HashSet;
        let base = key("a", "b", "10.0.0.1:15008", Some("10.0.1.1"));
        let variants = [
            base.clone(),
            key("x", "b", "10.0.0.1:15008", Some("10.0.1.1")),
            key("a", "x", "10.0.0.1:15008", Some("10.0.1.1")),
            key("a", "b", "10.0.0.2:15008", Some("10.0.1.1")),
            key("a", "b", "10.0.0.1:15009", Some("10.0.1.1")),
            key("a", "b", "10.0.0.1:15008", Some("10.0.1.2")),
            key("a", "b", "10.0.0.1:15008", None),
        ];
        let distinct: HashSet<_> = variants.iter().collect();
        assert_eq!(distinct.len(), variants.len());
        assert_eq!(base, key("a", "b", "10.0.0.1:15008", Some("10.0.1.1")));
    }

    #[test]
    fn a_healthy_connection_stays_and_takes_streams_up_to_the_limit() {
        let now = SystemTime::now();
        let mut state = healthy();
        assert_eq!(retire(&state, now, Instant::now(), None), None);
        state.active_streams = 99;
        assert!(has_room(&state, 100));
        state.active_streams = 100;
        assert!(!has_room(&state, 100));
        // Full is not a reason to retire: streams end and make room again.
        assert_eq!(retire(&state, now, Instant::now(), None), None);
    }

    #[test]
    fn closed_rotated_retrusted_and_expired_connections_retire() {
        let now = SystemTime::now();
        let instant = Instant::now();
        let closed = ConnectionState {
            closed: true,
            ..healthy()
        };
        assert_eq!(retire(&closed, now, instant, None), Some(Retire::Closed));
        let rotated = ConnectionState {
            presented_current: false,
            ..healthy()
        };
        assert_eq!(retire(&rotated, now, instant, None), Some(Retire::Rotated));
        let retrusted = ConnectionState {
            verified_under_current_trust: false,
            ..healthy()
        };
        assert_eq!(
            retire(&retrusted, now, instant, None),
            Some(Retire::TrustChanged)
        );
        let expired = ConnectionState {
            peer_not_after: now,
            ..healthy()
        };
        assert_eq!(
            retire(&expired, now, instant, None),
            Some(Retire::PeerExpired)
        );
        // The CA away: the local certificate is not rotated, so still current, but
        // expired — no new stream rides it.
        let unrenewed = ConnectionState {
            local_not_after: now,
            ..healthy()
        };
        assert_eq!(
            retire(&unrenewed, now, instant, None),
            Some(Retire::LocalExpired)
        );
    }

    #[test]
    fn idleness_counts_only_without_streams_and_only_in_the_sweep() {
        let now = SystemTime::now();
        let instant = Instant::now();
        let timeout = Some(Duration::from_secs(60));
        let since = instant
            .checked_sub(Duration::from_secs(61))
            .expect("uptime");
        let idle = ConnectionState {
            active_streams: 0,
            idle_since: Some(since),
            ..healthy()
        };
        assert_eq!(retire(&idle, now, instant, timeout), Some(Retire::Idle));
        assert_eq!(retire(&idle, now, instant, None), None);
        let busy_again = ConnectionState {
            active_streams: 1,
            ..idle
        };
        assert_eq!(retire(&busy_again, now, instant, timeout), None);
        let recently = ConnectionState {
            idle_since: Some(instant),
            ..idle
        };
        assert_eq!(retire(&recently, now, instant, timeout), None);
    }
}
