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
    let target = target(&snapshot, &ctx, request.destination)?;
    let namespace = request.peer.identity.namespace().to_string();
    let principal = request.peer.identity.to_string();
    // The client's address is the tunnel's source (the source agent dials from inside the
    // client pod); `Forwarded` is believed only from another waypoint, never from a
    // client, which could name any address to pass `ipBlocks`.
    let source_ip = Some(request.client_address(|| snapshot.is_waypoint_identity(&principal)));
    let workload = source_ip.and_then(|ip| snapshot.workload_by_ip(ip));
    // The workload's labels count only if the certificate is that workload's own.
    let workload = workload.filter(|w| w.identity == principal);
    let source = Source {
        namespace: Some(namespace),
        labels: workload.map(|w| w.labels.clone()).unwrap_or_default(),
        principal: Some(principal),
    };
    let downstream = Downstream {
        target,
        source,
        source_ip,
        destination: request.destination,
        secure: false,
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
fn target(
    snapshot: &Snapshot,
    ctx: &WaypointContext,
    destination: SocketAddr,
) -> Result<Target, Refusal> {
    if let Some(service) = snapshot.service_by_vip(destination.ip()) {
        let bound = snapshot
            .service_waypoint(service)
            .is_some_and(|w| ctx.is_me(w));
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
            .is_some_and(|w| ctx.is_me(w));
        if bound {
            return Ok(Target::Workload {
                workload: workload.clone(),
                address: destination,
            });
        }
    }
    Err(Refusal::Forbidden(format!(
        "{destination} is not a service or workload bound to this waypoint"
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

    #[test]
    fn sniffs_http_requests_and_nothing_else() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), StreamProtocol::Http);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM"), StreamProtocol::Http);
        assert_eq!(sniff(b"POS"), StreamProtocol::Http, "a short first read");
        assert_eq!(sniff(b"\x16\x03\x01"), StreamProtocol::Tcp, "TLS");
        assert_eq!(sniff(b"hello"), StreamProtocol::Tcp);
    }
}
