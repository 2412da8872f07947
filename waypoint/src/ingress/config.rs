//! What an ingress gateway listens on and serves, from one registry snapshot: the Istio
//! Gateways selecting its pod, merged as pilot merges them
//! (`weft_config::translate::gateway`), each listener with its route table, TCP route or
//! SNI chains, and each terminating server with its TLS configuration from its Secret.
//!
//! The routes bound to a listener come from [`bound_routes`]: VirtualServices for Istio
//! Gateways. A pod the controller runs for a Gateway API `Gateway` of class `istio` or
//! `weft` (labelled `gateway.networking.k8s.io/gateway-name` with its name, in its
//! namespace) also serves that Gateway's HTTP and HTTPS listeners
//! ([`gateway_api_listeners`]), with virtual hosts from the HTTPRoutes and GRPCRoutes
//! attached to each, an HTTPS listener terminating TLS with the Secret of its
//! `tls.certificateRefs` ([`listener_tls`]) for the SNI its `hostname` names.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use weft_config::api::gateway::{Gateway, ServerTlsMode, ServerTlsSettings};
use weft_config::api::gateway_api::{KubernetesGateway, ListenerTls};
use weft_config::api::networking::VirtualService;
use weft_config::registry::Snapshot;
use weft_config::registry::bound_route::BoundRoute;
use weft_config::registry::model::Workload;
use weft_config::translate::gateway::{
    GatewayRef, ListenerKind, ListenerPlan, MergedGateways, ServerPlan, SkippedServer,
    VirtualHostPlan, merge, passthrough_routes, selects, tcp_route, virtual_hosts,
};
use weft_config::translate::gateway_routes::{
    INGRESS_CLASSES, certificate_ref, effective_hostnames, gateway_routes,
};
use weft_core::mesh::waypoint::GATEWAY_NAME_LABEL;

use super::tls::{ServerTls, TlsError, server_tls};
use crate::downstream::{GatewayRoutes, GatewayTarget};
use crate::route::gateway::{RouteTable, VirtualHost};
use crate::route::{CompiledRoutes, TcpRoutePlan};

/// Which pod this gateway is.
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    /// The pod's name (`POD_NAME`, from the downward API); its labels select Gateways.
    pub pod: String,
}

/// One listening socket and what it serves.
#[derive(Debug)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub serve: Serve,
}

#[derive(Debug)]
pub enum Serve {
    /// Plaintext: HTTP (servers merged) or TCP.
    Plain(Arc<GatewayTarget>),
    /// TLS, told apart by the client's SNI.
    Tls(Vec<TlsChain>),
}

/// One filter chain of a TLS port.
#[derive(Debug)]
pub struct TlsChain {
    /// Lower-case SNI names (`*.example.com` wildcards); `*` takes any SNI, or none.
    pub names: Vec<String>,
    pub action: ChainAction,
}

#[derive(Debug)]
pub enum ChainAction {
    /// TLS terminated here, then HTTP routes or a TCP route; `Err` when the server cannot
    /// terminate (its Secret is missing or unusable): its connections are refused.
    Terminate {
        tls: Result<Arc<ServerTls>, TlsError>,
        target: Arc<GatewayTarget>,
    },
    /// The bytes go on as they came (PASSTHROUGH), by a `tls` route.
    Passthrough(Arc<GatewayTarget>),
}

/// Everything built from one snapshot.
#[derive(Debug, Default)]
pub struct IngressConfig {
    pub listeners: Vec<ListenerConfig>,
    /// Servers not served, and why (logged when they change).
    pub skipped: Vec<SkippedServer>,
    /// Terminating servers that refuse TLS, and why.
    pub refusing: Vec<(String, TlsError)>,
    /// Gateway API listeners not served, and why.
    pub unserved: Vec<String>,
}

/// The VirtualServices bound to a Gateway, oldest first.
pub fn bound_routes(snapshot: &Snapshot, gateway: &GatewayRef) -> Vec<Arc<VirtualService>> {
    snapshot.virtual_services_for_gateway(gateway).to_vec()
}

/// The port the pod listens on for a server port: the `targetPort` of that port on a
/// Service in front of the pod (the first found), else the number itself.
fn port_map(snapshot: &Snapshot, workload: &Workload) -> HashMap<u16, u16> {
    let mut ports = HashMap::new();
    let mut services: Vec<_> = snapshot.services().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for service in services {
        let Some(endpoint) = service.endpoints.iter().find(|e| {
            workload.ips.contains(&e.address)
                || e.target.as_ref().is_some_and(|(ns, name)| {
                    **ns == *workload.namespace && **name == *workload.name
                })
        }) else {
            continue;
        };
        for port in &service.ports {
            if let Some(target) = service.endpoint_port(port.port, endpoint) {
                ports.entry(port.port).or_insert(target);
            }
        }
    }
    ports
}

/// The Gateways selecting the pod, oldest first, and the merged listeners.
pub fn merged(snapshot: &Snapshot, workload: &Workload) -> MergedGateways {
    let selected: Vec<&Gateway> = snapshot
        .gateways()
        .filter(|g| selects(g, &workload.labels))
        .map(|g| &**g)
        .collect();
    let ports = port_map(snapshot, workload);
    merge(&selected, &|port| ports.get(&port).copied().unwrap_or(port))
}

/// What the pod serves in `snapshot`.
pub fn build(snapshot: &Snapshot, me: &Identity) -> IngressConfig {
    let Some(workload) = snapshot.workload(&me.namespace, &me.pod).cloned() else {
        return IngressConfig::default();
    };
    let merged = merged(snapshot, &workload);
    let mut config = IngressConfig {
        skipped: merged.skipped.clone(),
        ..IngressConfig::default()
    };
    for listener in &merged.listeners {
        let address = SocketAddr::new(
            listener.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            listener.port,
        );
        let serve = match listener.kind {
            ListenerKind::Plaintext => Serve::Plain(plain(snapshot, listener, &workload)),
            ListenerKind::Tls => Serve::Tls(chains(
                snapshot,
                listener,
                &workload,
                &me.namespace,
                &mut config.refusing,
            )),
        };
        config.listeners.push(ListenerConfig { address, serve });
    }
    if let Some(gateway) = served_gateway(snapshot, &workload) {
        let ports = port_map(snapshot, &workload);
        let served = gateway_api_listeners(
            snapshot,
            &gateway,
            &workload,
            &|port| ports.get(&port).copied().unwrap_or(port),
            &config
                .listeners
                .iter()
                .map(|l| l.address.port())
                .collect::<Vec<_>>(),
        );
        config.listeners.extend(served.listeners);
        config.unserved = served.unserved;
        config.refusing.extend(served.refusing);
    }
    config
}

/// The Gateway API Gateway this pod runs for: the one of an ingress class its
/// `gateway.networking.k8s.io/gateway-name` label names, in its namespace.
pub fn served_gateway(snapshot: &Snapshot, workload: &Workload) -> Option<Arc<KubernetesGateway>> {
    let name = workload.labels.get(GATEWAY_NAME_LABEL)?;
    snapshot
        .kubernetes_gateway(&workload.namespace, name)
        .filter(|g| INGRESS_CLASSES.contains(&g.spec.gateway_class_name.as_str()))
        .cloned()
}

/// A virtual host's domain and the routes attached to it, oldest first.
type VirtualHostRoutes = (String, Vec<Arc<BoundRoute>>);

/// What a Gateway API Gateway's listeners make: the sockets, the listeners not served and
/// the HTTPS listeners that refuse TLS, each with why.
#[derive(Debug, Default)]
pub struct GatewayApiListeners {
    pub listeners: Vec<ListenerConfig>,
    pub unserved: Vec<String>,
    pub refusing: Vec<(String, TlsError)>,
}

/// One port of a Gateway API Gateway: plaintext HTTP (its listeners' virtual hosts merged),
/// TLS (HTTPS and TLS listeners, one chain per SNI name, told apart by the client's SNI) or
/// TCP (one listener, its oldest TCPRoute).
enum ApiPort {
    Http {
        names: Vec<String>,
        hosts: Vec<VirtualHostRoutes>,
    },
    Tls(Vec<TlsChain>),
    /// Set by the port's TCP listener.
    Tcp(Option<Arc<GatewayTarget>>),
}

impl ApiPort {
    fn protocol(&self) -> &'static str {
        match self {
            ApiPort::Http { .. } => "HTTP",
            ApiPort::Tls(_) => "HTTPS or TLS",
            ApiPort::Tcp(_) => "TCP",
        }
    }
}

/// Where a TLSRoute's or TCPRoute's connections go ([`TcpRoutePlan::from_bound_route`]).
fn stream_plan(route: &BoundRoute) -> Option<TcpRoutePlan> {
    TcpRoutePlan::from_bound_route(route)
}

/// The TLS an HTTPS listener terminates with: its first certificateRef's Secret, if the
/// reference is usable (`weft_config::translate::gateway_routes::certificate_ref`) and the
/// Secret is held. Further references (another key type) are not used.
pub fn listener_tls(
    snapshot: &Snapshot,
    namespace: &str,
    field: &str,
    tls: Option<&ListenerTls>,
    alpn: &[&[u8]],
) -> Result<ServerTls, TlsError> {
    let Some(reference) = tls.and_then(|t| t.certificate_refs.first()) else {
        return Err(TlsError::Settings(format!(
            "{field}.tls.certificateRefs: none (a listener terminating TLS needs a kubernetes.io/tls Secret)"
        )));
    };
    let secret_namespace = reference
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace);
    let (secret_namespace, name) = certificate_ref(
        namespace,
        reference,
        snapshot.reference_grants_in(secret_namespace).map(|g| &**g),
    )
    .map_err(|issue| {
        TlsError::Settings(format!(
            "{field}.tls.certificateRefs[0]: {} ({})",
            issue.message, issue.reason
        ))
    })?;
    let settings = ServerTlsSettings {
        mode: Some(ServerTlsMode::Simple),
        ..ServerTlsSettings::default()
    };
    server_tls(
        &settings,
        snapshot.secret(&secret_namespace, &name).map(|s| &**s),
        &format!("{secret_namespace}/{name}"),
        alpn,
    )
}

/// The listening sockets of a Gateway API Gateway's listeners (one per port), and the
/// listeners not served, each with why:
/// - HTTP: a port's listeners' virtual hosts merged;
/// - HTTPS: TLS terminated with the listener's certificate for the SNI its `hostname`
///   names, then its virtual hosts;
/// - TLS `Passthrough`: the ClientHello's SNI chooses a TLSRoute (one chain per hostname the
///   route shares with the listener, the oldest route first), whose backends get the TLS
///   stream untouched;
/// - TLS `Terminate`: the same by SNI, TLS terminated with the listener's certificate, the
///   route's (TLSRoute, or TCPRoute when allowed) backends get the decrypted stream;
/// - TCP: every connection to the oldest TCPRoute's backends.
///
/// HTTPS and TLS listeners share a port (told apart by SNI); HTTP and TCP listeners do not
/// share theirs with another protocol. `target` maps a listener's port to the pod's;
/// `taken` are ports Istio Gateways already listen on.
pub fn gateway_api_listeners(
    snapshot: &Snapshot,
    gateway: &KubernetesGateway,
    workload: &Arc<Workload>,
    target: &dyn Fn(u16) -> u16,
    taken: &[u16],
) -> GatewayApiListeners {
    let namespace = gateway
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(weft_config::api::DEFAULT_NAMESPACE);
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    let attached = gateway_routes(snapshot.route_resolutions().map(|r| &**r), namespace, name);
    let mut out = GatewayApiListeners::default();
    // The routes attached to a listener, one virtual host per shared hostname.
    let hosts_of = |listener: &weft_config::api::gateway_api::Listener,
                    hosts: &mut Vec<VirtualHostRoutes>| {
        for (route, listeners) in &attached {
            if !listeners.contains(&listener.name) {
                continue;
            }
            for domain in effective_hostnames(listener.hostname.as_deref(), route.route.hostnames())
            {
                let host = match hosts.iter().position(|(d, _)| *d == domain) {
                    Some(h) => h,
                    None => {
                        hosts.push((domain, Vec::new()));
                        hosts.len() - 1
                    }
                };
                let routes = &mut hosts[host].1;
                if !routes.iter().any(|r| Arc::ptr_eq(r, route)) {
                    routes.push(route.clone());
                }
            }
        }
    };
    let table = |hosts: Vec<VirtualHostRoutes>| {
        GatewayRoutes::Http(Arc::new(RouteTable {
            hosts: hosts
                .into_iter()
                .map(|(domain, routes)| VirtualHost {
                    domain,
                    https_redirect: false,
                    routes: Arc::new(CompiledRoutes::compile_gateway_api(&routes)),
                })
                .collect(),
        }))
    };
    let gateway_target = |port: u16, routes: GatewayRoutes, server: String| {
        Arc::new(GatewayTarget {
            port,
            routes,
            workload: Some(workload.clone()),
            server,
        })
    };
    let mut ports: Vec<(u16, ApiPort)> = Vec::new();
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}]");
        let what = format!(
            "Gateway {namespace}/{name} {field} ({} {} on {})",
            listener.name, listener.protocol, listener.port
        );
        let describe = format!("Gateway {namespace}/{name} listener {}", listener.name);
        let Some(port) = u16::try_from(listener.port).ok().filter(|p| *p != 0) else {
            out.unserved.push(format!("{what} not served: no port"));
            continue;
        };
        let mode = listener.tls.as_ref().map_or("Terminate", |t| t.mode());
        let fresh = match (listener.protocol.as_str(), mode) {
            ("HTTP", _) => ApiPort::Http {
                names: Vec::new(),
                hosts: Vec::new(),
            },
            ("HTTPS", "Terminate") | ("TLS", "Terminate" | "Passthrough") => {
                ApiPort::Tls(Vec::new())
            }
            ("HTTPS", _) => {
                out.unserved.push(format!(
                    "{what} not served: {field}.tls.mode of an HTTPS listener must be Terminate (Passthrough is a TLS listener's)"
                ));
                continue;
            }
            ("TLS", _) => {
                out.unserved.push(format!(
                    "{what} not served: {field}.tls.mode {mode:?} is neither Terminate nor Passthrough"
                ));
                continue;
            }
            ("TCP", _) => ApiPort::Tcp(None),
            _ => {
                out.unserved.push(format!(
                    "{what} not served: weft serves the Gateway API's HTTP, HTTPS, TLS and TCP listeners"
                ));
                continue;
            }
        };
        if taken.contains(&target(port)) {
            out.unserved.push(format!(
                "{what} not served: an Istio Gateway's server listens on port {}",
                target(port)
            ));
            continue;
        }
        let index = match ports.iter().position(|(p, _)| *p == port) {
            Some(index) => index,
            None => {
                ports.push((port, fresh));
                ports.len() - 1
            }
        };
        // The routes attached to this listener, oldest first.
        let attached_here = || {
            attached
                .iter()
                .filter(|(_, listeners)| listeners.contains(&listener.name))
                .map(|(route, _)| route)
        };
        match (&mut ports[index].1, listener.protocol.as_str()) {
            (ApiPort::Http { names, hosts }, "HTTP") => {
                names.push(listener.name.clone());
                hosts_of(listener, hosts);
            }
            (ApiPort::Tcp(tcp), "TCP") => {
                if tcp.is_some() {
                    out.unserved.push(format!(
                        "{what} not served: another TCP listener has port {port} (a TCP port has one listener)"
                    ));
                    continue;
                }
                // The oldest route with a backend takes the connections; the others are
                // named in the log.
                let mut plan = None;
                for route in attached_here() {
                    if plan.is_some() {
                        out.unserved.push(format!(
                            "{what}: {} not served: an older route takes the listener's connections",
                            route.route.object_ref()
                        ));
                    } else {
                        plan = stream_plan(route);
                    }
                }
                *tcp = Some(gateway_target(port, GatewayRoutes::Tcp(plan), describe));
            }
            (ApiPort::Tls(chains), "HTTPS") => {
                let sni = listener
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map_or_else(|| "*".to_string(), str::to_ascii_lowercase);
                if chains.iter().any(|c| c.names.contains(&sni)) {
                    out.unserved.push(format!(
                        "{what} not served: another listener on port {port} has hostname {sni}"
                    ));
                    continue;
                }
                let tls = listener_tls(
                    snapshot,
                    namespace,
                    &field,
                    listener.tls.as_ref(),
                    &[b"h2", b"http/1.1"],
                )
                .map(Arc::new);
                if let Err(error) = &tls {
                    out.refusing.push((what.clone(), error.clone()));
                }
                let mut hosts = Vec::new();
                hosts_of(listener, &mut hosts);
                chains.push(TlsChain {
                    names: vec![sni],
                    action: ChainAction::Terminate {
                        tls,
                        target: gateway_target(port, table(hosts), describe),
                    },
                });
            }
            (ApiPort::Tls(chains), "TLS") => {
                let tls = (mode == "Terminate").then(|| {
                    let tls = listener_tls(snapshot, namespace, &field, listener.tls.as_ref(), &[])
                        .map(Arc::new);
                    if let Err(error) = &tls {
                        out.refusing.push((what.clone(), error.clone()));
                    }
                    tls
                });
                // One chain per SNI name a route shares with the listener: the oldest
                // route takes a name, a name another listener of the port has is not
                // taken again.
                for route in attached_here() {
                    let server = format!("{describe} {}", route.route.object_ref());
                    let plan = stream_plan(route);
                    for sni in
                        effective_hostnames(listener.hostname.as_deref(), route.route.hostnames())
                    {
                        if chains.iter().any(|c| c.names.contains(&sni)) {
                            out.unserved.push(format!(
                                "{what}: {} not served for {sni}: an older route or another listener on port {port} has it",
                                route.route.object_ref()
                            ));
                            continue;
                        }
                        let target =
                            gateway_target(port, GatewayRoutes::Tcp(plan.clone()), server.clone());
                        let action = match &tls {
                            None => ChainAction::Passthrough(target),
                            Some(tls) => ChainAction::Terminate {
                                tls: tls.clone(),
                                target,
                            },
                        };
                        chains.push(TlsChain {
                            names: vec![sni],
                            action,
                        });
                    }
                }
            }
            (other, _) => {
                out.unserved.push(format!(
                    "{what} not served: port {port} has a listener of another protocol ({}; only HTTPS and TLS listeners share a port)",
                    other.protocol()
                ));
            }
        }
    }
    out.listeners = ports
        .into_iter()
        .map(|(port, kind)| {
            let serve = match kind {
                ApiPort::Http { names, hosts } => Serve::Plain(gateway_target(
                    port,
                    table(hosts),
                    format!(
                        "Gateway {namespace}/{name} listener(s) {}",
                        names.join(", ")
                    ),
                )),
                ApiPort::Tcp(target) => Serve::Plain(target.unwrap_or_else(|| {
                    gateway_target(port, GatewayRoutes::Tcp(None), String::new())
                })),
                ApiPort::Tls(chains) => Serve::Tls(chains),
            };
            ListenerConfig {
                address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), target(port)),
                serve,
            }
        })
        .collect();
    out
}

fn target(
    server: &ServerPlan,
    routes: GatewayRoutes,
    workload: &Arc<Workload>,
) -> Arc<GatewayTarget> {
    Arc::new(GatewayTarget {
        port: server.port(),
        routes,
        workload: Some(workload.clone()),
        server: server.describe(),
    })
}

fn http_routes(snapshot: &Snapshot, servers: &[&ServerPlan]) -> GatewayRoutes {
    let bound = |gateway: &GatewayRef| bound_routes(snapshot, gateway);
    let hosts: Vec<VirtualHostPlan> = virtual_hosts(servers, &bound, snapshot.settings());
    GatewayRoutes::Http(Arc::new(RouteTable::from_virtual_services(
        &hosts,
        snapshot.settings(),
    )))
}

fn tcp_routes(snapshot: &Snapshot, server: &ServerPlan) -> GatewayRoutes {
    let bound = bound_routes(snapshot, &server.gateway);
    let plan = tcp_route(server, &bound, snapshot.settings()).and_then(|(vs, rule)| {
        let namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
        let origin = format!(
            "VirtualService {namespace}/{} tcp[{rule}]",
            vs.metadata.name.as_deref().unwrap_or_default()
        );
        TcpRoutePlan::from_rule(
            &vs.spec.tcp[rule].route,
            namespace,
            &origin,
            snapshot.settings(),
        )
    });
    GatewayRoutes::Tcp(plan)
}

fn plain(
    snapshot: &Snapshot,
    listener: &ListenerPlan,
    workload: &Arc<Workload>,
) -> Arc<GatewayTarget> {
    let first = &listener.servers[0];
    if first.is_http_server() {
        let servers: Vec<&ServerPlan> = listener.servers.iter().collect();
        target(first, http_routes(snapshot, &servers), workload)
    } else {
        target(first, tcp_routes(snapshot, first), workload)
    }
}

fn chains(
    snapshot: &Snapshot,
    listener: &ListenerPlan,
    workload: &Arc<Workload>,
    secrets_namespace: &str,
    refusing: &mut Vec<(String, TlsError)>,
) -> Vec<TlsChain> {
    let mut chains = Vec::new();
    for server in &listener.servers {
        if server.is_passthrough() {
            let bound = bound_routes(snapshot, &server.gateway);
            for route in passthrough_routes(server, &bound, snapshot.settings()) {
                let plan = TcpRoutePlan::from_rule(
                    &route.route,
                    &route.namespace,
                    &route.origin,
                    snapshot.settings(),
                );
                chains.push(TlsChain {
                    names: route.sni_hosts.clone(),
                    action: ChainAction::Passthrough(target(
                        server,
                        GatewayRoutes::Tcp(plan),
                        workload,
                    )),
                });
            }
            continue;
        }
        let Some(settings) = &server.server.tls else {
            continue;
        };
        let name = settings.credential_name.clone().unwrap_or_default();
        let secret = snapshot.secret(secrets_namespace, &name);
        let http = server.is_http_server();
        let alpn: &[&[u8]] = if http { &[b"h2", b"http/1.1"] } else { &[] };
        let tls = server_tls(
            settings,
            secret.map(|s| &**s),
            &format!("{secrets_namespace}/{name}"),
            alpn,
        )
        .map(Arc::new);
        if let Err(error) = &tls {
            refusing.push((server.describe(), error.clone()));
        }
        let routes = if http {
            http_routes(snapshot, &[server])
        } else {
            tcp_routes(snapshot, server)
        };
        chains.push(TlsChain {
            names: server.sni_hosts().into_iter().map(str::to_string).collect(),
            action: ChainAction::Terminate {
                tls,
                target: target(server, routes, workload),
            },
        });
    }
    chains
}

/// Envoy's filter chain for a client's SNI on a TLS port.
pub fn chain_for<'a>(chains: &'a [TlsChain], sni: Option<&str>) -> Option<&'a TlsChain> {
    weft_config::translate::gateway::select_by_sni(
        chains,
        |c| c.names.iter().map(String::as_str).collect(),
        sni,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_config::testing;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.50, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: istio-ingressgateway-0, namespace: istio-system, labels: {kubernetes.io/service-name: istio-ingressgateway}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.50], targetRef: {kind: Pod, namespace: istio-system, name: ingress-0}}]
ports: [{name: http2, port: 8080}, {name: https, port: 8443}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: web}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: web}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 9000, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: web}
spec:
  hosts: [db.example.com]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [db.example.com]}]
    route: [{destination: {host: db}}]
"#;

    #[test]
    fn listeners_follow_the_gateways_selecting_the_pod() {
        let snapshot = testing::snapshot_of(CLUSTER);
        let me = Identity {
            namespace: "istio-system".into(),
            pod: "ingress-0".into(),
        };
        let config = build(&snapshot, &me);
        let addresses: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["0.0.0.0:8080", "0.0.0.0:8443"],
            "ports 80 and 443 are the Service's 8080 and 8443; 9000 is another gateway's"
        );
        let Serve::Tls(chains) = &config.listeners[1].serve else {
            panic!("443 serves TLS");
        };
        assert!(matches!(
            chain_for(chains, Some("shop.example.com")).map(|c| &c.action),
            Some(ChainAction::Terminate {
                tls: Err(TlsError::MissingSecret(_)),
                ..
            })
        ));
        assert!(matches!(
            chain_for(chains, Some("db.example.com")).map(|c| &c.action),
            Some(ChainAction::Passthrough(_))
        ));
        assert!(chain_for(chains, Some("other.example.com")).is_none());
        assert_eq!(config.refusing.len(), 1, "{:?}", config.refusing);
        let nobody = Identity {
            namespace: "istio-system".into(),
            pod: "missing".into(),
        };
        assert!(build(&snapshot, &nobody).listeners.is_empty());
    }

    /// Istio's `samples/bookinfo/gateway-api/bookinfo-gateway.yaml`, with the pod the
    /// controller runs for its Gateway and the Service in front of it.
    const GATEWAY_API: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo}
---
apiVersion: v1
kind: Pod
metadata:
  name: bookinfo-gateway-istio-0
  namespace: bookinfo
  labels: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.60, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: bookinfo-gateway-istio, namespace: bookinfo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.60
  selector: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}
  ports: [{name: status-port, port: 15021}, {name: http, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: bookinfo}
spec:
  clusterIP: 10.96.0.61
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}}
  - name: https
    port: 443
    protocol: HTTPS
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  rules:
  - matches:
    - path: {type: Exact, value: /productpage}
    - path: {type: PathPrefix, value: /static}
    - path: {type: Exact, value: /login}
    - path: {type: Exact, value: /logout}
    - path: {type: PathPrefix, value: /api/v1/products}
    backendRefs: [{name: productpage, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: other}
spec:
  parentRefs: [{name: bookinfo-gateway, namespace: bookinfo}]
  rules:
  - backendRefs: [{name: productpage, namespace: bookinfo, port: 9080}]
"#;

    fn routed(table: &RouteTable, path: &str) -> Option<String> {
        routed_at(table, "192.0.2.10", path)
    }

    fn routed_at(table: &RouteTable, authority: &str, path: &str) -> Option<String> {
        let uri: http::Uri = path.parse().expect("uri");
        let headers = http::HeaderMap::new();
        let source = crate::route::Source::default();
        let facts = crate::route::RequestFacts {
            method: &http::Method::GET,
            uri: &uri,
            authority,
            headers: &headers,
            port: 80,
            source: &source,
            auth: None,
        };
        let host = table.select(authority)?;
        match host.routes.http_route(&facts)?.action() {
            crate::route::RouteAction::Forward(destinations) => Some(format!(
                "{}:{}",
                destinations[0].host,
                destinations[0].port.unwrap_or(0)
            )),
            _ => Some("other".into()),
        }
    }

    #[test]
    fn a_gateway_api_gateway_is_served_by_the_pod_run_for_it_with_its_routes() {
        let snapshot = testing::snapshot_of(GATEWAY_API);
        let me = Identity {
            namespace: "bookinfo".into(),
            pod: "bookinfo-gateway-istio-0".into(),
        };
        let config = build(&snapshot, &me);
        let addresses: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(addresses, ["0.0.0.0:80", "0.0.0.0:443"]);
        assert!(config.unserved.is_empty(), "{:?}", config.unserved);
        assert_eq!(config.refusing.len(), 1, "{:?}", config.refusing);
        assert!(
            config.refusing[0].0.contains("spec.listeners[1]")
                && config.refusing[0]
                    .1
                    .to_string()
                    .contains("spec.listeners[1].tls.certificateRefs: none"),
            "an HTTPS listener without certificate refuses TLS: {:?}",
            config.refusing
        );
        let Serve::Plain(target) = &config.listeners[0].serve else {
            panic!("HTTP is plaintext");
        };
        let GatewayRoutes::Http(table) = &target.routes else {
            panic!("HTTP routes");
        };
        let domains: Vec<&str> = table.hosts.iter().map(|h| h.domain.as_str()).collect();
        assert_eq!(
            domains,
            ["*"],
            "the route of another namespace is not allowed"
        );
        let productpage = Some("productpage.bookinfo.svc.cluster.local:9080".to_string());
        for path in [
            "/productpage",
            "/static/bootstrap.css",
            "/login",
            "/logout",
            "/api/v1/products/1",
        ] {
            assert_eq!(routed(table, path), productpage, "{path}");
        }
        assert_eq!(routed(table, "/nothing"), None);
        assert_eq!(routed(table, "/productpage/x"), None);
        let other = Identity {
            namespace: "istio-system".into(),
            pod: "ingress-0".into(),
        };
        assert!(build(&snapshot, &other).listeners.is_empty());
    }

    #[test]
    fn listeners_of_one_port_share_a_socket_with_a_virtual_host_per_shared_hostname() {
        let yaml = GATEWAY_API.replace(
            "  - name: https\n    port: 443\n    protocol: HTTPS\n",
            "  - name: shop\n    port: 80\n    protocol: HTTP\n    hostname: '*.example.com'\n",
        ) + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: bookinfo}
spec:
  parentRefs: [{name: bookinfo-gateway, sectionName: shop}]
  hostnames: [a.example.com, b.example.org]
  rules:
  - backendRefs: [{name: productpage, port: 9080}]
"#;
        let snapshot = testing::snapshot_of(&yaml);
        let me = Identity {
            namespace: "bookinfo".into(),
            pod: "bookinfo-gateway-istio-0".into(),
        };
        let config = build(&snapshot, &me);
        assert_eq!(config.listeners.len(), 1, "one socket for port 80");
        assert!(config.unserved.is_empty(), "{:?}", config.unserved);
        let Serve::Plain(target) = &config.listeners[0].serve else {
            panic!("HTTP is plaintext");
        };
        let GatewayRoutes::Http(table) = &target.routes else {
            panic!("HTTP routes");
        };
        let mut domains: Vec<&str> = table.hosts.iter().map(|h| h.domain.as_str()).collect();
        domains.sort_unstable();
        assert_eq!(
            domains,
            ["*", "*.example.com", "a.example.com"],
            "bookinfo's route on both listeners; shop's only where the listener's hostname covers it"
        );
        assert_eq!(
            table.select("a.example.com").map(|h| h.domain.as_str()),
            Some("a.example.com")
        );
    }

    /// A self-signed certificate for `host` and the `kubernetes.io/tls` Secret holding it.
    fn certificate(namespace: &str, name: &str, host: &str) -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let block = |pem: String| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
        let secret = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            block(cert.pem()),
            block(key.serialize_pem())
        );
        (cert.der().to_vec(), secret)
    }

    /// Whether a client trusting only `root` completes a handshake with `server` for `sni`.
    fn handshakes(server: &ServerTls, root: &[u8], sni: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
            .expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut server =
            rustls::ServerConnection::new(server.config.clone()).expect("server connection");
        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).expect("client writes");
            if !bytes.is_empty() {
                server
                    .read_tls(&mut bytes.as_slice())
                    .expect("server reads");
                if server.process_new_packets().is_err() {
                    return false;
                }
            }
            let mut bytes = Vec::new();
            server.write_tls(&mut bytes).expect("server writes");
            if !bytes.is_empty() {
                client
                    .read_tls(&mut bytes.as_slice())
                    .expect("client reads");
                if client.process_new_packets().is_err() {
                    return false;
                }
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return true;
            }
        }
        false
    }

    #[test]
    fn https_listeners_terminate_with_their_certificate_by_sni_and_a_bad_ref_refuses_only_its_own()
    {
        let (shop_cert, shop_secret) = certificate("bookinfo", "shop-cert", "shop.example.com");
        let (admin_cert, admin_secret) = certificate("certs", "admin-cert", "admin.example.com");
        let (books_cert, books_secret) = certificate("certs", "books-cert", "books.example.com");
        let listeners = "  - name: shop\n    port: 443\n    protocol: HTTPS\n    hostname: shop.example.com\n    tls: {certificateRefs: [{name: shop-cert}]}\n  \
             - name: admin\n    port: 443\n    protocol: HTTPS\n    hostname: admin.example.com\n    tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: admin-cert, namespace: certs}]}\n  \
             - name: books\n    port: 443\n    protocol: HTTPS\n    hostname: books.example.com\n    tls: {certificateRefs: [{name: books-cert, namespace: certs}]}\n  \
             - name: missing\n    port: 443\n    protocol: HTTPS\n    hostname: missing.example.com\n    tls: {certificateRefs: [{name: nowhere}]}\n";
        let yaml = GATEWAY_API.replace(
            "  - name: https\n    port: 443\n    protocol: HTTPS\n",
            listeners,
        ) + &shop_secret
            + &admin_secret
            + &books_secret
            + r#"---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: bookinfo-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: bookinfo}]
  to: [{group: '', kind: Secret, name: admin-cert}]
"#;
        let snapshot = testing::snapshot_of(&yaml);
        let me = Identity {
            namespace: "bookinfo".into(),
            pod: "bookinfo-gateway-istio-0".into(),
        };
        let config = build(&snapshot, &me);
        let addresses: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(addresses, ["0.0.0.0:80", "0.0.0.0:443"]);
        assert!(config.unserved.is_empty(), "{:?}", config.unserved);
        let Serve::Tls(chains) = &config.listeners[1].serve else {
            panic!("HTTPS is TLS");
        };
        let terminating = |sni: &str| match chain_for(chains, Some(sni)).map(|c| &c.action) {
            Some(ChainAction::Terminate { tls, target }) => (tls.clone(), target.clone()),
            other => panic!("{sni}: {other:?}"),
        };
        // Each SNI gets its listener's own certificate, and only that one.
        let (shop, target) = terminating("shop.example.com");
        let shop = shop.expect("shop's Secret is in the Gateway's namespace");
        assert!(handshakes(&shop, &shop_cert, "shop.example.com"));
        assert!(!handshakes(&shop, &admin_cert, "shop.example.com"));
        let GatewayRoutes::Http(table) = &target.routes else {
            panic!("HTTP routes over TLS");
        };
        assert_eq!(
            routed_at(table, "shop.example.com", "/productpage"),
            Some("productpage.bookinfo.svc.cluster.local:9080".to_string()),
            "bookinfo's route attaches to every listener of its namespace, HTTPS too"
        );
        let admin = terminating("admin.example.com")
            .0
            .expect("the ReferenceGrant of certs allows admin-cert");
        assert!(handshakes(&admin, &admin_cert, "admin.example.com"));
        // books-cert exists but no grant names it; nowhere does not exist.
        let books = terminating("books.example.com")
            .0
            .expect_err("not permitted");
        assert!(
            books.to_string().contains("RefNotPermitted")
                && books.to_string().contains("certs/books-cert"),
            "{books}"
        );
        assert_eq!(
            terminating("missing.example.com").0.expect_err("missing"),
            TlsError::MissingSecret("bookinfo/nowhere".into())
        );
        assert!(chain_for(chains, Some("other.example.com")).is_none());
        let refusing: Vec<&str> = config
            .refusing
            .iter()
            .map(|(what, _)| what.as_str())
            .collect();
        assert_eq!(refusing.len(), 2, "{refusing:?}");
        assert!(
            refusing[0].contains("spec.listeners[3] (books HTTPS on 443)"),
            "{refusing:?}"
        );
        assert!(
            refusing[1].contains("spec.listeners[4] (missing HTTPS on 443)"),
            "{refusing:?}"
        );
        let _ = books_cert;
    }

    #[test]
    fn tls_listeners_pass_through_or_terminate_by_sni_and_tcp_listeners_take_their_tcp_route() {
        let (term_cert, term_secret) = certificate("bookinfo", "term-cert", "term.example.com");
        let listeners = "  - name: pass\n    port: 443\n    protocol: TLS\n    hostname: '*.example.com'\n    tls: {mode: Passthrough}\n  \
             - name: term\n    port: 8443\n    protocol: TLS\n    hostname: term.example.com\n    tls: {certificateRefs: [{name: term-cert}]}\n  \
             - name: tcp\n    port: 5000\n    protocol: TCP\n  \
             - name: tcp-again\n    port: 5000\n    protocol: TCP\n";
        let yaml = GATEWAY_API.replace(
            "  - name: https\n    port: 443\n    protocol: HTTPS\n",
            listeners,
        ) + &term_secret
            + r#"---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: bookinfo}
spec: {clusterIP: 10.96.0.71, ports: [{name: tls, port: 8443}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: bookinfo}
spec: {clusterIP: 10.96.0.72, ports: [{name: tls, port: 8443}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a, namespace: bookinfo, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  hostnames: [a.example.com, both.example.com]
  rules: [{backendRefs: [{name: a, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: b, namespace: bookinfo, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  hostnames: [b.example.com, both.example.com, term.example.com]
  rules: [{backendRefs: [{name: b, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: later, namespace: bookinfo, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: bookinfo-gateway, sectionName: tcp}]
  rules: [{backendRefs: [{name: b, port: 7000}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo, namespace: bookinfo, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: bookinfo-gateway, sectionName: tcp}]
  rules:
  - backendRefs: [{name: a, port: 9000, weight: 3}, {name: b, port: 9000, weight: 1}, {name: gone, port: 9000, weight: 0}, {name: missing, port: 9000}]
"#;
        let snapshot = testing::snapshot_of(&yaml);
        let me = Identity {
            namespace: "bookinfo".into(),
            pod: "bookinfo-gateway-istio-0".into(),
        };
        let config = build(&snapshot, &me);
        let addresses: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["0.0.0.0:80", "0.0.0.0:443", "0.0.0.0:8443", "0.0.0.0:5000"]
        );
        assert_eq!(config.unserved.len(), 3, "{:?}", config.unserved);
        assert!(
            config.unserved[0].contains("both.example.com")
                && config.unserved[0].contains("TLSRoute bookinfo/b"),
            "the older route keeps a shared hostname: {:?}",
            config.unserved
        );
        assert!(
            config.unserved[1].contains("TCPRoute bookinfo/later")
                && config.unserved[1].contains("an older route takes"),
            "{:?}",
            config.unserved
        );
        assert!(
            config.unserved[2].contains("tcp-again"),
            "{:?}",
            config.unserved
        );
        assert!(config.refusing.is_empty(), "{:?}", config.refusing);
        let backend = |target: &GatewayTarget| -> Vec<(String, u16, u32, bool)> {
            let GatewayRoutes::Tcp(Some(plan)) = &target.routes else {
                panic!("a TCP route: {:?}", target.routes);
            };
            plan.destinations()
                .iter()
                .map(|d| (d.host.clone(), d.port.unwrap_or(0), d.weight, d.unresolved))
                .collect()
        };
        let a = ("a.bookinfo.svc.cluster.local".to_string(), 8443, 1, false);
        let b = ("b.bookinfo.svc.cluster.local".to_string(), 8443, 1, false);
        // Passthrough: the SNI picks the route; the TLS goes on untouched.
        let Serve::Tls(chains) = &config.listeners[1].serve else {
            panic!("TLS by SNI");
        };
        let passed = |sni: &str| match chain_for(chains, Some(sni)).map(|c| &c.action) {
            Some(ChainAction::Passthrough(target)) => Some(backend(target)),
            Some(other) => panic!("{sni}: {other:?}"),
            None => None,
        };
        assert_eq!(passed("a.example.com"), Some(vec![a.clone()]));
        assert_eq!(passed("b.example.com"), Some(vec![b.clone()]));
        assert_eq!(passed("both.example.com"), Some(vec![a.clone()]));
        assert_eq!(passed("c.example.com"), None, "no route has it");
        assert_eq!(
            passed("term.example.com"),
            Some(vec![b.clone()]),
            "route b's hostname under the listener's *.example.com"
        );
        // Terminate: the listener's certificate, then the route's backends.
        let Serve::Tls(chains) = &config.listeners[2].serve else {
            panic!("TLS by SNI");
        };
        match chain_for(chains, Some("term.example.com")).map(|c| &c.action) {
            Some(ChainAction::Terminate { tls, target }) => {
                let tls = tls.as_ref().expect("term-cert is usable");
                assert!(handshakes(tls, &term_cert, "term.example.com"));
                assert_eq!(backend(target), vec![b.clone()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            chain_for(chains, Some("a.example.com")).is_none(),
            "route a's hostnames are not the listener's"
        );
        // TCP: the weighted backends; a weight of 0 takes nothing, a backend that does not
        // exist keeps its share and refuses it.
        let Serve::Plain(target) = &config.listeners[3].serve else {
            panic!("TCP is plaintext");
        };
        assert_eq!(
            backend(target),
            vec![
                ("a.bookinfo.svc.cluster.local".to_string(), 9000, 3, false),
                ("b.bookinfo.svc.cluster.local".to_string(), 9000, 1, false),
                (String::new(), 0, 1, true),
            ]
        );
    }
}
