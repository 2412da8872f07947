//! One proxied connection's bookkeeping as one value (ztunnel's `ConnectionResult`): its
//! record for the admin's `/connections`, its Istio metrics series and span, the pod's
//! byte counters, and its place among the open connections an agent drains. Made when the
//! connection is accepted; the handlers only say what happened to it.
//!
//! - [`ProxiedConnection::fail`]: it did not go through; the record carries the error, the
//!   metrics the error's `response_flags`.
//! - [`ProxiedConnection::carry`]: it is connected; the record is logged once, and the
//!   application's end of the connection is returned wrapped so that every byte is counted
//!   (Istio's metrics and the pod's counters) and everything is closed when that stream is
//!   dropped, whoever copies the bytes (the agent's copy loop or the HBONE server's).
use std::sync::Arc;

use weft_core::metrics::{Metered, Side};
use weft_core::telemetry::TraceContext;

use super::OpenGuard;
use super::counted::{CarriedBytes, Counted};
use super::error::Error;
use super::records::{ConnectionLog, ConnectionRecord, Direction, PodTraffic};
use crate::telemetry::ConnectionTelemetry;

/// The application's end of a carried connection: counted, and holding the connection's
/// bookkeeping until it is dropped.
pub type AppStream<T> = Metered<Counted<T>, ProxiedConnection>;

pub struct ProxiedConnection {
    record: ConnectionRecord,
    logged: bool,
    log: ConnectionLog,
    telemetry: ConnectionTelemetry,
    traffic: Arc<PodTraffic>,
    /// Its bytes, for its access log line.
    carried: Arc<CarriedBytes>,
    /// Plaintext connections count towards what a retiring agent waits for (HBONE streams
    /// are counted by their server).
    _open: Option<OpenGuard>,
}

impl ProxiedConnection {
    pub fn new(
        record: ConnectionRecord,
        telemetry: ConnectionTelemetry,
        log: ConnectionLog,
        traffic: Arc<PodTraffic>,
        open: Option<OpenGuard>,
    ) -> Self {
        Self {
            record,
            logged: false,
            log,
            telemetry,
            traffic,
            carried: Arc::default(),
            _open: open,
        }
    }

    /// Where it went and how, as the handler learns it.
    pub fn record_mut(&mut self) -> &mut ConnectionRecord {
        &mut self.record
    }

    /// The trace context for the HBONE CONNECT: this connection's span, with its sampling
    /// decision when tracing made one.
    pub fn trace_context(&self) -> TraceContext {
        self.telemetry.trace_context()
    }

    /// It did not go through: the error goes to the record and the metrics, once.
    pub fn fail(mut self, error: &Error) {
        self.telemetry.failed(error.response_flags(), error);
        self.record.error = Some(error.to_string());
        self.log_once();
    }

    /// It is connected: the application's end, `app` (`side` says which end of the
    /// connection that is for Istio's sent/received), counted from now on. The bookkeeping
    /// ends when the returned stream is dropped.
    pub fn carry<T>(mut self, app: T, side: Side) -> AppStream<T> {
        self.log_once();
        let direction = self.record.direction;
        let counted =
            Counted::new(app, direction, self.traffic.clone()).carrying(self.carried.clone());
        let metered = self.telemetry.meter(counted, side);
        metered.holding(self)
    }

    /// Its access log line, when access logs are on: ztunnel's fields, from the source's
    /// side (`bytes_sent` what the source sent).
    fn write_access_log(&self) {
        let Some((lines, mut entry)) = self.telemetry.access_entry() else {
            return;
        };
        let record = &self.record;
        let (from_app, to_app) = self.carried.get();
        let hbone = record.protocol == "hbone";
        entry.protocol = match record.protocol {
            "hbone" => "HBONE",
            super::records::SAME_NODE => "SAME_NODE",
            _ => "TCP",
        };
        entry.src_addr = Some(record.source);
        entry.error = record.error.clone();
        match record.direction {
            Direction::Outbound => {
                entry.direction = "outbound";
                entry.dst_addr = record.upstream.or(Some(record.original_destination));
                entry.dst_hbone_addr = hbone.then_some(record.original_destination);
                if let Some(peer) = &record.peer_identity {
                    entry.dst_identity = Some(peer.clone());
                }
                (entry.bytes_sent, entry.bytes_recv) = (from_app, to_app);
            }
            Direction::Inbound => {
                entry.direction = "inbound";
                entry.dst_addr = Some(record.original_destination);
                if let Some(peer) = &record.peer_identity {
                    entry.src_identity = Some(peer.clone());
                }
                (entry.bytes_sent, entry.bytes_recv) = (to_app, from_app);
            }
        }
        lines.write(&entry);
    }

    fn log_once(&mut self) {
        if !self.logged {
            self.logged = true;
            self.log.push(self.record.clone());
        }
    }
}

impl Drop for ProxiedConnection {
    /// A connection abandoned before an outcome (its task cancelled) is still recorded.
    /// Its access log line is written now, as it ends.
    fn drop(&mut self) {
        self.log_once();
        self.write_access_log();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weft_core::metrics::{Metrics, ResponseFlags};

    use super::*;
    use crate::proxy::records::Direction;
    use crate::telemetry::Telemetry;

    fn connection(
        log: &ConnectionLog,
        traffic: &Arc<PodTraffic>,
        metrics: &Arc<Metrics>,
    ) -> ProxiedConnection {
        logged_connection(log, traffic, metrics, "")
    }

    /// With the mesh config `mesh`.
    fn logged_connection(
        log: &ConnectionLog,
        traffic: &Arc<PodTraffic>,
        metrics: &Arc<Metrics>,
        mesh: &str,
    ) -> ProxiedConnection {
        let telemetry = Telemetry {
            metrics: metrics.clone(),
            tracer: Arc::new(weft_config::tracer::Tracer::new(
                "weft-agent",
                Vec::new(),
                None,
            )),
            cluster: "Kubernetes".into(),
            access_log: weft_core::access_log::AccessLog::new(Default::default()),
        };
        let snapshot = weft_config::testing::snapshot_of(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    {mesh}\n"
        ));
        let record = ConnectionRecord::new(
            Direction::Inbound,
            "shop/web",
            "10.244.1.10:40000".parse().expect("address"),
            "10.244.2.10:8080".parse().expect("address"),
            "10.244.2.10:15006".parse().expect("address"),
        );
        let telemetry = crate::telemetry::inbound_plaintext(
            &telemetry,
            &snapshot,
            "uid",
            record.source,
            record.original_destination,
        );
        ProxiedConnection::new(record, telemetry, log.clone(), traffic.clone(), None)
    }

    #[tokio::test]
    async fn a_carried_connection_is_recorded_once_and_counted_when_its_stream_ends() {
        let log = ConnectionLog::new(8);
        let traffic = Arc::new(PodTraffic::default());
        let metrics = Metrics::new();
        let (app, mut peer) = tokio::io::duplex(64);
        let mut stream = connection(&log, &traffic, &metrics).carry(app, Side::Upstream);
        assert_eq!(log.snapshot().len(), 1, "logged when connected");
        peer.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.expect("read");
        stream.write_all(b"hi").await.expect("write");
        assert_eq!(PodTraffic::get(&traffic.inbound_connections), 0);
        drop(stream);
        assert_eq!(log.snapshot().len(), 1, "not logged again when it ends");
        assert_eq!(PodTraffic::get(&traffic.inbound_connections), 1);
        assert_eq!(
            PodTraffic::get(&traffic.bytes_sent),
            5,
            "from the application"
        );
        assert_eq!(
            PodTraffic::get(&traffic.bytes_received),
            2,
            "to the application"
        );
        let text = metrics.encode();
        assert!(
            text.contains("istio_tcp_connections_closed_total{")
                && text.contains("response_flags=\"-\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_failed_connection_records_its_error_and_flags_once() {
        let log = ConnectionLog::new(8);
        let traffic = Arc::new(PodTraffic::default());
        let metrics = Metrics::new();
        connection(&log, &traffic, &metrics).fail(&Error::Denied(
            "PeerAuthentication STRICT: plaintext refused".into(),
        ));
        let records = log.snapshot();
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].error.as_deref(),
            Some("PeerAuthentication STRICT: plaintext refused")
        );
        assert_eq!(
            PodTraffic::get(&traffic.inbound_connections),
            0,
            "carried nothing"
        );
        let text = metrics.encode();
        let flags = format!("response_flags=\"{}\"", ResponseFlags::DENY.0);
        assert!(text.contains(&flags), "{text}");
    }

    /// Lines of `path` once there are `want` (or after 5 s).
    pub(crate) fn access_lines(path: &std::path::Path, want: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= want || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn an_ended_connection_is_one_access_log_line_with_its_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let log = ConnectionLog::new(8);
        let traffic = Arc::new(PodTraffic::default());
        let mesh = format!("accessLogFile: {}", path.display());
        let (app, mut peer) = tokio::io::duplex(64);
        let mut stream =
            logged_connection(&log, &traffic, &Metrics::new(), &mesh).carry(app, Side::Upstream);
        peer.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.expect("read");
        stream.write_all(b"hi").await.expect("write");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .is_empty(),
            "not before it ends"
        );
        drop(stream);
        let lines = access_lines(&path, 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        // Inbound: the source (the peer) sent what the application read.
        // Every connection names its trace (tracing on or off), between protocol and bytes.
        assert!(
            lines[0].contains("connection complete src.addr=\"10.244.1.10:40000\" dst.addr=\"10.244.2.10:8080\" direction=\"inbound\" protocol=\"TCP\" trace_id=\"")
                && lines[0].contains("\" bytes_sent=2 bytes_recv=5 "),
            "{}",
            lines[0]
        );
        let json = dir.path().join("access.json");
        let mesh = format!(
            "accessLogFile: {}\n    accessLogEncoding: JSON",
            json.display()
        );
        logged_connection(&log, &traffic, &Metrics::new(), &mesh).fail(&Error::Denied(
            "PeerAuthentication STRICT: plaintext refused".into(),
        ));
        let lines = access_lines(&json, 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(line["message"], "connection failed");
        assert_eq!(
            line["error"],
            "PeerAuthentication STRICT: plaintext refused"
        );
        assert_eq!(line["direction"], "inbound");
    }

    #[test]
    fn an_abandoned_connection_is_still_recorded() {
        let log = ConnectionLog::new(8);
        let traffic = Arc::new(PodTraffic::default());
        drop(connection(&log, &traffic, &Metrics::new()));
        assert_eq!(log.snapshot().len(), 1);
    }

    /// A plaintext connection arriving at `pod` (uid) of `cluster`, ended at once.
    fn plaintext_to(cluster: &str, uid: &str, destination: &str) {
        let telemetry = Telemetry {
            metrics: Metrics::new(),
            tracer: Arc::new(weft_config::tracer::Tracer::new(
                "weft-agent",
                Vec::new(),
                None,
            )),
            cluster: "Kubernetes".into(),
            access_log: weft_core::access_log::AccessLog::new(Default::default()),
        };
        let snapshot = weft_config::testing::snapshot_of(cluster);
        let record = ConnectionRecord::new(
            Direction::Inbound,
            uid,
            "10.244.9.9:40000".parse().expect("address"),
            destination.parse().expect("address"),
            "10.244.2.10:15006".parse().expect("address"),
        );
        let connection = crate::telemetry::inbound_plaintext(
            &telemetry,
            &snapshot,
            uid,
            record.source,
            record.original_destination,
        );
        let log = ConnectionLog::new(8);
        drop(ProxiedConnection::new(
            record,
            connection,
            log,
            Arc::new(PodTraffic::default()),
            None,
        ));
    }

    #[tokio::test]
    async fn a_telemetry_filter_keeps_plaintext_connections_of_its_namespace_out_of_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let cluster = format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders: [{{name: file, envoyFileAccessLog: {{path: {path}}}}}]
    defaultProviders: {{accessLogging: [file]}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mtls-only, namespace: shop}}
spec:
  accessLogging: [{{filter: {{expression: connection.mtls}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, uid: u-shop}}
spec: {{nodeName: node-1, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: 10.244.2.10}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: other, uid: u-other}}
spec: {{nodeName: node-1, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: 10.244.2.11}}
"#,
            path = path.display()
        );
        plaintext_to(&cluster, "u-shop", "10.244.2.10:8080");
        plaintext_to(&cluster, "u-other", "10.244.2.11:8080");
        let lines = access_lines(&path, 2);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("dst.addr=\"10.244.2.11:8080\"")
                && lines[0].contains("dst.namespace=\"other\""),
            "only the namespace without the filter logs plaintext: {}",
            lines[0]
        );
    }
}
