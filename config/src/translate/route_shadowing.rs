//! Which TLSRoutes and TCPRoutes attached to an ingress Gateway's listeners receive no
//! connections there, because an older route (or another listener of the port) takes what
//! they would: a TCP listener's connections all go to its oldest route; a TLS listener's
//! connections go by SNI, one route per hostname, the oldest first, and a hostname an
//! HTTPS or TLS listener earlier on the port already has is not taken again.
//!
//! This is the decision `weft-waypoint --mode ingress` applies when it builds a Gateway's
//! listeners (`waypoint/src/ingress/config.rs`, `gateway_api_listeners`), made here so the
//! route status, the listeners' `attachedRoutes` and the warnings say the same. The Gateway
//! API's conformance (`TCPRouteMultipleRoutesAttachment`) asks that such a route still
//! reports `Accepted: True` and that only the route served counts in the listener's
//! `attachedRoutes`; istiod reports both `Accepted` too (it merges their VirtualServices).
//! weft does the same, and says in the condition's message and in the warnings which route
//! takes the connections.
use std::sync::Arc;

use super::gateway_routes::effective_hostnames;
use crate::api::ObjectRef;
use crate::api::gateway_api::KubernetesGateway;
use crate::registry::bound_route::BoundRoute;
pub use crate::registry::bound_route::Shadowed;

/// The protocol family a Gateway port serves: a port's first served listener sets it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Http,
    Tls,
    Tcp,
}

/// What a Gateway port has seen so far.
struct Port {
    number: u32,
    family: Family,
    /// Whether a TCP listener has the port.
    tcp_taken: bool,
    /// The SNI names taken, each with what takes it.
    names: Vec<(String, String)>,
}

/// The routes of `attached` (the routes attached to `gateway`, oldest first, each with the
/// names of its listeners, as `gateway_routes::gateway_routes` gives them) whose share of a
/// listener goes elsewhere, each with its route.
pub fn shadowed_routes(
    gateway: &KubernetesGateway,
    attached: &[(Arc<BoundRoute>, Vec<String>)],
) -> Vec<(ObjectRef, Shadowed)> {
    let namespace = gateway
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(crate::api::DEFAULT_NAMESPACE);
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    let gateway_name = format!("{namespace}/{name}");
    let mut ports: Vec<Port> = Vec::new();
    let mut found = Vec::new();
    for listener in &gateway.spec.listeners {
        if listener.port == 0 || listener.port > u32::from(u16::MAX) {
            continue;
        }
        let mode = listener.tls.as_ref().map_or("Terminate", |t| t.mode());
        let family = match (listener.protocol.as_str(), mode) {
            ("HTTP", _) => Family::Http,
            ("HTTPS", "Terminate") | ("TLS", "Terminate" | "Passthrough") => Family::Tls,
            ("TCP", _) => Family::Tcp,
            // Not served at all: the gateway and the Gateway's status name the listener.
            _ => continue,
        };
        let index = match ports.iter().position(|p| p.number == listener.port) {
            Some(index) => index,
            None => {
                ports.push(Port {
                    number: listener.port,
                    family,
                    tcp_taken: false,
                    names: Vec::new(),
                });
                ports.len() - 1
            }
        };
        let Port {
            family: port_family,
            tcp_taken,
            names,
            ..
        } = &mut ports[index];
        if *port_family != family {
            // A listener of another protocol family on the port is not served.
            continue;
        }
        let routes = || {
            attached
                .iter()
                .filter(|(_, listeners)| listeners.contains(&listener.name))
                .map(|(route, _)| route)
        };
        match listener.protocol.as_str() {
            "TCP" => {
                if *tcp_taken {
                    // A second TCP listener of the port is not served.
                    continue;
                }
                *tcp_taken = true;
                let mut routes = routes();
                let Some(oldest) = routes.next() else {
                    continue;
                };
                let by = oldest.route.object_ref().to_string();
                for route in routes {
                    found.push((
                        route.route.object_ref(),
                        Shadowed {
                            gateway: gateway_name.clone(),
                            listener: listener.name.clone(),
                            taken: vec![("*".to_string(), by.clone())],
                            complete: true,
                        },
                    ));
                }
            }
            "HTTPS" => {
                let sni = listener
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map_or_else(|| "*".to_string(), str::to_ascii_lowercase);
                if !names.iter().any(|(n, _)| *n == sni) {
                    names.push((sni, format!("listener {:?}", listener.name)));
                }
            }
            _ => {
                for route in routes() {
                    let mut taken = Vec::new();
                    let mut served = 0;
                    for sni in
                        effective_hostnames(listener.hostname.as_deref(), route.route.hostnames())
                    {
                        match names.iter().find(|(n, _)| *n == sni) {
                            Some((_, by)) => taken.push((sni, by.clone())),
                            None => {
                                served += 1;
                                names.push((sni, route.route.object_ref().to_string()));
                            }
                        }
                    }
                    if !taken.is_empty() {
                        found.push((
                            route.route.object_ref(),
                            Shadowed {
                                gateway: gateway_name.clone(),
                                listener: listener.name.clone(),
                                taken,
                                complete: served == 0,
                            },
                        ));
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::bound_route::{GatewayRoute, RouteBackends};

    fn gateway(listeners: &str) -> KubernetesGateway {
        serde_yaml::from_str(&format!(
            "metadata: {{name: edge, namespace: shop}}\nspec:\n  gatewayClassName: istio\n  listeners:\n{listeners}"
        ))
        .expect("a Gateway")
    }

    fn route(kind: &str, name: &str, created: &str, hostnames: &[&str]) -> Arc<BoundRoute> {
        let yaml = format!(
            "metadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec:\n  hostnames: {hostnames:?}\n  parentRefs: [{{name: edge}}]\n  rules: [{{backendRefs: [{{name: backend, port: 9000}}]}}]"
        );
        let route = match kind {
            "TCPRoute" => GatewayRoute::Tcp(Arc::new(
                serde_yaml::from_str(&yaml.replace(&format!("  hostnames: {hostnames:?}\n"), ""))
                    .expect("a TCPRoute"),
            )),
            _ => GatewayRoute::Tls(Arc::new(serde_yaml::from_str(&yaml).expect("a TLSRoute"))),
        };
        Arc::new(BoundRoute {
            route,
            service_namespace: "shop".to_string(),
            port: None,
            backends: Arc::new(RouteBackends::default()),
        })
    }

    fn names(found: &[(ObjectRef, Shadowed)]) -> Vec<(String, String, bool)> {
        found
            .iter()
            .map(|(r, s)| (r.name.clone(), s.listener.clone(), s.complete))
            .collect()
    }

    #[test]
    fn a_tcp_listener_serves_its_oldest_route_the_others_are_named() {
        let gateway = gateway(
            "  - {name: tcp, port: 9000, protocol: TCP}\n  - {name: other, port: 9001, protocol: TCP}\n",
        );
        // Given newest first: the decision goes by the order given (oldest first).
        let older = route("TCPRoute", "older", "2026-01-01T00:00:00Z", &[]);
        let newer = route("TCPRoute", "newer", "2026-02-01T00:00:00Z", &[]);
        let alone = route("TCPRoute", "alone", "2026-03-01T00:00:00Z", &[]);
        let attached = vec![
            (older, vec!["tcp".to_string()]),
            (newer, vec!["tcp".to_string()]),
            (alone, vec!["other".to_string()]),
        ];
        let found = shadowed_routes(&gateway, &attached);
        assert_eq!(names(&found), [("newer".into(), "tcp".into(), true)]);
        assert_eq!(
            found[0].1.taken,
            [("*".to_string(), "TCPRoute shop/older".to_string())]
        );
        assert!(
            found[0]
                .1
                .describe()
                .contains("gives all its connections to TCPRoute shop/older"),
            "{}",
            found[0].1.describe()
        );
    }

    #[test]
    fn a_tls_hostname_goes_to_the_oldest_route_that_has_it() {
        let gateway = gateway(
            "  - {name: https, port: 443, protocol: HTTPS, hostname: secure.example.com}\n  - {name: tls, port: 443, protocol: TLS, hostname: \"*.example.com\", tls: {mode: Passthrough}}\n",
        );
        let first = route(
            "TLSRoute",
            "first",
            "2026-01-01T00:00:00Z",
            &["a.example.com"],
        );
        // Shares a.example.com with the first: b.example.com is still its own.
        let partial = route(
            "TLSRoute",
            "partial",
            "2026-02-01T00:00:00Z",
            &["a.example.com", "b.example.com"],
        );
        // Both names taken: one by the older route, one by the HTTPS listener.
        let shadowed = route(
            "TLSRoute",
            "shadowed",
            "2026-03-01T00:00:00Z",
            &["a.example.com", "secure.example.com"],
        );
        let tls = || vec!["tls".to_string()];
        let attached = vec![(first, tls()), (partial, tls()), (shadowed, tls())];
        let found = shadowed_routes(&gateway, &attached);
        assert_eq!(
            names(&found),
            [
                ("partial".into(), "tls".into(), false),
                ("shadowed".into(), "tls".into(), true)
            ]
        );
        assert_eq!(
            found[1].1.taken,
            [
                (
                    "a.example.com".to_string(),
                    "TLSRoute shop/first".to_string()
                ),
                (
                    "secure.example.com".to_string(),
                    "listener \"https\"".to_string()
                ),
            ]
        );
        // Without the oldest route, the next one takes its name.
        let attached: Vec<_> = attached.into_iter().skip(1).collect();
        let found = shadowed_routes(&gateway, &attached);
        assert_eq!(names(&found), [("shadowed".into(), "tls".into(), true)]);
        assert_eq!(
            found[0].1.taken[0],
            (
                "a.example.com".to_string(),
                "TLSRoute shop/partial".to_string()
            )
        );
    }
}
