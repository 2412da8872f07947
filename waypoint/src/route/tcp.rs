//! `tcp` and `tls` rules: which destination an opaque connection goes to.
//!
//! `tls` rules route TLS that passes through without being terminated, by the SNI of the
//! client's ClientHello, as pilot builds a sidecar's outbound filter chains for a TLS or
//! HTTPS port (`buildSidecarOutboundTLSFilterChainOpts`) and Envoy chooses among them.
//! Istio's own waypoint (1.28, `getTLSRouteMatch`) reads no SNI: it applies a `tls` rule
//! only when a match names exactly the service's host. weft reads the ClientHello, so a
//! rule naming other names works as it does on a sidecar; for a client sending the
//! service's host as its SNI both choose the same rule.
use std::net::IpAddr;

use weft_config::api::networking::{L4MatchAttributes, TlsMatchAttributes, VirtualService};
use weft_config::translate::hosts::MeshSettings;
use weft_config::validate::cidr;

use weft_config::registry::bound_route::{BoundRoute, RefAt};

use super::compile::{VsContext, destination};
use super::facts::Source;
use super::matcher::{Gate, Scope, warn_once};
use super::plan::{RouteDestination, pick_weighted};
use weft_config::translate::gateway::select_by_sni;

#[derive(Clone, Debug)]
pub struct TcpRoutePlan {
    destinations: Vec<RouteDestination>,
}

impl TcpRoutePlan {
    /// The destinations of a `tcp` or `tls` rule an ingress gateway chose for a server
    /// (`weft_config::translate::gateway`); `None` when none is usable. Short hosts resolve
    /// in the VirtualService's `namespace`; `origin` names the rule in warnings.
    pub fn from_rule(
        route: &[weft_config::api::networking::RouteDestination],
        namespace: &str,
        origin: &str,
        settings: &MeshSettings,
    ) -> Option<Self> {
        let context = VsContext::named(namespace, settings, origin.to_string());
        let weighted = route.len() > 1;
        let destinations: Vec<_> = route
            .iter()
            .enumerate()
            .filter_map(|(j, d)| {
                destination(
                    &context,
                    &d.destination,
                    d.weight,
                    weighted,
                    None,
                    &format!("{origin}.route[{j}]"),
                )
            })
            .collect();
        if destinations.is_empty() {
            warn_once(format!("{origin}: no usable destination; not routed"));
            return None;
        }
        Some(Self { destinations })
    }

    /// The backends of a Gateway API TLSRoute or TCPRoute rule, each `(host, port)` as
    /// resolved (`None`: a reference that cannot be used) with its weight (absent: 1).
    /// Zero-weight backends take nothing; an unusable one keeps its share, and the
    /// connections it takes are refused, as the Gateway API asks. `None` when no backend
    /// takes any share.
    pub fn from_backends(backends: &[(Option<(String, u16)>, u32)]) -> Option<Self> {
        let destinations: Vec<RouteDestination> = backends
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(resolved, weight)| {
                let mut destination = match resolved {
                    Some((host, port)) => {
                        let mut d = RouteDestination::to_service(host);
                        d.port = Some(*port);
                        d
                    }
                    None => {
                        let mut d = RouteDestination::to_service("");
                        d.unresolved = true;
                        d
                    }
                };
                destination.weight = *weight;
                destination
            })
            .collect();
        (!destinations.is_empty()).then_some(Self { destinations })
    }

    /// Where a Gateway API TLSRoute's or TCPRoute's connections go: its first rule's
    /// backends as resolved for it ([`TcpRoutePlan::from_backends`]); `None` when it has
    /// none with a share.
    pub fn from_bound_route(route: &BoundRoute) -> Option<Self> {
        let rule = route.route.stream_rules().first()?;
        let backends: Vec<(Option<(String, u16)>, u32)> = rule
            .backend_refs
            .iter()
            .enumerate()
            .map(|(b, backend)| {
                let resolved = match route.backends.get(RefAt::Backend {
                    rule: 0,
                    backend: b,
                }) {
                    Some(Ok(r)) => Some((r.host.clone(), r.port)),
                    _ => None,
                };
                (
                    resolved,
                    u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0),
                )
            })
            .collect();
        Self::from_backends(&backends)
    }

    /// Routes nowhere (a gateway's HTTP routes have no TCP default).
    pub(crate) fn none() -> Self {
        Self {
            destinations: Vec::new(),
        }
    }

    pub(crate) fn to_service(host: &str) -> Self {
        Self {
            destinations: vec![RouteDestination::to_service(host)],
        }
    }

    pub fn destinations(&self) -> &[RouteDestination] {
        &self.destinations
    }

    /// `roll` is a uniform random number.
    pub fn pick(&self, roll: u32) -> Option<&RouteDestination> {
        pick_weighted(&self.destinations, roll)
    }
}

#[derive(Debug)]
struct L4Match {
    gate: Gate,
    subnets: Vec<(IpAddr, u8)>,
}

impl L4Match {
    fn compile(m: &L4MatchAttributes, at: &str, scope: Scope<'_>) -> Self {
        let subnets = m
            .destination_subnets
            .iter()
            .filter_map(|subnet| match cidr::parse(subnet) {
                Ok(block) => Some(block),
                Err(reason) => {
                    warn_once(format!("{at}.destinationSubnets: {reason}; ignored"));
                    None
                }
            })
            .collect();
        Self {
            gate: Gate::new(
                m.port,
                &m.gateways,
                &m.source_labels,
                m.source_namespace.as_deref(),
                false,
                scope,
            ),
            subnets,
        }
    }

    fn matches(&self, port: u16, destination: Option<IpAddr>, source: &Source) -> bool {
        if !self.gate.admits(port, source) {
            return false;
        }
        self.subnets.is_empty()
            || destination.is_some_and(|ip| self.subnets.iter().any(|block| contains(*block, ip)))
    }
}

fn contains((network, prefix): (IpAddr, u8), ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(network) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(network) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[derive(Debug)]
pub(crate) struct TcpRule {
    /// ORed; empty matches every connection.
    matches: Vec<L4Match>,
    pub(crate) plan: TcpRoutePlan,
}

impl TcpRule {
    pub(crate) fn matches(&self, port: u16, destination: Option<IpAddr>, source: &Source) -> bool {
        self.matches.is_empty()
            || self
                .matches
                .iter()
                .any(|m| m.matches(port, destination, source))
    }
}

/// One `tls` match block, as a filter chain: its static conditions (port, source,
/// gateways) and what Envoy matches at run time (destination subnets, SNI).
#[derive(Debug)]
struct TlsChain {
    gate: Gate,
    subnets: Vec<(IpAddr, u8)>,
    /// Lower case; `*.example.com` matches any name under `example.com`.
    sni_hosts: Vec<String>,
    /// Index of the rule's plan in [`TlsRules::plans`].
    plan: usize,
}

/// The `tls` rules of a host's VirtualServices, in order.
#[derive(Debug, Default)]
pub(crate) struct TlsRules {
    chains: Vec<TlsChain>,
    plans: Vec<TcpRoutePlan>,
}

impl TlsRules {
    /// Whether a connection to `port` from `source` is routed by its SNI: some match block
    /// exists for them. Without one, pilot builds the port's default chain to the service.
    pub(crate) fn apply(&self, port: u16, source: &Source) -> bool {
        self.chains.iter().any(|c| c.gate.admits(port, source))
    }

    /// The rule Envoy's filter chain match picks, or `None` (the connection is closed).
    /// Envoy first keeps the chains whose destination subnets hold `destination` most
    /// specifically (a chain without subnets holds every address, least specifically),
    /// then among them the SNI: an exact name, then the longest wildcard. Match blocks
    /// with the same subnets and names as an earlier one are dropped, as pilot drops them
    /// (`hashRuntimeTLSMatchPredicates`), so the first rule wins.
    pub(crate) fn route(
        &self,
        port: u16,
        destination: Option<IpAddr>,
        source: &Source,
        sni: Option<&str>,
    ) -> Option<&TcpRoutePlan> {
        let mut admitted: Vec<&TlsChain> = Vec::new();
        for chain in self.chains.iter().filter(|c| c.gate.admits(port, source)) {
            let same = |c: &&TlsChain| c.subnets == chain.subnets && c.sni_hosts == chain.sni_hosts;
            if !admitted.iter().any(same) {
                admitted.push(chain);
            }
        }
        let specificity = |chain: &TlsChain| -> Option<i16> {
            if chain.subnets.is_empty() {
                return Some(-1);
            }
            let ip = destination?;
            chain
                .subnets
                .iter()
                .filter(|block| contains(**block, ip))
                .map(|(_, prefix)| i16::from(*prefix))
                .max()
        };
        let best = admitted.iter().filter_map(|c| specificity(c)).max()?;
        let candidates: Vec<&TlsChain> = admitted
            .into_iter()
            .filter(|c| specificity(c) == Some(best))
            .collect();
        let chosen = select_by_sni(
            &candidates,
            |c| c.sni_hosts.iter().map(String::as_str).collect(),
            sni,
        )?;
        self.plans.get(chosen.plan)
    }
}

fn tls_chain(m: &TlsMatchAttributes, plan: usize, at: &str, scope: Scope<'_>) -> TlsChain {
    let subnets = m
        .destination_subnets
        .iter()
        .filter_map(|subnet| match cidr::parse(subnet) {
            Ok(block) => Some(block),
            Err(reason) => {
                warn_once(format!("{at}.destinationSubnets: {reason}; ignored"));
                None
            }
        })
        .collect();
    let mut sni_hosts: Vec<String> = m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    sni_hosts.sort();
    sni_hosts.dedup();
    TlsChain {
        gate: Gate::new(
            m.port,
            &m.gateways,
            &m.source_labels,
            m.source_namespace.as_deref(),
            false,
            scope,
        ),
        subnets,
        sni_hosts,
        plan,
    }
}

/// Appends the `tls` rules of `vs` to `rules`. A rule without destinations makes no
/// filter chain (pilot skips it), so its SNI falls to the other rules.
pub(crate) fn compile_tls_rules(
    vs: &VirtualService,
    settings: &MeshSettings,
    rules: &mut TlsRules,
) {
    let context = VsContext::new(vs, settings);
    for (i, rule) in vs.spec.tls.iter().enumerate() {
        let at = format!("{}: tls[{i}]", context.origin);
        let Some(plan) = destinations(&context, &rule.route, &at) else {
            continue;
        };
        let index = rules.plans.len();
        rules.plans.push(plan);
        for (m, attributes) in rule.matches.iter().enumerate() {
            rules.chains.push(tls_chain(
                attributes,
                index,
                &format!("{at}.match[{m}]"),
                Scope::Mesh,
            ));
        }
    }
}

/// The usable destinations of a rule's `route`, or `None` (warned) when none is.
fn destinations(
    context: &VsContext,
    route: &[weft_config::api::networking::RouteDestination],
    at: &str,
) -> Option<TcpRoutePlan> {
    let weighted = route.len() > 1;
    let destinations: Vec<_> = route
        .iter()
        .enumerate()
        .filter_map(|(j, d)| {
            destination(
                context,
                &d.destination,
                d.weight,
                weighted,
                None,
                &format!("{at}.route[{j}]"),
            )
        })
        .collect();
    if destinations.is_empty() {
        warn_once(format!("{at}: no destination; rule skipped"));
        return None;
    }
    Some(TcpRoutePlan { destinations })
}

/// A TCPRoute attached to the host's Service, as a waypoint applies it (Istio ambient's
/// TCP traffic shifting): its first rule's backends share the connections by weight, on
/// the parentRef's port only when it names one (pilot's `augmentTCPPortMatch`). `None`
/// for other kinds and for a route without a backend with a share.
pub(crate) fn gateway_api_rule(route: &BoundRoute) -> Option<TcpRule> {
    if route.route.kind() != weft_config::api::Kind::TcpRoute {
        return None;
    }
    let plan = TcpRoutePlan::from_bound_route(route)?;
    let at = route.route.object_ref().to_string();
    let matches = route
        .port
        .map(|port| {
            let attributes = L4MatchAttributes {
                port: Some(u32::from(port)),
                ..L4MatchAttributes::default()
            };
            L4Match::compile(&attributes, &at, Scope::Mesh)
        })
        .into_iter()
        .collect();
    Some(TcpRule { matches, plan })
}

pub(crate) fn compile_rules(vs: &VirtualService, settings: &MeshSettings) -> Vec<TcpRule> {
    let context = VsContext::new(vs, settings);
    let scope = Scope::Mesh;
    let mut rules = Vec::with_capacity(vs.spec.tcp.len());
    for (i, rule) in vs.spec.tcp.iter().enumerate() {
        let at = format!("{}: tcp[{i}]", context.origin);
        let Some(plan) = destinations(&context, &rule.route, &at) else {
            continue;
        };
        rules.push(TcpRule {
            matches: rule
                .matches
                .iter()
                .enumerate()
                .map(|(m, attributes)| {
                    L4Match::compile(attributes, &format!("{at}.match[{m}]"), scope)
                })
                .collect(),
            plan,
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let block = |s: &str| cidr::parse(s).expect("cidr");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(contains(block("10.96.0.0/12"), ip("10.100.1.2")));
        assert!(!contains(block("10.96.0.0/12"), ip("10.112.0.1")));
        assert!(contains(block("0.0.0.0/0"), ip("192.168.1.1")));
        assert!(contains(block("10.0.0.1"), ip("10.0.0.1")));
        assert!(!contains(block("10.0.0.1"), ip("10.0.0.2")));
        assert!(contains(block("2001:db8::/32"), ip("2001:db8::1")));
        assert!(!contains(block("2001:db8::/32"), ip("10.0.0.1")));
    }
}
