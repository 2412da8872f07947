//! Where a captured connection goes, decided from the registry alone (a pure function of
//! the snapshot and the original destination).
//!
//! [`resolve`] knows pods and Services; [`resolve_outbound`] adds ServiceEntries (by the
//! addresses clients dial: declared, allocated by the registry, or inside a declared block)
//! and the mesh config's `outboundTrafficPolicy`: under `REGISTRY_ONLY` a destination the
//! registry does not know goes nowhere ([`NextHop::BlackHole`]).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use weft_config::api::mesh::OutboundTrafficMode;
use weft_config::registry::Snapshot;
use weft_config::registry::egress::EntryDestination;
use weft_config::registry::model::{EntryHost, Locality, TrafficDistribution, Waypoint};
use weft_ebpf_common::ports;

/// Where one outbound connection goes next (`NextHop`, not `Upstream`: that name is
/// `weft_core::hbone`'s stream the HBONE server splices with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// A workload in the mesh: HBONE to `<pod IP>:15008`, asking for `target`, and the
    /// server must prove `identity`.
    Hbone {
        identity: String,
        hbone_address: SocketAddr,
        target: SocketAddr,
    },
    /// Outside the mesh (or unknown): plain TCP to the original destination, which the
    /// cluster's own service routing handles.
    Passthrough(SocketAddr),
    /// Must not be sent anywhere (a waypoint-bound destination whose waypoint is down).
    Refuse(String),
    /// A ServiceEntry host of resolution DNS: `host` is resolved when the connection is
    /// made, and the connection goes to one of its addresses at `port`, in plain TCP.
    Resolve { host: String, port: u16 },
    /// `REGISTRY_ONLY`: the destination is no pod, Service or ServiceEntry the registry
    /// knows. Refused, and reported as Istio's `BlackHoleCluster`.
    BlackHole(SocketAddr),
}

/// The pod a connection comes from, as far as choosing where it goes is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client<'a> {
    /// Which ServiceEntries it sees.
    pub namespace: &'a str,
    /// Which endpoints are close to it (`trafficDistribution: PreferClose`).
    pub locality: Locality,
}

#[cfg(test)]
impl<'a> Client<'a> {
    /// A client of `namespace` whose locality is unknown.
    pub fn in_namespace(namespace: &'a str) -> Self {
        Self {
            namespace,
            locality: Locality::default(),
        }
    }
}

/// Where a connection from `client` to `dst` goes: pods and Services as
/// [`resolve_near`] decides, then ServiceEntry hosts visible to the namespace, then whatever the
/// mesh config's `outboundTrafficPolicy` says about the rest (`ALLOW_ANY`: out as
/// addressed; `REGISTRY_ONLY`: nowhere).
pub fn resolve_outbound(
    snapshot: &Snapshot,
    client: &Client<'_>,
    dst: SocketAddr,
    pick: impl FnOnce(usize) -> usize,
) -> NextHop {
    let namespace = client.namespace;
    let mode = snapshot.mesh_config().outbound_traffic_mode();
    if let Some(service) = snapshot.service_by_vip(dst.ip()) {
        // A Service's address on a port it does not have leads nowhere known.
        if mode == OutboundTrafficMode::RegistryOnly
            && service.port(dst.port()).is_none()
            && snapshot.service_waypoint(service).is_none()
        {
            return NextHop::BlackHole(dst);
        }
        return resolve_near(snapshot, dst, &client.locality, pick);
    }
    if snapshot.workload_by_ip(dst.ip()).is_some() {
        return resolve_near(snapshot, dst, &client.locality, pick);
    }
    if let Some(host) = snapshot.entry_host_by_address(dst.ip(), namespace) {
        return entry_hop(snapshot, host, dst, mode, pick);
    }
    match mode {
        OutboundTrafficMode::AllowAny => NextHop::Passthrough(dst),
        OutboundTrafficMode::RegistryOnly => NextHop::BlackHole(dst),
    }
}

/// A connection to an address of the ServiceEntry host `host`: through its waypoint when
/// it is bound to one; else to its endpoints (the pods its `workloadSelector` selects, its
/// `endpoints`, or the host itself resolved by DNS), or, with resolution NONE, where it was
/// addressed.
fn entry_hop(
    snapshot: &Snapshot,
    host: &EntryHost,
    dst: SocketAddr,
    mode: OutboundTrafficMode,
    pick: impl FnOnce(usize) -> usize,
) -> NextHop {
    if let Some(waypoint) = snapshot.entry_host_waypoint(host) {
        return via_waypoint(snapshot, waypoint, dst, pick);
    }
    if host.port(dst.port()).is_none() {
        return match mode {
            OutboundTrafficMode::RegistryOnly => NextHop::BlackHole(dst),
            // An allocated address leads nowhere but through the entry's ports.
            OutboundTrafficMode::AllowAny if host.auto_allocated => NextHop::Refuse(format!(
                "ServiceEntry {}/{} has no port {} for {}",
                host.namespace,
                host.name,
                dst.port(),
                host.host
            )),
            OutboundTrafficMode::AllowAny => NextHop::Passthrough(dst),
        };
    }
    let destinations = match snapshot.entry_host_destinations(host, dst.port(), dst.is_ipv4()) {
        Ok(destinations) => destinations,
        Err(reason) => return NextHop::Refuse(reason.to_string()),
    };
    match &destinations[pick(destinations.len()) % destinations.len()] {
        EntryDestination::Workload { workload, address } if workload.in_mesh => NextHop::Hbone {
            identity: workload.identity.to_string(),
            hbone_address: SocketAddr::new(address.ip(), ports::HBONE),
            target: *address,
        },
        EntryDestination::Workload { address, .. } | EntryDestination::Address(address) => {
            NextHop::Passthrough(*address)
        }
        EntryDestination::Name { host, port } => NextHop::Resolve {
            host: host.clone(),
            port: *port,
        },
        EntryDestination::Original => NextHop::Passthrough(dst),
    }
}

/// Picks an endpoint of a Service among the ready ones of the ClusterIP's family (an IPv6
/// ClusterIP leads to the IPv6 addresses of the Service's IPv6 EndpointSlices, as
/// kube-proxy does); `pick` chooses an index below its argument (random in the agent, fixed
/// in tests). A service or workload bound to a
/// waypoint goes to one of the waypoint's pods instead, asking for the original
/// destination: the waypoint applies the L7 rules and picks the endpoint.
pub fn resolve(snapshot: &Snapshot, dst: SocketAddr, pick: impl FnOnce(usize) -> usize) -> NextHop {
    resolve_near(snapshot, dst, &Locality::default(), pick)
}

/// [`resolve`] for a client at `near`: a Service with `trafficDistribution: PreferClose`
/// goes to its ready endpoints closest to it ([`closest`]).
pub fn resolve_near(
    snapshot: &Snapshot,
    dst: SocketAddr,
    near: &Locality,
    pick: impl FnOnce(usize) -> usize,
) -> NextHop {
    if let Some(service) = snapshot.service_by_vip(dst.ip()) {
        if let Some(waypoint) = snapshot.service_waypoint(service) {
            return via_waypoint(snapshot, waypoint, dst, pick);
        }
        let ready: Vec<_> = service
            .endpoints
            .iter()
            .filter(|e| e.ready && e.address.is_ipv4() == dst.is_ipv4())
            .collect();
        if service.port(dst.port()).is_none() || ready.is_empty() {
            return NextHop::Passthrough(dst);
        }
        let ready = match service.traffic_distribution {
            TrafficDistribution::Any => ready,
            TrafficDistribution::PreferClose => closest(
                near,
                ready
                    .into_iter()
                    .map(|e| (e, snapshot.endpoint_locality(e)))
                    .collect(),
            ),
        };
        let endpoint = ready[pick(ready.len()) % ready.len()];
        let Some(target_port) = service.endpoint_port(dst.port(), endpoint) else {
            return NextHop::Passthrough(dst);
        };
        return match snapshot.endpoint_workload(endpoint) {
            Some(workload) if workload.in_mesh => NextHop::Hbone {
                identity: workload.identity.to_string(),
                hbone_address: SocketAddr::new(endpoint.address, ports::HBONE),
                target: SocketAddr::new(endpoint.address, target_port),
            },
            _ => NextHop::Passthrough(dst),
        };
    }
    match snapshot.workload_by_ip(dst.ip()) {
        Some(workload) if let Some(waypoint) = snapshot.workload_waypoint(workload) => {
            via_waypoint(snapshot, waypoint, dst, pick)
        }
        Some(workload) if workload.in_mesh => NextHop::Hbone {
            identity: workload.identity.to_string(),
            hbone_address: SocketAddr::new(dst.ip(), ports::HBONE),
            target: dst,
        },
        _ => NextHop::Passthrough(dst),
    }
}

/// HBONE to a ready pod of the waypoint, asking for the original destination. A waypoint
/// without a ready pod refuses the connection rather than letting it bypass the L7 rules.
fn via_waypoint(
    snapshot: &Snapshot,
    waypoint: &Waypoint,
    dst: SocketAddr,
    pick: impl FnOnce(usize) -> usize,
) -> NextHop {
    let all: Vec<_> = snapshot
        .waypoint_service(waypoint)
        .into_iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.ready)
        .filter_map(|e| Some((e, snapshot.endpoint_workload(e)?)))
        .collect();
    // The waypoint's addresses of the connection's family first (a dual-stack waypoint
    // Service lists both); another family only when it has none of this one.
    let same_family: Vec<_> = all
        .iter()
        .copied()
        .filter(|(e, _)| e.address.is_ipv4() == dst.is_ipv4())
        .collect();
    let pods = if same_family.is_empty() {
        all
    } else {
        same_family
    };
    if pods.is_empty() {
        return NextHop::Refuse(format!(
            "waypoint {}/{} has no ready pod",
            waypoint.namespace, waypoint.name
        ));
    }
    let (endpoint, workload) = pods[pick(pods.len()) % pods.len()];
    NextHop::Hbone {
        identity: workload.identity.to_string(),
        hbone_address: SocketAddr::new(endpoint.address, waypoint.port),
        target: dst,
    }
}

/// `PreferClose`, as ztunnel applies it: of `candidates` (at least one), those sharing the
/// most of the client's locality — region, then zone, then subzone, each counting only
/// when the ones before it match. The client's zone when it has endpoints there, else its
/// region, else all of them.
pub fn closest<T>(client: &Locality, candidates: Vec<(T, Locality)>) -> Vec<T> {
    let rank = |l: &Locality| {
        [
            (&client.region, &l.region),
            (&client.zone, &l.zone),
            (&client.subzone, &l.subzone),
        ]
        .iter()
        .take_while(|(a, b)| a == b)
        .count()
    };
    let best = candidates.iter().map(|(_, l)| rank(l)).max().unwrap_or(0);
    candidates
        .into_iter()
        .filter(|(_, l)| rank(l) == best)
        .map(|(t, _)| t)
        .collect()
}

/// A cheap, well-spread choice among `n` endpoints (load balancing needs no cryptographic
/// randomness, and a shared counter keeps connections spread evenly).
pub(crate) fn pick(n: usize) -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut z = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u0, labels: {app: web}}
spec: {nodeName: node-1, serviceAccountName: web, containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: default, uid: u1, labels: {app: legacy}}
spec: {nodeName: node-2, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.2.11}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-0, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: web-0}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

    fn snapshot() -> std::sync::Arc<Snapshot> {
        snapshot_of(CLUSTER)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn a_service_vip_goes_to_an_endpoint_over_hbone_with_its_target_port() {
        assert_eq!(
            resolve(&snapshot(), addr("10.96.0.10:80"), |_| 0),
            NextHop::Hbone {
                identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                hbone_address: addr("10.244.1.11:15008"),
                target: addr("10.244.1.11:8080"),
            }
        );
    }

    #[test]
    fn a_mesh_pod_ip_goes_over_hbone_as_dialed() {
        assert_eq!(
            resolve(&snapshot(), addr("10.244.1.11:9000"), |_| 0),
            NextHop::Hbone {
                identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                hbone_address: addr("10.244.1.11:15008"),
                target: addr("10.244.1.11:9000"),
            }
        );
    }

    #[test]
    fn outside_the_mesh_passes_through() {
        let s = snapshot();
        assert_eq!(
            resolve(&s, addr("10.244.2.11:80"), |_| 0),
            NextHop::Passthrough(addr("10.244.2.11:80"))
        );
        assert_eq!(
            resolve(&s, addr("192.0.2.1:443"), |_| 0),
            NextHop::Passthrough(addr("192.0.2.1:443"))
        );
        assert_eq!(
            resolve(&s, addr("10.96.0.10:81"), |_| 0),
            NextHop::Passthrough(addr("10.96.0.10:81")),
            "a port the service does not have"
        );
    }

    const DUAL_STACK: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u0, labels: {app: web}}
spec: {nodeName: node-2, serviceAccountName: web, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.2.10, podIPs: [{ip: 10.244.2.10}, {ip: "fd00:10:244:2::a"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:10:96::a"]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.10], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: web-0}}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints: [{addresses: ["fd00:10:244:2::a"], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: web-0}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

    #[test]
    fn each_cluster_ip_leads_to_the_endpoints_of_its_family() {
        let s = snapshot_of(DUAL_STACK);
        // Whichever endpoint the pick lands on, it is of the ClusterIP's family.
        for index in 0..2 {
            assert_eq!(
                resolve(&s, addr("[fd00:10:96::a]:80"), |_| index),
                NextHop::Hbone {
                    identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                    hbone_address: addr("[fd00:10:244:2::a]:15008"),
                    target: addr("[fd00:10:244:2::a]:8080"),
                }
            );
            assert_eq!(
                resolve(&s, addr("10.96.0.10:80"), |_| index),
                NextHop::Hbone {
                    identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                    hbone_address: addr("10.244.2.10:15008"),
                    target: addr("10.244.2.10:8080"),
                }
            );
        }
    }

    #[test]
    fn a_mesh_pod_s_ipv6_address_goes_over_hbone_to_that_address() {
        assert_eq!(
            resolve(
                &snapshot_of(DUAL_STACK),
                addr("[fd00:10:244:2::a]:9000"),
                |_| 0
            ),
            NextHop::Hbone {
                identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                hbone_address: addr("[fd00:10:244:2::a]:15008"),
                target: addr("[fd00:10:244:2::a]:9000"),
            }
        );
    }

    #[test]
    fn an_ipv6_cluster_ip_without_ipv6_endpoints_passes_to_the_cluster() {
        let yaml: String = DUAL_STACK
            .split("---")
            .filter(|doc| !doc.contains("name: web-v6"))
            .collect::<Vec<_>>()
            .join("---");
        assert_eq!(
            resolve(&snapshot_of(&yaml), addr("[fd00:10:96::a]:80"), |_| 0),
            NextHop::Passthrough(addr("[fd00:10:96::a]:80")),
            "not to an IPv4 endpoint: kube-proxy has none of this family either"
        );
    }

    const WITH_WAYPOINT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: shop, uid: w0, labels: {gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none}}
spec: {nodeName: node-1, serviceAccountName: waypoint, containers: [{name: waypoint}]}
status: {phase: Running, podIP: 10.244.1.20}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: mesh, port: 15008}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: waypoint-0, namespace: shop, labels: {kubernetes.io/service-name: waypoint}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.20], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: waypoint-0}}]
ports: [{name: mesh, port: 15008, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: shop, uid: r0, labels: {app: reviews}}
spec: {nodeName: node-2, serviceAccountName: reviews, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.2.11}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-0, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: reviews-0}}]
ports: [{name: http, port: 9080, protocol: TCP}]
"#;

    use weft_config::testing::snapshot_of;

    #[test]
    fn a_waypoint_bound_service_goes_to_the_waypoint_asking_for_the_service() {
        let s = snapshot_of(WITH_WAYPOINT);
        assert_eq!(
            resolve(&s, addr("10.96.0.11:9080"), |_| 0),
            NextHop::Hbone {
                identity: "spiffe://cluster.local/ns/shop/sa/waypoint".into(),
                hbone_address: addr("10.244.1.20:15008"),
                target: addr("10.96.0.11:9080"),
            }
        );
        // Addressed to the pod itself: the waypoint serves services only, so straight there…
        assert!(matches!(
            resolve(&s, addr("10.244.2.11:9080"), |_| 0),
            NextHop::Hbone { target, .. } if target == addr("10.244.2.11:9080")
        ));
        // …where the pod's agent admits only the waypoint's identity.
        let reviews = s.workload_by_uid("r0").expect("reviews pod");
        let required = s.required_waypoints(reviews);
        assert_eq!(required.len(), 1, "reviews is behind a waypoint");
        assert_eq!(
            s.waypoint_identities(required[0]),
            ["spiffe://cluster.local/ns/shop/sa/waypoint"]
        );
    }

    #[test]
    fn a_dual_stack_waypoint_is_reached_in_the_connection_s_family() {
        let yaml = format!(
            "{WITH_WAYPOINT}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: waypoint-0-v6, namespace: shop, labels: {{kubernetes.io/service-name: waypoint}}}}\naddressType: IPv6\nendpoints: [{{addresses: [\"fd00:10:244:1::14\"], conditions: {{ready: true}}, targetRef: {{kind: Pod, namespace: shop, name: waypoint-0}}}}]\nports: [{{name: mesh, port: 15008, protocol: TCP}}]\n"
        )
        .replace(
            "status: {phase: Running, podIP: 10.244.1.20}",
            "status: {phase: Running, podIP: 10.244.1.20, podIPs: [{ip: 10.244.1.20}, {ip: \"fd00:10:244:1::14\"}]}",
        );
        let s = snapshot_of(&yaml);
        for index in 0..4 {
            assert!(
                matches!(
                    resolve(&s, addr("10.96.0.11:9080"), |_| index),
                    NextHop::Hbone { hbone_address, .. } if hbone_address == addr("10.244.1.20:15008")
                ),
                "an IPv4 connection goes to the waypoint's IPv4 address (pick {index})"
            );
        }
    }

    #[test]
    fn a_waypoint_without_a_ready_pod_refuses_instead_of_bypassing_it() {
        let yaml = WITH_WAYPOINT.replace(
            "addresses: [10.244.1.20], conditions: {ready: true}",
            "addresses: [10.244.1.20], conditions: {ready: false}",
        );
        let s = snapshot_of(&yaml);
        assert!(matches!(
            resolve(&s, addr("10.96.0.11:9080"), |_| 0),
            NextHop::Refuse(reason) if reason.contains("shop/waypoint")
        ));
    }

    const EGRESS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: time, namespace: shop}
spec:
  hosts: [time.jsontest.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  addresses: [192.0.2.10]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.11, ports: {tcp-pg: 15432}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec:
  hosts: [private.example.com]
  addresses: [192.0.2.20]
  ports: [{number: 443, name: tls, protocol: TLS}]
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: range, namespace: shop}
spec:
  hosts: [range.example.com]
  addresses: [198.51.100.0/24]
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;

    fn locked(yaml: &str) -> String {
        format!(
            "{yaml}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n"
        )
    }

    #[test]
    fn registry_only_sends_unknown_destinations_nowhere() {
        let open = snapshot_of(CLUSTER);
        assert_eq!(
            resolve_outbound(
                &open,
                &Client::in_namespace("shop"),
                addr("192.0.2.1:443"),
                |_| 0
            ),
            NextHop::Passthrough(addr("192.0.2.1:443")),
            "ALLOW_ANY lets it out"
        );
        let closed = snapshot_of(&locked(CLUSTER));
        assert_eq!(
            resolve_outbound(
                &closed,
                &Client::in_namespace("shop"),
                addr("192.0.2.1:443"),
                |_| 0
            ),
            NextHop::BlackHole(addr("192.0.2.1:443"))
        );
        assert_eq!(
            resolve_outbound(
                &closed,
                &Client::in_namespace("shop"),
                addr("10.96.0.10:81"),
                |_| 0
            ),
            NextHop::BlackHole(addr("10.96.0.10:81")),
            "a port the Service does not have"
        );
        // What the registry knows is reached as before: a Service, a pod in or out of the
        // mesh.
        assert!(matches!(
            resolve_outbound(
                &closed,
                &Client::in_namespace("shop"),
                addr("10.96.0.10:80"),
                |_| 0
            ),
            NextHop::Hbone { .. }
        ));
        assert_eq!(
            resolve_outbound(
                &closed,
                &Client::in_namespace("shop"),
                addr("10.244.2.11:80"),
                |_| 0
            ),
            NextHop::Passthrough(addr("10.244.2.11:80"))
        );
    }

    #[test]
    fn service_entries_open_their_hosts_ports_under_registry_only() {
        let s = snapshot_of(&locked(EGRESS));
        let time = s
            .entry_host_named("time.jsontest.com", "shop")
            .expect("the entry's host")
            .clone();
        let vip = time.vips[0];
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                SocketAddr::new(vip, 443),
                |_| 0
            ),
            NextHop::Resolve {
                host: "time.jsontest.com".into(),
                port: 443
            }
        );
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                SocketAddr::new(vip, 8080),
                |_| 0
            ),
            NextHop::BlackHole(SocketAddr::new(vip, 8080)),
            "a port the entry does not declare"
        );
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                addr("192.0.2.10:5432"),
                |_| 0
            ),
            NextHop::Passthrough(addr("192.0.2.11:15432")),
            "STATIC: the endpoint, at its own port"
        );
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                addr("198.51.100.7:443"),
                |_| 0
            ),
            NextHop::Passthrough(addr("198.51.100.7:443")),
            "inside a declared block, resolution NONE: as addressed"
        );
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                addr("192.0.2.20:443"),
                |_| 0
            ),
            NextHop::BlackHole(addr("192.0.2.20:443")),
            "exported to its own namespace only"
        );
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("other"),
                addr("192.0.2.20:443"),
                |_| 0
            ),
            NextHop::Passthrough(addr("192.0.2.20:443"))
        );
        // Without REGISTRY_ONLY an allocated address still leads only to the entry's ports.
        let open = snapshot_of(EGRESS);
        let vip = open
            .entry_host_named("time.jsontest.com", "shop")
            .expect("host")
            .vips[0];
        assert!(matches!(
            resolve_outbound(
                &open,
                &Client::in_namespace("shop"),
                SocketAddr::new(vip, 8080),
                |_| 0
            ),
            NextHop::Refuse(_)
        ));
    }

    #[test]
    fn a_waypoint_bound_service_entry_goes_through_its_waypoint() {
        let yaml = format!(
            "{}\n---\n{}",
            WITH_WAYPOINT,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: secure, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}\nspec: {hosts: [secure.example.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}\n"
        );
        let s = snapshot_of(&locked(&yaml));
        let vip = s
            .entry_host_named("secure.example.com", "shop")
            .expect("host")
            .vips[0];
        assert_eq!(
            resolve_outbound(
                &s,
                &Client::in_namespace("shop"),
                SocketAddr::new(vip, 80),
                |_| 0
            ),
            NextHop::Hbone {
                identity: "spiffe://cluster.local/ns/shop/sa/waypoint".into(),
                hbone_address: addr("10.244.1.20:15008"),
                target: SocketAddr::new(vip, 80),
            }
        );
    }

    /// Two zones of one region, a Service with an endpoint in each (and a third in another
    /// region); `ready` says which endpoints are ready, `distribution` how the Service
    /// asks for it.
    fn zoned(ready: [bool; 3], meta: &str, distribution: &str) -> std::sync::Arc<Snapshot> {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n",
        );
        for (node, region, zone) in [
            ("node-1", "eu", "eu-a"),
            ("node-2", "eu", "eu-b"),
            ("node-3", "us", "us-a"),
        ] {
            yaml += &format!(
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}}}}}\n"
            );
        }
        let mut endpoints = Vec::new();
        for (i, ok) in ready.iter().enumerate() {
            let n = i + 1;
            yaml += &format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{n}, namespace: shop, uid: u{n}, labels: {{app: web}}}}\nspec: {{nodeName: node-{n}, serviceAccountName: web, containers: [{{name: app}}]}}\nstatus: {{phase: Running, podIP: 10.244.{n}.11}}\n"
            );
            endpoints.push(format!(
                "{{addresses: [10.244.{n}.11], nodeName: node-{n}, conditions: {{ready: {ok}}}, targetRef: {{kind: Pod, namespace: shop, name: web-{n}}}}}"
            ));
        }
        yaml += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop{meta}}}\nspec: {{clusterIP: 10.96.0.10, ports: [{{port: 80, targetPort: 8080}}]{distribution}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-0, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{port: 8080, protocol: TCP}}]\n",
            endpoints.join(", ")
        );
        snapshot_of(&yaml)
    }

    /// Where connections from a client on `node` land, over every index `pick` may give.
    fn landings(s: &Snapshot, node: &str) -> Vec<SocketAddr> {
        let client = Client {
            namespace: "shop",
            locality: s.node_locality(node),
        };
        let mut seen: Vec<SocketAddr> = (0..6)
            .filter_map(
                |i| match resolve_outbound(s, &client, addr("10.96.0.10:80"), |_| i) {
                    NextHop::Hbone { target, .. } => Some(target),
                    _ => None,
                },
            )
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    #[test]
    fn prefer_close_keeps_connections_in_the_clients_zone_then_region_then_any() {
        let spec = ", trafficDistribution: PreferClose";
        let all = zoned([true, true, true], "", spec);
        assert_eq!(landings(&all, "node-1"), [addr("10.244.1.11:8080")]);
        assert_eq!(landings(&all, "node-2"), [addr("10.244.2.11:8080")]);
        // The zone's endpoint not ready: the region's other zone.
        let zone_down = zoned([false, true, true], "", spec);
        assert_eq!(landings(&zone_down, "node-1"), [addr("10.244.2.11:8080")]);
        // The region's endpoints not ready: anywhere.
        let region_down = zoned([false, false, true], "", spec);
        assert_eq!(landings(&region_down, "node-1"), [addr("10.244.3.11:8080")]);
        // Istio's annotation asks for it too.
        let annotation = ", annotations: {networking.istio.io/traffic-distribution: PreferClose}";
        let annotated = zoned([true, true, true], annotation, "");
        assert_eq!(landings(&annotated, "node-3"), [addr("10.244.3.11:8080")]);
        // Without either: every ready endpoint.
        let spread = zoned([true, true, true], "", "");
        assert_eq!(landings(&spread, "node-1").len(), 3);
    }

    #[test]
    fn closest_ranks_region_zone_subzone_in_order() {
        let at = |r: &str, z: &str, s: &str| Locality {
            region: r.into(),
            zone: z.into(),
            subzone: s.into(),
        };
        let client = at("eu", "a", "1");
        let candidates = || {
            vec![
                (0, at("eu", "a", "2")),
                (1, at("eu", "b", "1")),
                (2, at("us", "a", "1")),
                (3, at("eu", "a", "2")),
            ]
        };
        assert_eq!(
            closest(&client, candidates()),
            [0, 3],
            "same zone beats same subzone name elsewhere"
        );
        assert_eq!(closest(&at("ap", "x", ""), candidates()), [0, 1, 2, 3]);
        assert_eq!(closest(&Locality::default(), candidates()), [0, 1, 2, 3]);
    }

    #[test]
    fn picks_spread_over_every_endpoint() {
        let mut seen = [0usize; 3];
        for _ in 0..300 {
            seen[pick(3)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
