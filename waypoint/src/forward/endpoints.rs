//! The endpoints a route destination (host, subset, port) stands for, as addresses the
//! proxy can connect to. A pure function of the registry's snapshot.
//!
//! A waypoint goes to the endpoints themselves: it is the service's L7 hop. An ingress
//! gateway goes through the service's waypoint when it has one, as Istio ambient's
//! gateways do with `istio.io/ingress-use-waypoint` (weft always does: the destination's
//! agent admits only its waypoint's traffic for a waypoint-bound pod), asking the waypoint
//! over HBONE for the Service's ClusterIP and port.
use std::net::SocketAddr;

use weft_config::registry::Snapshot;
use weft_config::registry::egress::{EntryDestination, NoEntryEndpoint, is_allocated_address};
use weft_config::registry::model::{Endpoint, EntryHost, Service, Waypoint};
use weft_core::dns::Upstream;

use super::connections::Transport;

/// One endpoint the balancer may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's address and the port its application listens on.
    pub address: SocketAddr,
    pub transport: Transport,
}

/// How a proxy reaches a Service's backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Straight to the endpoints (a waypoint).
    #[default]
    Endpoints,
    /// Through the Service's waypoint when it has one (an ingress gateway).
    ThroughWaypoint,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEndpoints {
    #[error("no service {0} in the registry")]
    UnknownHost(String),
    #[error("service {host} has no port {port}")]
    UnknownPort { host: String, port: u16 },
    #[error("no ready endpoint of {0}")]
    NoneReady(String),
    #[error("{0} is bound to a waypoint with no ready pod")]
    NoWaypoint(String),
    #[error(transparent)]
    Entry(#[from] NoEntryEndpoint),
    #[error("resolving {host}: {reason}")]
    Unresolved { host: String, reason: String },
    #[error(
        "ServiceEntry {0} has resolution NONE and the client dialled {1}, which is no real \
         address (an allocated one, or another host's): give the entry resolution DNS or \
         STATIC"
    )]
    NoOriginal(String, std::net::IpAddr),
}

/// The endpoints of a route destination: a Service's ([`candidates`]), else a ServiceEntry
/// host's visible to `namespace` ([`entry_candidates`]).
pub async fn resolve(
    snapshot: &Snapshot,
    dns: &Upstream,
    namespace: &str,
    destination: (&str, Option<&str>, u16),
    original: SocketAddr,
    reach: Reach,
) -> Result<Vec<Candidate>, NoEndpoints> {
    let (host, subset, port) = destination;
    if snapshot.service_by_host(host).is_none()
        && let Some(entry) = snapshot.entry_host_named(host, namespace)
    {
        return entry_candidates(snapshot, dns, entry, port, original).await;
    }
    candidates(snapshot, host, subset, port, reach)
}

/// The endpoints of a ServiceEntry host's `port` (`weft_config::registry::egress`), names
/// resolved with `dns`: mesh pods over HBONE, everything else plain TCP (which the
/// cluster's DestinationRule may turn into TLS). Resolution NONE goes where the client
/// addressed the connection (`original`), only if that is one of the entry's real
/// addresses.
pub async fn entry_candidates(
    snapshot: &Snapshot,
    dns: &Upstream,
    entry: &EntryHost,
    port: u16,
    original: SocketAddr,
) -> Result<Vec<Candidate>, NoEndpoints> {
    let destinations = snapshot.entry_host_destinations(entry, port, original.is_ipv4())?;
    let mut found = Vec::new();
    let mut unresolved = None;
    for destination in destinations {
        match destination {
            EntryDestination::Workload { workload, address } => {
                let transport = match workload.identity.parse() {
                    Ok(identity) if workload.in_mesh => Transport::Hbone { identity },
                    _ => Transport::Plain,
                };
                found.push(Candidate { address, transport });
            }
            EntryDestination::Address(address) => found.push(Candidate {
                address,
                transport: Transport::Plain,
            }),
            EntryDestination::Name { host, port } => match dns.lookup(&host).await {
                Ok(ips) => found.extend(ips.into_iter().map(|ip| Candidate {
                    address: SocketAddr::new(ip, port),
                    transport: Transport::Plain,
                })),
                Err(error) => {
                    unresolved = Some(NoEndpoints::Unresolved {
                        host,
                        reason: error.to_string(),
                    })
                }
            },
            EntryDestination::Original => {
                let ip = original.ip();
                if !entry.has_address(ip) || is_allocated_address(ip) {
                    return Err(NoEndpoints::NoOriginal(
                        format!("{}/{}", entry.namespace, entry.name),
                        ip,
                    ));
                }
                let target = entry.endpoint_port(port, None).unwrap_or(port);
                found.push(Candidate {
                    address: SocketAddr::new(ip, target),
                    transport: Transport::Plain,
                });
            }
        }
    }
    if found.is_empty() {
        return Err(unresolved.unwrap_or_else(|| NoEndpoints::NoneReady(entry.host.clone())));
    }
    Ok(found)
}

/// Ready endpoints of `host` (in `subset`, if given) for the service port `port`.
/// An endpoint in the mesh is reached over HBONE and must prove its workload's identity;
/// one outside the mesh over plain TCP.
pub fn candidates(
    snapshot: &Snapshot,
    host: &str,
    subset: Option<&str>,
    port: u16,
    reach: Reach,
) -> Result<Vec<Candidate>, NoEndpoints> {
    let service = snapshot
        .service_by_host(host)
        .ok_or_else(|| NoEndpoints::UnknownHost(host.to_string()))?;
    if service.port(port).is_none() {
        return Err(NoEndpoints::UnknownPort {
            host: host.to_string(),
            port,
        });
    }
    if reach == Reach::ThroughWaypoint
        && let Some(waypoint) = snapshot.service_waypoint(service)
    {
        return through_waypoint(snapshot, service, waypoint, port);
    }
    let endpoints: Vec<&Endpoint> = match subset {
        Some(subset) => snapshot.subset_endpoints(host, subset),
        None => service.endpoints.iter().collect(),
    };
    let found: Vec<Candidate> = endpoints
        .into_iter()
        .filter(|e| e.ready)
        .filter_map(|e| candidate(snapshot, service, port, e))
        .collect();
    if found.is_empty() {
        let what = match subset {
            Some(subset) => format!("{host} subset {subset}"),
            None => host.to_string(),
        };
        return Err(NoEndpoints::NoneReady(what));
    }
    Ok(found)
}

/// The ready pods of `service`'s waypoint, each asked for the Service's ClusterIP and
/// `port` (the waypoint's own DestinationRule state, routes and policies then apply).
fn through_waypoint(
    snapshot: &Snapshot,
    service: &Service,
    waypoint: &Waypoint,
    port: u16,
) -> Result<Vec<Candidate>, NoEndpoints> {
    let vip = service.vips.first().copied();
    let pods = snapshot
        .waypoint_service(waypoint)
        .into_iter()
        .flat_map(|s| {
            s.endpoints
                .iter()
                .filter(|e| e.ready)
                .filter_map(|e| Some((e, snapshot.endpoint_workload(e)?)))
        });
    let found: Vec<Candidate> = match vip {
        Some(vip) => pods
            .filter_map(|(e, workload)| {
                Some(Candidate {
                    address: SocketAddr::new(e.address, waypoint.port),
                    transport: Transport::Waypoint {
                        identity: workload.identity.parse().ok()?,
                        target: SocketAddr::new(vip, port),
                    },
                })
            })
            .collect(),
        None => Vec::new(),
    };
    if found.is_empty() {
        return Err(NoEndpoints::NoWaypoint(service.hostname.clone()));
    }
    Ok(found)
}

fn candidate(
    snapshot: &Snapshot,
    service: &Service,
    port: u16,
    endpoint: &Endpoint,
) -> Option<Candidate> {
    let target_port = service.endpoint_port(port, endpoint)?;
    let address = SocketAddr::new(endpoint.address, target_port);
    let transport = match snapshot.endpoint_workload(endpoint) {
        Some(workload) if workload.in_mesh => Transport::Hbone {
            identity: workload.identity.parse().ok()?,
        },
        _ => Transport::Plain,
    };
    Some(Candidate { address, transport })
}

/// The port a destination without one goes to: the request's port, or the service's only
/// port (Istio lets a destination omit the port when the service has one).
pub fn destination_port(
    snapshot: &Snapshot,
    host: &str,
    explicit: Option<u16>,
    request_port: u16,
) -> u16 {
    if let Some(port) = explicit {
        return port;
    }
    match snapshot.service_by_host(host) {
        Some(service) if service.port(request_port).is_none() && service.ports.len() == 1 => {
            service.ports[0].port
        }
        Some(_) => request_port,
        None => match snapshot.entry_hosts().find(|e| e.host == host) {
            Some(entry) if entry.port(request_port).is_none() && entry.ports.len() == 1 => {
                entry.ports[0].number
            }
            _ => request_port,
        },
    }
}

/// Whether `port` of `host` is declared HTTP (HTTP, HTTP/2, gRPC: Istio's `IsHTTP`), by a
/// Service port's `appProtocol` or name prefix or a ServiceEntry port's `protocol`; a port
/// left to detection is not.
pub fn declares_http(snapshot: &Snapshot, host: &str, port: u16) -> bool {
    const HTTP: [&str; 4] = ["http", "http2", "grpc", "grpc-web"];
    if let Some(service) = snapshot.service_by_host(host) {
        let Some(port) = service.port(port) else {
            return false;
        };
        let declared = port
            .app_protocol
            .as_deref()
            .or(port.name.as_deref())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let kind = declared.split('-').next().unwrap_or_default();
        return HTTP.contains(&kind) || declared.starts_with("grpc-web");
    }
    snapshot
        .entry_hosts()
        .find(|e| e.host == host)
        .and_then(|e| e.port(port))
        .is_some_and(|p| HTTP.contains(&p.protocol.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: egress}
spec:
  hosts: [none.example.com]
  addresses: [198.51.100.0/24, 240.240.9.9]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: egress}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 443}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: egress}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.11, ports: {tcp-pg: 15432}}]
"#;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[tokio::test]
    async fn entry_hosts_resolve_to_plain_endpoints_and_none_only_at_a_real_address() {
        let s = weft_config::testing::snapshot_of(ENTRIES);
        let no_dns = Upstream::new(Vec::new());
        let find = async |host: &str, port: u16, original: &str| {
            resolve(
                &s,
                &no_dns,
                "egress",
                (host, None, port),
                addr(original),
                Reach::Endpoints,
            )
            .await
        };
        assert_eq!(
            find("db.example.com", 5432, "240.240.0.3:5432").await,
            Ok(vec![Candidate {
                address: addr("192.0.2.11:15432"),
                transport: Transport::Plain
            }]),
            "STATIC: the endpoint at its own port"
        );
        assert_eq!(
            find("none.example.com", 443, "198.51.100.7:443").await,
            Ok(vec![Candidate {
                address: addr("198.51.100.7:443"),
                transport: Transport::Plain
            }]),
            "NONE: where the client dialled"
        );
        assert!(
            matches!(
                find("none.example.com", 443, "240.240.9.9:443").await,
                Err(NoEndpoints::NoOriginal(_, _))
            ),
            "NONE at an address of the allocation range goes nowhere"
        );
        assert!(
            matches!(
                find("api.example.com", 80, "240.240.0.4:80").await,
                Err(NoEndpoints::Unresolved { host, .. }) if host == "api.example.com"
            ),
            "DNS: the host is looked up (here with no resolver)"
        );
        assert!(matches!(
            find("db.example.com", 5433, "240.240.0.3:5433").await,
            Err(NoEndpoints::Entry(_))
        ));
        assert!(matches!(
            find("unknown.example.com", 80, "192.0.2.1:80").await,
            Err(NoEndpoints::UnknownHost(_))
        ));
    }
}
