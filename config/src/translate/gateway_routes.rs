//! The Gateway API's routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) resolved against the cluster: what each
//! `parentRef` attaches to, whether each `backendRef` (and mirror) may be used, and the
//! routes each mesh Service's waypoint applies.
//!
//! The rules are Istio's (`pilot/pkg/config/kube/gateway`: `extractParentReferenceInfo`,
//! `referenceAllowed`, `buildDestination`), with two differences, each for a reason:
//! - a `backendRef` to another namespace needs a ReferenceGrant for every parent, as the
//!   Gateway API requires ("implementations MUST NOT permit cross-namespace references
//!   which have no grant"); Istio skips the check for Service parents;
//! - a parentRef to a waypoint's own Gateway is refused with a reason (the waypoint's
//!   HBONE listener takes no routes) rather than passed over in silence.
//!
//! A parentRef to an ingress Gateway of weft's classes (`istio`, `weft`) attaches to the
//! listeners the Gateway API lets it ([`attachable_listeners`]); that Gateway's ingress
//! gateway serves it there ([`gateway_routes`]).
//!
//! Pure: the registry calls [`resolve`] with its snapshot's lookups, `weftctl validate`
//! with the objects of its files, the control plane's status writer reads the result.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::hosts::MeshSettings;
use super::routes::age_order;
use super::waypoint::is_waypoint;
use crate::api::gateway_api::{
    GATEWAY_API_GROUP, KubernetesGateway, Listener, SecretObjectReference,
};
use crate::api::gateway_routes::{BackendObjectReference, ParentReference, ReferenceGrant};
use crate::api::{Kind, ObjectRef};
use crate::registry::model::Service;

pub use crate::registry::bound_route::{
    BoundRoute, GatewayRoute, RefAt, RefIssue, ResolvedRef, RouteBackends, Shadowed,
};

/// The `controllerName` weft writes route status under.
pub const ROUTE_CONTROLLER: &str = "weft.io/gateway-controller";

/// Gateway classes of ingress gateways weft serves (Istio's `istio`, and weft's own).
pub use weft_core::mesh::waypoint::INGRESS_CLASSES;

/// What one `parentRef` attaches to.
#[derive(Clone, Debug, PartialEq)]
pub enum ParentOutcome {
    /// A mesh Service (GAMMA): the waypoint the Service is bound to applies the route, on
    /// `port` only when the reference names one.
    Service {
        service: Arc<Service>,
        port: Option<u16>,
    },
    /// An ingress Gateway of weft's classes: its ingress gateway serves the route on these
    /// listeners (by name).
    Gateway {
        namespace: String,
        name: String,
        listeners: Vec<String>,
    },
    /// A parent weft judges and does not accept: `Accepted=False` with this reason.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Not weft's to judge (a Gateway of another controller, a kind weft does not serve,
    /// a Gateway that does not exist): no status is written for it. `note` says why, for
    /// warnings.
    NotOurs { note: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParentResult {
    pub reference: ParentReference,
    pub outcome: ParentOutcome,
}

/// A route as resolved against the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteResolution {
    pub route: GatewayRoute,
    pub parents: Vec<ParentResult>,
    pub backends: Arc<RouteBackends>,
    /// The route's shares of ingress listeners that older routes (or other listeners of
    /// the port) take (`route_shadowing`): judged over all routes, after resolving each.
    pub shadowed: Vec<Shadowed>,
}

/// What resolving needs to know about the cluster.
pub trait RouteWorld {
    fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>>;
    /// The labels of a namespace (`allowedRoutes.namespaces.selector`), `None` when it is
    /// not known.
    fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>>;
    fn gateway(&self, namespace: &str, name: &str) -> Option<&Arc<KubernetesGateway>>;
    /// The ReferenceGrants of `namespace`.
    fn grants(&self, namespace: &str) -> &[Arc<ReferenceGrant>];
}

/// The core API group, as references write it (`""`, or `core` which Istio also reads).
fn is_core(group: Option<&str>) -> bool {
    matches!(group, None | Some("") | Some("core"))
}

/// Whether a ReferenceGrant of the target namespace lets a route of `from_kind` in
/// `from_namespace` refer to the Service `name`.
pub fn grant_allows(
    grants: &[Arc<ReferenceGrant>],
    from_kind: Kind,
    from_namespace: &str,
    name: &str,
) -> bool {
    grants.iter().any(|grant| {
        let from = grant.spec.from.iter().any(|f| {
            f.group == GATEWAY_API_GROUP
                && f.kind == from_kind.name()
                && f.namespace == from_namespace
        });
        let to = grant.spec.to.iter().any(|t| {
            is_core(Some(t.group.as_str()))
                && t.kind == "Service"
                && t.name.as_deref().is_none_or(|n| n.is_empty() || n == name)
        });
        from && to
    })
}

/// Whether a ReferenceGrant of a Secret's namespace lets Gateways of `from_namespace` refer
/// to the Secret `name` (`from` Gateway of the Gateway API group, `to` core Secret by that
/// name or all).
pub fn grant_allows_secret<'a>(
    grants: impl IntoIterator<Item = &'a ReferenceGrant>,
    from_namespace: &str,
    name: &str,
) -> bool {
    grants.into_iter().any(|grant| {
        let from = grant.spec.from.iter().any(|f| {
            f.group == GATEWAY_API_GROUP && f.kind == "Gateway" && f.namespace == from_namespace
        });
        let to = grant.spec.to.iter().any(|t| {
            is_core(Some(t.group.as_str()))
                && t.kind == "Secret"
                && t.name.as_deref().is_none_or(|n| n.is_empty() || n == name)
        });
        from && to
    })
}

/// A listener's `tls.certificateRefs[]` entry of a Gateway in `gateway_namespace`: the
/// Secret's (namespace, name), or why it cannot be used (`InvalidCertificateRef` for a
/// reference to something other than a core Secret, `RefNotPermitted` for a Secret of
/// another namespace no ReferenceGrant there allows). `grants` are the ReferenceGrants of
/// the Secret's namespace. Whether the Secret exists is the caller's to tell.
pub fn certificate_ref<'a>(
    gateway_namespace: &str,
    reference: &SecretObjectReference,
    grants: impl IntoIterator<Item = &'a ReferenceGrant>,
) -> Result<(String, String), RefIssue> {
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !is_core(reference.group.as_deref()) || kind != "Secret" {
        return Err(RefIssue {
            reason: "InvalidCertificateRef",
            message: format!(
                "certificateRef to group {:?} kind {kind:?} {}: weft reads core Secrets only",
                reference.group.as_deref().unwrap_or_default(),
                reference.name
            ),
        });
    }
    let namespace = reference
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(gateway_namespace);
    if namespace != gateway_namespace
        && !grant_allows_secret(grants, gateway_namespace, &reference.name)
    {
        return Err(RefIssue {
            reason: "RefNotPermitted",
            message: format!(
                "certificateRef to Secret {namespace}/{} not permitted: no ReferenceGrant in \
                 {namespace} allows Gateways of {gateway_namespace} to refer to it",
                reference.name
            ),
        });
    }
    Ok((namespace.to_string(), reference.name.clone()))
}

/// A reference of a route in `namespace` to a backend.
pub fn resolve_ref(
    route_kind: Kind,
    namespace: &str,
    reference: &BackendObjectReference,
    world: &dyn RouteWorld,
    settings: &MeshSettings,
) -> Result<ResolvedRef, RefIssue> {
    let kind = reference.kind.as_deref().unwrap_or("Service");
    if !is_core(reference.group.as_deref()) || kind != "Service" {
        return Err(RefIssue {
            reason: "InvalidKind",
            message: format!(
                "referencing unsupported backendRef: group {:?} kind {kind:?} (weft routes to Services)",
                reference.group.as_deref().unwrap_or_default()
            ),
        });
    }
    let target = reference.namespace.as_deref().unwrap_or(namespace);
    if target != namespace
        && !grant_allows(world.grants(target), route_kind, namespace, &reference.name)
    {
        return Err(RefIssue {
            reason: "RefNotPermitted",
            message: format!(
                "backendRef {target}/{} not accessible to a {route_kind} in namespace {namespace:?} (missing a ReferenceGrant in {target:?}?)",
                reference.name
            ),
        });
    }
    let host = settings.service_host(&reference.name, target);
    if world.service(target, &reference.name).is_none() {
        return Err(RefIssue {
            reason: "BackendNotFound",
            message: format!("backend({host}) not found"),
        });
    }
    let port = reference
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| RefIssue {
            reason: "UnsupportedValue",
            message: "port is required in backendRef".to_string(),
        })?;
    Ok(ResolvedRef { host, port })
}

/// The listeners of `gateway` a route of `route_kind` in `namespace` with `hostnames` may
/// attach to through `reference`, as the Gateway API decides (Istio's `referenceAllowed`):
/// those `sectionName` and `port` name, whose `hostname` meets one of the route's, whose
/// `allowedRoutes` admit the route's namespace and kind. `Err` with the Gateway API's
/// reason when none does.
pub fn attachable_listeners<'g>(
    gateway: &'g KubernetesGateway,
    reference: &ParentReference,
    route_kind: Kind,
    namespace: &str,
    hostnames: &[String],
    world: &dyn RouteWorld,
) -> Result<Vec<&'g Listener>, (&'static str, String)> {
    let gateway_namespace = gateway
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(crate::api::DEFAULT_NAMESPACE);
    let named: Vec<&Listener> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| {
            reference
                .section_name
                .as_deref()
                .is_none_or(|s| s == l.name)
        })
        .filter(|l| {
            reference
                .port
                .is_none_or(|p| i64::from(p) == i64::from(l.port))
        })
        .collect();
    if named.is_empty() {
        let message = match (&reference.section_name, reference.port) {
            (Some(section), _) => format!("sectionName {section:?} not found"),
            (None, Some(port)) => format!("port {port} not found"),
            (None, None) => "the Gateway has no listeners".to_string(),
        };
        return Err(("NoMatchingParent", message));
    }
    let mut attachable = Vec::new();
    let mut not_allowed = None;
    let mut no_hostname = None;
    for listener in named {
        if !hostnames_meet(listener.hostname.as_deref(), hostnames) {
            no_hostname.get_or_insert_with(|| {
                format!(
                    "no hostnames matched listener {:?}'s hostname {:?}",
                    listener.name,
                    listener.hostname.as_deref().unwrap_or_default()
                )
            });
            continue;
        }
        let allowed = listener.allowed_routes.as_ref();
        let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
        let from = namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same");
        let namespace_allowed = match from {
            "All" => true,
            "Same" => namespace == gateway_namespace,
            "Selector" => namespaces
                .and_then(|n| n.selector.as_ref())
                .is_some_and(|selector| {
                    let none = BTreeMap::new();
                    selector.matches(world.namespace_labels(namespace).unwrap_or(&none))
                }),
            _ => false,
        };
        if !namespace_allowed {
            not_allowed.get_or_insert_with(|| {
                format!(
                    "listener {:?} does not allow routes from namespace {namespace:?} (allowedRoutes.namespaces.from: {from})",
                    listener.name
                )
            });
            continue;
        }
        if !listener_kinds(listener).contains(&route_kind.name()) {
            not_allowed.get_or_insert_with(|| {
                format!(
                    "listener {:?} does not allow kind {route_kind}",
                    listener.name
                )
            });
            continue;
        }
        attachable.push(listener);
    }
    if !attachable.is_empty() {
        return Ok(attachable);
    }
    match (not_allowed, no_hostname) {
        (Some(message), _) => Err(("NotAllowedByListeners", message)),
        (None, Some(message)) => Err(("NoMatchingListenerHostname", message)),
        (None, None) => Err(("NoMatchingParent", "no listener".to_string())),
    }
}

/// The route kinds a listener of an ingress Gateway takes: its `allowedRoutes.kinds` that
/// its protocol and `tls.mode` serve, or the protocol's default kinds
/// (`weft_core::mesh::waypoint::allowed_route_kinds`).
pub fn listener_kinds(listener: &Listener) -> Vec<&'static str> {
    let listed = listener
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.as_slice())
        .unwrap_or_default();
    weft_core::mesh::waypoint::allowed_route_kinds(
        &listener.protocol,
        listener.tls.as_ref().map_or("Terminate", |t| t.mode()),
        listed.iter().map(|k| {
            (
                k.group.as_deref().unwrap_or(GATEWAY_API_GROUP),
                k.kind.as_str(),
            )
        }),
    )
}

/// Whether a listener's hostname (absent: any) and a route's hostnames (none: any) have a
/// host in common: equal, or one a wildcard (`*.example.com`: one or more labels before
/// `example.com`) covering the other.
pub fn hostnames_meet(listener: Option<&str>, route: &[String]) -> bool {
    let Some(listener) = listener.filter(|h| !h.is_empty()) else {
        return true;
    };
    route.is_empty()
        || route
            .iter()
            .any(|r| r == listener || covers(listener, r) || covers(r, listener))
}

/// The hosts a route with `hostnames` (none: any) serves on a listener with `hostname`
/// (absent: any), as the Gateway API intersects them: a route's hostname the listener's
/// covers, the listener's where a route's wildcard covers it; `*` when neither names one.
/// Lower case, each once.
pub fn effective_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase);
    if route.is_empty() {
        return vec![listener.unwrap_or_else(|| "*".to_string())];
    }
    let mut hosts: Vec<String> = Vec::new();
    for host in route.iter().map(|h| h.to_ascii_lowercase()) {
        let served = match &listener {
            None => Some(host),
            Some(l) if *l == host || covers(l, &host) => Some(host),
            Some(l) if covers(&host, l) => Some(l.clone()),
            Some(_) => None,
        };
        if let Some(served) = served
            && !hosts.contains(&served)
        {
            hosts.push(served);
        }
    }
    hosts
}

/// Whether the wildcard `pattern` covers `host` (itself perhaps a narrower wildcard).
pub fn covers(pattern: &str, host: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    let base = host.strip_prefix("*.").unwrap_or(host);
    base.strip_suffix(suffix)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        || (host.starts_with("*.") && base == suffix)
}

/// What `reference`, a parentRef of a route of `route_kind` in `namespace` with
/// `hostnames`, attaches to.
pub fn resolve_parent(
    route_kind: Kind,
    namespace: &str,
    hostnames: &[String],
    reference: &ParentReference,
    world: &dyn RouteWorld,
) -> ParentOutcome {
    let group = reference.group.as_deref();
    let kind = reference.kind.as_deref().unwrap_or("Gateway");
    let target = reference.namespace.as_deref().unwrap_or(namespace);
    let is_gateway = group.is_none_or(|g| g == GATEWAY_API_GROUP) && kind == "Gateway";
    if is_gateway {
        let Some(gateway) = world.gateway(target, &reference.name) else {
            return ParentOutcome::NotOurs {
                note: format!("Gateway {target}/{} does not exist", reference.name),
            };
        };
        let class = gateway.spec.gateway_class_name.as_str();
        if is_waypoint(gateway) {
            return ParentOutcome::Refused {
                reason: "NotAllowedByListeners",
                message: format!(
                    "Gateway {target}/{} is a waypoint, whose HBONE listener takes no routes: attach the route to the Service the waypoint serves (parentRefs: [{{group: \"\", kind: Service, name: <service>}}]), as Istio ambient does",
                    reference.name
                ),
            };
        }
        if INGRESS_CLASSES.contains(&class) {
            return match attachable_listeners(
                gateway, reference, route_kind, namespace, hostnames, world,
            ) {
                Err((reason, message)) => ParentOutcome::Refused { reason, message },
                Ok(listeners) => ParentOutcome::Gateway {
                    namespace: target.to_string(),
                    name: reference.name.clone(),
                    listeners: listeners.iter().map(|l| l.name.clone()).collect(),
                },
            };
        }

        return ParentOutcome::NotOurs {
            note: format!(
                "Gateway {target}/{} is of class {class:?}, which weft does not serve",
                reference.name
            ),
        };
    }
    // A TCPRoute attached to a Service shifts the Service's TCP connections at its
    // waypoint, as Istio ambient's (its "TCP traffic shifting" task); a TLSRoute attached
    // to a Service (Istio's waypoint routes by it per SNI) is not applied by weft's.
    if is_core(group) && kind == "Service" && route_kind == Kind::TlsRoute {
        return ParentOutcome::Refused {
            reason: "UnsupportedValue",
            message: "weft's waypoints do not apply TLSRoutes attached to a Service (Istio's waypoint routes the Service's TLS by them): write the Service's VirtualService `tls` rules by sniHosts instead, or attach the route to an ingress Gateway's TLS listener".to_string(),
        };
    }
    if is_core(group) && kind == "Service" {
        let Some(service) = world.service(target, &reference.name) else {
            return ParentOutcome::Refused {
                reason: "NoMatchingParent",
                message: format!("parent service: {:?} not found", reference.name),
            };
        };
        return ParentOutcome::Service {
            service: service.clone(),
            port: reference.port.and_then(|p| u16::try_from(p).ok()),
        };
    }
    if group == Some(crate::api::NETWORKING_GROUP) && kind == "ServiceEntry" {
        return ParentOutcome::Refused {
            reason: "NoMatchingParent",
            message: "weft's waypoints take routes attached to Services; a ServiceEntry parent is not supported".to_string(),
        };
    }
    ParentOutcome::NotOurs {
        note: format!(
            "a parent of group {:?} kind {kind:?} is not one weft serves",
            group.unwrap_or_default()
        ),
    }
}

/// A route resolved against `world`.
pub fn resolve(
    route: &GatewayRoute,
    world: &dyn RouteWorld,
    settings: &MeshSettings,
) -> RouteResolution {
    let namespace = route.namespace();
    let parents = route
        .parent_refs()
        .iter()
        .map(|reference| ParentResult {
            reference: reference.clone(),
            outcome: resolve_parent(route.kind(), namespace, route.hostnames(), reference, world),
        })
        .collect();
    let refs = route
        .references()
        .into_iter()
        .map(|(at, reference)| {
            (
                at,
                resolve_ref(route.kind(), namespace, &reference, world, settings),
            )
        })
        .collect();
    RouteResolution {
        route: route.clone(),
        parents,
        backends: Arc::new(RouteBackends { refs }),
        shadowed: Vec::new(),
    }
}

/// The routes bound to each mesh Service, by the Service's host, oldest first (then by
/// namespace and name), as Istio orders them.
pub fn mesh_index<'a>(
    resolutions: impl IntoIterator<Item = &'a RouteResolution>,
) -> HashMap<String, Vec<Arc<BoundRoute>>> {
    let mut by_host: HashMap<String, Vec<Arc<BoundRoute>>> = HashMap::new();
    for resolution in resolutions {
        for parent in &resolution.parents {
            if let ParentOutcome::Service { service, port } = &parent.outcome {
                by_host
                    .entry(service.hostname.clone())
                    .or_default()
                    .push(Arc::new(BoundRoute {
                        route: resolution.route.clone(),
                        service_namespace: service.namespace.clone(),
                        port: *port,
                        backends: resolution.backends.clone(),
                    }));
            }
        }
    }
    for routes in by_host.values_mut() {
        routes.sort_by(|a, b| age_order(a.route.metadata(), b.route.metadata()));
    }
    by_host
}

/// The routes attached to the ingress Gateway `namespace/name`, oldest first (then by
/// namespace and name), each with the names of the listeners it attaches to.
pub fn gateway_routes<'a>(
    resolutions: impl IntoIterator<Item = &'a RouteResolution>,
    namespace: &str,
    name: &str,
) -> Vec<(Arc<BoundRoute>, Vec<String>)> {
    let mut found: Vec<(Arc<BoundRoute>, Vec<String>)> = Vec::new();
    for resolution in resolutions {
        let mut listeners: Vec<String> = Vec::new();
        for parent in &resolution.parents {
            if let ParentOutcome::Gateway {
                namespace: ns,
                name: gw,
                listeners: names,
            } = &parent.outcome
                && ns == namespace
                && gw == name
            {
                for listener in names {
                    if !listeners.contains(listener) {
                        listeners.push(listener.clone());
                    }
                }
            }
        }
        if listeners.is_empty() {
            continue;
        }
        found.push((
            Arc::new(BoundRoute {
                route: resolution.route.clone(),
                service_namespace: resolution.route.namespace().to_string(),
                port: None,
                backends: resolution.backends.clone(),
            }),
            listeners,
        ));
    }
    found.sort_by(|a, b| age_order(a.0.route.metadata(), b.0.route.metadata()));
    found
}

/// How many routes are attached to each listener (by name) of the ingress Gateway
/// `namespace/name`: a listener's status `attachedRoutes`. A route counts once per listener,
/// however many of its parentRefs reach it, and not where older routes take all it would
/// serve (`RouteResolution::shadowed`); listeners without routes are absent.
pub fn attached_route_counts<'a>(
    resolutions: impl IntoIterator<Item = &'a RouteResolution>,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, u32> {
    let gateway = format!("{namespace}/{name}");
    let resolutions: Vec<&RouteResolution> = resolutions.into_iter().collect();
    let shadowed: BTreeMap<ObjectRef, &[Shadowed]> = resolutions
        .iter()
        .map(|r| (r.route.object_ref(), r.shadowed.as_slice()))
        .collect();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (route, listeners) in gateway_routes(resolutions.iter().copied(), namespace, name) {
        // A route whose every connection on a listener goes to an older route is not
        // attached there, as the Gateway API's conformance counts it.
        let served_nothing = |listener: &String| {
            shadowed
                .get(&route.route.object_ref())
                .into_iter()
                .flat_map(|found| found.iter())
                .any(|s| s.complete && s.gateway == gateway && s.listener == *listener)
        };
        for listener in listeners {
            if !served_nothing(&listener) {
                *counts.entry(listener).or_default() += 1;
            }
        }
    }
    counts
}

/// The problems of a resolved route a user should hear about, as (field, reason): parents
/// refused or not served, Services no waypoint serves, routes a waypoint does not apply,
/// references that cannot be used.
pub fn issues(resolution: &RouteResolution) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let namespace = resolution.route.namespace();
    for (i, parent) in resolution.parents.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        match &parent.outcome {
            ParentOutcome::Refused { reason, message } => {
                found.push((field, format!("not accepted ({reason}): {message}")));
            }
            ParentOutcome::NotOurs { note } => {
                found.push((field, format!("{note}: weft does not route by this parent")));
            }
            ParentOutcome::Gateway { .. } => {}
            ParentOutcome::Service { service, .. } => match &service.waypoint {
                None => found.push((
                    field,
                    format!(
                        "Service {}/{} is not bound to a waypoint (istio.io/use-waypoint on it or its namespace): no proxy of weft applies this route",
                        service.namespace, service.name
                    ),
                )),
                Some(waypoint)
                    if namespace != service.namespace && namespace != waypoint.namespace =>
                {
                    found.push((
                        field,
                        format!(
                            "the route is in namespace {namespace:?}, neither the Service's ({:?}) nor its waypoint's ({:?}): the waypoint applies only routes of those namespaces, as Istio's does",
                            service.namespace, waypoint.namespace
                        ),
                    ))
                }
                Some(_) => {}
            },
        }
    }
    for shadowed in resolution.shadowed.iter() {
        // The first parentRef that reaches the listener.
        let at = resolution
            .parents
            .iter()
            .position(|p| match &p.outcome {
                ParentOutcome::Gateway {
                    namespace,
                    name,
                    listeners,
                } => {
                    shadowed.gateway == format!("{namespace}/{name}")
                        && listeners.contains(&shadowed.listener)
                }
                _ => false,
            })
            .unwrap_or_default();
        found.push((format!("spec.parentRefs[{at}]"), shadowed.describe()));
    }
    for (at, issue) in resolution.backends.issues() {
        let streams = matches!(resolution.route.kind(), Kind::TlsRoute | Kind::TcpRoute);
        let effect = match at {
            RefAt::Backend { .. } if streams => "connections it would take are refused",
            RefAt::Backend { .. } => "requests it would take are answered 500",
            RefAt::Mirror { .. } => "nothing is mirrored to it",
        };
        found.push((
            at.field(),
            format!("{} ({}); {effect}", issue.message, issue.reason),
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway_routes::ReferenceGrantSpec;

    #[derive(Default)]
    struct World {
        namespaces: BTreeMap<String, BTreeMap<String, String>>,
        services: BTreeMap<(String, String), Arc<Service>>,
        gateways: BTreeMap<(String, String), Arc<KubernetesGateway>>,
        grants: BTreeMap<String, Vec<Arc<ReferenceGrant>>>,
    }

    impl RouteWorld for World {
        fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
            self.services
                .get(&(namespace.to_string(), name.to_string()))
        }
        fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
            self.namespaces.get(namespace)
        }
        fn gateway(&self, namespace: &str, name: &str) -> Option<&Arc<KubernetesGateway>> {
            self.gateways
                .get(&(namespace.to_string(), name.to_string()))
        }
        fn grants(&self, namespace: &str) -> &[Arc<ReferenceGrant>] {
            self.grants
                .get(namespace)
                .map(Vec::as_slice)
                .unwrap_or_default()
        }
    }

    fn service(namespace: &str, name: &str, waypoint: Option<(&str, &str)>) -> Arc<Service> {
        Arc::new(Service {
            name: name.into(),
            namespace: namespace.into(),
            hostname: MeshSettings::default().service_host(name, namespace),
            vips: Vec::new(),
            ports: Vec::new(),
            selector: None,
            labels: BTreeMap::new(),
            endpoints: Vec::new().into(),
            traffic_distribution: Default::default(),
            waypoint: waypoint.map(|(ns, name)| crate::registry::model::WaypointRef {
                name: name.into(),
                namespace: ns.into(),
            }),
        })
    }

    fn world() -> World {
        let mut world = World::default();
        for (ns, name) in [
            ("shop", "reviews"),
            ("shop", "reviews-v1"),
            ("other", "ratings"),
        ] {
            world.services.insert(
                (ns.into(), name.into()),
                service(ns, name, Some(("shop", "waypoint"))),
            );
        }
        let gateway = |class: &str| -> Arc<KubernetesGateway> {
            Arc::new(
                serde_yaml::from_str(&format!(
                    "metadata: {{name: gw, namespace: shop}}\nspec: {{gatewayClassName: {class}, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}"
                ))
                .expect("gateway"),
            )
        };
        world.gateways.insert(
            ("shop".into(), "waypoint".into()),
            gateway("istio-waypoint"),
        );
        world
            .gateways
            .insert(("shop".into(), "ingress".into()), gateway("istio"));
        world
            .gateways
            .insert(("shop".into(), "nginx".into()), gateway("nginx"));
        world
    }

    fn route(yaml: &str) -> GatewayRoute {
        GatewayRoute::Http(Arc::new(serde_yaml::from_str(yaml).expect("route")))
    }

    #[test]
    fn parents_are_services_waypoints_ingresses_or_someone_elses() {
        let world = world();
        let route = route(
            r#"
metadata: {name: r, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 9080}
  - {group: "", kind: Service, name: missing}
  - {name: waypoint}
  - {name: ingress}
  - {name: nginx}
  - {name: absent}
  - {group: example.com, kind: Mesh, name: m}
"#,
        );
        let resolved = resolve(&route, &world, &MeshSettings::default());
        let outcomes: Vec<&str> = resolved
            .parents
            .iter()
            .map(|p| match &p.outcome {
                ParentOutcome::Service { .. } => "service",
                ParentOutcome::Gateway { .. } => "gateway",
                ParentOutcome::Refused { reason, .. } => reason,
                ParentOutcome::NotOurs { .. } => "not ours",
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                "service",
                "NoMatchingParent",
                "NotAllowedByListeners",
                "gateway",
                "not ours",
                "not ours",
                "not ours"
            ]
        );
        let ParentOutcome::Service { port, .. } = &resolved.parents[0].outcome else {
            panic!("a service");
        };
        assert_eq!(*port, Some(9080));
        let index = mesh_index([&resolved]);
        assert_eq!(index["reviews.shop.svc.cluster.local"].len(), 1);
        assert_eq!(effective_hostnames(None, &[]), ["*"]);
        assert_eq!(
            effective_hostnames(
                Some("*.example.com"),
                &["a.example.com".into(), "b.org".into()]
            ),
            ["a.example.com"]
        );
        assert_eq!(
            effective_hostnames(Some("a.example.com"), &["*.example.com".into()]),
            ["a.example.com"]
        );
        assert_eq!(
            effective_hostnames(Some("a.example.com"), &[]),
            ["a.example.com"]
        );
        let attached = gateway_routes([&resolved], "shop", "ingress");
        assert_eq!(attached.len(), 1);
        assert_eq!(attached[0].1, ["http"]);
        assert!(gateway_routes([&resolved], "shop", "nginx").is_empty());
    }

    #[test]
    fn cross_namespace_backends_need_a_grant_for_the_routes_kind_and_namespace() {
        let mut world = world();
        let route = route(
            r#"
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080}
    - {name: ratings, namespace: other, port: 9080}
    - {name: gone, port: 9080}
    - {group: networking.istio.io, kind: Hostname, name: example.com, port: 80}
"#,
        );
        let reasons = |world: &World| -> Vec<&'static str> {
            resolve(&route, world, &MeshSettings::default())
                .backends
                .refs
                .values()
                .map(|r| match r {
                    Ok(_) => "ok",
                    Err(issue) => issue.reason,
                })
                .collect()
        };
        assert_eq!(
            reasons(&world),
            ["ok", "RefNotPermitted", "BackendNotFound", "InvalidKind"]
        );
        // A grant for GRPCRoutes, or from another namespace, or to another Service, does not do.
        let grant = |from_kind: &str, from_ns: &str, to_name: Option<&str>| {
            Arc::new(ReferenceGrant {
                metadata: Default::default(),
                spec: ReferenceGrantSpec {
                    from: vec![crate::api::gateway_routes::ReferenceGrantFrom {
                        group: GATEWAY_API_GROUP.into(),
                        kind: from_kind.into(),
                        namespace: from_ns.into(),
                    }],
                    to: vec![crate::api::gateway_routes::ReferenceGrantTo {
                        group: String::new(),
                        kind: "Service".into(),
                        name: to_name.map(Into::into),
                    }],
                },
            })
        };
        world.grants.insert(
            "other".into(),
            vec![
                grant("GRPCRoute", "shop", None),
                grant("HTTPRoute", "elsewhere", None),
                grant("HTTPRoute", "shop", Some("details")),
            ],
        );
        assert_eq!(reasons(&world)[1], "RefNotPermitted");
        world.grants.get_mut("other").expect("grants").push(grant(
            "HTTPRoute",
            "shop",
            Some("ratings"),
        ));
        assert_eq!(reasons(&world)[1], "ok");
    }

    #[test]
    fn issues_name_consumer_routes_and_unbound_services() {
        let mut world = world();
        world.services.insert(
            ("plain".into(), "web".into()),
            service("plain", "web", None),
        );
        let consumer = route(
            "metadata: {name: r, namespace: third}\nspec: {parentRefs: [{group: '', kind: Service, name: reviews, namespace: shop}, {group: '', kind: Service, name: web, namespace: plain}]}",
        );
        let found = issues(&resolve(&consumer, &world, &MeshSettings::default()));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].1.contains("neither the Service's"), "{found:?}");
        assert!(found[1].1.contains("not bound to a waypoint"), "{found:?}");
    }

    #[test]
    fn ingress_listeners_take_routes_by_section_port_hostname_namespace_and_kind() {
        let mut world = world();
        world.namespaces.insert(
            "apps".into(),
            [("expose".to_string(), "yes".to_string())].into(),
        );
        let gateway: KubernetesGateway = serde_yaml::from_str(
            r#"
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: web, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: apps, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {expose: "yes"}}}}}
  - {name: same, port: 9090, protocol: HTTP}
  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
"#,
        )
        .expect("gateway");
        let reference =
            |yaml: &str| -> ParentReference { serde_yaml::from_str(yaml).expect("parentRef") };
        let attach = |r: &ParentReference, namespace: &str, hostnames: &[&str]| {
            let hostnames: Vec<String> = hostnames.iter().map(|h| h.to_string()).collect();
            match attachable_listeners(&gateway, r, Kind::HttpRoute, namespace, &hostnames, &world)
            {
                Ok(listeners) => listeners
                    .iter()
                    .map(|l| l.name.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                Err((reason, _)) => reason.to_string(),
            }
        };
        let web = reference("{name: edge, sectionName: web}");
        assert_eq!(attach(&web, "shop", &["bookinfo.example.com"]), "web");
        assert_eq!(attach(&web, "shop", &[]), "web", "no hostnames: any");
        assert_eq!(attach(&web, "shop", &["*.example.com"]), "web");
        assert_eq!(
            attach(&web, "shop", &["a.b.example.com"]),
            "web",
            "more labels"
        );
        assert_eq!(
            attach(&web, "shop", &["example.com"]),
            "NoMatchingListenerHostname"
        );
        assert_eq!(
            attach(&web, "shop", &["other.org"]),
            "NoMatchingListenerHostname"
        );
        let apps = reference("{name: edge, port: 8080}");
        assert_eq!(attach(&apps, "apps", &[]), "apps");
        assert_eq!(
            attach(&apps, "shop", &[]),
            "NotAllowedByListeners",
            "not selected"
        );
        let same = reference("{name: edge, sectionName: same}");
        assert_eq!(attach(&same, "infra", &[]), "same");
        assert_eq!(attach(&same, "shop", &[]), "NotAllowedByListeners");
        let tcp = reference("{name: edge, sectionName: tcp}");
        assert_eq!(
            attach(&tcp, "shop", &[]),
            "NotAllowedByListeners",
            "an HTTPRoute on TCP"
        );
        let nope = reference("{name: edge, sectionName: nope}");
        assert_eq!(attach(&nope, "shop", &[]), "NoMatchingParent");
        assert_eq!(
            attach(&reference("{name: edge, port: 1}"), "shop", &[]),
            "NoMatchingParent"
        );
        // Without sectionName or port, every listener that takes it.
        let any = reference("{name: edge}");
        assert_eq!(attach(&any, "apps", &["x.example.com"]), "web,apps");
    }

    #[test]
    fn tls_and_tcp_routes_attach_to_the_listeners_their_kind_and_hostnames_allow() {
        let mut world = world();
        world.gateways.insert(
            ("shop".into(), "edge".into()),
            Arc::new(
                serde_yaml::from_str(
                    r#"
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: pass, port: 443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: term, port: 8443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: c}]}}
  - {name: term-tcp, port: 9443, protocol: TLS, tls: {mode: Terminate}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: tcp, port: 5000, protocol: TCP}
"#,
                )
                .expect("gateway"),
            ),
        );
        let tls = |yaml: &str| {
            GatewayRoute::Tls(Arc::new(serde_yaml::from_str(yaml).expect("tls route")))
        };
        let tcp = |yaml: &str| {
            GatewayRoute::Tcp(Arc::new(serde_yaml::from_str(yaml).expect("tcp route")))
        };
        let listeners = |route: &GatewayRoute| -> Result<Vec<String>, String> {
            let resolved = resolve(route, &world, &MeshSettings::default());
            match &resolved.parents[0].outcome {
                ParentOutcome::Gateway { listeners, .. } => Ok(listeners.clone()),
                ParentOutcome::Refused { reason, .. } => Err(reason.to_string()),
                ParentOutcome::Service { service, .. } => {
                    Ok(vec![format!("service {}", service.name)])
                }
                other => panic!("{other:?}"),
            }
        };
        // A TLSRoute takes TLS listeners, by hostname; not HTTP, TCP or a listener listing
        // only TCPRoute.
        let a = tls(
            "metadata: {name: a, namespace: shop}\nspec: {parentRefs: [{name: edge}], hostnames: [a.example.com], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(
            listeners(&a),
            Ok(vec!["pass".to_string(), "term".to_string()])
        );
        let other = tls(
            "metadata: {name: o, namespace: shop}\nspec: {parentRefs: [{name: edge}], hostnames: [a.example.org], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(listeners(&other), Ok(vec!["term".to_string()]));
        // A TCPRoute takes TCP listeners and terminating TLS listeners that list it.
        let t = tcp(
            "metadata: {name: t, namespace: shop}\nspec: {parentRefs: [{name: edge}], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(
            listeners(&t),
            Ok(vec!["term-tcp".to_string(), "tcp".to_string()])
        );
        // Named to a listener of another kind: not attached.
        let wrong = tcp(
            "metadata: {name: w, namespace: shop}\nspec: {parentRefs: [{name: edge, sectionName: pass}], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(listeners(&wrong), Err("NotAllowedByListeners".to_string()));
        let http = route(
            "metadata: {name: h, namespace: shop}\nspec: {parentRefs: [{name: edge, sectionName: tcp}]}",
        );
        assert_eq!(listeners(&http), Err("NotAllowedByListeners".to_string()));
        // A TCPRoute attached to a Service is the waypoint's (GAMMA, as Istio ambient's);
        // a TLSRoute attached to one is refused.
        let mesh = tcp(
            "metadata: {name: m, namespace: shop}\nspec: {parentRefs: [{group: \"\", kind: Service, name: reviews}], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(listeners(&mesh), Ok(vec!["service reviews".to_string()]));
        let mesh_tls = tls(
            "metadata: {name: m, namespace: shop}\nspec: {parentRefs: [{group: \"\", kind: Service, name: reviews}], hostnames: [a.example.com], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}",
        );
        assert_eq!(listeners(&mesh_tls), Err("UnsupportedValue".to_string()));
        // attachedRoutes: each route once per listener it attaches to.
        let resolutions: Vec<RouteResolution> = [a, other, t, wrong, http]
            .iter()
            .map(|r| resolve(r, &world, &MeshSettings::default()))
            .collect();
        let counts = attached_route_counts(&resolutions, "shop", "edge");
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [
                ("pass".to_string(), 1),
                ("tcp".to_string(), 1),
                ("term".to_string(), 2),
                ("term-tcp".to_string(), 1)
            ]
        );
    }

    #[test]
    fn certificate_refs_of_other_namespaces_need_a_grant_for_gateways_to_secrets() {
        let reference = |yaml: &str| -> SecretObjectReference {
            serde_yaml::from_str(yaml).expect("reference")
        };
        let grant = |from_kind: &str, to_kind: &str, name: Option<&str>| {
            ReferenceGrant {
            spec: serde_yaml::from_str(&format!(
                "{{from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: web}}], \
                 to: [{{group: '', kind: {to_kind}{}}}]}}",
                name.map(|n| format!(", name: {n}")).unwrap_or_default()
            ))
            .expect("grant"),
            ..ReferenceGrant::default()
        }
        };
        let own = reference("{name: shop-cert}");
        assert_eq!(
            certificate_ref("web", &own, []),
            Ok(("web".to_string(), "shop-cert".to_string())),
            "the Gateway's namespace needs no grant"
        );
        let other = reference("{name: shop-cert, namespace: certs}");
        let refused = certificate_ref("web", &other, []).expect_err("no grant");
        assert_eq!(refused.reason, "RefNotPermitted");
        assert!(refused.message.contains("certs/shop-cert"), "{refused:?}");
        for wrong in [
            grant("HTTPRoute", "Secret", None),
            grant("Gateway", "Service", None),
            grant("Gateway", "Secret", Some("another")),
        ] {
            assert_eq!(
                certificate_ref("web", &other, [&wrong]).map_err(|e| e.reason),
                Err("RefNotPermitted"),
                "{wrong:?}"
            );
        }
        for right in [
            grant("Gateway", "Secret", None),
            grant("Gateway", "Secret", Some("shop-cert")),
        ] {
            assert_eq!(
                certificate_ref("web", &other, [&right]),
                Ok(("certs".to_string(), "shop-cert".to_string()))
            );
        }
        let config_map = reference("{kind: ConfigMap, name: shop-cert}");
        assert_eq!(
            certificate_ref("web", &config_map, []).map_err(|e| e.reason),
            Err("InvalidCertificateRef")
        );
    }
}
