//! The agent's metrics and traces: Istio's TCP metrics for every connection it proxies
//! (reporter `source` for the pod's outbound connections, `destination` for what arrives
//! at the pod), and, when an OTLP endpoint is set, a span per connection, continuing over
//! HBONE the trace the client's agent started.
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use weft_config::registry::Snapshot;
use weft_config::registry::model::Workload;
use weft_config::telemetry::{
    Connection, addressed_service, black_hole, entry_host_labels, inbound_service,
};
use weft_core::access_log::{AccessLog, ActiveLog, ConnectionEntry};
use weft_core::hbone::InboundRequest;
use weft_core::metrics::{
    ConnectionLabels, Metered, Metrics, Reporter, ResponseFlags, SecurityPolicy, Side,
    TcpConnectionRecorder, UNKNOWN,
};
use weft_core::telemetry::{Span, SpanExporter, SpanKind, SpanStatus, TraceContext};

use crate::proxy::resolve::NextHop;

/// What every proxy task reports to.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub spans: SpanExporter,
    /// Istio's cluster id, for `source_cluster`/`destination_cluster`.
    pub cluster: String,
    /// One line per connection when meshConfig `accessLogFile` is set.
    pub access_log: Arc<AccessLog>,
}

impl Telemetry {
    fn connection(
        &self,
        snapshot: &Snapshot,
        labels: &ConnectionLabels,
        span: Option<Span>,
    ) -> ConnectionTelemetry {
        let mesh = snapshot.mesh_config();
        let access_log = self
            .access_log
            .active(
                &mesh.access_log_file,
                mesh.access_log_encoding(),
                &mesh.access_log_format,
            )
            .map(|log| (log, labels.clone(), Instant::now()));
        ConnectionTelemetry {
            recorder: self.metrics.tcp_opened(labels),
            span: span.map(|span| annotate(span, labels)),
            spans: self.spans.clone(),
            access_log,
        }
    }

    /// A span only when it can go somewhere: building one costs allocations per connection.
    fn span(&self, context: impl FnOnce() -> TraceContext, kind: SpanKind) -> Option<Span> {
        let name = match kind {
            SpanKind::Client => "outbound",
            _ => "inbound",
        };
        self.spans
            .is_enabled()
            .then(|| Span::start(&context(), name, kind))
    }
}

/// Serves `/metrics` and `/stats/prometheus` on `addr`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    weft_core::metrics::serve_metrics_on(listener, metrics).await;
    Ok(())
}

fn annotate(mut span: Span, labels: &ConnectionLabels) -> Span {
    span.set_attribute("weft.reporter", labels.reporter.as_str());
    span.set_attribute("source.workload", labels.source.workload.to_string());
    span.set_attribute(
        "source.workload.namespace",
        labels.source.namespace.to_string(),
    );
    span.set_attribute("source.principal", labels.source.principal.to_string());
    span.set_attribute(
        "destination.workload",
        labels.destination.workload.to_string(),
    );
    span.set_attribute(
        "destination.workload.namespace",
        labels.destination.namespace.to_string(),
    );
    span.set_attribute(
        "destination.principal",
        labels.destination.principal.to_string(),
    );
    span.set_attribute(
        "destination.service",
        labels.destination_service.host.to_string(),
    );
    span.set_attribute(
        "weft.connection_security_policy",
        labels.connection_security_policy.as_str(),
    );
    span
}

/// One proxied connection's accounting: its series (closed when this is dropped) and its
/// span (exported when this is dropped).
pub struct ConnectionTelemetry {
    recorder: TcpConnectionRecorder,
    span: Option<Span>,
    spans: SpanExporter,
    /// Where its access log line goes (when on), its labels, and when it opened.
    access_log: Option<(Arc<ActiveLog>, ConnectionLabels, Instant)>,
}

impl ConnectionTelemetry {
    /// Counts the bytes passing through `stream`, one end of the connection.
    pub fn meter<T>(&self, stream: T, side: Side) -> Metered<T> {
        self.recorder.meter(stream, side)
    }

    /// The `traceparent` to send on the HBONE CONNECT: this connection's span, so the
    /// destination's span is its child. `None` without tracing (the HBONE client then
    /// sends an unsampled one of its own, as ztunnel does).
    pub fn traceparent(&self) -> Option<String> {
        self.span.as_ref().map(Span::traceparent)
    }

    /// Its access log line as far as the labels tell (who, where, how long), and where
    /// it goes; `None` when access logs are off.
    pub fn access_entry(&self) -> Option<(&ActiveLog, ConnectionEntry)> {
        let (log, labels, opened) = self.access_log.as_ref()?;
        let known = |value: &Arc<str>| (&**value != UNKNOWN).then(|| value.to_string());
        let entry = ConnectionEntry {
            src_workload: known(&labels.source.workload),
            src_namespace: known(&labels.source.namespace),
            src_identity: known(&labels.source.principal),
            dst_service: known(&labels.destination_service.host),
            dst_workload: known(&labels.destination.workload),
            dst_namespace: known(&labels.destination.namespace),
            dst_identity: known(&labels.destination.principal),
            duration: opened.elapsed(),
            ..ConnectionEntry::default()
        };
        Some((log, entry))
    }

    /// The connection did not go through: reported with its close.
    pub fn failed(&mut self, flags: ResponseFlags, reason: impl Display) {
        self.recorder.set_response_flags(flags);
        if let Some(span) = &mut self.span {
            span.set_status(SpanStatus::Error(reason.to_string()));
        }
    }
}

impl Drop for ConnectionTelemetry {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            self.spans.record(span);
        }
    }
}

fn workload_at(snapshot: &Snapshot, ip: IpAddr) -> Option<&Workload> {
    snapshot.workload_by_ip(ip).map(|w| w.as_ref())
}

/// The pod's own connection to `dst`, going where `upstream` says. Its destination is the
/// workload at the other end of the tunnel (the waypoint's, when one is in the way, as
/// ztunnel reports it), or the pod dialed directly; its service the one whose address was
/// dialed.
pub fn outbound(
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    pod_ip: IpAddr,
    dst: SocketAddr,
    upstream: &NextHop,
) -> ConnectionTelemetry {
    let source = workload_at(snapshot, pod_ip);
    let (destination, security) = match upstream {
        NextHop::Hbone { hbone_address, .. } => (
            workload_at(snapshot, hbone_address.ip()),
            SecurityPolicy::MutualTls,
        ),
        NextHop::Passthrough(target) => (workload_at(snapshot, target.ip()), SecurityPolicy::None),
        // Refused before leaving the pod: its ProxiedConnection reports why.
        NextHop::Refuse(_) | NextHop::BlackHole(_) | NextHop::Resolve { .. } => {
            (None, SecurityPolicy::None)
        }
    };
    // A ServiceEntry host is the destination service of what is addressed to it; what
    // REGISTRY_ONLY refuses is Istio's BlackHoleCluster.
    let service_override = match upstream {
        NextHop::BlackHole(_) => Some(black_hole()),
        _ if addressed_service(snapshot, dst).is_none() => source
            .and_then(|w| snapshot.entry_host_by_address(dst.ip(), &w.namespace))
            .map(|host| entry_host_labels(host)),
        _ => None,
    };
    let labels = Connection {
        reporter: Reporter::Source,
        source,
        // Over HBONE the pod's certificate proves it; in plain TCP nothing does.
        source_principal: (security == SecurityPolicy::MutualTls)
            .then(|| source.map(|w| w.identity.as_str()))
            .flatten(),
        destination,
        service: addressed_service(snapshot, dst).map(|s| s.as_ref()),
        security,
        cluster: &telemetry.cluster,
    }
    .labels();
    let labels = match service_override {
        Some(service) => labels.with_destination_service(Some(service)),
        None => labels,
    };
    let span = telemetry.span(|| TraceContext::new_root(true).child(), SpanKind::Client);
    let mut connection = telemetry.connection(snapshot, &labels, span);
    if let Some(span) = &mut connection.span {
        span.set_attribute("destination.address", dst.to_string());
    }
    connection
}

/// Plaintext arriving at the pod (`dst`) from `peer`, which proves nothing about itself.
pub fn inbound_plaintext(
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    uid: &str,
    peer: SocketAddr,
    dst: SocketAddr,
) -> ConnectionTelemetry {
    let destination = snapshot.workload_by_uid(uid).map(|w| w.as_ref());
    let labels = Connection {
        reporter: Reporter::Destination,
        source: workload_at(snapshot, peer.ip()),
        source_principal: None,
        destination,
        service: destination
            .and_then(|w| inbound_service(snapshot, w, dst.port()))
            .map(|s| s.as_ref()),
        security: SecurityPolicy::None,
        cluster: &telemetry.cluster,
    }
    .labels();
    let span = telemetry.span(|| TraceContext::new_root(true).child(), SpanKind::Server);
    telemetry.connection(snapshot, &labels, span)
}

/// A CONNECT arriving over HBONE: the client is who its certificate says, from the address
/// its `Forwarded` header gives (else the tunnel's); its trace continues here.
pub fn inbound_hbone(
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    uid: &str,
    request: &InboundRequest,
) -> ConnectionTelemetry {
    let destination = snapshot.workload_by_uid(uid).map(|w| w.as_ref());
    let peer = request.peer.identity.to_string();
    let source_ip = request.source.unwrap_or(request.remote_addr.ip());
    let labels = Connection {
        reporter: Reporter::Destination,
        source: workload_at(snapshot, source_ip),
        source_principal: Some(&peer),
        destination,
        service: destination
            .and_then(|w| inbound_service(snapshot, w, request.destination.port()))
            .map(|s| s.as_ref()),
        security: SecurityPolicy::MutualTls,
        cluster: &telemetry.cluster,
    }
    .labels();
    let span = telemetry.span(
        || TraceContext::from_headers(&request.headers).child(),
        SpanKind::Server,
    );
    telemetry.connection(snapshot, &labels, span)
}

#[cfg(test)]
mod tests {
    use weft_core::metrics::DEFAULT_CLUSTER_ID;

    use super::*;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u0, labels: {app: web, version: v1}}
spec: {nodeName: node-1, serviceAccountName: web, containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, uid: u1, labels: {app: client}}
spec: {nodeName: node-2, serviceAccountName: client, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.2.11}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-0, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: web-0}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

    fn snapshot() -> Arc<Snapshot> {
        weft_config::testing::snapshot_of(CLUSTER)
    }

    fn telemetry() -> Telemetry {
        Telemetry {
            metrics: Metrics::new(),
            spans: SpanExporter::disabled(),
            cluster: DEFAULT_CLUSTER_ID.into(),
            access_log: AccessLog::new(Default::default()),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn outbound_over_hbone_to_a_service_reports_both_workloads_and_the_service() {
        let t = telemetry();
        let s = snapshot();
        let upstream = NextHop::Hbone {
            identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
            hbone_address: addr("10.244.1.11:15008"),
            target: addr("10.244.1.11:8080"),
        };
        let c = outbound(
            &t,
            &s,
            "10.244.2.11".parse().expect("ip"),
            addr("10.96.0.10:80"),
            &upstream,
        );
        let l = c.recorder.labels();
        assert_eq!(l.reporter, Reporter::Source);
        assert_eq!(&*l.source.workload, "client");
        assert_eq!(
            &*l.source.principal,
            "spiffe://cluster.local/ns/shop/sa/client"
        );
        assert_eq!(&*l.destination.workload, "web-0");
        assert_eq!(
            &*l.destination.principal,
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(&*l.destination_service.host, "web.shop.svc.cluster.local");
        assert_eq!(l.connection_security_policy, SecurityPolicy::MutualTls);
        assert_eq!(c.traceparent(), None, "no tracing without an exporter");
    }

    #[test]
    fn plain_tcp_proves_no_source_principal() {
        let t = telemetry();
        let s = snapshot();
        let c = outbound(
            &t,
            &s,
            "10.244.2.11".parse().expect("ip"),
            addr("192.0.2.1:443"),
            &NextHop::Passthrough(addr("192.0.2.1:443")),
        );
        let l = c.recorder.labels();
        assert_eq!(&*l.source.principal, "unknown");
        assert_eq!(&*l.destination.workload, "unknown");
        assert_eq!(&*l.destination_service.host, "unknown");
        assert_eq!(l.connection_security_policy, SecurityPolicy::None);

        let c = inbound_plaintext(
            &t,
            &s,
            "u0",
            addr("10.244.2.11:40000"),
            addr("10.244.1.11:8080"),
        );
        let l = c.recorder.labels();
        assert_eq!(l.reporter, Reporter::Destination);
        assert_eq!(&*l.source.workload, "client");
        assert_eq!(&*l.source.principal, "unknown");
        assert_eq!(&*l.destination.workload, "web-0");
        assert_eq!(&*l.destination_service.name, "web", "guessed from the port");
    }

    #[test]
    fn service_entry_hosts_and_the_black_hole_are_destination_services() {
        let t = telemetry();
        let yaml = format!(
            "{CLUSTER}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: shop}}\nspec: {{hosts: [api.example.com], addresses: [192.0.2.10], ports: [{{number: 443, name: tls, protocol: TLS}}]}}\n"
        );
        let s = weft_config::testing::snapshot_of(&yaml);
        let client = "10.244.2.11".parse().expect("ip");
        let c = outbound(
            &t,
            &s,
            client,
            addr("192.0.2.10:443"),
            &NextHop::Passthrough(addr("192.0.2.10:443")),
        );
        let l = c.recorder.labels();
        assert_eq!(&*l.destination_service.host, "api.example.com");
        assert_eq!(&*l.destination_service.name, "api.example.com");
        assert_eq!(&*l.destination_service.namespace, "shop");
        let c = outbound(
            &t,
            &s,
            client,
            addr("192.0.2.99:443"),
            &NextHop::BlackHole(addr("192.0.2.99:443")),
        );
        let l = c.recorder.labels();
        assert_eq!(&*l.destination_service.host, "BlackHoleCluster");
        assert_eq!(&*l.destination_service.name, "BlackHoleCluster");
    }

    #[tokio::test]
    async fn with_an_exporter_the_connect_carries_the_connections_span() {
        let mut t = telemetry();
        // Never contacted: nothing is flushed before the test ends.
        t.spans = SpanExporter::start(weft_core::telemetry::ExporterConfig::otlp(
            "http://127.0.0.1:9",
            "test",
        ))
        .expect("exporter");
        let s = snapshot();
        let upstream = NextHop::Hbone {
            identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
            hbone_address: addr("10.244.1.11:15008"),
            target: addr("10.244.1.11:8080"),
        };
        let c = outbound(
            &t,
            &s,
            "10.244.2.11".parse().expect("ip"),
            addr("10.96.0.10:80"),
            &upstream,
        );
        let traceparent = c.traceparent().expect("a traceparent");
        let sent = TraceContext::parse(&traceparent).expect("valid");
        assert!(sent.sampled());
        let span = c.span.as_ref().expect("a span");
        assert_eq!(sent.trace_id(), span.trace_id);
        assert_eq!(sent.span_id(), span.span_id);
        assert_eq!(span.parent_span_id, None, "a connection starts its trace");
        assert_eq!(span.kind, SpanKind::Client);
    }
}
