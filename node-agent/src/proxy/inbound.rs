//! Inbound plaintext: connections to the pod's IPs that the pod's sk_lookup program
//! delivered to :15006. The accepted socket's local address is the original destination.
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};
use weft_core::host::netns_sockets::NetnsSockets;

use std::sync::Arc;

use super::records::{ConnectionLog, ConnectionRecord, Direction, PodTraffic};
use super::{connect_from_pod, splice};

#[derive(Clone)]
pub struct InboundContext {
    pub pod: String,
    pub sockets: NetnsSockets,
    pub log: ConnectionLog,
    pub traffic: Arc<PodTraffic>,
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
        tokio::spawn(
            async move {
                let Ok(dst) = client.local_addr() else {
                    return;
                };
                let mut record = ConnectionRecord::new(
                    Direction::Inbound,
                    &ctx.pod,
                    peer,
                    dst,
                    listener_addr.unwrap_or(dst),
                );
                // The application listens in the same namespace; a connection from the pod's
                // own address is left alone by sk_lookup, so this does not loop.
                match connect_from_pod(&ctx.sockets, dst).await {
                    Ok(app) => {
                        ctx.log.push(record);
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
                        record.error = Some(e.to_string());
                        ctx.log.push(record);
                    }
                }
            }
            .instrument(span),
        );
    }
}
