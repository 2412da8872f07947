//! `tcp` rules: which destination an opaque connection goes to.
use std::net::IpAddr;

use weft_config::api::networking::{L4MatchAttributes, VirtualService};
use weft_config::translate::hosts::MeshSettings;
use weft_config::validate::cidr;

use super::compile::{VsContext, destination};
use super::facts::Source;
use super::matcher::{Gate, Scope, warn_once};
use super::plan::{RouteDestination, pick_weighted};

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

pub(crate) fn compile_rules(vs: &VirtualService, settings: &MeshSettings) -> Vec<TcpRule> {
    let context = VsContext::new(vs, settings);
    let scope = Scope::Mesh;
    let mut rules = Vec::with_capacity(vs.spec.tcp.len());
    for (i, rule) in vs.spec.tcp.iter().enumerate() {
        let at = format!("{}: tcp[{i}]", context.origin);
        let weighted = rule.route.len() > 1;
        let destinations: Vec<_> = rule
            .route
            .iter()
            .enumerate()
            .filter_map(|(j, d)| {
                destination(
                    &context,
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
            continue;
        }
        rules.push(TcpRule {
            matches: rule
                .matches
                .iter()
                .enumerate()
                .map(|(m, attributes)| {
                    L4Match::compile(attributes, &format!("{at}.match[{m}]"), scope)
                })
                .collect(),
            plan: TcpRoutePlan { destinations },
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
