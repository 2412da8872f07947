//! Outbound: connections the pod's `connect()` hook sent to `<pod IP>:15001` (IPv4) or
//! `[<pod IPv6>]:15001`, which arrive on the listener of their family. The original
//! destination comes from the kernel's ORIG_DST_BY_CLIENT map, filled when the connection
//! was established and before `accept()` can return it; the registry decides whether it
//! goes over HBONE (a destination in the mesh) or straight through.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info_span, warn};
use weft_core::hbone::ConnectRequest;
use weft_core::identity::Identity;
use weft_core::metrics::Side;
use weft_core::telemetry::TraceContext;
use weft_ebpf_common::{AF_INET, AF_INET6, ClientKey, OrigDst};
use weft_host::netns_sockets::NetnsSockets;

use super::connection::ProxiedConnection;
use super::error::Error;
use super::records::{ConnectionRecord, Direction, PodTraffic};
use super::resolve::{Client, NextHop, pick, resolve_outbound};
use super::same_node::{self, LocalPods};
use super::{OpenGuard, connect_from_pod};
use crate::capture::addresses::PodIps;
use crate::mesh::SharedMesh;

/// Shared by the pod's proxy tasks; the lock only spans one lookup-and-delete.
pub type OrigDstMap = Arc<Mutex<BpfHashMap<MapData, ClientKey, OrigDst>>>;

/// Reads and removes the original destination the kernel filed for a client.
pub fn take_original_destination(map: &OrigDstMap, key: &ClientKey) -> Option<SocketAddr> {
    let mut map = weft_core::sync::lock(map);
    let orig = map.get(key, 0).ok()?;
    let _ = map.remove(key);
    original_destination(&orig)
}

/// What the outbound proxy of one pod needs.
#[derive(Clone)]
pub struct OutboundContext {
    pub pod: String,
    pub pod_id: u64,
    pub pod_ips: PodIps,
    pub identity: Identity,
    pub sockets: NetnsSockets,
    pub orig_dst: OrigDstMap,
    pub traffic: Arc<PodTraffic>,
    pub mesh: SharedMesh,
    /// The pods of this agent, which its connections reach without HBONE.
    pub same_node: Arc<LocalPods>,
}

pub fn original_destination(orig: &OrigDst) -> Option<SocketAddr> {
    let ip = match orig.family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(u32::from_be(orig.addr[0]))),
        AF_INET6 => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip(orig.addr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, orig.port))
}

pub async fn serve(listener: TcpListener, ctx: OutboundContext) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(pod = %ctx.pod, error = %e, "outbound accept failed");
                continue;
            }
        };
        let ctx = ctx.clone();
        let span = info_span!("outbound", pod = %ctx.pod, client = %peer);
        let open = ctx.mesh.open.track();
        tokio::spawn(handle(client, peer, ctx, open).instrument(span));
    }
}

/// The key sock_ops filed a connection's original destination under: the listener's
/// family is the original destination's.
pub fn client_key(pod_id: u64, peer: SocketAddr) -> ClientKey {
    ClientKey {
        pod: pod_id,
        port: u32::from(peer.port()),
        family: u32::from(if peer.is_ipv4() { AF_INET } else { AF_INET6 }),
    }
}

async fn handle(client: TcpStream, peer: SocketAddr, ctx: OutboundContext, open: OpenGuard) {
    // Only the pod's own captured connects come here (sk_lookup drops the rest); anything
    // else could claim a pending connect's original destination and the pod's identity.
    if !peer.ip().is_loopback() && !ctx.pod_ips.contains(peer.ip()) {
        warn!("a connection to the outbound listener from outside the pod; closing it");
        return;
    }
    let key = client_key(ctx.pod_id, peer);
    let Some(dst) = take_original_destination(&ctx.orig_dst, &key) else {
        warn!("{}; closing it", Error::NoOriginalDestination);
        return;
    };
    // Where the client arrived (sk_lookup delivers `<pod IP>:15001` to this listener).
    let listener = client.local_addr().unwrap_or(peer);
    // One view of the registry for the whole connection: where it goes, and its labels.
    let snapshot = ctx.mesh.registry.load();
    let (namespace, name) = ctx.pod.split_once('/').unwrap_or_default();
    let source_pod = Client {
        namespace,
        locality: snapshot
            .workload(namespace, name)
            .map(|w| snapshot.workload_locality(w))
            .unwrap_or_default(),
    };
    let hop = resolve_outbound(&snapshot, &source_pod, dst, pick);
    let source = ctx.pod_ips.facing(dst.ip());
    let telemetry = crate::telemetry::outbound(&ctx.mesh.telemetry, &snapshot, source, dst, &hop);
    drop(snapshot);
    let mut connection = ProxiedConnection::new(
        ConnectionRecord::new(Direction::Outbound, &ctx.pod, peer, dst, listener),
        telemetry,
        ctx.mesh.log.clone(),
        ctx.traffic.clone(),
        Some(open),
    );
    let server = connect(&ctx, &mut connection, hop).await;
    match server {
        Err(error) => {
            debug!(%dst, %error, "outbound connection failed");
            connection.fail(&error);
        }
        Ok(mut server) => {
            let mut client = connection.carry(client, Side::Downstream);
            match weft_core::io::splice(&mut client, &mut server).await {
                Ok((sent, received)) => debug!(%dst, sent, received, "outbound connection closed"),
                Err(error) => debug!(%dst, %error, "outbound connection ended with an error"),
            }
        }
    }
}

/// Bytes both ways with the destination: a TCP stream, or an HBONE tunnel.
type Server = Box<dyn weft_core::hbone::UpstreamIo>;

/// Connects where `hop` says, noting on the connection's record where it went.
async fn connect(
    ctx: &OutboundContext,
    connection: &mut ProxiedConnection,
    hop: NextHop,
) -> Result<Server, Error> {
    // A pod of this agent: its side runs here, without a tunnel.
    if let NextHop::Hbone { identity, .. } = &hop
        && let Some(destination) = ctx.same_node.destination(&hop)
    {
        let client = (&ctx.pod_ips, &ctx.identity);
        let app = same_node::connect(client, connection, destination, identity).await?;
        return Ok(Box::new(app));
    }
    match hop {
        NextHop::Passthrough(target) => {
            connection.record_mut().upstream = Some(target);
            let server = connect_from_pod(&ctx.sockets, target)
                .await
                .map_err(|source| Error::Connect {
                    address: target,
                    source,
                })?;
            Ok(Box::new(server))
        }
        NextHop::Refuse(reason) => Err(Error::NoRoute(reason)),
        NextHop::BlackHole(dst) => {
            // Istio logs what its BlackHoleCluster swallows; so does the agent, with who.
            warn!(
                source = %ctx.pod,
                destination = %dst,
                "BlackHoleCluster: outboundTrafficPolicy REGISTRY_ONLY and the destination is no pod, Service or ServiceEntry port the registry knows; connection refused"
            );
            Err(Error::BlackHole(dst))
        }
        NextHop::Resolve { host, port } => {
            let addresses = ctx
                .mesh
                .dns
                .lookup(&host)
                .await
                .map_err(|e| Error::Resolve {
                    host: host.clone(),
                    reason: e.to_string(),
                })?;
            // The pod's family first; any address when it has none of it.
            let family = addresses
                .iter()
                .filter(|ip| match ip {
                    IpAddr::V4(_) => ctx.pod_ips.v4.is_some(),
                    IpAddr::V6(_) => ctx.pod_ips.v6.is_some(),
                })
                .copied()
                .collect::<Vec<_>>();
            let candidates = if family.is_empty() { addresses } else { family };
            let ip = candidates[pick(candidates.len()) % candidates.len()];
            let target = std::net::SocketAddr::new(ip, port);
            connection.record_mut().upstream = Some(target);
            let server = connect_from_pod(&ctx.sockets, target)
                .await
                .map_err(|source| Error::Connect {
                    address: target,
                    source,
                })?;
            Ok(Box::new(server))
        }
        NextHop::Hbone {
            identity,
            hbone_address,
            target,
        } => {
            let record = connection.record_mut();
            record.protocol = "hbone";
            record.upstream = Some(hbone_address);
            let trace = connection.trace_context();
            let stream = open_hbone(ctx, &identity, hbone_address, target, trace).await?;
            connection.record_mut().peer_identity = Some(stream.info().peer.identity.to_string());
            Ok(Box::new(stream))
        }
    }
}

async fn open_hbone(
    ctx: &OutboundContext,
    identity: &str,
    hbone_address: SocketAddr,
    target: SocketAddr,
    trace: TraceContext,
) -> Result<weft_core::hbone::HboneStream, Error> {
    let destination: Identity = identity.parse().map_err(|e| Error::Identity {
        identity: identity.to_string(),
        reason: format!("{e}"),
    })?;
    let request = ConnectRequest {
        source: ctx.identity.clone(),
        destination,
        hbone_address,
        target,
        // The pod's address on the tunnel's side (the same family as the tunnel).
        source_ip: Some(ctx.pod_ips.facing(hbone_address.ip())),
        baggage: None,
        trace: Some(trace),
    };
    let sockets = ctx.sockets.clone();
    ctx.mesh
        .pool
        .connect(request, move |address| {
            let sockets = sockets.clone();
            async move { connect_from_pod(&sockets, address).await }
        })
        .await
        .map_err(|e| Error::Hbone {
            address: hbone_address,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kernel_addresses() {
        let v4 = OrigDst {
            addr: [u32::from(Ipv4Addr::new(10, 96, 0, 10)).to_be(), 0, 0, 0],
            port: 80,
            family: AF_INET,
            ..OrigDst::default()
        };
        assert_eq!(
            original_destination(&v4),
            Some("10.96.0.10:80".parse().expect("addr"))
        );
        let ip6: Ipv6Addr = "fd00::1".parse().expect("addr");
        let o = ip6.octets();
        let words = [0, 4, 8, 12].map(|i| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]));
        let v6 = OrigDst {
            addr: words,
            port: 443,
            family: AF_INET6,
            ..OrigDst::default()
        };
        assert_eq!(
            original_destination(&v6),
            Some("[fd00::1]:443".parse().expect("addr"))
        );
        assert_eq!(original_destination(&OrigDst::default()), None);
    }

    #[test]
    fn the_client_key_carries_the_listener_s_family() {
        let v4 = client_key(7, "10.244.1.10:40000".parse().expect("addr"));
        let v6 = client_key(7, "[fd00:10:244:1::a]:40000".parse().expect("addr"));
        assert_eq!((v4.port, v4.family), (40000, u32::from(AF_INET)));
        assert_eq!((v6.port, v6.family), (40000, u32::from(AF_INET6)));
        assert_ne!(v4, v6, "the same port in both families is two connections");
    }
}
