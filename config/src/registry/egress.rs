//! Where the endpoints of a ServiceEntry host are, as the registry alone can tell: what the
//! agent (a client's connection to an entry host without a waypoint) and the waypoint (a
//! request or stream for an entry host bound to it) both decide from, each then connecting
//! its own way (the agent picks one, the waypoint's balancer among all).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Snapshot;
use super::model::{EntryHost, Workload};
use crate::api::networking::Resolution;

/// One endpoint of an entry host's port.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryDestination {
    /// A pod (selected by the entry's `workloadSelector`, or an endpoint address that is
    /// a pod's): HBONE when it is in the mesh, plain TCP when not.
    Workload {
        workload: Arc<Workload>,
        address: SocketAddr,
    },
    /// An address outside the mesh, in plain TCP.
    Address(SocketAddr),
    /// A name to resolve when connecting (resolution DNS: an endpoint's name, or the host
    /// itself), then `port` at its addresses.
    Name { host: String, port: u16 },
    /// Resolution NONE: where the client addressed the connection.
    Original,
}

/// Why an entry host's port has no endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoEntryEndpoint {
    #[error("ServiceEntry {namespace}/{name} has no port {port} for {host}")]
    UnknownPort {
        namespace: String,
        name: String,
        host: String,
        port: u16,
    },
    #[error("ServiceEntry {namespace}/{name} selects no pod")]
    NoPod { namespace: String, name: String },
    #[error("ServiceEntry {namespace}/{name} has no endpoints")]
    NoEndpoints { namespace: String, name: String },
}

/// The range the registry allocates ServiceEntry addresses from: not a real destination.
pub fn is_allocated_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..2] == [240, 240],
        IpAddr::V6(_) => false,
    }
}

impl Snapshot {
    /// Every endpoint of the entry host's `port`, for a connection of the address family
    /// `ipv4`: the pods its `workloadSelector` selects (of that family), else by its
    /// resolution: NONE the original destination, STATIC its `endpoints` (each at its own
    /// port for the port's name, else the port's `targetPort`), DNS its endpoints' names or
    /// addresses, or without endpoints the host itself.
    pub fn entry_host_destinations(
        &self,
        host: &EntryHost,
        port: u16,
        ipv4: bool,
    ) -> Result<Vec<EntryDestination>, NoEntryEndpoint> {
        let Some(entry_port) = host.port(port) else {
            return Err(NoEntryEndpoint::UnknownPort {
                namespace: host.namespace.clone(),
                name: host.name.clone(),
                host: host.host.clone(),
                port,
            });
        };
        if host.workload_selector.is_some() {
            let target_port = host
                .endpoint_port(entry_port.number, None)
                .unwrap_or(entry_port.number);
            let pods: Vec<EntryDestination> = self
                .entry_host_workloads(host)
                .filter_map(|w| {
                    let ip = w.ips.iter().find(|ip| ip.is_ipv4() == ipv4)?;
                    Some(EntryDestination::Workload {
                        workload: w.clone(),
                        address: SocketAddr::new(*ip, target_port),
                    })
                })
                .collect();
            if pods.is_empty() {
                return Err(NoEntryEndpoint::NoPod {
                    namespace: host.namespace.clone(),
                    name: host.name.clone(),
                });
            }
            return Ok(pods);
        }
        if host.resolution == Resolution::None {
            return Ok(vec![EntryDestination::Original]);
        }
        if host.endpoints.is_empty() {
            if host.resolution == Resolution::Static {
                return Err(NoEntryEndpoint::NoEndpoints {
                    namespace: host.namespace.clone(),
                    name: host.name.clone(),
                });
            }
            return Ok(vec![EntryDestination::Name {
                host: host.host.clone(),
                port: host
                    .endpoint_port(entry_port.number, None)
                    .unwrap_or(entry_port.number),
            }]);
        }
        Ok(host
            .endpoints
            .iter()
            .map(|endpoint| {
                let target_port = host
                    .endpoint_port(entry_port.number, Some(endpoint))
                    .unwrap_or(entry_port.number);
                match endpoint.address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let address = SocketAddr::new(ip, target_port);
                        match self.workload_by_ip(ip) {
                            Some(workload) => EntryDestination::Workload {
                                workload: workload.clone(),
                                address,
                            },
                            None => EntryDestination::Address(address),
                        }
                    }
                    Err(_) => EntryDestination::Name {
                        host: endpoint.address.clone(),
                        port: target_port,
                    },
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::snapshot_of;

    const ENTRIES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 443, name: https, protocol: HTTPS}]
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
  endpoints: [{address: 192.0.2.11, ports: {tcp-pg: 15432}}, {address: 192.0.2.12}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: named, namespace: shop}
spec:
  hosts: [named.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  endpoints: [{address: backend.example.net}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-empty, namespace: shop}
spec:
  hosts: [empty.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: shop}
spec:
  hosts: [none.example.com]
  addresses: [198.51.100.0/24]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
"#;

    fn host(s: &Snapshot, name: &str) -> Arc<EntryHost> {
        s.entry_host_named(name, "shop").expect("host").clone()
    }

    #[test]
    fn destinations_follow_the_entry_resolution() {
        let s = snapshot_of(ENTRIES);
        let api = host(&s, "api.example.com");
        assert_eq!(
            s.entry_host_destinations(&api, 80, true),
            Ok(vec![EntryDestination::Name {
                host: "api.example.com".into(),
                port: 8080
            }]),
            "DNS without endpoints: the host itself, at the targetPort"
        );
        assert!(matches!(
            s.entry_host_destinations(&api, 8443, true),
            Err(NoEntryEndpoint::UnknownPort { port: 8443, .. })
        ));
        let db = host(&s, "db.example.com");
        assert_eq!(
            s.entry_host_destinations(&db, 5432, true),
            Ok(vec![
                EntryDestination::Address("192.0.2.11:15432".parse().expect("addr")),
                EntryDestination::Address("192.0.2.12:5432".parse().expect("addr")),
            ])
        );
        assert_eq!(
            s.entry_host_destinations(&host(&s, "named.example.com"), 443, true),
            Ok(vec![EntryDestination::Name {
                host: "backend.example.net".into(),
                port: 443
            }])
        );
        assert!(matches!(
            s.entry_host_destinations(&host(&s, "empty.example.com"), 443, true),
            Err(NoEntryEndpoint::NoEndpoints { .. })
        ));
        assert_eq!(
            s.entry_host_destinations(&host(&s, "none.example.com"), 443, true),
            Ok(vec![EntryDestination::Original])
        );
        assert!(api.auto_allocated && is_allocated_address(api.vips[0]));
        assert!(!is_allocated_address("192.0.2.10".parse().expect("ip")));
    }
}
