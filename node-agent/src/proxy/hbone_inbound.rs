//! Inbound HBONE (:15008 on each of the pod's addresses): mutual TLS from another agent (or
//! a waypoint), the client's certificate verified against the mesh's trust bundle by the
//! HBONE server, then AuthorizationPolicy with the proven identity, then a connection to the
//! application from inside the pod.
use std::sync::Arc;

use tracing::debug;
use weft_config::authz::l4::L4Request;
use weft_core::hbone::{InboundRequest, Refusal, Upstream};
use weft_core::metrics::{ResponseFlags, Side};
use weft_host::netns_sockets::NetnsSockets;

use super::connect_to_app;
use super::counted::Counted;
use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::transparent::Transparent;
use crate::capture::addresses::PodIps;
use crate::ext_authz::CheckFrom;
use crate::mesh::{Denied, SharedMesh, principal};

#[derive(Clone)]
pub struct HboneInboundContext {
    pub pod: String,
    pub uid: String,
    pub pod_ips: PodIps,
    pub sockets: NetnsSockets,
    /// Set where the application can be reached from the client's address.
    pub transparent: Option<Transparent>,
    pub traffic: Arc<PodTraffic>,
    pub mesh: SharedMesh,
}

pub async fn handle(
    mut request: InboundRequest,
    ctx: HboneInboundContext,
) -> Result<Upstream, Refusal> {
    let client = request.client_address(|| {
        ctx.mesh
            .registry
            .load()
            .is_waypoint_identity(&request.peer.identity.to_string())
    });
    // From here on, `source` is what the agent believes.
    request.source = Some(client);
    let source = std::net::SocketAddr::new(client, 0);
    let mut record = ConnectionRecord::new(
        Direction::Inbound,
        &ctx.pod,
        source,
        request.destination,
        request.local_addr,
    );
    record.protocol = "hbone";
    record.peer_identity = Some(request.peer.identity.to_string());
    record.upstream = Some(request.destination);
    let mut telemetry = crate::telemetry::inbound_hbone(
        &ctx.mesh.telemetry,
        &ctx.mesh.registry.load(),
        &ctx.uid,
        &request,
    );
    let verdict = admit(&request, &ctx).await;
    if let Err(refusal) = &verdict {
        telemetry.failed(ResponseFlags::DENY, format!("{refusal:?}"));
        record.error = Some(format!("{refusal:?}"));
        ctx.mesh.log.push(record);
        return Err(refusal.clone());
    }
    // The application sees the tunnel's source: the client pod (its agent connects from
    // inside it) or the waypoint that carried the request. Not `Forwarded`, which is only
    // the peer's claim.
    let client = request.remote_addr.ip();
    let app = connect_to_app(
        &ctx.sockets,
        ctx.transparent.as_ref(),
        client,
        request.destination,
    );
    match app.await {
        Ok(app) => {
            ctx.mesh.log.push(record);
            let app = Counted::new(app, Direction::Inbound, ctx.traffic.clone());
            Ok(Box::new(
                telemetry.meter(app, Side::Upstream).holding(telemetry),
            ))
        }
        Err(e) => {
            debug!(destination = %request.destination, error = %e, "connecting to the application failed");
            telemetry.failed(ResponseFlags::CONNECT, &e);
            record.error = Some(e.to_string());
            ctx.mesh.log.push(record);
            Err(Refusal::Unavailable(e.to_string()))
        }
    }
}

async fn admit(request: &InboundRequest, ctx: &HboneInboundContext) -> Result<(), Refusal> {
    // A tunnel only leads into this pod: anything else would make the agent an open relay.
    if !ctx.pod_ips.contains(request.destination.ip()) {
        return Err(Refusal::Forbidden(format!(
            "{} is not an address of {}",
            request.destination.ip(),
            ctx.pod
        )));
    }
    let l4 = L4Request {
        principal: Some(principal(&request.peer.identity.to_string())),
        // `handle` replaced the claimed source with the believed one.
        source_ip: request.source,
        destination_ip: request.destination.ip(),
        destination_port: request.destination.port(),
    };
    let from = CheckFrom {
        sockets: ctx.sockets.clone(),
        pod_ip: request.destination.ip(),
    };
    ctx.mesh
        .admit(&ctx.uid, &l4, &from)
        .await
        .map_err(|denied| match denied {
            Denied::Gone => Refusal::Unavailable("the pod is no longer in the registry".into()),
            Denied::Refused(reason) => Refusal::Forbidden(reason),
        })
}
