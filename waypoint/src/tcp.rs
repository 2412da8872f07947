//! Streams that are not HTTP: the AuthorizationPolicies attached to the waypoint or the
//! service decide with what a TCP proxy knows (`http::authz::authorize_stream`: CUSTOM
//! with a gRPC provider's network check, AUDIT, then Istio's rule: an ALLOW rule that needs
//! HTTP attributes matches nothing, a DENY rule ignores them and matches more), then a
//! `tcp` route (or the service itself) picks the destination, the cluster's balancer the
//! endpoint, and the bytes are spliced.
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::context::WaypointContext;
use crate::downstream::{Downstream, GatewayRoutes, Target};
use crate::forward::cluster::ClusterKey;
use crate::forward::connections::Transport;
use crate::forward::endpoints::{destination_port, resolve};
use crate::upstream::balance::HashInput;
use crate::upstream::outlier::Outcome;

/// The route's destination, its endpoint and its cluster; `None` when there is none.
async fn choose(
    ctx: &Arc<WaypointContext>,
    snapshot: &weft_config::registry::Snapshot,
    plan: &crate::route::TcpRoutePlan,
    request_port: u16,
    downstream: &Downstream,
) -> Option<(
    std::net::SocketAddr,
    Transport,
    Option<Arc<crate::forward::cluster::Cluster>>,
)> {
    let Some(destination) = plan.pick(fastrand::u32(..)) else {
        debug!("tcp route without destinations");
        return None;
    };
    let port = destination_port(snapshot, &destination.host, destination.port, request_port);
    let key = ClusterKey {
        host: destination.host.clone(),
        subset: destination.subset.clone(),
        port,
    };
    let found = match resolve(
        snapshot,
        &ctx.dns,
        &ctx.namespace,
        (&key.host, key.subset.as_deref(), port),
        downstream.destination,
        ctx.reach,
    )
    .await
    {
        Ok(found) => found,
        Err(reason) => {
            debug!(%reason, "no endpoint for the stream");
            return None;
        }
    };
    let cluster = ctx.clusters.get(snapshot, &key);
    let found = cluster.originate(found, snapshot, &ctx.namespace).ok()?;
    let input = HashInput {
        source_ip: downstream.source_ip,
        ..HashInput::default()
    };
    let (chosen, _pick) = cluster.choose(&found, &[], false, &input)?;
    Some((chosen.address, chosen.transport.clone(), Some(cluster)))
}

pub async fn forward<I>(mut io: I, downstream: Downstream, ctx: Arc<WaypointContext>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snapshot = ctx.registry.load();
    if let Err(reason) = crate::http::authz::authorize_stream(&ctx, &snapshot, &downstream).await {
        // Closing the tunnel is the answer a TCP client gets, as from Envoy's RBAC filter.
        info!(%reason, peer = downstream.source.principal.as_deref().unwrap_or_default(), "tcp stream denied");
        return;
    }
    let (address, transport, cluster) = match &downstream.target {
        Target::Workload { workload, address } => {
            let transport = match workload.identity.parse() {
                Ok(identity) if workload.in_mesh => Transport::Hbone { identity },
                _ => Transport::Plain,
            };
            (*address, transport, None)
        }
        Target::Service { service, port } => {
            let routes = ctx.routes(&snapshot, &service.hostname);
            let plan =
                routes.tcp_route(*port, Some(downstream.destination.ip()), &downstream.source);
            match choose(&ctx, &snapshot, plan, *port, &downstream).await {
                Some(chosen) => chosen,
                None => return,
            }
        }
        Target::EntryHost { host, port } => {
            let routes = ctx.routes(&snapshot, &host.host);
            let plan =
                routes.tcp_route(*port, Some(downstream.destination.ip()), &downstream.source);
            match choose(&ctx, &snapshot, plan, *port, &downstream).await {
                Some(chosen) => chosen,
                None => return,
            }
        }
        Target::Gateway(gateway) => {
            let GatewayRoutes::Tcp(Some(plan)) = &gateway.routes else {
                debug!(server = %gateway.server, "no tcp route bound; connection closed");
                return;
            };
            match choose(&ctx, &snapshot, plan, gateway.port, &downstream).await {
                Some(chosen) => chosen,
                None => return,
            }
        }
    };
    let connect_timeout = cluster
        .as_ref()
        .map(|c| c.policy.connection_pool.connect_timeout);
    let upstream = ctx
        .connections
        .open_stream(address, &transport, connect_timeout)
        .await;
    let mut upstream = match upstream {
        Ok(upstream) => {
            if let Some(outlier) = cluster.as_ref().and_then(|c| c.outlier.as_ref()) {
                outlier.record(address, Outcome::Connected, Instant::now());
            }
            upstream
        }
        Err(error) => {
            if let Some(outlier) = cluster.as_ref().and_then(|c| c.outlier.as_ref()) {
                outlier.record(address, Outcome::ConnectFailed, Instant::now());
            }
            debug!(%error, "connecting the stream upstream failed");
            return;
        }
    };
    match weft_core::io::splice(&mut io, &mut upstream).await {
        Ok((sent, received)) => debug!(%address, sent, received, "tcp stream done"),
        Err(error) => debug!(%address, %error, "tcp stream ended with an error"),
    }
}
