//! VirtualService routing: pure functions from a request and a host's routes to a plan.
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
use std::net::IpAddr;

use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;

mod compile;
mod cors;
mod facts;
mod fault;
pub mod gateway;
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
}

impl CompiledRoutes {
    /// `service_host` is the FQDN of the service being called: the destination of the
    /// default routes.
    pub fn compile(routes: &HostRoutes, service_host: &str, settings: &MeshSettings) -> Self {
        let mut compiled = Self::default_for(service_host);
        // Istio keeps one VirtualService per host for HTTP (the oldest); later ones only
        // show in the config dump.
        if let Some(first) = routes.virtual_services.first() {
            compiled.http = compile::http_entries(first, settings, None);
        }
        // For TCP, pilot walks the tcp rules of every VirtualService of the host, in order
        // (`buildSidecarOutboundTCPFilterChainOpts`).
        for vs in &routes.virtual_services {
            compiled.tcp.extend(tcp::compile_rules(vs, settings));
        }
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
}
