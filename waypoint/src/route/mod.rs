//! VirtualService and Gateway API routing: pure functions from a request and a host's
//! routes to a plan.
//!
//! The semantics are Istio's as pilot translates a VirtualService into Envoy routes
//! (`pilot/pkg/networking/core/route`), and Envoy's as it evaluates them: users observe
//! Envoy, so where Istio's documentation and Envoy's behaviour differ, Envoy's wins and the
//! code says so.
//!
//! The caller compiles a host's routes once per registry snapshot ([`CompiledRoutes::compile`])
//! and caches the result; per request it calls [`CompiledRoutes::http_route`] and then asks
//! the returned [`HttpRoutePlan`] what to do. Randomness (weights, fault and mirror
//! percentages, retry back-off jitter) is supplied by the caller so every function here is
//! deterministic.
//!
//! What the caller does around these functions, in Envoy's order:
//! 1. normalise the path as the mesh config says (`http/normalize.rs`) before matching;
//! 2. faults ([`FaultPlan::decide`]), then the CORS preflight ([`CorsPlan::preflight`]) —
//!    pilot installs Envoy's fault filter before its CORS filter, waypoints included —
//!    then the action;
//! 3. for [`RouteAction::Forward`]: pick a destination, apply request headers, then the
//!    rewrite (Envoy rewrites host and path after the header operations), mirror, and run
//!    the attempts under [`HttpRoutePlan::effective_timeout`] and [`RetryPolicy`];
//! 4. on the way back: route response headers, then CORS response headers.
//!
//! Which configuration routes a host's HTTP is Istio's waypoint rule (1.28,
//! `buildWaypointInboundHTTPRouteConfig`): the first, in this order, that has HTTP rules —
//! the Gateway API routes of the waypoint's own namespace (HTTPRoutes and GRPCRoutes
//! merged per namespace and port, `gateway_api.rs`), then VirtualServices and the Gateway
//! API routes of the Service's namespace together, oldest first. Gateway API routes of any
//! other namespace are not the waypoint's to apply.
use std::net::IpAddr;

use weft_config::api::networking::VirtualService;
use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;
use weft_config::translate::routes::age_order;

mod compile;
mod cors;
mod facts;
mod fault;
pub mod gateway;
mod gateway_api;
#[cfg(test)]
mod gateway_tests;
mod headers;
mod matcher;
mod plan;
mod retry;
mod rewrite;
mod tcp;
#[cfg(test)]
mod tests;

pub use cors::CorsPlan;
pub use facts::{RequestFacts, Source};
pub use fault::{FaultAbort, FaultDecision, FaultPlan};
pub use headers::HeaderVars;
pub use plan::{HttpRoutePlan, MirrorPlan, Rewrite, RouteAction, RouteDestination};
pub use retry::{AttemptOutcome, RetryPolicy};
pub use rewrite::RedirectPlan;
pub use tcp::TcpRoutePlan;

/// A host's routes, compiled once per (registry snapshot, host): regexes compiled,
/// durations parsed, destination hosts qualified to FQDNs.
#[derive(Debug)]
pub struct CompiledRoutes {
    http: Vec<compile::HttpEntry>,
    /// What serves a request no rule is meant for; `None` at a gateway, where such a
    /// request is a 404.
    default_http: Option<HttpRoutePlan>,
    tcp: Vec<tcp::TcpRule>,
    default_tcp: TcpRoutePlan,
    /// The `tls` rules, for TLS and HTTPS ports.
    tls: tcp::TlsRules,
}

impl CompiledRoutes {
    /// `service_host` is the FQDN of the service being called: the destination of the
    /// default routes. As compiled by a waypoint in the Service's own namespace.
    pub fn compile(routes: &HostRoutes, service_host: &str, settings: &MeshSettings) -> Self {
        let namespace = service_host.split('.').nth(1).unwrap_or_default();
        Self::compile_at(routes, service_host, namespace, settings)
    }

    /// As [`CompiledRoutes::compile`], by the waypoint of `waypoint_namespace`.
    pub fn compile_at(
        routes: &HostRoutes,
        service_host: &str,
        waypoint_namespace: &str,
        settings: &MeshSettings,
    ) -> Self {
        let mut compiled = Self::default_for(service_host);
        // Istio keeps one source of HTTP routes per host; the others only show in the
        // config dump.
        match http_source(routes, waypoint_namespace) {
            Some(HttpSource::VirtualService(vs)) => {
                compiled.http = compile::http_entries(vs, settings, None);
            }
            Some(HttpSource::GatewayApi(group)) => {
                compiled.http = gateway_api::http_entries(&group);
            }
            None => {}
        }
        // For TCP, pilot walks the tcp rules of every VirtualService of the host, in order
        // (`buildSidecarOutboundTCPFilterChainOpts`); a TCPRoute attached to the Service is
        // one more (pilot converts it to a VirtualService of the Service's host), oldest
        // first, of the namespaces whose Gateway API routes the waypoint applies.
        let mut tcp_sources = Vec::new();
        for vs in &routes.virtual_services {
            tcp_sources.push((&vs.metadata, tcp::compile_rules(vs, settings)));
            tcp::compile_tls_rules(vs, settings, &mut compiled.tls);
        }
        for route in &routes.gateway_routes {
            let namespace = route.route.namespace();
            if (namespace == waypoint_namespace || namespace == route.service_namespace)
                && let Some(rule) = tcp::gateway_api_rule(route)
            {
                tcp_sources.push((route.route.metadata(), vec![rule]));
            }
        }
        if tcp_sources.len() > routes.virtual_services.len() {
            tcp_sources.sort_by(|a, b| age_order(a.0, b.0));
        }
        compiled.tcp = tcp_sources.into_iter().flat_map(|(_, r)| r).collect();
        compiled
    }

    /// The routes of a host without VirtualService: everything to `service_host` on the
    /// dialed port, Istio's default retry policy, no timeout.
    pub fn default_for(service_host: &str) -> Self {
        Self {
            http: Vec::new(),
            default_http: Some(HttpRoutePlan::default_route(service_host)),
            tcp: Vec::new(),
            default_tcp: TcpRoutePlan::to_service(service_host),
            tls: tcp::TlsRules::default(),
        }
    }

    /// The HTTP routes of one virtual host of an ingress gateway: the rules of each
    /// VirtualService, in order, compiled for the Gateway it is served for (match blocks
    /// naming other gateways drop out), with catch-all rules moved behind the others
    /// when several VirtualServices merge (Istio's `SortVHostRoutes`). No default route:
    /// what no rule takes is a 404.
    pub fn compile_gateway(
        virtual_services: &[(
            weft_config::translate::gateway::GatewayRef,
            std::sync::Arc<weft_config::api::networking::VirtualService>,
        )],
        settings: &MeshSettings,
    ) -> Self {
        let mut http: Vec<compile::HttpEntry> = Vec::new();
        for (gateway, vs) in virtual_services {
            http.extend(compile::http_entries(vs, settings, Some(gateway)));
        }
        if virtual_services.len() > 1 {
            let (catch_all, specific): (Vec<_>, Vec<_>) =
                http.into_iter().partition(|e| e.matcher.is_catch_all());
            http = specific.into_iter().chain(catch_all).collect();
        }
        Self {
            http,
            default_http: None,
            tcp: Vec::new(),
            default_tcp: TcpRoutePlan::none(),
            tls: tcp::TlsRules::default(),
        }
    }

    /// The HTTP routes of one virtual host of an ingress gateway's Gateway API listener: the
    /// HTTPRoutes and GRPCRoutes attached to it (oldest first), merged and sorted by the
    /// Gateway API's precedence as a waypoint merges a Service's. No default route: what
    /// no rule takes is a 404.
    pub fn compile_gateway_api(
        routes: &[std::sync::Arc<weft_config::registry::bound_route::BoundRoute>],
    ) -> Self {
        let group = gateway_api::RouteGroup {
            namespace: "",
            port: None,
            routes: routes.iter().map(|r| &**r).collect(),
        };
        Self {
            http: gateway_api::http_entries(&group),
            default_http: None,
            tcp: Vec::new(),
            default_tcp: TcpRoutePlan::none(),
            tls: tcp::TlsRules::default(),
        }
    }

    /// The first rule of the VirtualService that matches, or `None` when the
    /// VirtualService has rules for this client and port but none matches (Envoy answers
    /// 404 with the `NR` flag).
    ///
    /// `port`, `gateways`, `sourceLabels` and `sourceNamespace` are not runtime matches in
    /// Istio but select which match blocks exist in a proxy's configuration at all. When
    /// none survives for this client and port, pilot emits no virtual host for the
    /// VirtualService and the service's default route serves the request, so that is what
    /// this returns too, rather than a 404.
    pub fn http_route(&self, facts: &RequestFacts<'_>) -> Option<&HttpRoutePlan> {
        let mut any_admitted = false;
        for entry in &self.http {
            if !entry.gate.admits(facts.port, facts.source) {
                continue;
            }
            any_admitted = true;
            if entry.matcher.matches(facts) {
                return Some(&entry.plan);
            }
        }
        if any_admitted {
            None
        } else {
            self.default_http.as_ref()
        }
    }

    /// The first tcp rule that matches, or the route to the service itself: pilot always
    /// ends a TCP listener's filter chains with one to the service, so TCP never goes
    /// unrouted. `destination` is the address the client dialed, for `destinationSubnets`;
    /// without it a match that names subnets does not apply.
    pub fn tcp_route(
        &self,
        port: u16,
        destination: Option<IpAddr>,
        source: &Source,
    ) -> &TcpRoutePlan {
        self.tcp
            .iter()
            .find(|rule| rule.matches(port, destination, source))
            .map_or(&self.default_tcp, |rule| &rule.plan)
    }

    /// Whether TLS to `port` (a TLS or HTTPS port: pilot reads `tls` rules for no other)
    /// is routed by its ClientHello's SNI ([`CompiledRoutes::tls_route`]) rather than by
    /// [`CompiledRoutes::tcp_route`]: some `tls` match block exists for this client and
    /// port. On such a port pilot builds no `tcp` rule's chain.
    pub fn routes_tls(&self, port: u16, source: &Source) -> bool {
        self.tls.apply(port, source)
    }

    /// The `tls` rule Envoy's filter chain match picks for a connection to `destination`
    /// whose ClientHello named `sni`; `None` when no chain matches, and the connection is
    /// closed (no default chain is built once a `tls` rule matches the port).
    pub fn tls_route(
        &self,
        port: u16,
        destination: Option<IpAddr>,
        source: &Source,
        sni: Option<&str>,
    ) -> Option<&TcpRoutePlan> {
        self.tls.route(port, destination, source, sni)
    }
}

/// Where a host's HTTP routes come from.
enum HttpSource<'a> {
    VirtualService(&'a VirtualService),
    GatewayApi(gateway_api::RouteGroup<'a>),
}

/// Istio's choice (see the module's header): the Gateway API routes of the waypoint's
/// namespace, then VirtualServices and the Gateway API routes of the Service's namespace,
/// oldest first; the first with HTTP rules wins.
fn http_source<'a>(routes: &'a HostRoutes, waypoint_namespace: &str) -> Option<HttpSource<'a>> {
    let mut own = Vec::new();
    let mut others = Vec::new();
    for group in gateway_api::groups(&routes.gateway_routes) {
        let service_namespace = group
            .routes
            .first()
            .map(|r| r.service_namespace.as_str())
            .unwrap_or_default();
        if group.namespace == waypoint_namespace {
            own.push(group);
        } else if group.namespace == service_namespace {
            others.push(group);
        }
    }
    if let Some(group) = own.into_iter().next() {
        return Some(HttpSource::GatewayApi(group));
    }
    // A Gateway API route always has rules (the API server defaults them).
    let mut candidates: Vec<HttpSource<'a>> = routes
        .virtual_services
        .iter()
        .filter(|vs| !vs.spec.http.is_empty())
        .map(|vs| HttpSource::VirtualService(vs))
        .chain(others.into_iter().map(HttpSource::GatewayApi))
        .collect();
    let meta = |source: &HttpSource<'_>| match source {
        HttpSource::VirtualService(vs) => Some(vs.metadata.clone()),
        HttpSource::GatewayApi(group) => group.oldest().map(|r| r.metadata().clone()),
    };
    candidates.sort_by(|a, b| match (meta(a), meta(b)) {
        (Some(a), Some(b)) => age_order(&a, &b),
        _ => std::cmp::Ordering::Equal,
    });
    candidates.into_iter().next()
}
