//! One downstream connection as the handlers see it: what the client asked for (a service
//! or workload bound to the waypoint, over a CONNECT stream; or a listener of an ingress
//! gateway) and who the client is.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use weft_config::registry::model::{EntryHost, Service, Workload};
use weft_core::telemetry::TraceContext;

use crate::route::gateway::RouteTable;
use crate::route::{Source, TcpRoutePlan};

/// What the client asked for.
#[derive(Clone, Debug)]
pub enum Target {
    /// A service bound to this waypoint, by one of its ClusterIPs.
    Service { service: Arc<Service>, port: u16 },
    /// A ServiceEntry host bound to this waypoint (Istio ambient's egress gateway), by one
    /// of the addresses its clients dial, on one of its ports.
    EntryHost { host: Arc<EntryHost>, port: u16 },
    /// A workload bound to this waypoint, by its own address.
    Workload {
        workload: Arc<Workload>,
        address: SocketAddr,
    },
    /// A listener (or, over TLS, the server the client's SNI chose) of an ingress gateway.
    Gateway(Arc<GatewayTarget>),
}

/// What one ingress gateway listener serves.
#[derive(Debug)]
pub struct GatewayTarget {
    /// The server's port, which route matches compare `port` with (80 for a server on
    /// port 80, though the gateway listens on its Service's targetPort).
    pub port: u16,
    pub routes: GatewayRoutes,
    /// The gateway's own pod: AuthorizationPolicies and RequestAuthentications with a
    /// `selector` apply to it.
    pub workload: Option<Arc<Workload>>,
    /// `Gateway ns/name spec.servers[i]`, for logs.
    pub server: String,
}

/// HTTP routes by virtual host, or where a TCP server (or a TLS server's terminated
/// stream, or a PASSTHROUGH SNI) goes.
#[derive(Debug)]
pub enum GatewayRoutes {
    Http(Arc<RouteTable>),
    /// `None`: no route bound, the connection is closed.
    Tcp(Option<TcpRoutePlan>),
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Service { port, .. } | Target::EntryHost { port, .. } => *port,
            Target::Workload { address, .. } => address.port(),
            Target::Gateway(gateway) => gateway.port,
        }
    }

    /// The protocol the service port declares (Istio's `appProtocol` or port-name prefix).
    pub fn declared_protocol(&self) -> Option<StreamProtocol> {
        if let Target::EntryHost { host, port } = self {
            // ServiceEntry ports declare `protocol` (upper case).
            return match host.port(*port)?.protocol.as_str() {
                "HTTP" | "HTTP2" | "GRPC" => Some(StreamProtocol::Http),
                "" => None,
                _ => Some(StreamProtocol::Tcp),
            };
        }
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

impl Target {
    /// Whether the port is a TLS or HTTPS one (Istio's `Protocol.IsTLS`: a ServiceEntry
    /// port's `protocol`; a Service port's `appProtocol` or name prefix `tls`/`https`):
    /// the only ports whose `tls` routes pilot builds.
    pub fn declares_tls(&self) -> bool {
        match self {
            Target::EntryHost { host, port } => host.port(*port).is_some_and(|p| {
                p.protocol.eq_ignore_ascii_case("TLS") || p.protocol.eq_ignore_ascii_case("HTTPS")
            }),
            Target::Service { service, port } => service.port(*port).is_some_and(|p| {
                let declared = p
                    .app_protocol
                    .as_deref()
                    .or(p.name.as_deref())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                matches!(declared.split('-').next(), Some("tls" | "https"))
            }),
            Target::Workload { .. } | Target::Gateway(_) => false,
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
    /// The CONNECT `:authority` (original destination); at a gateway, the listener's
    /// address the client reached.
    pub destination: SocketAddr,
    /// Whether the client's connection was TLS that this proxy terminated (`https`).
    pub secure: bool,
    /// The trace context the CONNECT carried (the client's agent's connection span); the
    /// requests that bring none of their own continue it. `None` at a gateway.
    pub tunnel_trace: Option<TraceContext>,
}

/// What a CONNECT stream carries: HTTP, routed per request, or anything else, spliced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamProtocol {
    Http,
    Tcp,
}
