//! The agent's metrics and traces: Istio's TCP metrics for every connection it proxies
//! (reporter `source` for the pod's outbound connections, `destination` for what arrives
//! at the pod), and, when the mesh config's tracing provider (or `--otlp-endpoint`) takes
//! spans, a span per sampled connection, continuing over HBONE the trace the client's
//! agent started: the sampling decision is made once, by the source's agent, and the
//! CONNECT carries it. Every connection has a place in a trace, traced or not: its
//! access-log line names the trace, and its CONNECT carries it on (without a decision when
//! this agent does not trace, so that the far side's own sampling decides), so that the
//! waypoint's line of a request it carries, and the destination's agent's, name the same. Access-log lines go where meshConfig `accessLogFile` (or its
//! default providers) says, or where the Telemetry resources of the pod's workload say (its
//! outbound connections as the `CLIENT`, what arrives at it as the `SERVER`), each line
//! written when its provider's `filter.expression` holds for the connection.
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use weft_config::api::telemetry::WorkloadMode;
use weft_config::registry::Snapshot;
use weft_config::registry::model::Workload;
use weft_config::telemetry::{
    Connection, addressed_service, black_hole, entry_host_labels, inbound_service,
};
use weft_config::telemetry_api::cel::{Attribute, Attributes, Expr, Value};
use weft_config::telemetry_api::{AccessLogging, EffectiveTelemetry, TelemetryTarget};
use weft_config::tracer::Tracer;
use weft_core::access_log::{AccessLog, ActiveLog, ConnectionEntry, OtlpSink};
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
    pub tracer: Arc<Tracer>,
    /// Istio's cluster id, for `source_cluster`/`destination_cluster`.
    pub cluster: String,
    /// One line per connection when meshConfig `accessLogFile` is set.
    pub access_log: Arc<AccessLog>,
}

impl Telemetry {
    /// `effective`: what the Telemetry resources of the pod's workload the connection is
    /// reported for decide (its access logging), from [`Telemetry::effective`].
    fn connection(
        &self,
        snapshot: &Snapshot,
        labels: &ConnectionLabels,
        trace: Trace,
        effective: Option<EffectiveTelemetry>,
    ) -> ConnectionTelemetry {
        let logging = effective.map_or(AccessLogging::MeshDefault, |e| e.access_logging);
        let otlp = |sink: &OtlpSink| weft_config::access_log::otlp_endpoint(snapshot, sink);
        let sinks: Vec<AccessSink> = match logging {
            AccessLogging::MeshDefault => self
                .access_log
                .active_for(
                    snapshot.version(),
                    || weft_config::access_log::default_sinks(snapshot.mesh_config()),
                    otlp,
                )
                .map(|log| AccessSink { log, filter: None })
                .into_iter()
                .collect(),
            AccessLogging::Providers(providers) => providers
                .into_iter()
                .filter_map(|provider| {
                    self.access_log
                        .active_sinks(
                            snapshot.version(),
                            std::slice::from_ref(&provider.sink),
                            otlp,
                        )
                        .map(|log| AccessSink {
                            log,
                            filter: provider.filter,
                        })
                })
                .collect(),
        };
        let access_log =
            (!sinks.is_empty()).then(|| (AccessLines(sinks), labels.clone(), Instant::now()));
        ConnectionTelemetry {
            recorder: self.metrics.tcp_opened(labels),
            span: trace.span.map(|span| annotate(span, labels)),
            context: trace.context,
            spans: trace.spans,
            access_log,
        }
    }

    /// What the Telemetry resources of `owner` (the pod's workload a connection is reported
    /// for, and from which side) decide; `None` without a workload.
    fn effective(
        snapshot: &Snapshot,
        owner: Option<(&Workload, WorkloadMode)>,
    ) -> Option<EffectiveTelemetry> {
        owner.map(|(workload, side)| {
            let target = TelemetryTarget {
                namespace: &workload.namespace,
                labels: Some(&workload.labels),
                service: None,
                service_entry: None,
                gateway: None,
            };
            snapshot.effective_telemetry(&target, side)
        })
    }

    /// The connection's trace: `incoming` (a new trace, or what the CONNECT carried)
    /// decided at the mesh config's sampling percentage, and a span when sampled. When no
    /// provider takes spans, the context alone (no allocation), left undecided: the
    /// decision belongs to whoever traces.
    fn trace(
        &self,
        snapshot: &Snapshot,
        incoming: impl FnOnce() -> TraceContext,
        kind: SpanKind,
        effective: Option<&EffectiveTelemetry>,
    ) -> Trace {
        let spec = effective
            .and_then(|e| e.tracing.as_ref())
            .map(|t| match kind {
                SpanKind::Client => t.side(WorkloadMode::Client),
                _ => t.side(WorkloadMode::Server),
            });
        let tracing = self.tracer.active_with(snapshot, spec);
        let mut incoming = incoming();
        if !tracing.reports_spans() {
            return Trace {
                context: incoming.child(),
                span: None,
                spans: SpanExporter::disabled(),
            };
        }
        let settings = &tracing.settings;
        if settings.trace_id_64_bit() {
            incoming = incoming.with_64_bit_root();
        }
        let context = incoming.decide(settings.random_sampling_percentage).child();
        let name = match kind {
            SpanKind::Client => "outbound",
            _ => "inbound",
        };
        let span = context.sampled().then(|| {
            let mut span = Span::start(&context, name, kind);
            for (key, value) in settings.custom_tag_values(&|n| std::env::var(n).ok(), None) {
                span.set_attribute(key, value);
            }
            span
        });
        Trace {
            context,
            span,
            spans: tracing.exporter.clone(),
        }
    }
}

/// A connection's place in a trace, and its span when sampled.
struct Trace {
    context: TraceContext,
    span: Option<Span>,
    spans: SpanExporter,
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
    /// Sampled: its span, reported when this is dropped.
    span: Option<Span>,
    /// Its trace context: decided when tracing is on here, else undecided.
    context: TraceContext,
    spans: SpanExporter,
    /// Where its access log line goes (when on), its labels, and when it opened.
    access_log: Option<(AccessLines, ConnectionLabels, Instant)>,
}

/// One place a connection's access-log line goes, and the filter it must pass.
struct AccessSink {
    log: Arc<ActiveLog>,
    filter: Option<Arc<Expr>>,
}

/// Where a connection's access-log line goes.
pub struct AccessLines(Vec<AccessSink>);

impl AccessLines {
    /// Writes `entry` to each sink whose filter it passes.
    pub fn write(&self, entry: &ConnectionEntry) {
        let facts = ConnectionFacts(entry);
        for sink in &self.0 {
            if sink.filter.as_ref().is_none_or(|f| f.matches(&facts)) {
                sink.log.write_connection(entry);
            }
        }
    }
}

/// A connection's facts as CEL attributes: it has no request or response (an expression
/// reading one is false, as Envoy's filter on TCP).
struct ConnectionFacts<'a>(&'a ConnectionEntry);

impl Attributes for ConnectionFacts<'_> {
    fn attribute(&self, attribute: &Attribute) -> Option<Value> {
        let entry = self.0;
        let destination = entry.dst_hbone_addr.or(entry.dst_addr);
        match attribute {
            // The same-node fast path proves both identities as HBONE does.
            Attribute::ConnectionMtls => {
                Some(Value::Bool(matches!(entry.protocol, "HBONE" | "SAME_NODE")))
            }
            Attribute::SourceAddress => entry.src_addr.map(|a| Value::Str(a.ip().to_string())),
            Attribute::SourcePort => entry.src_addr.map(|a| Value::Int(i64::from(a.port()))),
            Attribute::DestinationAddress => destination.map(|a| Value::Str(a.ip().to_string())),
            Attribute::DestinationPort => destination.map(|a| Value::Int(i64::from(a.port()))),
            _ => None,
        }
    }
}

impl ConnectionTelemetry {
    /// Counts the bytes passing through `stream`, one end of the connection.
    pub fn meter<T>(&self, stream: T, side: Side) -> Metered<T> {
        self.recorder.meter(stream, side)
    }

    /// The context to send on the HBONE CONNECT: this connection's, with its sampling
    /// decision when tracing here made one, so the destination's span is its child (or,
    /// unsampled, is not made); without one, the far side decides. A waypoint's requests
    /// that bring no context of their own continue this trace under this span.
    pub fn trace_context(&self) -> TraceContext {
        self.context.clone()
    }

    /// Its access log line as far as the labels tell (who, where, how long), and where
    /// it goes; `None` when access logs are off.
    pub fn access_entry(&self) -> Option<(&AccessLines, ConnectionEntry)> {
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
            // Traced or not: the id correlates the line with the waypoint's and the
            // other agent's lines of the same connection.
            trace_id: Some(self.context.trace_id().to_string()),
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
            .then(|| source.map(|w| &*w.identity))
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
    let effective = Telemetry::effective(snapshot, source.map(|w| (w, WorkloadMode::Client)));
    let trace = telemetry.trace(
        snapshot,
        || TraceContext::new_root(None),
        SpanKind::Client,
        effective.as_ref(),
    );
    let mut connection = telemetry.connection(snapshot, &labels, trace, effective);
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
    let effective = Telemetry::effective(snapshot, destination.map(|w| (w, WorkloadMode::Server)));
    let trace = telemetry.trace(
        snapshot,
        || TraceContext::new_root(None),
        SpanKind::Server,
        effective.as_ref(),
    );
    telemetry.connection(snapshot, &labels, trace, effective)
}

/// A CONNECT arriving over HBONE: the client is who its certificate says, from the address
/// its `Forwarded` header gives (else the tunnel's); its trace continues here.
pub fn inbound_hbone(
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    uid: &str,
    request: &InboundRequest,
) -> ConnectionTelemetry {
    let peer = request.peer.identity.to_string();
    let source_ip = request.source.unwrap_or(request.remote_addr.ip());
    inbound_proven(
        telemetry,
        snapshot,
        uid,
        (&peer, source_ip),
        request.destination,
        || TraceContext::from_headers(&request.headers),
    )
}

/// A connection arriving at the pod (`destination`, of `uid`) from a client whose identity
/// is proven, `(peer, source_ip)`: over HBONE by its certificate, or on the same-node fast
/// path by this agent, which holds both pods (reported as mutual TLS, as ztunnel reported
/// its same-node path). `incoming` is the trace it continues.
pub fn inbound_proven(
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    uid: &str,
    (peer, source_ip): (&str, IpAddr),
    destination: SocketAddr,
    incoming: impl FnOnce() -> TraceContext,
) -> ConnectionTelemetry {
    let workload = snapshot.workload_by_uid(uid).map(|w| w.as_ref());
    let labels = Connection {
        reporter: Reporter::Destination,
        source: workload_at(snapshot, source_ip),
        source_principal: Some(peer),
        destination: workload,
        service: workload
            .and_then(|w| inbound_service(snapshot, w, destination.port()))
            .map(|s| s.as_ref()),
        security: SecurityPolicy::MutualTls,
        cluster: &telemetry.cluster,
    }
    .labels();
    let effective = Telemetry::effective(snapshot, workload.map(|w| (w, WorkloadMode::Server)));
    let trace = telemetry.trace(snapshot, incoming, SpanKind::Server, effective.as_ref());
    telemetry.connection(snapshot, &labels, trace, effective)
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
            tracer: Arc::new(Tracer::new("weft-agent", Vec::new(), None)),
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
        assert!(c.span.is_none(), "no tracing without an exporter");
    }

    #[tokio::test]
    async fn without_tracing_the_connect_leaves_the_decision_and_the_lines_name_the_trace() {
        let t = telemetry();
        let s = weft_config::testing::snapshot_of(&format!(
            "{CLUSTER}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    accessLogFile: /dev/null\n"
        ));
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
        assert!(c.span.is_none());
        let context = c.trace_context();
        let (name, value) = context.connect_header();
        assert_eq!(name, "b3", "not a traceparent, which would say unsampled");
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            name,
            hyper::header::HeaderValue::from_str(&value).expect("ascii"),
        );
        let sent = TraceContext::from_headers(&headers);
        assert_eq!(sent.sampling(), weft_core::telemetry::Sampling::Undecided);
        let (_, entry) = c.access_entry().expect("access logs are on");
        assert_eq!(
            entry.trace_id,
            Some(context.trace_id().to_string()),
            "the line names the connection's trace, untraced"
        );

        // The destination's agent, not tracing either, continues it.
        let arrived = t.trace(
            &s,
            || TraceContext::from_headers(&headers),
            SpanKind::Server,
            None,
        );
        assert_eq!(arrived.context.trace_id(), context.trace_id());
        assert_eq!(arrived.context.parent_span_id(), Some(context.span_id()));
        // Tracing there, it decides at its own percentage.
        let (traced_t, traced_s) = traced(100.0);
        let arrived = traced_t.trace(
            &traced_s,
            || TraceContext::from_headers(&headers),
            SpanKind::Server,
            None,
        );
        let span = arrived.span.expect("sampled by the destination's agent");
        assert_eq!(span.trace_id, context.trace_id());
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

    /// The cluster with a mesh config sampling `sampling` percent of new traces, and an
    /// exporter (never contacted: nothing is flushed before the test ends).
    fn traced(sampling: f64) -> (Telemetry, Arc<Snapshot>) {
        let mut t = telemetry();
        t.tracer = Arc::new(Tracer::new(
            "weft-agent",
            Vec::new(),
            Some("http://127.0.0.1:9".into()),
        ));
        let s = weft_config::testing::snapshot_of(&format!(
            "{CLUSTER}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    accessLogFile: /dev/null
    defaultConfig: {{tracing: {{sampling: {sampling}}}}}
"
        ));
        (t, s)
    }

    #[tokio::test]
    async fn with_an_exporter_the_connect_carries_the_connections_span() {
        let (t, s) = traced(100.0);
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
        let (name, traceparent) = c.trace_context().connect_header();
        assert_eq!(name, "traceparent");
        let sent = TraceContext::parse(&traceparent).expect("valid");
        assert!(sent.sampled());
        let span = c.span.as_ref().expect("a span");
        assert_eq!(sent.trace_id(), span.trace_id);
        assert_eq!(sent.span_id(), span.span_id);
        assert_eq!(span.parent_span_id, None, "a connection starts its trace");
        assert_eq!(span.kind, SpanKind::Client);
        let (_, entry) = c.access_entry().expect("access logs are on");
        assert_eq!(
            entry.trace_id,
            Some(span.trace_id.to_string()),
            "the access log line names the connection's trace"
        );
    }

    #[tokio::test]
    async fn the_decision_the_connect_carries_is_honoured_and_unsampled_makes_no_span() {
        let (t, s) = traced(100.0);
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "traceparent",
            hyper::header::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        let trace = t.trace(
            &s,
            || TraceContext::from_headers(&headers),
            SpanKind::Server,
            None,
        );
        assert!(
            trace.span.is_none(),
            "the source's agent decided against it"
        );
        let context = trace.context;
        assert!(!context.sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        headers.insert(
            "traceparent",
            hyper::header::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let (t, s) = traced(0.000_001);
        let trace = t.trace(
            &s,
            || TraceContext::from_headers(&headers),
            SpanKind::Server,
            None,
        );
        let span = trace
            .span
            .expect("sampled upstream, whatever the percentage here");
        assert_eq!(
            span.parent_span_id.map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );

        // New traces at a tiny percentage: (almost) never sampled, but decided.
        let unsampled = (0..50)
            .filter(|_| {
                t.trace(&s, || TraceContext::new_root(None), SpanKind::Client, None)
                    .span
                    .is_none()
            })
            .count();
        assert_eq!(unsampled, 50);
    }
}
