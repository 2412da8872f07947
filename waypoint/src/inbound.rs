//! A CONNECT stream arriving at the waypoint: is its destination bound to this waypoint,
//! who sent it, and which protocol it carries (HTTP is routed per request, anything else
//! per connection).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::{Instrument, debug, info_span};
use weft_config::registry::Snapshot;
use weft_core::hbone::{Admitted, InboundRequest, Refusal, Tunnel};
use weft_core::telemetry::TraceContext;

use crate::context::WaypointContext;
use crate::downstream::{Downstream, StreamProtocol, Target};
use crate::prefixed::Prefixed;
use crate::route::Source;
use crate::{http, tcp};

/// The HBONE server's handler: admit the stream, then serve it.
pub async fn admit(
    request: InboundRequest,
    ctx: Arc<WaypointContext>,
) -> Result<Admitted, Refusal> {
    let snapshot = ctx.registry.load();
    let namespace = request.peer.identity.namespace().to_string();
    let target = target(&snapshot, &ctx, request.destination, &namespace)?;
    let principal = request.peer.identity.to_string();
    // The client's address is the tunnel's source (the source agent dials from inside the
    // client pod); `Forwarded` is believed only from another waypoint, never from a
    // client, which could name any address to pass `ipBlocks`.
    let source_ip = Some(request.client_address(|| snapshot.is_waypoint_identity(&principal)));
    let workload = source_ip.and_then(|ip| snapshot.workload_by_ip(ip));
    // The workload's labels count only if the certificate is that workload's own.
    let workload = workload.filter(|w| *w.identity == *principal);
    let source = Source {
        namespace: Some(namespace),
        labels: workload.map(|w| w.labels.to_map()).unwrap_or_default(),
        principal: Some(principal),
    };
    let downstream = Downstream {
        target,
        source,
        source_ip,
        destination: request.destination,
        secure: false,
        tunnel_trace: TraceContext::extract(&request.headers),
    };
    Ok(Admitted::Serve(Box::new(move |tunnel| {
        let span = info_span!(
            "waypoint",
            destination = %downstream.destination,
            peer = downstream.source.principal.as_deref().unwrap_or_default(),
        );
        Box::pin(serve(tunnel, downstream, ctx).instrument(span))
    })))
}

/// Only what is bound to this waypoint: anything else would make it an open relay.
/// `client_namespace`: a ServiceEntry host counts only if exported to the client.
fn target(
    snapshot: &Snapshot,
    ctx: &WaypointContext,
    destination: SocketAddr,
    client_namespace: &str,
) -> Result<Target, Refusal> {
    target_at(
        snapshot,
        (&ctx.name, &ctx.namespace),
        destination,
        client_namespace,
    )
}

/// [`target`] for the waypoint `name` of `namespace`.
fn target_at(
    snapshot: &Snapshot,
    (name, namespace): (&str, &str),
    destination: SocketAddr,
    client_namespace: &str,
) -> Result<Target, Refusal> {
    let is_me =
        |w: &weft_config::registry::model::Waypoint| w.name == name && w.namespace == namespace;
    if let Some(service) = snapshot.service_by_vip(destination.ip()) {
        let bound = snapshot.service_waypoint(service).is_some_and(|w| is_me(w));
        if !bound {
            return Err(Refusal::Forbidden(format!(
                "service {}/{} is not bound to this waypoint",
                service.namespace, service.name
            )));
        }
        if service.port(destination.port()).is_none() {
            return Err(Refusal::Unavailable(format!(
                "service {}/{} has no port {}",
                service.namespace,
                service.name,
                destination.port()
            )));
        }
        return Ok(Target::Service {
            service: service.clone(),
            port: destination.port(),
        });
    }
    if let Some(workload) = snapshot.workload_by_ip(destination.ip()) {
        let bound = snapshot
            .workload_waypoint(workload)
            .is_some_and(|w| is_me(w));
        if bound {
            return Ok(Target::Workload {
                workload: workload.clone(),
                address: destination,
            });
        }
    }
    if let Some(host) = snapshot.entry_host_by_address(destination.ip(), client_namespace) {
        let bound = snapshot.entry_host_waypoint(host).is_some_and(|w| is_me(w));
        if !bound {
            return Err(Refusal::Forbidden(format!(
                "ServiceEntry {}/{} ({}) is not bound to this waypoint",
                host.namespace, host.name, host.host
            )));
        }
        if host.port(destination.port()).is_none() {
            return Err(Refusal::Unavailable(format!(
                "ServiceEntry {}/{} has no port {} for {}",
                host.namespace,
                host.name,
                destination.port(),
                host.host
            )));
        }
        return Ok(Target::EntryHost {
            host: host.clone(),
            port: destination.port(),
        });
    }
    Err(Refusal::Forbidden(format!(
        "{destination} is not a service, ServiceEntry host or workload bound to this waypoint"
    )))
}

/// How long a client that declared no protocol has to send its first bytes before the
/// stream is treated as opaque TCP (server-first protocols send nothing).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);

async fn serve(mut tunnel: Tunnel, downstream: Downstream, ctx: Arc<WaypointContext>) {
    let (protocol, head) = match downstream.target.declared_protocol() {
        Some(protocol) => (protocol, Vec::new()),
        None => {
            let mut head = vec![0u8; 64];
            let read = tokio::time::timeout(SNIFF_TIMEOUT, tunnel.read(&mut head)).await;
            match read {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    head.truncate(n);
                    (sniff(&head), head)
                }
                Ok(Err(error)) => {
                    debug!(%error, "reading the stream failed");
                    return;
                }
                Err(_) => (StreamProtocol::Tcp, Vec::new()),
            }
        }
    };
    let io = Prefixed::new(head, tunnel);
    match protocol {
        StreamProtocol::Http => http::serve(io, downstream, ctx).await,
        StreamProtocol::Tcp => tcp::forward(io, downstream, ctx).await,
    }
}

/// HTTP/1.x request lines start with a method token and a space; HTTP/2 with its preface.
fn sniff(head: &[u8]) -> StreamProtocol {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI * HTTP/2",
    ];
    if METHODS
        .iter()
        .any(|m| head.starts_with(m) || (head.len() < m.len() && m.starts_with(head)))
    {
        StreamProtocol::Http
    } else {
        StreamProtocol::Tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EGRESS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: egress, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: egress, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: egress, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: egress, labels: {istio.io/use-waypoint: waypoint}}
spec:
  hosts: [secure.example.com]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 443}, {number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  exportTo: [".", "shop"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: elsewhere, namespace: egress, labels: {istio.io/use-waypoint: other}}
spec:
  hosts: [elsewhere.example.com]
  addresses: [192.0.2.30]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unbound, namespace: egress}
spec:
  hosts: [unbound.example.com]
  addresses: [192.0.2.31]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#;

    fn at(s: &Snapshot, ip: std::net::IpAddr, port: u16, client: &str) -> Result<Target, Refusal> {
        target_at(s, ("waypoint", "egress"), SocketAddr::new(ip, port), client)
    }

    #[test]
    fn a_service_entry_host_bound_to_this_waypoint_is_a_target_on_its_ports() {
        let s = weft_config::testing::snapshot_of(EGRESS);
        let secure = s
            .entry_host_named("secure.example.com", "shop")
            .expect("host")
            .clone();
        let vip = secure.vips[0];
        match at(&s, vip, 80, "shop") {
            Ok(Target::EntryHost { host, port }) => {
                assert_eq!(host.host, "secure.example.com");
                assert_eq!(port, 80);
            }
            other => panic!("expected the entry host, got {other:?}"),
        }
        let target = at(&s, vip, 80, "shop").expect("target");
        assert_eq!(
            target.declared_protocol(),
            Some(StreamProtocol::Http),
            "the entry port's protocol"
        );
        assert_eq!(
            at(&s, vip, 443, "egress")
                .expect("target")
                .declared_protocol(),
            Some(StreamProtocol::Tcp)
        );
        assert!(
            matches!(at(&s, vip, 8080, "shop"), Err(Refusal::Unavailable(m)) if m.contains("no port 8080")),
            "a port the entry does not declare"
        );
        assert!(
            matches!(at(&s, vip, 80, "web"), Err(Refusal::Forbidden(_))),
            "not exported to the client's namespace"
        );
        assert!(
            matches!(at(&s, "192.0.2.30".parse().expect("ip"), 80, "shop"), Err(Refusal::Forbidden(m)) if m.contains("not bound to this waypoint")),
            "bound to another waypoint"
        );
        assert!(
            matches!(
                at(&s, "192.0.2.31".parse().expect("ip"), 80, "shop"),
                Err(Refusal::Forbidden(_))
            ),
            "bound to no waypoint"
        );
    }

    #[test]
    fn sniffs_http_requests_and_nothing_else() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), StreamProtocol::Http);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM"), StreamProtocol::Http);
        assert_eq!(sniff(b"POS"), StreamProtocol::Http, "a short first read");
        assert_eq!(sniff(b"\x16\x03\x01"), StreamProtocol::Tcp, "TLS");
        assert_eq!(sniff(b"hello"), StreamProtocol::Tcp);
    }
}
