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
use weft_config::registry::model::{Endpoint, Service, Waypoint};

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
        _ => request_port,
    }
}
