//! A Gateway API route as the registry holds it for the waypoints: the route, the port it
//! is bound to, and what each of its references resolved to (`translate/gateway_routes.rs`
//! resolves them).
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::gateway_routes::{
    BackendObjectReference, GrpcRoute, HttpRoute, ParentReference, RouteStatus, StreamRouteRule,
    TcpRoute, TlsRoute,
};
use crate::api::{DEFAULT_NAMESPACE, Kind, ObjectRef};

/// A Gateway API route. HTTPRoutes and GRPCRoutes both route HTTP requests, and Istio
/// merges them; TLSRoutes and TCPRoutes route connections (ingress Gateways' TLS and TCP
/// listeners serve them).
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayRoute {
    Http(Arc<HttpRoute>),
    Grpc(Arc<GrpcRoute>),
    Tls(Arc<TlsRoute>),
    Tcp(Arc<TcpRoute>),
}

impl GatewayRoute {
    pub fn kind(&self) -> Kind {
        match self {
            GatewayRoute::Http(_) => Kind::HttpRoute,
            GatewayRoute::Grpc(_) => Kind::GrpcRoute,
            GatewayRoute::Tls(_) => Kind::TlsRoute,
            GatewayRoute::Tcp(_) => Kind::TcpRoute,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            GatewayRoute::Http(r) => &r.metadata,
            GatewayRoute::Grpc(r) => &r.metadata,
            GatewayRoute::Tls(r) => &r.metadata,
            GatewayRoute::Tcp(r) => &r.metadata,
        }
    }

    pub fn namespace(&self) -> &str {
        self.metadata()
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(self.kind(), self.namespace(), self.name())
    }

    pub fn parent_refs(&self) -> &[ParentReference] {
        match self {
            GatewayRoute::Http(r) => &r.spec.parent_refs,
            GatewayRoute::Grpc(r) => &r.spec.parent_refs,
            GatewayRoute::Tls(r) => &r.spec.parent_refs,
            GatewayRoute::Tcp(r) => &r.spec.parent_refs,
        }
    }

    pub fn hostnames(&self) -> &[String] {
        match self {
            GatewayRoute::Http(r) => &r.spec.hostnames,
            GatewayRoute::Grpc(r) => &r.spec.hostnames,
            GatewayRoute::Tls(r) => &r.spec.hostnames,
            GatewayRoute::Tcp(_) => &[],
        }
    }

    pub fn status(&self) -> Option<&RouteStatus> {
        match self {
            GatewayRoute::Http(r) => r.status.as_ref(),
            GatewayRoute::Grpc(r) => r.status.as_ref(),
            GatewayRoute::Tls(r) => r.status.as_ref(),
            GatewayRoute::Tcp(r) => r.status.as_ref(),
        }
    }

    /// The rules of a TLSRoute or TCPRoute (none for HTTP routes).
    pub fn stream_rules(&self) -> &[StreamRouteRule] {
        match self {
            GatewayRoute::Tls(r) => &r.spec.rules,
            GatewayRoute::Tcp(r) => &r.spec.rules,
            GatewayRoute::Http(_) | GatewayRoute::Grpc(_) => &[],
        }
    }

    /// Every object reference of the rules, where it is.
    pub fn references(&self) -> Vec<(RefAt, BackendObjectReference)> {
        let mut found = Vec::new();
        match self {
            GatewayRoute::Http(route) => {
                for (r, rule) in route.spec.rules.iter().enumerate() {
                    for (b, backend) in rule.backend_refs.iter().enumerate() {
                        found.push((
                            RefAt::Backend {
                                rule: r,
                                backend: b,
                            },
                            backend.object(),
                        ));
                    }
                    for (f, filter) in rule.filters.iter().enumerate() {
                        if let Some(mirror) = &filter.request_mirror {
                            found.push((
                                RefAt::Mirror { rule: r, filter: f },
                                mirror.backend_ref.clone(),
                            ));
                        }
                    }
                }
            }
            GatewayRoute::Grpc(route) => {
                for (r, rule) in route.spec.rules.iter().enumerate() {
                    for (b, backend) in rule.backend_refs.iter().enumerate() {
                        found.push((
                            RefAt::Backend {
                                rule: r,
                                backend: b,
                            },
                            backend.object(),
                        ));
                    }
                    for (f, filter) in rule.filters.iter().enumerate() {
                        if let Some(mirror) = &filter.request_mirror {
                            found.push((
                                RefAt::Mirror { rule: r, filter: f },
                                mirror.backend_ref.clone(),
                            ));
                        }
                    }
                }
            }
            GatewayRoute::Tls(_) | GatewayRoute::Tcp(_) => {
                for (r, rule) in self.stream_rules().iter().enumerate() {
                    for (b, backend) in rule.backend_refs.iter().enumerate() {
                        found.push((
                            RefAt::Backend {
                                rule: r,
                                backend: b,
                            },
                            backend.object(),
                        ));
                    }
                }
            }
        }
        found
    }
}

/// Where a reference is in a route's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefAt {
    Backend { rule: usize, backend: usize },
    Mirror { rule: usize, filter: usize },
}

impl RefAt {
    /// The field path (`spec.rules[0].backendRefs[1]`).
    pub fn field(&self) -> String {
        match self {
            RefAt::Backend { rule, backend } => {
                format!("spec.rules[{rule}].backendRefs[{backend}]")
            }
            RefAt::Mirror { rule, filter } => {
                format!("spec.rules[{rule}].filters[{filter}].requestMirror.backendRef")
            }
        }
    }
}

/// Why a reference cannot be used; the reason is the Gateway API's `ResolvedRefs` reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefIssue {
    pub reason: &'static str,
    pub message: String,
}

/// A usable reference: the Service's host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRef {
    pub host: String,
    pub port: u16,
}

/// What each reference of a route resolved to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteBackends {
    pub refs: BTreeMap<RefAt, Result<ResolvedRef, RefIssue>>,
}

impl RouteBackends {
    pub fn get(&self, at: RefAt) -> Option<&Result<ResolvedRef, RefIssue>> {
        self.refs.get(&at)
    }

    pub fn issues(&self) -> impl Iterator<Item = (RefAt, &RefIssue)> {
        self.refs
            .iter()
            .filter_map(|(at, r)| r.as_ref().err().map(|issue| (*at, issue)))
    }
}

/// A route as a mesh Service's waypoint applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundRoute {
    pub route: GatewayRoute,
    /// The namespace of the Service the route is attached to: a waypoint applies the routes
    /// of the Service's namespace and of its own, as Istio's does.
    pub service_namespace: String,
    /// `parentRefs[].port`: the route's rules apply to this service port only.
    pub port: Option<u16>,
    pub backends: Arc<RouteBackends>,
}

/// A route's share of one ingress listener that goes elsewhere: what takes its connections
/// instead (`translate/route_shadowing.rs` decides it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowed {
    /// The Gateway, `namespace/name`.
    pub gateway: String,
    pub listener: String,
    /// Each name the route would serve on the listener (`*` for a TCP listener) and what
    /// takes its connections instead (an older route, or another listener of the port).
    pub taken: Vec<(String, String)>,
    /// Whether the route serves nothing on the listener (every name taken).
    pub complete: bool,
}

impl Shadowed {
    /// What happens to the route's connections on the listener, for messages.
    pub fn describe(&self) -> String {
        let gateway = &self.gateway;
        let listener = &self.listener;
        match self.taken.as_slice() {
            [(name, by)] if name == "*" => format!(
                "listener {listener:?} of Gateway {gateway} gives all its connections to {by}, the oldest route attached to it: this route takes none"
            ),
            taken => {
                let each: Vec<String> = taken
                    .iter()
                    .map(|(name, by)| format!("{name} goes to {by}"))
                    .collect();
                format!(
                    "on listener {listener:?} of Gateway {gateway}, {} (a hostname is served by the oldest route that has it){}",
                    each.join(", "),
                    if self.complete {
                        ": this route takes no connections"
                    } else {
                        ""
                    }
                )
            }
        }
    }
}
