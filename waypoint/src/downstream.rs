//! One CONNECT stream's downstream side as the waypoint's handlers see it: what the client
//! asked for (a bound service or workload) and who the client is.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use weft_config::registry::model::{Service, Workload};

use crate::route::Source;

/// What the client asked for.
#[derive(Clone, Debug)]
pub enum Target {
    /// A service bound to this waypoint, by one of its ClusterIPs.
    Service { service: Arc<Service>, port: u16 },
    /// A workload bound to this waypoint, by its own address.
    Workload {
        workload: Arc<Workload>,
        address: SocketAddr,
    },
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Service { port, .. } => *port,
            Target::Workload { address, .. } => address.port(),
        }
    }

    /// The protocol the service port declares (Istio's `appProtocol` or port-name prefix).
    pub fn declared_protocol(&self) -> Option<StreamProtocol> {
        let Target::Service { service, port } = self else {
            return None;
        };
        let port = service.port(*port)?;
        let declared = port
            .app_protocol
            .as_deref()
            .or(port.name.as_deref())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let kind = declared.split('-').next().unwrap_or_default();
        match kind {
            "http" | "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => {
                Some(StreamProtocol::Http)
            }
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Some(StreamProtocol::Tcp),
            _ => None,
        }
    }
}

/// The downstream side of one CONNECT stream.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub target: Target,
    /// The client as the mesh knows it: identity proven by mTLS, namespace and labels of
    /// its workload.
    pub source: Source,
    pub source_ip: Option<IpAddr>,
    /// The CONNECT `:authority` (original destination).
    pub destination: SocketAddr,
}

/// What a CONNECT stream carries: HTTP, routed per request, or anything else, spliced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamProtocol {
    Http,
    Tcp,
}
