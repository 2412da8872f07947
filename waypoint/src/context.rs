//! What every stream and request of the waypoint shares.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weft_config::registry::model::Waypoint;
use weft_config::registry::{Registry, Snapshot};
use weft_config::tracer::Tracer;
use weft_core::hbone::HbonePool;
use weft_core::identity::Identity;
use weft_core::lifecycle::Draining;
use weft_core::metrics::Metrics;

use crate::forward::cluster::{Clusters, Whereabouts};
use crate::forward::connections::Connections;
use crate::forward::endpoints::Reach;
use crate::jwks::JwksCache;
use crate::route::CompiledRoutes;
use crate::upstream::limits::CircuitBreaker;

pub struct WaypointContext {
    pub name: String,
    pub namespace: String,
    pub identity: Identity,
    pub registry: Registry,
    pub connections: Connections,
    pub clusters: Clusters,
    /// The circuit breaker of requests addressed to a pod itself: no DestinationRule
    /// applies, so Istio's (effectively unlimited) defaults.
    pub unclustered: Arc<CircuitBreaker>,
    /// Istio's standard metrics, reported as `reporter="waypoint"`.
    pub metrics: Arc<Metrics>,
    /// One line per request when meshConfig `accessLogFile` is set.
    pub access_log: Arc<weft_core::access_log::AccessLog>,
    /// Sampling, propagation and a span per sampled request, as the mesh config's tracing
    /// provider (or `--otlp-endpoint`) says.
    pub tracer: Arc<Tracer>,
    /// Started at SIGTERM: HTTP connections then ask their clients to reconnect.
    pub draining: Draining,
    /// The keys of RequestAuthentications' `jwksUri`s (and parsed inline `jwks`).
    pub jwks: JwksCache,
    /// Clients of the external authorization providers CUSTOM policies name, by name.
    pub ext_authz: weft_core::ext_authz::Clients<String>,
    /// The resolvers ServiceEntry hosts of resolution DNS are looked up with
    /// (`--dns-upstream`, else the waypoint's /etc/resolv.conf).
    pub dns: Arc<weft_core::dns::Upstream>,
    /// How routed requests reach a Service: a waypoint goes to the endpoints, an ingress
    /// gateway through the Service's waypoint when it has one.
    pub reach: Reach,
    /// The proxy's pod and node, which locality load balancing compares endpoints with.
    pub whereabouts: Whereabouts,
    /// What one downstream HTTP connection may cost (streams, headers, resets, timeouts).
    pub http_limits: weft_core::hardening::HttpServerLimits,
    /// Compiled routes by host, with the snapshot version they were compiled from.
    routes: Mutex<HashMap<String, (u64, Arc<CompiledRoutes>)>>,
}

impl WaypointContext {
    pub fn new(
        name: String,
        namespace: String,
        identity: Identity,
        registry: Registry,
        pool: HbonePool,
        metrics: Arc<Metrics>,
        tracer: Arc<Tracer>,
    ) -> Self {
        Self {
            connections: Connections::new(pool, identity.clone()),
            whereabouts: Whereabouts {
                namespace: namespace.clone(),
                ..Whereabouts::default()
            },
            name,
            namespace,
            identity,
            registry,
            clusters: Clusters::default(),
            dns: Arc::new(weft_core::dns::Upstream::new(Vec::new())),
            unclustered: CircuitBreaker::new(&Default::default()),
            access_log: weft_core::access_log::AccessLog::new(metrics.access_log_dropped()),
            metrics,
            tracer,
            draining: Draining::default(),
            jwks: JwksCache::default(),
            ext_authz: Default::default(),
            reach: Reach::Endpoints,
            http_limits: weft_core::hardening::HttpServerLimits::HTTP,
            routes: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_me(&self, waypoint: &Waypoint) -> bool {
        waypoint.name == self.name && waypoint.namespace == self.namespace
    }

    /// The routes of `host` for this snapshot, compiled once per configuration version.
    pub fn routes(&self, snapshot: &Snapshot, host: &str) -> Arc<CompiledRoutes> {
        let version = snapshot.version();
        let mut routes = weft_core::sync::lock(&self.routes);
        if let Some((compiled_at, compiled)) = routes.get(host)
            && *compiled_at == version
        {
            return compiled.clone();
        }
        let compiled = Arc::new(match snapshot.routes_for_host(host) {
            Some(host_routes) => {
                CompiledRoutes::compile_at(host_routes, host, &self.namespace, snapshot.settings())
            }
            None => CompiledRoutes::default_for(host),
        });
        routes.insert(host.to_string(), (version, compiled.clone()));
        compiled
    }
}
