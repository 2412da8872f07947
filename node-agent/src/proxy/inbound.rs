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
use weft_core::metrics::{ResponseFlags, Side};
use weft_host::netns_sockets::NetnsSockets;

use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::transparent::Transparent;
use super::{connect_to_app, splice};
use crate::ext_authz::CheckFrom;
use crate::mesh::{Denied, SharedMesh};

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
        tokio::spawn(
            async move {
                handle(client, peer, listener_addr, ctx).await;
                drop(open);
            }
            .instrument(span),
        );
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    listener: Option<SocketAddr>,
    ctx: InboundContext,
) {
    let Ok(dst) = client.local_addr() else {
        return;
    };
    let mut record = ConnectionRecord::new(
        Direction::Inbound,
        &ctx.pod,
        peer,
        dst,
        listener.unwrap_or(dst),
    );
    record.upstream = Some(dst);
    let mut telemetry = crate::telemetry::inbound_plaintext(
        &ctx.mesh.telemetry,
        &ctx.mesh.registry.load(),
        &ctx.uid,
        peer,
        dst,
    );
    if let Err(reason) = admit(&ctx, peer, dst).await {
        debug!(%dst, reason, "plaintext connection refused");
        telemetry.failed(ResponseFlags::DENY, &reason);
        record.error = Some(reason);
        ctx.mesh.log.push(record);
        return;
    }
    // The application listens in the same namespace; sk_lookup leaves the agent's own
    // connections alone (from the pod's address, or filed as transparent), so this does
    // not loop.
    match connect_to_app(&ctx.sockets, ctx.transparent.as_ref(), peer.ip(), dst).await {
        Ok(app) => {
            ctx.mesh.log.push(record);
            let client = telemetry.meter(client, Side::Downstream);
            match splice(client, app).await {
                // From the application's side: it received `up`, sent `down`.
                Ok((up, down)) => {
                    ctx.traffic.record(Direction::Inbound, down, up);
                    debug!(%dst, up, down, "inbound connection closed");
                }
                Err(e) => debug!(%dst, error = %e, "inbound connection ended"),
            }
        }
        Err(e) => {
            debug!(%dst, error = %e, "connecting to the application failed");
            telemetry.failed(ResponseFlags::CONNECT, &e);
            record.error = Some(e.to_string());
            ctx.mesh.log.push(record);
        }
    }
}

/// PeerAuthentication, then AuthorizationPolicy, for a connection without a certificate.
async fn admit(ctx: &InboundContext, peer: SocketAddr, dst: SocketAddr) -> Result<(), String> {
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
    ctx.mesh
        .admit(&ctx.uid, &request, &from)
        .await
        .map_err(|denied| match denied {
            Denied::Gone => "the pod is no longer in the registry".to_string(),
            Denied::Refused(reason) => reason,
        })
}
