//! The traffic policy that applies to one destination (service, subset, port), resolved from
//! a DestinationRule with Istio's merge rules and the defaults Istio gives Envoy.
//!
//! Merge order, as istiod's `MergeSubsetTrafficPolicy` does it:
//! 1. the top-level `trafficPolicy`; if one of its `portLevelSettings` names the port, that
//!    entry replaces all four groups (loadBalancer, connectionPool, outlierDetection, tls) —
//!    a group the port entry leaves out falls back to the default, it is *not* inherited;
//! 2. the subset's `trafficPolicy` overrides group by group: a group it sets replaces the
//!    one from step 1, a group it leaves out is inherited;
//! 3. if the subset's own `portLevelSettings` name the port, that entry replaces all four
//!    groups again, defaults for the ones it leaves out.
//!
//! Values are read as Istio reads them: Istio cannot tell an unset integer from 0, so 0 in a
//! connection pool limit means "default", and invalid durations (which validation refuses
//! before an object enters the registry) fall back to the default instead of panicking.
use std::num::NonZeroU32;
use std::time::Duration;

use weft_config::api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    LocalityLbSetting, OutlierDetection, SimpleLb, TrafficPolicy,
};
use weft_config::duration;

/// Envoy's ring hash default `minimum_ring_size`, which Istio keeps.
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's default `maximum_ring_size`; Envoy refuses a larger minimum, weft clamps to it.
pub const MAXIMUM_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size (a prime), which Istio keeps.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65_537;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectivePolicy {
    pub load_balancer: LbPolicy,
    pub connection_pool: PoolLimits,
    /// `None`: no outlier detection (Istio configures none unless `outlierDetection` is set).
    pub outlier: Option<OutlierConfig>,
    /// Client TLS towards the endpoints, carried for completeness (HBONE already secures
    /// mesh traffic; this matters for external services).
    pub tls: Option<ClientTlsSettings>,
    /// Slow start window (`warmupDurationSecs`), with ROUND_ROBIN and LEAST_REQUEST only.
    pub warmup: Option<Duration>,
    /// The rule's `localityLbSetting`; `None` leaves the mesh config's default in force.
    pub locality: Option<LocalityLbSetting>,
}

/// The four groups a level of a DestinationRule can set.
#[derive(Clone, Copy, Default)]
struct Groups<'a> {
    load_balancer: Option<&'a LoadBalancerSettings>,
    connection_pool: Option<&'a ConnectionPoolSettings>,
    outlier: Option<&'a OutlierDetection>,
    tls: Option<&'a ClientTlsSettings>,
}

impl<'a> Groups<'a> {
    /// The groups of `policy` for `port`, and whether a port-level entry supplied them.
    fn of(policy: &'a TrafficPolicy, port: u16) -> (Self, bool) {
        let level = policy.port_level_settings.iter().find(|level| {
            level
                .port
                .as_ref()
                .is_some_and(|p| p.number == u32::from(port))
        });
        match level {
            Some(level) => (
                Self {
                    load_balancer: level.load_balancer.as_ref(),
                    connection_pool: level.connection_pool.as_ref(),
                    outlier: level.outlier_detection.as_ref(),
                    tls: level.tls.as_ref(),
                },
                true,
            ),
            None => (
                Self {
                    load_balancer: policy.load_balancer.as_ref(),
                    connection_pool: policy.connection_pool.as_ref(),
                    outlier: policy.outlier_detection.as_ref(),
                    tls: policy.tls.as_ref(),
                },
                false,
            ),
        }
    }

    fn overridden_by(self, other: Self, wholesale: bool) -> Self {
        if wholesale {
            return other;
        }
        Self {
            load_balancer: other.load_balancer.or(self.load_balancer),
            connection_pool: other.connection_pool.or(self.connection_pool),
            outlier: other.outlier.or(self.outlier),
            tls: other.tls.or(self.tls),
        }
    }
}

impl EffectivePolicy {
    /// The policy for traffic to `port` (the service port) of the DestinationRule's host,
    /// restricted to `subset` when a route names one. A subset the rule doesn't define
    /// contributes nothing here; the caller finds no endpoints for it (Istio answers 503).
    pub fn resolve(dr: Option<&DestinationRule>, subset: Option<&str>, port: u16) -> Self {
        let Some(dr) = dr else {
            return Self::default();
        };
        let mut groups = dr
            .spec
            .traffic_policy
            .as_ref()
            .map(|policy| Groups::of(policy, port).0)
            .unwrap_or_default();
        let subset_policy = subset.and_then(|name| {
            dr.spec
                .subsets
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.traffic_policy.as_ref())
        });
        if let Some(policy) = subset_policy {
            let (subset_groups, port_level) = Groups::of(policy, port);
            groups = groups.overridden_by(subset_groups, port_level);
        }
        let load_balancer: LbPolicy = groups
            .load_balancer
            .map(LbPolicy::from_settings)
            .unwrap_or_default();
        let warmup = groups
            .load_balancer
            .and_then(|lb| lb.warmup_duration_secs.as_deref())
            .and_then(|text| duration::parse(text).ok())
            .filter(|window| {
                !window.is_zero()
                    && matches!(load_balancer, LbPolicy::RoundRobin | LbPolicy::LeastRequest)
            });
        Self {
            warmup,
            locality: groups
                .load_balancer
                .and_then(|lb| lb.locality_lb_setting.clone()),
            load_balancer,
            connection_pool: groups
                .connection_pool
                .map(PoolLimits::from_settings)
                .unwrap_or_default(),
            outlier: groups.outlier.map(OutlierConfig::from_settings),
            tls: groups.tls.cloned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load balancing

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Istio's default since 1.14 (also for `simple: UNSPECIFIED` and the deprecated
    /// `LEAST_CONN`): power of two choices over in-flight requests.
    #[default]
    LeastRequest,
    Random,
    /// Envoy forwards to the caller's original destination address without balancing. A
    /// waypoint's original destination is the service, not an endpoint, so weft balances
    /// PASSTHROUGH round robin over the endpoints instead.
    Passthrough,
    ConsistentHash(ConsistentHash),
}

impl LbPolicy {
    pub fn from_settings(settings: &LoadBalancerSettings) -> Self {
        // Istio applies `simple` first and lets `consistentHash` override it.
        if let Some(hash) = &settings.consistent_hash {
            let key = if let Some(header) = &hash.http_header_name {
                Some(HashKey::Header(header.to_ascii_lowercase()))
            } else if let Some(cookie) = &hash.http_cookie {
                Some(HashKey::Cookie(CookieKey {
                    name: cookie.name.clone(),
                    path: cookie.path.clone().filter(|p| !p.is_empty()),
                    ttl: cookie
                        .ttl
                        .as_deref()
                        .and_then(|ttl| duration::parse(ttl).ok()),
                }))
            } else if hash.use_source_ip == Some(true) {
                Some(HashKey::SourceIp)
            } else {
                hash.http_query_parameter_name
                    .clone()
                    .map(HashKey::QueryParameter)
            };
            // As istiod: `maglev` picks Maglev, otherwise a ring of `ringHash`'s minimum
            // size, or without `ringHash` the deprecated top-level one.
            let table = match &hash.maglev {
                Some(maglev) => HashTable::Maglev {
                    table_size: match maglev.table_size {
                        None | Some(0) => DEFAULT_MAGLEV_TABLE_SIZE,
                        Some(size) => size,
                    },
                },
                None => {
                    // istiod reads the deprecated field only without `ringHash`.
                    let minimum = match &hash.ring_hash {
                        Some(ring) => ring.minimum_ring_size,
                        None => hash.minimum_ring_size,
                    };
                    HashTable::Ring {
                        minimum_size: match minimum {
                            None | Some(0) => DEFAULT_MINIMUM_RING_SIZE,
                            Some(size) => size.min(MAXIMUM_RING_SIZE),
                        },
                    }
                }
            };
            return Self::ConsistentHash(ConsistentHash { key, table });
        }
        match settings.simple.unwrap_or_default() {
            SimpleLb::RoundRobin => Self::RoundRobin,
            SimpleLb::Random => Self::Random,
            SimpleLb::Passthrough => Self::Passthrough,
            SimpleLb::Unspecified | SimpleLb::LeastConn | SimpleLb::LeastRequest => {
                Self::LeastRequest
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistentHash {
    /// `None` when the rule names no key: Envoy then picks a random point on the ring.
    pub key: Option<HashKey>,
    pub table: HashTable,
}

/// How hash keys map to endpoints: Envoy's two consistent hash load balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashTable {
    /// A ring with at least `minimum_size` points (`ringHash.minimumRingSize`).
    Ring { minimum_size: u64 },
    /// A Maglev lookup table of `table_size` entries, a prime (`maglev.tableSize`).
    Maglev { table_size: u64 },
}

impl Default for HashTable {
    fn default() -> Self {
        Self::Ring {
            minimum_size: DEFAULT_MINIMUM_RING_SIZE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// Header name, lowercased.
    Header(String),
    Cookie(CookieKey),
    SourceIp,
    QueryParameter(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieKey {
    pub name: String,
    pub path: Option<String>,
    /// When set and the request lacks the cookie, one is generated and returned to the
    /// client; zero makes it a session cookie. Without a ttl nothing is generated and the
    /// request without the cookie goes to a random endpoint.
    pub ttl: Option<Duration>,
}

// ---------------------------------------------------------------------------------------
// Connection pool

/// Circuit-breaking thresholds and connection settings of one cluster. Envoy's own
/// defaults are 1024 connections/pending/requests and 3 retries; Istio replaces all four
/// with 2^32-1 because 3 concurrent retries tripped during rolling updates, so an unset
/// value here means "effectively unlimited".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// `tcp.maxConnections`: upstream connections of the cluster, all endpoints together.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests waiting for a ready connection.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight to the cluster.
    pub max_requests: u32,
    /// `http.maxRetries`: retries in flight to the cluster.
    pub max_retries: u32,
    /// `http.maxRequestsPerConnection`; `None` is unlimited. 1 disables keep-alive.
    pub max_requests_per_connection: Option<NonZeroU32>,
    /// `http.maxConcurrentStreams` for HTTP/2 upstream connections; `None` is the
    /// protocol's own limit.
    pub max_concurrent_streams: Option<NonZeroU32>,
    /// `tcp.connectTimeout`; Istio's mesh default is 10s.
    pub connect_timeout: Duration,
    /// `http.idleTimeout`, else `tcp.idleTimeout`; 1h by default, `None` when set to 0s
    /// (disabled).
    pub idle_timeout: Option<Duration>,
    /// `tcp.maxConnectionDuration`; `None` is unlimited.
    pub max_connection_duration: Option<Duration>,
    /// `tcp.idleTimeout` for TCP streams the waypoint proxies: closed after no bytes either
    /// way for this long; 1h by default, `None` when set to 0s (disabled).
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive`: SO_KEEPALIVE on upstream sockets when set.
    pub keepalive: Option<Keepalive>,
    /// `http.h2UpgradePolicy` and `http.useClientProtocol`.
    pub upstream_protocol: UpstreamProtocol,
}

/// TCP keepalive of upstream sockets; `None` keeps the kernel's setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// TCP_KEEPCNT.
    pub probes: Option<u32>,
    /// TCP_KEEPIDLE.
    pub time: Option<Duration>,
    /// TCP_KEEPINTVL.
    pub interval: Option<Duration>,
}

/// Which HTTP version goes upstream for a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `h2UpgradePolicy` DEFAULT: the mesh config's `h2UpgradePolicy` decides for ports
    /// declared HTTP (DO_NOT_UPGRADE unless set); otherwise as [`Self::Keep`].
    #[default]
    MeshDefault,
    /// `h2UpgradePolicy: DO_NOT_UPGRADE`: HTTP/1.1 stays HTTP/1.1; an HTTP/2 request stays
    /// HTTP/2, as Istio does for a port whose protocol is detected.
    Keep,
    /// `h2UpgradePolicy: UPGRADE`: HTTP/1.1 requests go upstream in HTTP/2 (connection
    /// upgrades such as WebSocket excepted, as in Envoy).
    Upgrade,
    /// `useClientProtocol: true`: the client's version, whatever `h2UpgradePolicy` says.
    Client,
}

impl UpstreamProtocol {
    /// Whether a request the client sent in HTTP/1.1 goes upstream in HTTP/2, given
    /// whether the mesh config's default would upgrade it (mesh `UPGRADE` and a port
    /// declared HTTP).
    pub fn upgrades_http1(self, mesh_upgrades: bool) -> bool {
        match self {
            Self::MeshDefault => mesh_upgrades,
            Self::Keep | Self::Client => false,
            Self::Upgrade => true,
        }
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_connection_duration: None,
            tcp_idle_timeout: Some(Duration::from_secs(3600)),
            keepalive: None,
            upstream_protocol: UpstreamProtocol::MeshDefault,
        }
    }
}

/// Istio's reading of a limit: only a positive value replaces the default.
fn positive(value: Option<i32>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

fn parsed(text: Option<&String>) -> Option<Duration> {
    text.and_then(|t| duration::parse(t).ok())
}

impl PoolLimits {
    pub fn from_settings(settings: &ConnectionPoolSettings) -> Self {
        let mut limits = Self::default();
        let http = settings.http.as_ref();
        let tcp = settings.tcp.as_ref();
        if let Some(v) = positive(tcp.and_then(|t| t.max_connections)) {
            limits.max_connections = v;
        }
        if let Some(v) = positive(http.and_then(|h| h.http1_max_pending_requests)) {
            limits.max_pending_requests = v;
        }
        if let Some(v) = positive(http.and_then(|h| h.http2_max_requests)) {
            limits.max_requests = v;
        }
        if let Some(v) = positive(http.and_then(|h| h.max_retries)) {
            limits.max_retries = v;
        }
        limits.max_requests_per_connection =
            positive(http.and_then(|h| h.max_requests_per_connection)).and_then(NonZeroU32::new);
        limits.max_concurrent_streams =
            positive(http.and_then(|h| h.max_concurrent_streams)).and_then(NonZeroU32::new);
        if let Some(timeout) = parsed(tcp.and_then(|t| t.connect_timeout.as_ref())) {
            limits.connect_timeout = timeout;
        }
        let idle = parsed(http.and_then(|h| h.idle_timeout.as_ref()))
            .or_else(|| parsed(tcp.and_then(|t| t.idle_timeout.as_ref())));
        if let Some(idle) = idle {
            limits.idle_timeout = (!idle.is_zero()).then_some(idle);
        }
        limits.max_connection_duration =
            parsed(tcp.and_then(|t| t.max_connection_duration.as_ref())).filter(|d| !d.is_zero());
        if let Some(idle) = parsed(tcp.and_then(|t| t.idle_timeout.as_ref())) {
            limits.tcp_idle_timeout = (!idle.is_zero()).then_some(idle);
        }
        limits.keepalive = tcp
            .and_then(|t| t.tcp_keepalive.as_ref())
            .map(|k| Keepalive {
                probes: k.probes.filter(|p| *p > 0),
                time: parsed(k.time.as_ref()).filter(|d| !d.is_zero()),
                interval: parsed(k.interval.as_ref()).filter(|d| !d.is_zero()),
            });
        limits.upstream_protocol = if http.and_then(|h| h.use_client_protocol) == Some(true) {
            UpstreamProtocol::Client
        } else {
            match http.and_then(|h| h.h2_upgrade_policy.as_deref()) {
                Some("UPGRADE") => UpstreamProtocol::Upgrade,
                Some("DO_NOT_UPGRADE") => UpstreamProtocol::Keep,
                _ => UpstreamProtocol::MeshDefault,
            }
        };
        limits
    }
}

// ---------------------------------------------------------------------------------------
// Outlier detection

/// Outlier detection as Istio configures Envoy's consecutive-error detection. Success-rate
/// and failure-percentage detection exist in Envoy but Istio turns them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// `consecutive5xxErrors`: 5 when unset, 0 disables. Connect failures, resets and
    /// timeouts count as 503/504 unless `split_local_origin` is set.
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (502, 503, 504): disabled (0) unless set.
    pub consecutive_gateway_errors: u32,
    /// `splitExternalLocalOriginErrors`: count connect failures and timeouts separately.
    pub split_local_origin: bool,
    /// `consecutiveLocalOriginFailures` when split: 5 unless set to a positive value.
    pub consecutive_local_origin_failures: u32,
    /// `interval` between sweeps that return ejected hosts: 10s.
    pub interval: Duration,
    /// `baseEjectionTime`: 30s. An ejection lasts base × a backoff multiplier that grows
    /// with each ejection and shrinks while the host stays healthy.
    pub base_ejection_time: Duration,
    /// Envoy's `max_ejection_time` (Istio doesn't set it): 300s, or the base if larger.
    pub max_ejection_time: Duration,
    /// `maxEjectionPercent`: 10 when unset or 0.
    pub max_ejection_percent: u32,
    /// `minHealthPercent`: Istio maps it to Envoy's panic threshold (below it, balance over
    /// all hosts, ejected or not); 0 by default, which disables panic mode.
    pub min_health_percent: u32,
    /// Envoy's `always_eject_one_host`, which Istio doesn't set: since Envoy 1.27 (2023) a
    /// host is only ejected if the ejected share stays within `max_ejection_percent`, so
    /// with the default 10% a service needs 10 endpoints before anything is ejected. Setting
    /// this restores the older "the first ejection is always allowed" behaviour.
    pub always_eject_one_host: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            split_local_origin: false,
            consecutive_local_origin_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            min_health_percent: 0,
            always_eject_one_host: false,
        }
    }
}

impl OutlierConfig {
    pub fn from_settings(settings: &OutlierDetection) -> Self {
        let mut config = Self::default();
        if let Some(v) = settings.consecutive_5xx_errors {
            config.consecutive_5xx = v;
        }
        if let Some(v) = settings.consecutive_gateway_errors {
            config.consecutive_gateway_errors = v;
        }
        config.split_local_origin = settings.split_external_local_origin_errors == Some(true);
        if let Some(v) = settings
            .consecutive_local_origin_failures
            .filter(|v| *v > 0)
        {
            config.consecutive_local_origin_failures = v;
        }
        // Envoy requires both durations to be positive; validation checks they parse.
        let at_least_1ms = |d: Duration| d.max(Duration::from_millis(1));
        if let Some(interval) = parsed(settings.interval.as_ref()) {
            config.interval = at_least_1ms(interval);
        }
        if let Some(base) = parsed(settings.base_ejection_time.as_ref()) {
            config.base_ejection_time = at_least_1ms(base);
        }
        config.max_ejection_time = config.max_ejection_time.max(config.base_ejection_time);
        if let Some(v) = positive(settings.max_ejection_percent) {
            config.max_ejection_percent = v.min(100);
        }
        if let Some(v) = settings.min_health_percent {
            config.min_health_percent = u32::try_from(v).unwrap_or(0).min(100);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> DestinationRule {
        serde_yaml::from_str(yaml).expect("valid DestinationRule")
    }

    const RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: X-User}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      connectionPool:
        http: {http1MaxPendingRequests: 1}
      portLevelSettings:
      - port: {number: 8443}
        outlierDetection: {consecutiveGatewayErrors: 3}
"#;

    #[test]
    fn no_rule_gives_istio_defaults() {
        let policy = EffectivePolicy::resolve(None, None, 80);
        assert_eq!(policy.load_balancer, LbPolicy::LeastRequest);
        assert_eq!(policy.connection_pool.max_connections, u32::MAX);
        assert_eq!(policy.connection_pool.max_retries, u32::MAX);
        assert_eq!(policy.connection_pool.max_requests_per_connection, None);
        assert_eq!(policy.outlier, None);
    }

    #[test]
    fn top_level_applies_to_other_ports() {
        let dr = rule(RULE);
        let policy = EffectivePolicy::resolve(Some(&dr), None, 8080);
        assert_eq!(policy.load_balancer, LbPolicy::Random);
        assert_eq!(policy.connection_pool.max_connections, 100);
        assert_eq!(policy.connection_pool.max_requests, 1000);
        assert_eq!(
            policy.connection_pool.max_requests_per_connection,
            NonZeroU32::new(10)
        );
        let outlier = policy.outlier.expect("outlier detection");
        assert_eq!(outlier.consecutive_5xx, 7);
        assert_eq!(outlier.interval, Duration::from_secs(300));
        assert_eq!(outlier.base_ejection_time, Duration::from_secs(900));
        assert_eq!(outlier.max_ejection_time, Duration::from_secs(900));
    }

    #[test]
    fn port_level_replaces_every_group_without_inheriting() {
        let dr = rule(RULE);
        let policy = EffectivePolicy::resolve(Some(&dr), None, 9080);
        assert_eq!(policy.load_balancer, LbPolicy::RoundRobin);
        assert_eq!(policy.connection_pool, PoolLimits::default());
        assert_eq!(policy.outlier, None);
    }

    #[test]
    fn subset_overrides_group_by_group() {
        let dr = rule(RULE);
        let v2 = EffectivePolicy::resolve(Some(&dr), Some("v2"), 8080);
        assert_eq!(
            v2.load_balancer,
            LbPolicy::ConsistentHash(ConsistentHash {
                key: Some(HashKey::Header("x-user".into())),
                table: HashTable::default(),
            })
        );
        // Inherited from the top level.
        assert_eq!(v2.connection_pool.max_connections, 100);
        assert_eq!(v2.outlier.map(|o| o.consecutive_5xx), Some(7));

        // On the top level's port 9080 the subset still overrides the load balancer, and
        // inherits the port level's defaults for the rest.
        let v2_9080 = EffectivePolicy::resolve(Some(&dr), Some("v2"), 9080);
        assert!(matches!(v2_9080.load_balancer, LbPolicy::ConsistentHash(_)));
        assert_eq!(v2_9080.connection_pool, PoolLimits::default());

        // A subset without a policy, or an unknown one, gets the top level.
        let v1 = EffectivePolicy::resolve(Some(&dr), Some("v1"), 8080);
        assert_eq!(v1, EffectivePolicy::resolve(Some(&dr), None, 8080));
        let unknown = EffectivePolicy::resolve(Some(&dr), Some("v9"), 8080);
        assert_eq!(unknown, EffectivePolicy::resolve(Some(&dr), None, 8080));
    }

    #[test]
    fn subset_port_level_replaces_everything() {
        let dr = rule(RULE);
        let v3 = EffectivePolicy::resolve(Some(&dr), Some("v3"), 8080);
        // connectionPool replaced wholesale by the subset's: the top level's
        // maxConnections is not merged into it.
        assert_eq!(v3.connection_pool.max_pending_requests, 1);
        assert_eq!(v3.connection_pool.max_connections, u32::MAX);
        assert_eq!(v3.load_balancer, LbPolicy::Random);

        let v3_tls = EffectivePolicy::resolve(Some(&dr), Some("v3"), 8443);
        assert_eq!(v3_tls.load_balancer, LbPolicy::LeastRequest);
        assert_eq!(v3_tls.connection_pool, PoolLimits::default());
        let outlier = v3_tls.outlier.expect("port-level outlier detection");
        assert_eq!(outlier.consecutive_gateway_errors, 3);
        assert_eq!(outlier.consecutive_5xx, 5, "Envoy's default");
    }

    #[test]
    fn istio_reads_zero_as_default_and_maps_simple_policies() {
        let dr = rule(
            r#"
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
    connectionPool:
      tcp: {maxConnections: 0, connectTimeout: 250ms, idleTimeout: 0s}
      http: {maxRetries: 0, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 0, maxEjectionPercent: 0, minHealthPercent: 50}
"#,
        );
        let policy = EffectivePolicy::resolve(Some(&dr), None, 80);
        assert_eq!(policy.load_balancer, LbPolicy::LeastRequest);
        let pool = policy.connection_pool;
        assert_eq!(pool.max_connections, u32::MAX);
        assert_eq!(pool.max_retries, u32::MAX);
        assert_eq!(pool.max_requests_per_connection, NonZeroU32::new(1));
        assert_eq!(pool.connect_timeout, Duration::from_millis(250));
        assert_eq!(pool.idle_timeout, None, "0s disables the idle timeout");
        let outlier = policy.outlier.expect("outlier detection");
        assert_eq!(outlier.consecutive_5xx, 0, "explicit 0 disables");
        assert_eq!(outlier.max_ejection_percent, 10);
        assert_eq!(outlier.min_health_percent, 50);
    }

    #[test]
    fn connection_settings_of_istio() {
        let pool = |yaml: &str| {
            let settings: ConnectionPoolSettings = serde_yaml::from_str(yaml).expect("settings");
            PoolLimits::from_settings(&settings)
        };
        let all = pool(
            "{tcp: {idleTimeout: 5s, maxConnectionDuration: 1m, tcpKeepalive: {probes: 3, time: 30s, interval: 5s}}, \
             http: {idleTimeout: 2s, maxConcurrentStreams: 4, h2UpgradePolicy: UPGRADE}}",
        );
        assert_eq!(all.tcp_idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(all.idle_timeout, Some(Duration::from_secs(2)));
        assert_eq!(all.max_connection_duration, Some(Duration::from_secs(60)));
        assert_eq!(all.max_concurrent_streams, NonZeroU32::new(4));
        assert_eq!(
            all.keepalive,
            Some(Keepalive {
                probes: Some(3),
                time: Some(Duration::from_secs(30)),
                interval: Some(Duration::from_secs(5)),
            })
        );
        assert_eq!(all.upstream_protocol, UpstreamProtocol::Upgrade);
        let client = pool("{http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}");
        assert_eq!(client.upstream_protocol, UpstreamProtocol::Client);
        let none = pool("{tcp: {idleTimeout: 0s}, http: {h2UpgradePolicy: DO_NOT_UPGRADE}}");
        assert_eq!(none.tcp_idle_timeout, None, "0s disables");
        assert_eq!(none.keepalive, None);
        assert_eq!(none.upstream_protocol, UpstreamProtocol::Keep);
        assert!(
            !none.upstream_protocol.upgrades_http1(true),
            "DO_NOT_UPGRADE wins"
        );
        let default = pool("{http: {h2UpgradePolicy: DEFAULT}}").upstream_protocol;
        assert_eq!(default, UpstreamProtocol::MeshDefault);
        assert!(default.upgrades_http1(true) && !default.upgrades_http1(false));
        assert!(!client.upstream_protocol.upgrades_http1(true));
        assert!(all.upstream_protocol.upgrades_http1(false));
        assert_eq!(
            PoolLimits::default().tcp_idle_timeout,
            Some(Duration::from_secs(3600)),
            "Istio's 1h"
        );
    }

    #[test]
    fn connection_settings_merge_by_level() {
        let dr = rule(
            r#"
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 5s, tcpKeepalive: {probes: 2}}
      http: {h2UpgradePolicy: UPGRADE}
  subsets:
  - name: v1
    labels: {v: "1"}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 80}
        connectionPool:
          http: {idleTimeout: 1s, maxConcurrentStreams: 1}
"#,
        );
        let top = EffectivePolicy::resolve(Some(&dr), Some("v1"), 8080).connection_pool;
        assert_eq!(top.tcp_idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            top.idle_timeout,
            Some(Duration::from_secs(5)),
            "tcp's, as istiod"
        );
        assert_eq!(top.keepalive.and_then(|k| k.probes), Some(2));
        assert_eq!(top.upstream_protocol, UpstreamProtocol::Upgrade);
        // The subset's port level replaces the whole group: nothing of the top level's.
        let port = EffectivePolicy::resolve(Some(&dr), Some("v1"), 80).connection_pool;
        assert_eq!(port.idle_timeout, Some(Duration::from_secs(1)));
        assert_eq!(port.max_concurrent_streams, NonZeroU32::new(1));
        assert_eq!(port.tcp_idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(port.keepalive, None);
        assert_eq!(port.upstream_protocol, UpstreamProtocol::MeshDefault);
    }

    #[test]
    fn consistent_hash_keys() {
        let lb = |yaml: &str| {
            let settings: LoadBalancerSettings = serde_yaml::from_str(yaml).expect("settings");
            LbPolicy::from_settings(&settings)
        };
        assert_eq!(
            lb("consistentHash: {httpCookie: {name: user, ttl: 0s}, minimumRingSize: 100000000}"),
            LbPolicy::ConsistentHash(ConsistentHash {
                key: Some(HashKey::Cookie(CookieKey {
                    name: "user".into(),
                    path: None,
                    ttl: Some(Duration::ZERO),
                })),
                table: HashTable::Ring {
                    minimum_size: MAXIMUM_RING_SIZE
                },
            })
        );
        assert_eq!(
            lb("consistentHash: {useSourceIp: true}"),
            LbPolicy::ConsistentHash(ConsistentHash {
                key: Some(HashKey::SourceIp),
                table: HashTable::default(),
            })
        );
        assert_eq!(
            lb("consistentHash: {httpQueryParameterName: id}"),
            LbPolicy::ConsistentHash(ConsistentHash {
                key: Some(HashKey::QueryParameter("id".into())),
                table: HashTable::default(),
            })
        );
        let table = |yaml: &str| match lb(yaml) {
            LbPolicy::ConsistentHash(hash) => hash.table,
            other => panic!("not a consistent hash: {other:?}"),
        };
        assert_eq!(
            table("consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 64}}"),
            HashTable::Ring { minimum_size: 64 }
        );
        assert_eq!(
            table(
                "consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 64}, minimumRingSize: 32}"
            ),
            HashTable::Ring { minimum_size: 64 },
            "ringHash wins over the deprecated field"
        );
        assert_eq!(
            table("consistentHash: {useSourceIp: true, ringHash: {}, minimumRingSize: 32}"),
            HashTable::Ring {
                minimum_size: DEFAULT_MINIMUM_RING_SIZE
            },
            "as istiod: with ringHash, the deprecated field is not read"
        );
        assert_eq!(
            table("consistentHash: {useSourceIp: true, minimumRingSize: 32}"),
            HashTable::Ring { minimum_size: 32 }
        );
        assert_eq!(
            table("consistentHash: {useSourceIp: true, maglev: {tableSize: 251}}"),
            HashTable::Maglev { table_size: 251 }
        );
        assert_eq!(
            table("consistentHash: {useSourceIp: true, maglev: {}}"),
            HashTable::Maglev {
                table_size: DEFAULT_MAGLEV_TABLE_SIZE
            }
        );
        assert_eq!(lb("simple: PASSTHROUGH"), LbPolicy::Passthrough);
        assert_eq!(lb("{}"), LbPolicy::LeastRequest);
    }
}
