//! Istio's `Gateway` (networking.istio.io) as the gateway workloads it selects serve it, the
//! way pilot builds a gateway's listeners (`pilot/pkg/model/gateway.go`, `mergeGateways`)
//! and routes (`pilot/pkg/networking/core/gateway.go`):
//!
//! - a Gateway applies to every gateway workload its `selector` matches (all of them when it
//!   has none), whatever the namespaces;
//! - a server's port is a port of a Service in front of the workload, and the workload
//!   listens on that Service port's `targetPort`; a number that is no such Service port is
//!   listened on as written (Istio's rule for label-selected gateways);
//! - servers of several Gateways on one port merge: plaintext HTTP servers share one route
//!   table; TLS servers are told apart by SNI, and a host already claimed on the port by an
//!   older server is not served again; a plaintext server whose protocol cannot share the
//!   port with the first one is skipped;
//! - a VirtualService serves a Gateway that its `spec.gateways` names (`name` in its own
//!   namespace, or `namespace/name`); its hosts intersect a server's (wildcards either way,
//!   the more specific one wins, and a server host `ns/host` admits VirtualServices of `ns`
//!   only), giving one virtual host per intersecting name; VirtualServices of one name
//!   merge in age order; a request that no virtual host or route takes is a 404.
//!
//! Pure: the registry derives warnings with it, `weftctl validate` too, and an ingress
//! gateway (`weft-waypoint --mode ingress`) its listeners.
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::api::DEFAULT_NAMESPACE;
use crate::api::gateway::{Gateway, Server, ServerTlsMode};
use crate::api::networking::{RouteDestination, VirtualService};

use super::hosts::{MeshSettings, qualify};

/// The reserved gateway name of the mesh's own proxies.
pub const MESH: &str = "mesh";

/// `namespace/name` of an Istio Gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

impl GatewayRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(gateway: &Gateway) -> Self {
        Self::new(
            gateway
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE),
            gateway.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A name in a VirtualService's `gateways` (or a match block's), as Istio resolves it:
/// `mesh` is no Gateway, `namespace/name` is as written, a bare name is in the
/// VirtualService's namespace.
pub fn resolve_gateway_name(name: &str, vs_namespace: &str) -> Option<GatewayRef> {
    if name == MESH || name.is_empty() {
        return None;
    }
    match name.split_once('/') {
        Some((namespace, name)) => Some(GatewayRef::new(namespace, name)),
        None => Some(GatewayRef::new(vs_namespace, name)),
    }
}

fn namespace_of(vs: &VirtualService) -> &str {
    vs.metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The Gateways a VirtualService's `spec.gateways` binds it to.
pub fn bound_gateways(vs: &VirtualService) -> Vec<GatewayRef> {
    let namespace = namespace_of(vs);
    let mut refs: Vec<GatewayRef> = vs
        .spec
        .gateways
        .iter()
        .filter_map(|g| resolve_gateway_name(g, namespace))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// Whether `gateway` applies to a workload with `labels`: its selector's labels are all
/// the workload's; a Gateway without selector applies to every gateway workload.
pub fn selects(gateway: &Gateway, labels: &BTreeMap<String, String>) -> bool {
    gateway
        .spec
        .selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// A server's protocol, as Istio parses `port.protocol` (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tcp,
    Tls,
    Mongo,
    Mysql,
    Redis,
}

impl Protocol {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "HTTPS" => Protocol::Https,
            "TCP" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "MONGO" => Protocol::Mongo,
            "MYSQL" => Protocol::Mysql,
            "REDIS" => Protocol::Redis,
            _ => return None,
        })
    }

    /// Plaintext HTTP of some version (Istio's `IsHTTP`).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }
}

/// One entry of a server's `hosts`: `namespace/host` admits VirtualServices of that
/// namespace only (`namespace` is `None` for `*/host` or a bare host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHost {
    pub namespace: Option<String>,
    pub host: String,
}

impl ServerHost {
    /// `./host` is the Gateway's namespace.
    pub fn parse(text: &str, gateway_namespace: &str) -> Self {
        match text.split_once('/') {
            Some((".", host)) => Self {
                namespace: Some(gateway_namespace.to_string()),
                host: host.to_ascii_lowercase(),
            },
            Some(("*", host)) => Self {
                namespace: None,
                host: host.to_ascii_lowercase(),
            },
            Some((namespace, host)) => Self {
                namespace: Some(namespace.to_string()),
                host: host.to_ascii_lowercase(),
            },
            None => Self {
                namespace: None,
                host: text.to_ascii_lowercase(),
            },
        }
    }

    fn admits(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// Istio's `Name.SubsetOf`: every name `a` matches is matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a_suffix), Some(b_suffix)) => a_suffix.ends_with(b_suffix),
        (None, Some(b_suffix)) => a.ends_with(b_suffix),
        (Some(_), None) => false,
        (None, None) => a == b,
    }
}

/// Istio's `Name.Matches`: the two names have a name in common.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_subset_of(a, b) || host_subset_of(b, a)
}

/// One server of one Gateway, as a workload serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerPlan {
    pub gateway: GatewayRef,
    /// Its position in the Gateway's `spec.servers`.
    pub index: usize,
    pub server: Server,
    pub protocol: Protocol,
    pub hosts: Vec<ServerHost>,
    /// The port the workload listens on (the Service port's `targetPort`).
    pub listen_port: u16,
    pub bind: Option<IpAddr>,
}

impl ServerPlan {
    /// The server's own port number: what `port` in route matches compares with.
    pub fn port(&self) -> u16 {
        u16::try_from(self.server.port.number).unwrap_or_default()
    }

    pub fn tls_mode(&self) -> Option<ServerTlsMode> {
        self.server.tls.as_ref().map(|t| t.mode.unwrap_or_default())
    }

    pub fn is_passthrough(&self) -> bool {
        matches!(
            self.tls_mode(),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        )
    }

    /// TLS (terminated or passed through) on a non-HTTP protocol: told apart by SNI.
    pub fn is_tls_server(&self) -> bool {
        self.server.tls.is_some() && !self.protocol.is_http()
    }

    /// Served with HTTP routes: plaintext HTTP, or HTTPS terminated here.
    pub fn is_http_server(&self) -> bool {
        self.protocol.is_http()
            || (self.protocol == Protocol::Https
                && self.server.tls.is_some()
                && !self.is_passthrough())
    }

    pub fn https_redirect(&self) -> bool {
        self.server
            .tls
            .as_ref()
            .and_then(|t| t.https_redirect)
            .unwrap_or(false)
    }

    /// The names a TLS client's SNI is matched with (namespaces dropped).
    pub fn sni_hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self.hosts.iter().map(|h| h.host.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// `spec.servers[i]` of its Gateway, for messages.
    pub fn describe(&self) -> String {
        format!("Gateway {} spec.servers[{}]", self.gateway, self.index)
    }
}

/// How a listening port is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plaintext: HTTP servers (merged) or one TCP server.
    Plaintext,
    /// TLS: servers told apart by the client's SNI.
    Tls,
}

/// One listening socket of a gateway workload and the servers behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerPlan {
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub kind: ListenerKind,
    pub servers: Vec<ServerPlan>,
}

/// A server a workload does not serve, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedServer {
    pub gateway: GatewayRef,
    pub index: usize,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedGateways {
    pub listeners: Vec<ListenerPlan>,
    pub skipped: Vec<SkippedServer>,
}

impl MergedGateways {
    pub fn listener(&self, port: u16) -> Option<&ListenerPlan> {
        self.listeners.iter().find(|l| l.port == port)
    }
}

/// Whether HTTP servers of `current` and `new` protocols can share a port (Istio's
/// `canMergeProtocols`).
fn can_merge(current: Protocol, new: Protocol) -> bool {
    (current.is_http() || current == new) && new.is_http()
}

/// The listeners of a workload selected by `gateways` (oldest first: the older server
/// keeps what two claim). `resolve_port` maps a server port to the port listened on.
pub fn merge(gateways: &[&Gateway], resolve_port: &dyn Fn(u16) -> u16) -> MergedGateways {
    let mut merged = MergedGateways::default();
    // (bind, port) → index into merged.listeners
    let mut by_port: HashMap<(Option<IpAddr>, u16), usize> = HashMap::new();
    // (bind, port) → TLS host → the server that claimed it
    let mut tls_hosts: HashMap<(Option<IpAddr>, u16), HashMap<String, String>> = HashMap::new();
    for gateway in gateways {
        let gateway_ref = GatewayRef::of(gateway);
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let skip = |reason: String| SkippedServer {
                gateway: gateway_ref.clone(),
                index,
                reason,
            };
            let Some(protocol) = Protocol::parse(&server.port.protocol) else {
                merged.skipped.push(skip(format!(
                    "protocol {:?} is not one a gateway serves",
                    server.port.protocol
                )));
                continue;
            };
            let Ok(number) = u16::try_from(server.port.number) else {
                merged
                    .skipped
                    .push(skip(format!("port {} is not a port", server.port.number)));
                continue;
            };
            let bind = server.bind.as_deref().and_then(|b| b.parse().ok());
            let plan = ServerPlan {
                gateway: gateway_ref.clone(),
                index,
                server: server.clone(),
                protocol,
                hosts: server
                    .hosts
                    .iter()
                    .map(|h| ServerHost::parse(h, &gateway_ref.namespace))
                    .collect(),
                listen_port: resolve_port(number),
                bind,
            };
            let key = (bind, plan.listen_port);
            if server.tls.is_some() {
                let known = tls_hosts.entry(key).or_default();
                let duplicates: Vec<String> = server
                    .hosts
                    .iter()
                    .filter_map(|h| known.get(h).map(|owner| format!("{h} ({owner})")))
                    .collect();
                if !duplicates.is_empty() {
                    merged.skipped.push(skip(format!(
                        "port {} already serves {} over TLS: the older server keeps them",
                        plan.listen_port,
                        duplicates.join(", ")
                    )));
                    continue;
                }
                for h in &server.hosts {
                    known.insert(h.clone(), plan.describe());
                }
            }
            match by_port.get(&key) {
                None => {
                    by_port.insert(key, merged.listeners.len());
                    merged.listeners.push(ListenerPlan {
                        bind,
                        port: plan.listen_port,
                        kind: if plan.is_tls_server() {
                            ListenerKind::Tls
                        } else {
                            ListenerKind::Plaintext
                        },
                        servers: vec![plan],
                    });
                }
                Some(&at) => {
                    let listener = &mut merged.listeners[at];
                    match listener.kind {
                        ListenerKind::Plaintext => {
                            let current = listener.servers[0].protocol;
                            if plan.is_tls_server() || !can_merge(current, plan.protocol) {
                                merged.skipped.push(skip(format!(
                                    "port {} is already served as {:?} by {}: one port, one protocol",
                                    plan.listen_port,
                                    listener.servers[0].server.port.protocol,
                                    listener.servers[0].describe()
                                )));
                                continue;
                            }
                            listener.servers.push(plan);
                        }
                        ListenerKind::Tls => {
                            if server.tls.is_none() {
                                merged.skipped.push(skip(format!(
                                    "port {} serves TLS (told apart by SNI) and this server has no tls settings",
                                    plan.listen_port
                                )));
                                continue;
                            }
                            listener.servers.push(plan);
                        }
                    }
                }
            }
        }
    }
    merged.listeners.sort_by_key(|l| (l.port, l.bind));
    merged
}

/// A virtual host of a gateway route table: the requests whose `Host` it matches, and the
/// VirtualServices (with the Gateway each serves) whose HTTP routes apply, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHostPlan {
    /// Lower case; `*.example.com` or `*` for wildcards.
    pub domain: String,
    /// A plaintext request is answered 301 to `https://` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    pub routes: Vec<(GatewayRef, Arc<VirtualService>)>,
}

/// The hosts of `vs` as Istio reads them: short names qualified in its namespace,
/// wildcards and names with a dot as written; lower case.
pub fn virtual_service_hosts(vs: &VirtualService, settings: &MeshSettings) -> Vec<String> {
    let namespace = namespace_of(vs);
    vs.spec
        .hosts
        .iter()
        .map(|h| qualify(h, namespace, settings).to_ascii_lowercase())
        .collect()
}

/// Istio's `buildGatewayHTTPRouteConfig` for one route table: every HTTP server of a
/// plaintext port, or one HTTPS server. `bound` lists the VirtualServices bound to a
/// Gateway, oldest first.
pub fn virtual_hosts(
    servers: &[&ServerPlan],
    bound: &dyn Fn(&GatewayRef) -> Vec<Arc<VirtualService>>,
    settings: &MeshSettings,
) -> Vec<VirtualHostPlan> {
    let mut hosts: Vec<VirtualHostPlan> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for server in servers {
        for vs in bound(&server.gateway) {
            let vs_namespace = namespace_of(&vs);
            let server_hosts: Vec<&str> = server
                .hosts
                .iter()
                .filter(|h| h.admits(vs_namespace))
                .map(|h| h.host.as_str())
                .collect();
            let vs_hosts = virtual_service_hosts(&vs, settings);
            let mut intersecting: Vec<String> = Vec::new();
            for a in &server_hosts {
                for b in &vs_hosts {
                    let chosen = if host_subset_of(a, b) {
                        Some(a.to_string())
                    } else if host_subset_of(b, a) {
                        Some(b.clone())
                    } else {
                        None
                    };
                    if let Some(chosen) = chosen
                        && !intersecting.contains(&chosen)
                    {
                        intersecting.push(chosen);
                    }
                }
            }
            for domain in intersecting {
                let at = *index.entry(domain.clone()).or_insert_with(|| {
                    hosts.push(VirtualHostPlan {
                        domain,
                        https_redirect: false,
                        routes: Vec::new(),
                    });
                    hosts.len() - 1
                });
                let vhost = &mut hosts[at];
                vhost.routes.push((server.gateway.clone(), vs.clone()));
                vhost.https_redirect |= server.https_redirect();
            }
        }
        // A redirecting server's hosts redirect even without a VirtualService.
        if server.https_redirect() {
            for host in &server.hosts {
                match index.get(&host.host) {
                    Some(&at) => hosts[at].https_redirect = true,
                    None => {
                        index.insert(host.host.clone(), hosts.len());
                        hosts.push(VirtualHostPlan {
                            domain: host.host.clone(),
                            https_redirect: true,
                            routes: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    hosts
}

/// Envoy's choice of virtual host for a request's `Host` (port ignored, as Istio's gateway
/// route tables say): the exact domain, else the longest matching `*.suffix`, else `*`.
pub fn select_virtual_host<'a, T>(
    hosts: &'a [T],
    domain_of: impl Fn(&T) -> &str,
    authority: &str,
) -> Option<&'a T> {
    let host = strip_port(authority).to_ascii_lowercase();
    if let Some(exact) = hosts.iter().find(|h| domain_of(h) == host) {
        return Some(exact);
    }
    hosts
        .iter()
        .filter(|h| {
            let domain = domain_of(h);
            domain != "*"
                && domain
                    .strip_prefix('*')
                    .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
        })
        .max_by_key(|h| domain_of(h).len())
        .or_else(|| hosts.iter().find(|h| domain_of(h) == "*"))
}

/// The host part of an authority (`host:port`, `[v6]:port`).
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The VirtualServices bound to `gateway` whose hosts overlap the server's (Istio's
/// `pickMatchingGatewayHosts`), in order: those a TCP or TLS server routes with.
pub fn matching_virtual_services(
    server: &ServerPlan,
    bound: &[Arc<VirtualService>],
    settings: &MeshSettings,
) -> Vec<Arc<VirtualService>> {
    bound
        .iter()
        .filter(|vs| {
            let vs_namespace = namespace_of(vs);
            let vs_hosts = virtual_service_hosts(vs, settings);
            server.hosts.iter().any(|h| {
                h.admits(vs_namespace) && vs_hosts.iter().any(|v| hosts_overlap(&h.host, v))
            })
        })
        .cloned()
        .collect()
}

/// Whether an L4 match's `port` and `gateways` admit `server` of `gateway` (Istio's
/// `l4SingleMatch`: an unset field admits).
pub fn l4_admits(
    port: Option<u32>,
    gateways: &[String],
    vs_namespace: &str,
    server: &ServerPlan,
) -> bool {
    let port_ok = port.is_none_or(|p| p == 0 || p == u32::from(server.port()));
    let gateway_ok = gateways.is_empty()
        || gateways
            .iter()
            .filter_map(|g| resolve_gateway_name(g, vs_namespace))
            .any(|g| g == server.gateway);
    port_ok && gateway_ok
}

/// A TLS passthrough route: the SNI names it takes and where they go.
#[derive(Clone, Debug, PartialEq)]
pub struct PassthroughRoute {
    pub sni_hosts: Vec<String>,
    pub route: Vec<RouteDestination>,
    /// The VirtualService's namespace (short destination hosts resolve there).
    pub namespace: String,
    /// "VirtualService ns/name tls[i]", for messages.
    pub origin: String,
}

/// Istio's `buildGatewayNetworkFiltersFromTLSRoutes`: the `tls` rules of the
/// VirtualServices bound to a PASSTHROUGH server, one route per match block; an SNI name
/// already routed on the port by an earlier block is not routed again.
pub fn passthrough_routes(
    server: &ServerPlan,
    bound: &[Arc<VirtualService>],
    settings: &MeshSettings,
) -> Vec<PassthroughRoute> {
    let mut routes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for vs in matching_virtual_services(server, bound, settings) {
        let namespace = namespace_of(&vs).to_string();
        let name = vs.metadata.name.as_deref().unwrap_or_default();
        for (i, rule) in vs.spec.tls.iter().enumerate() {
            if rule.route.is_empty() {
                continue;
            }
            for m in &rule.matches {
                if !l4_admits(m.port, &m.gateways, &namespace, server) {
                    continue;
                }
                if m.sni_hosts.iter().any(|h| seen.contains(h)) {
                    continue;
                }
                seen.extend(m.sni_hosts.iter().cloned());
                routes.push(PassthroughRoute {
                    sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    route: rule.route.clone(),
                    namespace: namespace.clone(),
                    origin: format!("VirtualService {namespace}/{name} tls[{i}]"),
                });
            }
        }
    }
    routes
}

/// Istio's `buildGatewayNetworkFiltersFromTCPRoutes`: the first `tcp` rule, of the bound
/// VirtualServices matching the server's hosts, whose matches admit the server.
pub fn tcp_route(
    server: &ServerPlan,
    bound: &[Arc<VirtualService>],
    settings: &MeshSettings,
) -> Option<(Arc<VirtualService>, usize)> {
    for vs in matching_virtual_services(server, bound, settings) {
        let namespace = namespace_of(&vs).to_string();
        for (i, rule) in vs.spec.tcp.iter().enumerate() {
            let admitted = rule.matches.is_empty()
                || rule
                    .matches
                    .iter()
                    .any(|m| l4_admits(m.port, &m.gateways, &namespace, server));
            if admitted && !rule.route.is_empty() {
                return Some((vs.clone(), i));
            }
        }
    }
    None
}

/// Envoy's filter chain match on SNI: an exact name first, then the longest matching
/// `*.suffix`; a chain with the name `*` (a server for any host) takes what is left,
/// connections without SNI included.
pub fn select_by_sni<'a, T>(
    chains: &'a [T],
    names_of: impl Fn(&T) -> Vec<&str>,
    sni: Option<&str>,
) -> Option<&'a T> {
    if let Some(sni) = sni.map(str::to_ascii_lowercase) {
        if let Some(exact) = chains.iter().find(|c| names_of(c).contains(&sni.as_str())) {
            return Some(exact);
        }
        let best = chains
            .iter()
            .filter_map(|c| {
                names_of(c)
                    .into_iter()
                    .filter(|n| *n != "*")
                    .filter_map(|n| n.strip_prefix('*'))
                    .filter(|suffix| sni.ends_with(suffix) && sni.len() > suffix.len())
                    .map(str::len)
                    .max()
                    .map(|len| (len, c))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, c)| c);
        if best.is_some() {
            return best;
        }
    }
    chains.iter().find(|c| names_of(c).contains(&"*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Gateway {
        serde_yaml::from_str(yaml).expect("Gateway YAML")
    }

    fn vs(yaml: &str) -> Arc<VirtualService> {
        Arc::new(serde_yaml::from_str(yaml).expect("VirtualService YAML"))
    }

    const BOOKINFO: &str = "metadata: {name: bookinfo-gateway, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n";

    #[test]
    fn virtual_services_bind_by_name_in_their_namespace_or_qualified() {
        let v = vs(
            "metadata: {name: a, namespace: shop}\nspec: {hosts: ['*'], gateways: [gw, other/gw2, mesh]}",
        );
        assert_eq!(
            bound_gateways(&v),
            [
                GatewayRef::new("other", "gw2"),
                GatewayRef::new("shop", "gw")
            ]
        );
    }

    #[test]
    fn a_selector_picks_workloads_by_labels_and_none_picks_all() {
        let g = gateway(BOOKINFO);
        let mut labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
        assert!(selects(&g, &labels));
        labels.insert("istio".into(), "egress".into());
        assert!(!selects(&g, &labels));
        let any = gateway("metadata: {name: x}\nspec: {servers: []}");
        assert!(selects(&any, &labels));
    }

    /// Istio's default ingress Service maps 80 to 8080: a server on 80 or on 8080 is
    /// served on 8080; a port no Service has is listened on as written.
    #[test]
    fn server_ports_resolve_to_the_service_target_port() {
        let resolve = |p: u16| if p == 80 { 8080 } else { p };
        let on_80 = gateway(&BOOKINFO.replace("8080", "80"));
        let on_8080 = gateway(BOOKINFO);
        for g in [&on_80, &on_8080] {
            let merged = merge(&[g], &resolve);
            assert_eq!(merged.listeners.len(), 1);
            assert_eq!(merged.listeners[0].port, 8080);
            assert_eq!(merged.listeners[0].kind, ListenerKind::Plaintext);
        }
        assert_eq!(
            merge(&[&on_80], &resolve).listeners[0].servers[0].port(),
            80,
            "routes match on the server's own port"
        );
    }

    #[test]
    fn http_servers_share_a_port_tls_hosts_are_claimed_once_protocols_do_not_mix() {
        let a = gateway(
            "metadata: {name: a, namespace: x, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a}\n",
        );
        let b = gateway(
            "metadata: {name: b, namespace: x}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [b.example.com]\n  - port: {number: 443, name: https-b, protocol: HTTPS}\n    hosts: [a.example.com, b.example.com]\n    tls: {mode: SIMPLE, credentialName: b}\n  - port: {number: 443, name: https-c, protocol: HTTPS}\n    hosts: [c.example.com]\n    tls: {mode: SIMPLE, credentialName: c}\n  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
        );
        let merged = merge(&[&a, &b], &|p| p);
        let http = merged.listener(80).expect("80");
        assert_eq!(http.servers.len(), 2, "{http:?}");
        let tls = merged.listener(443).expect("443");
        assert_eq!(tls.kind, ListenerKind::Tls);
        let served: Vec<String> = tls.servers.iter().map(ServerPlan::describe).collect();
        assert_eq!(
            served,
            ["Gateway x/a spec.servers[1]", "Gateway x/b spec.servers[2]"]
        );
        let skipped: Vec<(String, usize)> = merged
            .skipped
            .iter()
            .map(|s| (s.gateway.to_string(), s.index))
            .collect();
        assert_eq!(skipped, [("x/b".to_string(), 1), ("x/b".to_string(), 3)]);
        assert!(
            merged.skipped[0].reason.contains("a.example.com"),
            "{:?}",
            merged.skipped
        );
    }

    fn plan(yaml: &str) -> ServerPlan {
        let g = gateway(yaml);
        merge(&[&g], &|p| p).listeners[0].servers[0].clone()
    }

    #[test]
    fn hosts_intersect_as_istio_computes_it() {
        let settings = MeshSettings::default();
        let server = plan(
            "metadata: {name: gw, namespace: web}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*.example.com', 'shop/shop.example.org', './local.example.org']\n",
        );
        let bound = vec![
            vs("metadata: {name: wide, namespace: web}\nspec: {hosts: ['*'], gateways: [gw]}"),
            vs(
                "metadata: {name: one, namespace: web}\nspec: {hosts: [api.example.com], gateways: [gw]}",
            ),
            vs(
                "metadata: {name: shop, namespace: shop}\nspec: {hosts: ['*.example.org'], gateways: [web/gw]}",
            ),
        ];
        let hosts = virtual_hosts(&[&server], &|_| bound.clone(), &settings);
        let domains: Vec<(&str, Vec<&str>)> = hosts
            .iter()
            .map(|h| {
                (
                    h.domain.as_str(),
                    h.routes
                        .iter()
                        .map(|(_, v)| v.metadata.name.as_deref().unwrap_or_default())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            domains,
            [
                ("*.example.com", vec!["wide"]),
                ("local.example.org", vec!["wide"]),
                ("api.example.com", vec!["one"]),
                ("shop.example.org", vec!["shop"]),
            ],
            "`*` narrows to each server host; `shop/` admits shop's VirtualServices only, `./` the Gateway's"
        );
        let pick = |authority: &str| {
            select_virtual_host(&hosts, |h| h.domain.as_str(), authority).map(|h| h.domain.clone())
        };
        assert_eq!(
            pick("API.example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(pick("www.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(
            pick("example.com"),
            None,
            "a wildcard needs a label before it"
        );
        assert_eq!(pick("other.org"), None);
    }

    #[test]
    fn an_https_redirect_server_redirects_its_hosts_even_without_routes() {
        let server = plan(
            "metadata: {name: gw, namespace: web}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n    tls: {httpsRedirect: true}\n",
        );
        let hosts = virtual_hosts(&[&server], &|_| Vec::new(), &MeshSettings::default());
        assert_eq!(hosts.len(), 1);
        assert!(hosts[0].https_redirect);
        assert_eq!(hosts[0].domain, "a.example.com");
    }

    #[test]
    fn passthrough_routes_take_the_tls_rules_bound_to_the_server() {
        let server = plan(
            "metadata: {name: gw, namespace: web}\nspec:\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: PASSTHROUGH}\n",
        );
        assert!(server.is_passthrough() && server.is_tls_server());
        let bound = vec![vs(
            "metadata: {name: p, namespace: web}\nspec:\n  hosts: [db.example.com]\n  gateways: [gw]\n  tls:\n  - match: [{sniHosts: [db.example.com], port: 443}]\n    route: [{destination: {host: db}}]\n  - match: [{sniHosts: [db.example.com]}]\n    route: [{destination: {host: other}}]\n  - match: [{sniHosts: [x.example.com], port: 8443}]\n    route: [{destination: {host: x}}]\n",
        )];
        let routes = passthrough_routes(&server, &bound, &MeshSettings::default());
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].sni_hosts, ["db.example.com"]);
        assert_eq!(routes[0].route[0].destination.host, "db");
        let pick = |sni: Option<&str>| {
            select_by_sni(
                &routes,
                |r| r.sni_hosts.iter().map(String::as_str).collect(),
                sni,
            )
            .is_some()
        };
        assert!(pick(Some("DB.example.com")));
        assert!(!pick(Some("x.example.com")));
        assert!(!pick(None));
    }

    #[test]
    fn sni_prefers_exact_then_longest_wildcard_then_any() {
        let chains = vec![
            vec!["*"],
            vec!["*.example.com"],
            vec!["*.api.example.com"],
            vec!["a.example.com"],
        ];
        let pick = |sni: Option<&str>| select_by_sni(&chains, |c| c.clone(), sni).map(|c| c[0]);
        assert_eq!(pick(Some("a.example.com")), Some("a.example.com"));
        assert_eq!(pick(Some("v1.api.example.com")), Some("*.api.example.com"));
        assert_eq!(pick(Some("b.example.com")), Some("*.example.com"));
        assert_eq!(pick(Some("other.org")), Some("*"));
        assert_eq!(pick(None), Some("*"));
    }

    #[test]
    fn authorities_lose_their_port() {
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.example.com"), "a.example.com");
    }
}
