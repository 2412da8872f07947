//! Load balancing over the endpoints of one cluster (service host + subset).
//!
//! The caller passes the current candidates on every pick — already restricted to ready,
//! subset-selected, non-ejected endpoints — and the balancer keeps what must outlive a
//! single pick: the round-robin position, the in-flight request count of each endpoint and
//! the hash ring. That state is rebuilt only when the candidate *set* changes (order and
//! duplicates don't matter), and in-flight counts carry over a rebuild.
use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use http::header::{COOKIE, HeaderMap, HeaderValue};
use http::{Uri, request};

use super::hash::{maglev_lookup, maglev_table, xxh64};
use super::policy::{ConsistentHash, CookieKey, HashKey, HashTable, LbPolicy};

/// What a consistent-hash policy may hash. Fields the policy doesn't use can stay `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HashInput<'a> {
    pub headers: Option<&'a HeaderMap>,
    /// The request target, for `httpQueryParameterName`.
    pub uri: Option<&'a Uri>,
    /// The client's address, for `useSourceIp`.
    pub source_ip: Option<IpAddr>,
    /// Downstream (remote, local) addresses, for generating a cookie. Envoy derives a
    /// generated cookie from the connection so concurrent requests on one connection get
    /// the same value; without it the value is random.
    pub connection: Option<(SocketAddr, SocketAddr)>,
}

impl<'a> HashInput<'a> {
    pub fn from_request(parts: &'a request::Parts, source_ip: Option<IpAddr>) -> Self {
        Self {
            headers: Some(&parts.headers),
            uri: Some(&parts.uri),
            source_ip,
            connection: None,
        }
    }
}

/// The chosen endpoint. Keep `in_flight` alive until the request is finished (response
/// complete or stream reset): LEAST_REQUEST counts it until then.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: SocketAddr,
    /// A generated `Set-Cookie` value to add to the response (consistent hash on a cookie
    /// with a ttl, when the request didn't carry the cookie).
    pub set_cookie: Option<HeaderValue>,
    pub in_flight: InFlight,
}

/// One request in flight to an endpoint, counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One cluster's balancer, shared by every task sending to the cluster.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    /// SplitMix64 state: a lock-free generator that a seed makes reproducible in tests.
    rng: AtomicU64,
    next: AtomicUsize,
    snapshot: RwLock<Arc<Snapshot>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Sorted and distinct, so the round-robin order and the ring don't depend on the order
    /// the caller lists endpoints in.
    endpoints: Vec<SocketAddr>,
    index: HashMap<SocketAddr, usize>,
    in_flight: Vec<Arc<AtomicUsize>>,
    ring: Vec<(u64, u32)>,
    /// The Maglev lookup table, when the policy hashes with Maglev.
    maglev: Vec<u32>,
}

impl Snapshot {
    fn build(candidates: &[SocketAddr], previous: &Snapshot, policy: &LbPolicy) -> Self {
        let mut endpoints = candidates.to_vec();
        endpoints.sort_unstable();
        endpoints.dedup();
        let index: HashMap<_, _> = endpoints.iter().enumerate().map(|(i, e)| (*e, i)).collect();
        let in_flight = endpoints
            .iter()
            .map(|e| {
                previous
                    .index
                    .get(e)
                    .and_then(|i| previous.in_flight.get(*i))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let (ring, maglev) = match policy {
            LbPolicy::ConsistentHash(hash) => match hash.table {
                HashTable::Ring { minimum_size } => (build_ring(&endpoints, minimum_size), vec![]),
                HashTable::Maglev { table_size } => {
                    (Vec::new(), maglev_table(&endpoints, table_size))
                }
            },
            _ => (Vec::new(), Vec::new()),
        };
        Self {
            endpoints,
            index,
            in_flight,
            ring,
            maglev,
        }
    }

    /// Whether `candidates` (in any order, possibly with duplicates) are exactly this set.
    fn same_set(&self, candidates: &[SocketAddr]) -> bool {
        // The usual case: the same list as last time, in the same order.
        if candidates == self.endpoints.as_slice() {
            return true;
        }
        if candidates.len() < self.endpoints.len() {
            return false;
        }
        let mut seen = vec![0u64; self.endpoints.len().div_ceil(64)];
        let mut distinct = 0;
        for candidate in candidates {
            let Some(&i) = self.index.get(candidate) else {
                return false;
            };
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                distinct += 1;
            }
        }
        distinct == self.endpoints.len()
    }
}

/// Envoy's ring hash: each endpoint contributes points hashed from `"<ip:port>_<n>"` and a
/// key belongs to the first point at or after its hash. Envoy gives each endpoint
/// ceil(minimum / endpoints) points, which changes with every endpoint added or removed and
/// then moves keys between endpoints that stayed; weft rounds that count up to a power of
/// two, so it only changes when the endpoint count crosses a power-of-two boundary and
/// removing an endpoint otherwise moves only that endpoint's keys. The ring holds between
/// `minimum` and twice as many points.
fn build_ring(endpoints: &[SocketAddr], minimum: u64) -> Vec<(u64, u32)> {
    let Ok(count) = u64::try_from(endpoints.len()) else {
        return Vec::new();
    };
    if count == 0 {
        return Vec::new();
    }
    let per_endpoint = minimum
        .div_ceil(count)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min((super::policy::MAXIMUM_RING_SIZE / count).max(1));
    let mut ring = Vec::with_capacity(usize::try_from(per_endpoint * count).unwrap_or(0));
    let mut key = String::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let Ok(i) = u32::try_from(i) else { break };
        for n in 0..per_endpoint {
            key.clear();
            let _ = write!(key, "{endpoint}_{n}");
            ring.push((xxh64(key.as_bytes(), 0), i));
        }
    }
    // Ties broken by endpoint so every replica builds the same ring.
    ring.sort_unstable();
    ring
}

fn lookup(ring: &[(u64, u32)], hash: u64) -> Option<usize> {
    let at = ring.partition_point(|(point, _)| *point < hash);
    ring.get(at)
        .or_else(|| ring.first())
        .and_then(|(_, i)| usize::try_from(*i).ok())
}

impl Balancer {
    pub fn new(policy: LbPolicy) -> Self {
        Self::with_seed(policy, fastrand::u64(..))
    }

    /// A balancer whose random choices (and round-robin start) follow from `seed`.
    pub fn with_seed(policy: LbPolicy, seed: u64) -> Self {
        let balancer = Self {
            policy,
            rng: AtomicU64::new(seed),
            next: AtomicUsize::new(0),
            snapshot: RwLock::new(Arc::default()),
        };
        // Envoy starts round robin at a random position so that proxies restarted together
        // don't all send their first request to the same endpoint.
        let start = usize::try_from(balancer.random() >> 32).unwrap_or(0);
        balancer.next.store(start, Ordering::Relaxed);
        balancer
    }

    pub fn policy(&self) -> &LbPolicy {
        &self.policy
    }

    /// Requests in flight to `endpoint`, as far as this balancer has handed them out.
    pub fn in_flight(&self, endpoint: SocketAddr) -> usize {
        let snapshot = self.current();
        snapshot
            .index
            .get(&endpoint)
            .and_then(|i| snapshot.in_flight.get(*i))
            .map_or(0, |count| count.load(Ordering::Acquire))
    }

    /// Chooses one of `candidates`; `None` only when there are none.
    pub fn pick(&self, candidates: &[SocketAddr], input: &HashInput<'_>) -> Option<Pick> {
        if candidates.is_empty() {
            return None;
        }
        let snapshot = self.snapshot_for(candidates);
        let n = snapshot.endpoints.len();
        let mut set_cookie = None;
        let chosen = match &self.policy {
            LbPolicy::RoundRobin | LbPolicy::Passthrough => {
                self.next.fetch_add(1, Ordering::Relaxed) % n
            }
            LbPolicy::Random => self.below(n),
            LbPolicy::LeastRequest => self.least_request(&snapshot),
            LbPolicy::ConsistentHash(hash) => {
                let (key, cookie) = self.hash_key(hash, input);
                set_cookie = cookie;
                let key = key.unwrap_or_else(|| self.random());
                match hash.table {
                    HashTable::Ring { .. } => lookup(&snapshot.ring, key)?,
                    HashTable::Maglev { .. } => maglev_lookup(&snapshot.maglev, key)?,
                }
            }
        };
        let endpoint = *snapshot.endpoints.get(chosen)?;
        let counter = snapshot.in_flight.get(chosen)?.clone();
        counter.fetch_add(1, Ordering::AcqRel);
        Some(Pick {
            endpoint,
            set_cookie,
            in_flight: InFlight(counter),
        })
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn snapshot_for(&self, candidates: &[SocketAddr]) -> Arc<Snapshot> {
        let current = self.current();
        if current.same_set(candidates) {
            return current;
        }
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another task may have rebuilt it while this one waited.
        if !slot.same_set(candidates) {
            *slot = Arc::new(Snapshot::build(candidates, &slot, &self.policy));
        }
        slot.clone()
    }

    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random index below `n` (> 0).
    fn below(&self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.random() % n64).unwrap_or(0)
    }

    /// Power of two choices. Envoy samples with replacement, so with two endpoints it sends
    /// a quarter of the requests to the busier one regardless of load; weft samples two
    /// distinct endpoints, which always prefers the less loaded of a pair.
    fn least_request(&self, snapshot: &Snapshot) -> usize {
        let n = snapshot.endpoints.len();
        if n == 1 {
            return 0;
        }
        let first = self.below(n);
        let second = (first + 1 + self.below(n - 1)) % n;
        let load = |i: usize| {
            snapshot
                .in_flight
                .get(i)
                .map_or(usize::MAX, |c| c.load(Ordering::Acquire))
        };
        if load(second) < load(first) {
            second
        } else {
            first
        }
    }

    /// The request's hash, and a cookie to set when one had to be generated. `None` when
    /// the request lacks the key: Envoy then picks a random point on the ring.
    fn hash_key(
        &self,
        hash: &ConsistentHash,
        input: &HashInput<'_>,
    ) -> (Option<u64>, Option<HeaderValue>) {
        match &hash.key {
            None => (None, None),
            Some(HashKey::Header(name)) => (input.headers.and_then(|h| header_hash(h, name)), None),
            Some(HashKey::SourceIp) => (
                input
                    .source_ip
                    .map(|ip| xxh64(ip.to_string().as_bytes(), 0)),
                None,
            ),
            Some(HashKey::QueryParameter(name)) => (
                input
                    .uri
                    .and_then(Uri::query)
                    .and_then(|query| query_value(query, name))
                    .map(|value| xxh64(value.as_bytes(), 0)),
                None,
            ),
            Some(HashKey::Cookie(cookie)) => {
                if let Some(value) = input.headers.and_then(|h| cookie_value(h, &cookie.name)) {
                    return (Some(xxh64(value.as_bytes(), 0)), None);
                }
                if cookie.ttl.is_none() {
                    return (None, None);
                }
                let seed = match input.connection {
                    Some((remote, local)) => xxh64(format!("{remote}{local}").as_bytes(), 0),
                    None => self.random(),
                };
                let value = format!("{seed:016x}");
                (
                    Some(xxh64(value.as_bytes(), 0)),
                    set_cookie_header(cookie, &value),
                )
            }
        }
    }
}

/// Envoy hashes a header's values sorted, each hash seeding the next, so the order they
/// arrive in doesn't matter.
fn header_hash(headers: &HeaderMap, name: &str) -> Option<u64> {
    let mut values: Vec<&[u8]> = headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values.iter().fold(0, |seed, value| xxh64(value, seed)))
}

/// The first value of query parameter `name`, undecoded as Envoy hashes it.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The first cookie called `name`, without the quotes Envoy strips.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_string()
            })
        })
}

/// Envoy's `Set-Cookie` for a generated hash cookie.
fn set_cookie_header(cookie: &CookieKey, value: &str) -> Option<HeaderValue> {
    let mut text = format!("{}=\"{value}\"", cookie.name);
    if let Some(ttl) = cookie.ttl.filter(|ttl| ttl.as_secs() > 0) {
        text.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = &cookie.path {
        text.push_str(&format!("; Path={path}"));
    }
    text.push_str("; HttpOnly");
    // A cookie name or path that isn't a valid header value can't be sent; the request is
    // still balanced on the generated value.
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    fn hashing(key: HashKey) -> LbPolicy {
        LbPolicy::ConsistentHash(ConsistentHash {
            key: Some(key),
            table: HashTable::default(),
        })
    }

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-user",
            HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    #[test]
    fn empty_candidates_give_none() {
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
            hashing(HashKey::SourceIp),
        ] {
            let balancer = Balancer::with_seed(policy, 1);
            assert!(balancer.pick(&[], &HashInput::default()).is_none());
        }
    }

    #[test]
    fn round_robin_cycles_in_a_stable_order() {
        let balancer = Balancer::with_seed(LbPolicy::RoundRobin, 7);
        let eps = endpoints(3);
        let picks: Vec<_> = (0..6)
            .map(|_| {
                balancer
                    .pick(&eps, &HashInput::default())
                    .expect("pick")
                    .endpoint
            })
            .collect();
        assert_eq!(picks[..3], picks[3..], "one full cycle repeats");
        let mut first_cycle = picks[..3].to_vec();
        first_cycle.sort();
        assert_eq!(first_cycle, eps, "each endpoint once per cycle");

        // The order the caller lists them in doesn't change the cycle.
        let mut reversed = eps.clone();
        reversed.reverse();
        let next = balancer
            .pick(&reversed, &HashInput::default())
            .expect("pick");
        assert_eq!(next.endpoint, picks[0]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let balancer = Balancer::with_seed(LbPolicy::LeastRequest, 42);
        let eps = endpoints(2);
        // Occupy whichever endpoint the first pick chose.
        let busy = balancer.pick(&eps, &HashInput::default()).expect("pick");
        for _ in 0..100 {
            let pick = balancer.pick(&eps, &HashInput::default()).expect("pick");
            assert_ne!(pick.endpoint, busy.endpoint);
        }
        assert_eq!(balancer.in_flight(busy.endpoint), 1);
        drop(busy);
        let idle = eps[0];
        assert_eq!(balancer.in_flight(idle), 0, "guards released on drop");

        // With three endpoints, one busy: it's chosen only if both samples would be worse,
        // which can't happen, so it's never chosen.
        let eps = endpoints(3);
        let held = balancer.pick(&eps, &HashInput::default()).expect("pick");
        let mut counts = HashMap::new();
        for _ in 0..300 {
            let pick = balancer.pick(&eps, &HashInput::default()).expect("pick");
            *counts.entry(pick.endpoint).or_insert(0) += 1;
        }
        assert!(!counts.contains_key(&held.endpoint), "{counts:?}");
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn in_flight_counts_survive_a_membership_change() {
        let balancer = Balancer::with_seed(LbPolicy::LeastRequest, 3);
        let eps = endpoints(2);
        let pick = balancer.pick(&eps, &HashInput::default()).expect("pick");
        let more = endpoints(4);
        let other = balancer.pick(&more, &HashInput::default()).expect("pick");
        let expected = 1 + usize::from(other.endpoint == pick.endpoint);
        assert_eq!(balancer.in_flight(pick.endpoint), expected);
    }

    #[test]
    fn random_spreads_over_all_endpoints() {
        let balancer = Balancer::with_seed(LbPolicy::Random, 9);
        let eps = endpoints(4);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let pick = balancer.pick(&eps, &HashInput::default()).expect("pick");
            *counts.entry(pick.endpoint).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|c| *c > 50), "{counts:?}");
    }

    #[test]
    fn same_header_same_endpoint() {
        let balancer = Balancer::with_seed(hashing(HashKey::Header("x-user".into())), 1);
        let eps = endpoints(5);
        let headers = header("alice");
        let input = HashInput {
            headers: Some(&headers),
            ..HashInput::default()
        };
        let first = balancer.pick(&eps, &input).expect("pick").endpoint;
        for _ in 0..20 {
            assert_eq!(balancer.pick(&eps, &input).expect("pick").endpoint, first);
        }
        // Another balancer (another waypoint replica) agrees.
        let other = Balancer::with_seed(hashing(HashKey::Header("x-user".into())), 99);
        let mut shuffled = eps.clone();
        shuffled.rotate_left(2);
        assert_eq!(other.pick(&shuffled, &input).expect("pick").endpoint, first);
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let policy = hashing(HashKey::Header("x-user".into()));
        let balancer = Balancer::with_seed(policy, 1);
        let eps = endpoints(10);
        let keys: Vec<HeaderMap> = (0..1000).map(|i| header(&format!("user-{i}"))).collect();
        let route = |candidates: &[SocketAddr]| -> Vec<SocketAddr> {
            keys.iter()
                .map(|headers| {
                    let input = HashInput {
                        headers: Some(headers),
                        ..HashInput::default()
                    };
                    balancer.pick(candidates, &input).expect("pick").endpoint
                })
                .collect()
        };
        let before = route(&eps);
        let removed = eps[3];
        let remaining: Vec<_> = eps.iter().copied().filter(|e| *e != removed).collect();
        let after = route(&remaining);
        let mut owned_by_removed = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == removed {
                owned_by_removed += 1;
                assert_ne!(*a, removed);
            } else {
                assert_eq!(a, b, "a key of a remaining endpoint moved");
            }
        }
        // Roughly its tenth of the keys, not a reshuffle.
        assert!(
            (40..=200).contains(&owned_by_removed),
            "{owned_by_removed} keys on the removed endpoint"
        );
        // Adding it back restores the original mapping.
        assert_eq!(route(&eps), before);
    }

    #[test]
    fn missing_hash_key_falls_back_to_random() {
        let balancer = Balancer::with_seed(hashing(HashKey::Header("x-user".into())), 5);
        let eps = endpoints(4);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.insert(
                balancer
                    .pick(&eps, &HashInput::default())
                    .expect("pick")
                    .endpoint,
            );
        }
        assert!(seen.len() > 1);
    }

    #[test]
    fn source_ip_and_query_parameter_keys() {
        let eps = endpoints(8);
        let by_ip = Balancer::with_seed(hashing(HashKey::SourceIp), 1);
        let from = |ip: [u8; 4]| HashInput {
            source_ip: Some(IpAddr::from(ip)),
            ..HashInput::default()
        };
        let a = by_ip.pick(&eps, &from([192, 168, 0, 1])).expect("pick");
        let b = by_ip.pick(&eps, &from([192, 168, 0, 1])).expect("pick");
        assert_eq!(a.endpoint, b.endpoint);

        let by_query = Balancer::with_seed(hashing(HashKey::QueryParameter("id".into())), 1);
        let uri1: Uri = "/items?x=1&id=42".parse().expect("uri");
        let uri2: Uri = "/other?id=42".parse().expect("uri");
        let pick = |uri: &Uri| {
            by_query
                .pick(
                    &eps,
                    &HashInput {
                        uri: Some(uri),
                        ..HashInput::default()
                    },
                )
                .expect("pick")
                .endpoint
        };
        assert_eq!(pick(&uri1), pick(&uri2));
        assert_eq!(query_value("a=1&id=42&id=7", "id"), Some("42"));
        assert_eq!(query_value("flag&id", "id"), Some(""));
        assert_eq!(query_value("a=1", "id"), None);
    }

    #[test]
    fn cookie_is_generated_when_absent_and_followed_when_present() {
        let policy = hashing(HashKey::Cookie(CookieKey {
            name: "session".into(),
            path: Some("/".into()),
            ttl: Some(Duration::from_secs(3600)),
        }));
        let balancer = Balancer::with_seed(policy, 1);
        let eps = endpoints(6);
        let connection = Some((
            SocketAddr::from(([10, 1, 0, 5], 40000)),
            SocketAddr::from(([10, 1, 0, 9], 15008)),
        ));
        let empty = HeaderMap::new();
        let first = balancer
            .pick(
                &eps,
                &HashInput {
                    headers: Some(&empty),
                    connection,
                    ..HashInput::default()
                },
            )
            .expect("pick");
        let set_cookie = first.set_cookie.clone().expect("a generated cookie");
        let text = set_cookie.to_str().expect("ascii");
        assert!(text.starts_with("session=\""), "{text}");
        assert!(text.ends_with("; Max-Age=3600; Path=/; HttpOnly"), "{text}");

        // The client sends it back: same endpoint, nothing more to set.
        let cookie_pair = text.split(';').next().expect("name=value");
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {cookie_pair}")).expect("cookie"),
        );
        let input = HashInput {
            headers: Some(&headers),
            ..HashInput::default()
        };
        for _ in 0..10 {
            let again = balancer.pick(&eps, &input).expect("pick");
            assert_eq!(again.endpoint, first.endpoint);
            assert!(again.set_cookie.is_none());
        }

        // A session cookie (ttl 0) has no Max-Age; without a ttl nothing is generated.
        let session = set_cookie_header(
            &CookieKey {
                name: "s".into(),
                path: None,
                ttl: Some(Duration::ZERO),
            },
            "abc",
        )
        .expect("valid");
        assert_eq!(session, "s=\"abc\"; HttpOnly");
        let no_ttl = Balancer::with_seed(
            hashing(HashKey::Cookie(CookieKey {
                name: "s".into(),
                path: None,
                ttl: None,
            })),
            1,
        );
        assert!(
            no_ttl
                .pick(&eps, &HashInput::default())
                .expect("pick")
                .set_cookie
                .is_none()
        );
    }

    #[test]
    fn ring_size_follows_the_minimum() {
        let eps = endpoints(10);
        let ring = build_ring(&eps, 1024);
        assert_eq!(ring.len(), 10 * 128);
        assert_eq!(build_ring(&eps[..9], 1024).len(), 9 * 128);
        assert_eq!(build_ring(&eps[..1], 3).len(), 4);
        assert!(build_ring(&[], 1024).is_empty());
        assert_eq!(lookup(&[], 5), None);
        assert_eq!(lookup(&[(10, 0), (20, 1)], 15), Some(1));
        assert_eq!(lookup(&[(10, 0), (20, 1)], 25), Some(0), "wraps around");
    }

    #[test]
    fn maglev_policy_picks_from_the_maglev_table() {
        let policy = LbPolicy::ConsistentHash(ConsistentHash {
            key: Some(HashKey::Header("x-user".into())),
            table: HashTable::Maglev { table_size: 251 },
        });
        let eps = endpoints(5);
        let table = maglev_table(&eps, 251);
        let balancer = Balancer::with_seed(policy.clone(), 1);
        let other = Balancer::with_seed(policy, 2);
        let mut reversed = eps.clone();
        reversed.reverse();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let headers = header(&format!("user-{i}"));
            let input = HashInput {
                headers: Some(&headers),
                ..HashInput::default()
            };
            let picked = balancer.pick(&eps, &input).expect("pick").endpoint;
            let hash = xxh64(format!("user-{i}").as_bytes(), 0);
            assert_eq!(Some(picked), maglev_lookup(&table, hash).map(|i| eps[i]));
            assert_eq!(
                other.pick(&reversed, &input).expect("pick").endpoint,
                picked
            );
            seen.insert(picked);
        }
        assert_eq!(seen.len(), 5, "keys spread over every endpoint");
    }

    #[test]
    fn ring_spreads_keys_over_every_endpoint() {
        let eps = endpoints(8);
        let ring = build_ring(&eps, 1024);
        let mut counts = [0usize; 8];
        for k in 0..8000u32 {
            counts[lookup(&ring, xxh64(&k.to_le_bytes(), 0)).expect("owner")] += 1;
        }
        // 1000 each on average; a 1024-point ring keeps every share within ±40%.
        for count in counts {
            assert!((600..=1400).contains(&count), "{counts:?}");
        }
    }
}
