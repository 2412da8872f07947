//! What an ingress gateway listens on and serves, from one registry snapshot: the Istio
//! Gateways selecting its pod, merged as pilot merges them
//! (`weft_config::translate::gateway`), each listener with its route table, TCP route or
//! SNI chains, and each terminating server with its TLS configuration from its Secret.
//!
//! The routes bound to a listener come from [`bound_routes`]: VirtualServices for Istio
//! Gateways; a Gateway API Gateway's listeners would give their HTTPRoutes there.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use weft_config::api::gateway::Gateway;
use weft_config::api::networking::VirtualService;
use weft_config::registry::Snapshot;
use weft_config::registry::model::Workload;
use weft_config::translate::gateway::{
    GatewayRef, ListenerKind, ListenerPlan, MergedGateways, ServerPlan, SkippedServer,
    VirtualHostPlan, merge, passthrough_routes, selects, tcp_route, virtual_hosts,
};

use super::tls::{ServerTls, TlsError, server_tls};
use crate::downstream::{GatewayRoutes, GatewayTarget};
use crate::route::TcpRoutePlan;
use crate::route::gateway::RouteTable;

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
                || e.target
                    .as_ref()
                    .is_some_and(|(ns, name)| *ns == workload.namespace && *name == workload.name)
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
    config
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
}
