//! Inbound plaintext: connections to the pod's IPs that the pod's sk_lookup program
//! delivered to :15006 (`0.0.0.0:15006` for IPv4, `[::]:15006` for IPv6), from clients
//! outside the mesh. The accepted socket's local
//! address is the original destination. PeerAuthentication STRICT refuses them; otherwise
//! AuthorizationPolicy decides with what is known without a certificate (the source IP).
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info_span, warn};
use weft_config::authz::l4::L4Request;
use weft_config::registry::Snapshot;
use weft_core::metrics::Side;
use weft_host::netns_sockets::NetnsSockets;

use super::connection::ProxiedConnection;
use super::error::Error;
use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::transparent::Transparent;
use super::{OpenGuard, connect_to_app};
use crate::ext_authz::CheckFrom;
use crate::mesh::SharedMesh;

#[derive(Clone)]
pub struct InboundContext {
    pub pod: String,
    pub uid: String,
    pub sockets: NetnsSockets,
    /// Set where the application can be reached from the client's address.
    pub transparent: Option<Transparent>,
    pub traffic: Arc<PodTraffic>,
    pub mesh: SharedMesh,
}

pub async fn serve(listener: TcpListener, ctx: InboundContext) {
    let listener_addr = listener.local_addr().ok();
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(pod = %ctx.pod, error = %e, "inbound accept failed");
                continue;
            }
        };
        let ctx = ctx.clone();
        let span = info_span!("inbound", pod = %ctx.pod, client = %peer);
        let open = ctx.mesh.open.track();
        tokio::spawn(handle(client, peer, listener_addr, ctx, open).instrument(span));
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    listener: Option<SocketAddr>,
    ctx: InboundContext,
    open: OpenGuard,
) {
    let Ok(dst) = client.local_addr() else {
        return;
    };
    // One view of the registry for the whole connection: its labels and its admission.
    let snapshot = ctx.mesh.registry.load();
    let telemetry =
        crate::telemetry::inbound_plaintext(&ctx.mesh.telemetry, &snapshot, &ctx.uid, peer, dst);
    let mut record = ConnectionRecord::new(
        Direction::Inbound,
        &ctx.pod,
        peer,
        dst,
        listener.unwrap_or(dst),
    );
    record.upstream = Some(dst);
    let connection = ProxiedConnection::new(
        record,
        telemetry,
        ctx.mesh.log.clone(),
        ctx.traffic.clone(),
        Some(open),
    );
    if let Err(error) = admit(&ctx, &snapshot, peer, dst).await {
        debug!(%dst, %error, "plaintext connection refused");
        connection.fail(&error);
        return;
    }
    drop(snapshot);
    // The application listens in the same namespace; sk_lookup leaves the agent's own
    // connections alone (from the pod's address, or filed as transparent), so this does
    // not loop.
    let app = connect_to_app(&ctx.sockets, ctx.transparent.as_ref(), peer.ip(), dst)
        .await
        .map_err(|source| Error::Connect {
            address: dst,
            source,
        });
    match app {
        Err(error) => {
            debug!(%dst, %error, "connecting to the application failed");
            connection.fail(&error);
        }
        Ok(app) => {
            let mut app = connection.carry(app, Side::Upstream);
            let mut client = client;
            match weft_core::io::splice(&mut client, &mut app).await {
                Ok((up, down)) => debug!(%dst, up, down, "inbound connection closed"),
                Err(error) => debug!(%dst, %error, "inbound connection ended with an error"),
            }
        }
    }
}

/// PeerAuthentication, then AuthorizationPolicy, for a connection without a certificate.
async fn admit(
    ctx: &InboundContext,
    snapshot: &Snapshot,
    peer: SocketAddr,
    dst: SocketAddr,
) -> Result<(), Error> {
    let request = L4Request {
        principal: None,
        source_ip: Some(peer.ip()),
        destination_ip: dst.ip(),
        destination_port: dst.port(),
    };
    let from = CheckFrom {
        sockets: ctx.sockets.clone(),
        pod_ip: dst.ip(),
    };
    ctx.mesh.admit(snapshot, &ctx.uid, &request, &from).await
}
