//! A TCP stream's access log line at the waypoint (or a gateway's TCP route), written when
//! it ends, as Envoy's TCP proxy logs one: start time, bytes each way, duration, upstream
//! host and cluster, both identities, response flags (`UF`, `UH`, `NR` when it went
//! nowhere). No method, path or protocol: those operators print `-`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use weft_core::access_log::{ActiveLog, HttpEntry};
use weft_core::metrics::ResponseFlags;

use crate::context::WaypointContext;
use crate::downstream::Downstream;

/// A stream being logged.
pub struct StreamLog {
    log: Arc<ActiveLog>,
    entry: HttpEntry,
    started: Instant,
}

/// The stream's line as far as its start tells, when access logs are on.
pub fn start(ctx: &WaypointContext, down: &Downstream) -> Option<StreamLog> {
    let log = crate::http::access_log::active(ctx)?;
    let mut entry = HttpEntry::stream_started();
    entry.downstream_remote = down.source_ip.map(|ip| SocketAddr::new(ip, 0));
    entry.downstream_local = Some(down.destination);
    entry.downstream_peer = down.source.principal.clone();
    Some(StreamLog {
        log,
        entry,
        started: Instant::now(),
    })
}

impl StreamLog {
    /// Where the stream went: the endpoint, its cluster (`outbound|port|subset|host`), and
    /// the endpoint's identity when the registry knows the workload.
    pub fn upstream(
        &mut self,
        ctx: &WaypointContext,
        address: SocketAddr,
        cluster: Option<String>,
    ) {
        self.entry.upstream_host = Some(address);
        self.entry.upstream_cluster = cluster;
        self.entry.upstream_peer = ctx
            .registry
            .load()
            .workload_by_ip(address.ip())
            .map(|w| w.identity.to_string());
    }

    /// Writes the line: `received` from the client, `sent` to it.
    pub fn finish(mut self, flags: ResponseFlags, received: u64, sent: u64) {
        let entry = &mut self.entry;
        entry.response_flags = flags;
        entry.bytes_received = received;
        entry.bytes_sent = sent;
        entry.duration = self.started.elapsed();
        self.log.write_http(entry);
    }
}
