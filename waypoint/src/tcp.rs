//! Streams that are not HTTP: the AuthorizationPolicies attached to the waypoint or the
//! service decide with what a TCP proxy knows (`http::authz::authorize_stream`: CUSTOM
//! with a gRPC provider's network check, AUDIT, then Istio's rule: an ALLOW rule that needs
//! HTTP attributes matches nothing, a DENY rule ignores them and matches more), then a
//! `tls` route (on a TLS or HTTPS port, by the SNI of the ClientHello, read first and
//! then passed on untouched) or a `tcp` route (or the service itself) picks the
//! destination, the cluster's balancer the endpoint, and the bytes are spliced, counted in
//! Istio's TCP metrics (`istio_tcp_connections_opened_total`, `_closed_total`,
//! `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`, `reporter="waypoint"`,
//! or `source` at a gateway).
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};
use weft_core::metrics::{ResponseFlags, Side};

use crate::client_hello::read_hello;
use crate::context::WaypointContext;
use crate::downstream::{Downstream, GatewayRoutes, Target};
use crate::forward::cluster::{ClusterKey, Here};
use crate::forward::connections::{ConnectionLimits, Transport};
use crate::forward::endpoints::{destination_port, resolve};
use crate::forward::idle::{Activity, Watched};
use crate::prefixed::Prefixed;
use crate::route::CompiledRoutes;
use crate::tcp_log::StreamLog;
use crate::upstream::balance::HashInput;
use crate::upstream::outlier::Outcome;
use crate::upstream::policy::PoolLimits;

/// The stream's destination: its endpoint, how to reach it, its cluster, the Service it
/// belongs to, and the cluster's name (`outbound|port|subset|host`).
type Chosen = (
    std::net::SocketAddr,
    Transport,
    Option<Arc<crate::forward::cluster::Cluster>>,
    Option<Arc<weft_config::registry::model::Service>>,
    Option<String>,
);

/// A stream that went nowhere, counted opened and closed with why, and logged.
fn failed(
    ctx: &WaypointContext,
    downstream: &Downstream,
    flags: ResponseFlags,
    logged: Option<StreamLog>,
) {
    let labels = crate::http::connection_labels(ctx, downstream, (None, None));
    let mut recorder = ctx.metrics.tcp_opened(&labels);
    recorder.set_response_flags(flags);
    if let Some(logged) = logged {
        logged.finish(flags, 0, 0);
    }
}

/// The route's destination, its endpoint and its cluster; `None` when there is none.
async fn choose(
    ctx: &Arc<WaypointContext>,
    snapshot: &weft_config::registry::Snapshot,
    plan: &crate::route::TcpRoutePlan,
    request_port: u16,
    downstream: &Downstream,
) -> Option<Chosen> {
    let Some(destination) = plan.pick(fastrand::u32(..)) else {
        debug!("tcp route without destinations");
        return None;
    };
    if destination.unresolved {
        debug!("tcp route's backend cannot be used (see the route's status): connection refused");
        return None;
    }
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
    let here = Here {
        snapshot,
        proxy: &ctx.whereabouts,
    };
    let (chosen, _pick) = cluster.choose(&found, &[], false, &input, &here)?;
    let service = snapshot.service_by_host(&destination.host).cloned();
    let name = format!(
        "outbound|{port}|{}|{}",
        key.subset.as_deref().unwrap_or_default(),
        key.host
    );
    Some((
        chosen.address,
        chosen.transport.clone(),
        Some(cluster),
        service,
        Some(name),
    ))
}

/// How long a client routed by `tls` rules has to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes of the service or ServiceEntry host the stream is for, and its port.
fn host_routes(
    ctx: &WaypointContext,
    snapshot: &weft_config::registry::Snapshot,
    target: &Target,
) -> Option<(Arc<CompiledRoutes>, u16)> {
    match target {
        Target::Service { service, port } => Some((ctx.routes(snapshot, &service.hostname), *port)),
        Target::EntryHost { host, port } => Some((ctx.routes(snapshot, &host.host), *port)),
        Target::Workload { .. } | Target::Gateway(_) => None,
    }
}

pub async fn forward<I>(mut io: I, downstream: Downstream, ctx: Arc<WaypointContext>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snapshot = ctx.registry.load();
    let mut logged = crate::tcp_log::start(&ctx, &downstream);
    if let Err(reason) = crate::http::authz::authorize_stream(&ctx, &snapshot, &downstream).await {
        // Closing the tunnel is the answer a TCP client gets, as from Envoy's RBAC filter
        // (which has no response flag).
        info!(%reason, peer = downstream.source.principal.as_deref().unwrap_or_default(), "tcp stream denied");
        failed(&ctx, &downstream, ResponseFlags::NONE, logged.take());
        return;
    }
    let routes = host_routes(&ctx, &snapshot, &downstream.target);
    // A TLS port whose `tls` rules apply to this client: the ClientHello's SNI chooses the
    // rule, and its bytes go on to the destination as they came.
    let mut head = Vec::new();
    let mut by_sni = None;
    if let Some((routes, port)) = &routes
        && downstream.target.declares_tls()
        && routes.routes_tls(*port, &downstream.source)
    {
        let Some((hello, sni)) = read_hello(&mut io, HELLO_TIMEOUT).await else {
            debug!("no ClientHello on a port routed by tls rules; closed");
            failed(&ctx, &downstream, ResponseFlags::NO_ROUTE, logged.take());
            return;
        };
        head = hello;
        let plan = routes.tls_route(
            *port,
            Some(downstream.destination.ip()),
            &downstream.source,
            sni.as_deref(),
        );
        let Some(plan) = plan else {
            debug!(
                sni = sni.as_deref().unwrap_or_default(),
                "no tls route for the SNI; closed"
            );
            failed(&ctx, &downstream, ResponseFlags::NO_ROUTE, logged.take());
            return;
        };
        by_sni = Some(plan.clone());
    }
    let io = Prefixed::new(head, io);
    let (address, transport, cluster, service, cluster_name) = match (&downstream.target, &routes) {
        (Target::Workload { workload, address }, _) => {
            let transport = match workload.identity.parse() {
                Ok(identity) if workload.in_mesh => Transport::Hbone { identity },
                _ => Transport::Plain,
            };
            (*address, transport, None, None, None)
        }
        (Target::Gateway(gateway), _) => {
            let GatewayRoutes::Tcp(Some(plan)) = &gateway.routes else {
                debug!(server = %gateway.server, "no tcp route bound; connection closed");
                failed(&ctx, &downstream, ResponseFlags::NO_ROUTE, logged.take());
                return;
            };
            match choose(&ctx, &snapshot, plan, gateway.port, &downstream).await {
                Some(chosen) => chosen,
                None => {
                    failed(
                        &ctx,
                        &downstream,
                        ResponseFlags::NO_HEALTHY_UPSTREAM,
                        logged.take(),
                    );
                    return;
                }
            }
        }
        // `host_routes` has the routes of every service and entry host.
        (Target::Service { .. } | Target::EntryHost { .. }, None) => {
            failed(&ctx, &downstream, ResponseFlags::NO_ROUTE, logged.take());
            return;
        }
        (Target::Service { .. } | Target::EntryHost { .. }, Some((routes, port))) => {
            let plan = match &by_sni {
                Some(plan) => plan,
                None => {
                    routes.tcp_route(*port, Some(downstream.destination.ip()), &downstream.source)
                }
            };
            match choose(&ctx, &snapshot, plan, *port, &downstream).await {
                Some(chosen) => chosen,
                None => {
                    failed(
                        &ctx,
                        &downstream,
                        ResponseFlags::NO_HEALTHY_UPSTREAM,
                        logged.take(),
                    );
                    return;
                }
            }
        }
    };
    let pool = cluster
        .as_ref()
        .map_or_else(PoolLimits::default, |c| c.policy.connection_pool);
    let upstream = ctx
        .connections
        .open_stream(address, &transport, ConnectionLimits::of(&pool))
        .await;
    let upstream = match upstream {
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
            failed(
                &ctx,
                &downstream,
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                logged.take(),
            );
            return;
        }
    };
    if let Some(logged) = &mut logged {
        logged.upstream(&ctx, address, cluster_name);
    }
    let labels =
        crate::http::connection_labels(&ctx, &downstream, (Some(address), service.as_deref()));
    let recorder = ctx.metrics.tcp_opened(&labels);
    // What is read from the client was received, what is written to it sent.
    let mut io = recorder.meter(io, Side::Downstream);
    // Every byte either way passes the upstream side: its activity is the stream's.
    let activity = Activity::new();
    let mut upstream = Watched::new(upstream, activity.clone());
    let idle = async {
        match pool.tcp_idle_timeout {
            Some(timeout) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    // Bytes from the client, bytes to it; not known when the stream ends otherwise.
    let mut carried = (0, 0);
    tokio::select! {
        spliced = weft_core::io::splice(&mut io, &mut upstream) => match spliced {
            Ok((sent, received)) => {
                carried = (sent, received);
                debug!(%address, sent, received, "tcp stream done");
            }
            Err(error) => debug!(%address, %error, "tcp stream ended with an error"),
        },
        () = idle => debug!(%address, timeout = ?pool.tcp_idle_timeout, "tcp stream closed: idle timeout"),
    }
    drop(recorder);
    if let Some(logged) = logged {
        logged.finish(ResponseFlags::NONE, carried.0, carried.1);
    }
}
