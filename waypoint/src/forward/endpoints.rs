//! The endpoints a route destination (host, subset, port) stands for, as addresses the
//! waypoint can connect to. A pure function of the registry's snapshot.
use std::net::SocketAddr;

use weft_config::registry::Snapshot;
use weft_config::registry::model::{Endpoint, Service};

use super::connections::Transport;

/// One endpoint the balancer may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's address and the port its application listens on.
    pub address: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEndpoints {
    #[error("no service {0} in the registry")]
    UnknownHost(String),
    #[error("service {host} has no port {port}")]
    UnknownPort { host: String, port: u16 },
    #[error("no ready endpoint of {0}")]
    NoneReady(String),
}

/// Ready endpoints of `host` (in `subset`, if given) for the service port `port`.
/// An endpoint in the mesh is reached over HBONE and must prove its workload's identity;
/// one outside the mesh over plain TCP.
pub fn candidates(
    snapshot: &Snapshot,
    host: &str,
    subset: Option<&str>,
    port: u16,
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
