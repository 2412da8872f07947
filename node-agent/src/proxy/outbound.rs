//! Outbound: connections the pod's `connect()` hook sent to `<pod IP>:15001`. The original
//! destination comes from the kernel's ORIG_DST_BY_CLIENT map, filled when the connection
//! was established and before `accept()` can return it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};
use weft_core::host::netns_sockets::NetnsSockets;
use weft_ebpf_common::{AF_INET, AF_INET6, ClientKey, OrigDst};

use super::records::{ConnectionLog, ConnectionRecord, Direction, PodTraffic};
use super::{connect_from_pod, splice};

/// Shared by the pod's proxy tasks; the lock only spans one lookup-and-delete.
pub type OrigDstMap = Arc<Mutex<BpfHashMap<MapData, ClientKey, OrigDst>>>;

/// Reads and removes the original destination the kernel filed for a client.
pub fn take_original_destination(map: &OrigDstMap, key: &ClientKey) -> Option<SocketAddr> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    let orig = map.get(key, 0).ok()?;
    let _ = map.remove(key);
    original_destination(&orig)
}

/// What the outbound proxy of one pod needs.
#[derive(Clone)]
pub struct OutboundContext {
    pub pod: String,
    pub pod_id: u64,
    pub sockets: NetnsSockets,
    pub orig_dst: OrigDstMap,
    pub log: ConnectionLog,
    pub traffic: Arc<PodTraffic>,
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
        // Where the client arrived (sk_lookup delivers `<pod IP>:15001` to this listener).
        let listener_addr = client.local_addr().unwrap_or(peer);
        let span = info_span!("outbound", pod = %ctx.pod, client = %peer);
        tokio::spawn(
            async move {
                let key = ClientKey {
                    pod: ctx.pod_id,
                    port: u32::from(peer.port()),
                    _pad: 0,
                };
                let Some(dst) = take_original_destination(&ctx.orig_dst, &key) else {
                    warn!("captured connection without an original destination; closing it");
                    return;
                };
                let mut record =
                    ConnectionRecord::new(Direction::Outbound, &ctx.pod, peer, dst, listener_addr);
                match connect_from_pod(&ctx.sockets, dst).await {
                    Ok(server) => {
                        ctx.log.push(record);
                        match splice(client, server).await {
                            Ok((up, down)) => {
                                ctx.traffic.record(Direction::Outbound, up, down);
                                debug!(%dst, up, down, "outbound connection closed");
                            }
                            Err(e) => debug!(%dst, error = %e, "outbound connection ended"),
                        }
                    }
                    Err(e) => {
                        debug!(%dst, error = %e, "connecting to the original destination failed");
                        record.error = Some(e.to_string());
                        ctx.log.push(record);
                    }
                }
            }
            .instrument(span),
        );
    }
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
}
