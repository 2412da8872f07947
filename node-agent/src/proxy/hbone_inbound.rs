//! Inbound HBONE (:15008 on each of the pod's addresses): mutual TLS from another agent (or
//! a waypoint), the client's certificate verified against the mesh's trust bundle by the
//! HBONE server, then AuthorizationPolicy with the proven identity, then a connection to the
//! application from inside the pod.
use std::sync::Arc;

use tracing::debug;
use weft_config::authz::l4::L4Request;
use weft_config::registry::Snapshot;
use weft_core::hbone::{InboundRequest, Refusal, Upstream};
use weft_core::metrics::Side;
use weft_host::netns_sockets::NetnsSockets;

use super::connect_to_app;
use super::connection::ProxiedConnection;
use super::error::Error;
use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::transparent::Transparent;
use crate::capture::addresses::PodIps;
use crate::ext_authz::CheckFrom;
use crate::mesh::{SharedMesh, principal};

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
    // One view of the registry for the whole connection: who the client is, its labels,
    // its admission.
    let snapshot = ctx.mesh.registry.load();
    let peer = request.peer.identity.to_string();
    let client = request.client_address(|| snapshot.is_waypoint_identity(&peer));
    // From here on, `source` is what the agent believes.
    request.source = Some(client);
    let mut record = ConnectionRecord::new(
        Direction::Inbound,
        &ctx.pod,
        std::net::SocketAddr::new(client, 0),
        request.destination,
        request.local_addr,
    );
    record.protocol = "hbone";
    record.peer_identity = Some(peer);
    record.upstream = Some(request.destination);
    let telemetry =
        crate::telemetry::inbound_hbone(&ctx.mesh.telemetry, &snapshot, &ctx.uid, &request);
    // HBONE streams are counted among open connections by the HBONE server.
    let connection = ProxiedConnection::new(
        record,
        telemetry,
        ctx.mesh.log.clone(),
        ctx.traffic.clone(),
        None,
    );
    if let Err(error) = admit(&request, &snapshot, &ctx).await {
        debug!(destination = %request.destination, %error, "tunnel refused");
        let refusal = error.refusal();
        connection.fail(&error);
        return Err(refusal);
    }
    drop(snapshot);
    // The application sees the tunnel's source: the client pod (its agent connects from
    // inside it) or the waypoint that carried the request. Not `Forwarded`, which is only
    // the peer's claim.
    let app = connect_to_app(
        &ctx.sockets,
        ctx.transparent.as_ref(),
        request.remote_addr.ip(),
        request.destination,
    )
    .await
    .map_err(|source| Error::Connect {
        address: request.destination,
        source,
    });
    match app {
        Ok(app) => Ok(Box::new(connection.carry(app, Side::Upstream))),
        Err(error) => {
            debug!(destination = %request.destination, %error, "connecting to the application failed");
            let refusal = error.refusal();
            connection.fail(&error);
            Err(refusal)
        }
    }
}

async fn admit(
    request: &InboundRequest,
    snapshot: &Snapshot,
    ctx: &HboneInboundContext,
) -> Result<(), Error> {
    // A tunnel only leads into this pod: anything else would make the agent an open relay.
    if !ctx.pod_ips.contains(request.destination.ip()) {
        return Err(Error::Denied(format!(
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
    ctx.mesh.admit(snapshot, &ctx.uid, &l4, &from).await
}
