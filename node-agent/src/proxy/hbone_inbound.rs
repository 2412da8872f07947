//! Inbound HBONE (:15008 on each of the pod's addresses): mutual TLS from another agent (or
//! a waypoint), the client's certificate verified against the mesh's trust bundle by the
//! HBONE server, then AuthorizationPolicy with the proven identity, then a connection to the
//! application from inside the pod. The same-node fast path enters at the same admission
//! ([`admit_and_connect`]), so policy cannot differ between the two.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::debug;
use weft_config::authz::l4::L4Request;
use weft_config::registry::Snapshot;
use weft_core::hbone::{InboundRequest, Refusal, Upstream};
use weft_core::metrics::Side;
use weft_host::netns_sockets::NetnsSockets;

use super::connect_to_app;
use super::connection::{AppStream, ProxiedConnection};
use super::error::Error;
use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::transparent::Transparent;
use crate::capture::addresses::PodIps;
use crate::ext_authz::CheckFrom;
use crate::mesh::{SharedMesh, principal};
use crate::telemetry::ConnectionTelemetry;

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
    let telemetry =
        crate::telemetry::inbound_hbone(&ctx.mesh.telemetry, &snapshot, &ctx.uid, &request);
    let arrival = Arrival {
        peer,
        client,
        // The application sees the tunnel's source: the client pod (its agent connects
        // from inside it) or the waypoint that carried the request. Not `Forwarded`, which
        // is only the peer's claim.
        connects_from: request.remote_addr.ip(),
        destination: request.destination,
        listener: request.local_addr,
        protocol: "hbone",
    };
    match admit_and_connect(&ctx, snapshot, arrival, telemetry).await {
        Ok(app) => Ok(Box::new(app)),
        Err(error) => Err(error.refusal()),
    }
}

/// A connection arriving for the pod from a client whose identity is proven: by its
/// certificate (HBONE), or by this agent, which holds the client pod (the same-node fast
/// path, `super::same_node`).
pub struct Arrival {
    /// The client's SPIFFE id.
    pub peer: String,
    /// The client's address as the agent believes it: AuthorizationPolicy's source IP.
    pub client: IpAddr,
    /// The address the application sees the connection come from (where the pod is set
    /// up for it).
    pub connects_from: IpAddr,
    /// Where in the pod it goes.
    pub destination: SocketAddr,
    /// Where the agent received it, for its record.
    pub listener: SocketAddr,
    /// How it arrived, for its record (`ConnectionRecord::protocol`).
    pub protocol: &'static str,
}

/// The destination's side of a proven connection, the same whichever way it arrived:
/// recorded, admitted (AuthorizationPolicy with the client's identity as principal and its
/// address as source, external authorization), then connected to the application in the
/// pod. Returns the application's end, counted; a refusal or a failure is recorded (and in
/// the metrics) before it is returned.
pub async fn admit_and_connect(
    ctx: &HboneInboundContext,
    snapshot: impl std::ops::Deref<Target = Arc<Snapshot>>,
    arrival: Arrival,
    telemetry: ConnectionTelemetry,
) -> Result<AppStream<TcpStream>, Error> {
    let mut record = ConnectionRecord::new(
        Direction::Inbound,
        &ctx.pod,
        SocketAddr::new(arrival.client, 0),
        arrival.destination,
        arrival.listener,
    );
    record.protocol = arrival.protocol;
    record.peer_identity = Some(arrival.peer.clone());
    record.upstream = Some(arrival.destination);
    // Streams are counted among open connections by whoever carries the client's side (the
    // HBONE server, or the client's outbound connection).
    let connection = ProxiedConnection::new(
        record,
        telemetry,
        ctx.mesh.log.clone(),
        ctx.traffic.clone(),
        None,
    );
    if let Err(error) = admit(&arrival, &snapshot, ctx).await {
        debug!(destination = %arrival.destination, %error, "refused");
        connection.fail(&error);
        return Err(error);
    }
    drop(snapshot);
    let app = connect_to_app(
        &ctx.sockets,
        ctx.transparent.as_ref(),
        arrival.connects_from,
        arrival.destination,
    )
    .await
    .map_err(|source| Error::Connect {
        address: arrival.destination,
        source,
    });
    match app {
        Ok(app) => Ok(connection.carry(app, Side::Upstream)),
        Err(error) => {
            debug!(destination = %arrival.destination, %error, "connecting to the application failed");
            connection.fail(&error);
            Err(error)
        }
    }
}

async fn admit(
    arrival: &Arrival,
    snapshot: &Snapshot,
    ctx: &HboneInboundContext,
) -> Result<(), Error> {
    let destination = arrival.destination;
    // A tunnel only leads into this pod: anything else would make the agent an open relay.
    if !ctx.pod_ips.contains(destination.ip()) {
        return Err(Error::Denied(format!(
            "{} is not an address of {}",
            destination.ip(),
            ctx.pod
        )));
    }
    let l4 = L4Request {
        principal: Some(principal(&arrival.peer)),
        source_ip: Some(arrival.client),
        destination_ip: destination.ip(),
        destination_port: destination.port(),
    };
    let from = CheckFrom {
        sockets: ctx.sockets.clone(),
        pod_ip: destination.ip(),
    };
    ctx.mesh.admit(snapshot, &ctx.uid, &l4, &from).await
}
