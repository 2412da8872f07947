//! Batching export of spans, over OTLP (gRPC, or HTTP with protobuf) or as Zipkin JSON v2
//! over HTTP. Recording never waits: spans go into a bounded queue and are dropped (and
//! counted) when it is full, so a slow or absent collector costs the proxy nothing but
//! those spans.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::post;
use super::proto::{self, TraceServiceClient, any_value};
use super::span::{AttributeValue, Span, SpanKind, SpanStatus};
use super::zipkin;

/// How spans are sent to the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    OtlpGrpc,
    /// OTLP/HTTP, protobuf encoded, POSTed to `path` (`/v1/traces`).
    OtlpHttp { path: String },
    /// Zipkin's JSON v2, POSTed to `path` (`/api/v2/spans`).
    Zipkin { path: String },
}

#[derive(Clone, Debug)]
pub struct ExporterConfig {
    pub protocol: Protocol,
    /// The collector: `http://host:port` (or `host:port`).
    pub endpoint: String,
    /// `service.name` of the resource the spans belong to (Zipkin: the local endpoint's
    /// `serviceName`).
    pub service_name: String,
    /// More resource attributes (`k8s.node.name`, …); Zipkin has no resource.
    pub resource: Vec<(String, String)>,
    /// Headers (gRPC: metadata) sent with every export.
    pub headers: Vec<(String, String)>,
    /// Spans waiting for export beyond which new ones are dropped.
    pub queue_capacity: usize,
    /// Spans per Export request.
    pub max_batch: usize,
    /// How long a span may wait for a batch to fill.
    pub flush_interval: Duration,
    /// Per Export request.
    pub timeout: Duration,
}

impl ExporterConfig {
    pub fn new(
        protocol: Protocol,
        endpoint: impl Into<String>,
        service_name: impl Into<String>,
    ) -> Self {
        Self {
            protocol,
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            resource: Vec::new(),
            headers: Vec::new(),
            queue_capacity: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }

    /// OTLP/gRPC to `endpoint` (`http://host:4317`).
    pub fn otlp(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        Self::new(Protocol::OtlpGrpc, endpoint, service_name)
    }

    /// The collector's `host:port`.
    fn authority(&self) -> &str {
        let rest = self
            .endpoint
            .strip_prefix("http://")
            .unwrap_or(&self.endpoint);
        rest.split('/').next().unwrap_or(rest)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("OTLP endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the span exporter needs a queue and batches of at least one span")]
    Capacity,
}

/// What the exporter did with the spans it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// Sent and acknowledged by the collector (less what it said it rejected).
    pub exported: u64,
    /// Dropped because the queue was full.
    pub dropped: u64,
    /// Lost in Export requests that failed, or rejected by the collector.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

enum Message {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// Cheap to clone; every clone feeds the same queue. [`SpanExporter::disabled`] accepts
/// and discards spans, so callers need no `Option`.
#[derive(Clone, Debug, Default)]
pub struct SpanExporter {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Message>,
    counters: Arc<Counters>,
}

/// Where the batching task sends a batch.
enum Backend {
    Grpc(Box<(TraceServiceClient<Channel>, tonic::metadata::MetadataMap)>),
    Http {
        authority: String,
        path: String,
        zipkin: bool,
    },
}

impl SpanExporter {
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Starts the batching task on the current tokio runtime. The collector is connected to
    /// lazily: an unreachable one shows as failed exports, not as an error here.
    pub fn start(config: ExporterConfig) -> Result<Self, ExporterError> {
        if config.queue_capacity == 0 || config.max_batch == 0 {
            return Err(ExporterError::Capacity);
        }
        let backend = match &config.protocol {
            Protocol::OtlpGrpc => {
                let endpoint = if config.endpoint.contains("://") {
                    config.endpoint.clone()
                } else {
                    format!("http://{}", config.endpoint)
                };
                let channel = Endpoint::from_shared(endpoint.clone())
                    .map_err(|source| ExporterError::Endpoint { endpoint, source })?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &config.headers {
                    if let (Ok(name), Ok(value)) = (
                        name.to_ascii_lowercase()
                            .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        value.parse(),
                    ) {
                        metadata.insert(name, value);
                    }
                }
                Backend::Grpc(Box::new((TraceServiceClient::new(channel), metadata)))
            }
            Protocol::OtlpHttp { path } | Protocol::Zipkin { path } => Backend::Http {
                authority: config.authority().to_owned(),
                path: path.clone(),
                zipkin: matches!(config.protocol, Protocol::Zipkin { .. }),
            },
        };
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(receiver, backend, config, counters.clone()));
        Ok(Self {
            inner: Some(Arc::new(Inner { queue, counters })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues a span for export (ending it if it is still running). Unsampled spans are
    /// not exported: the trace's origin decided against recording it.
    pub fn record(&self, mut span: Span) {
        let Some(inner) = &self.inner else { return };
        if !span.sampled {
            return;
        }
        span.end();
        if inner.queue.try_send(Message::Span(Box::new(span))).is_err() {
            inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exports everything queued so far; returns once the collector answered (or the
    /// export failed).
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (done, wait) = oneshot::channel();
        if inner.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn stats(&self) -> ExporterStats {
        let Some(inner) = &self.inner else {
            return ExporterStats::default();
        };
        let c = &inner.counters;
        ExporterStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

async fn run(
    mut receiver: mpsc::Receiver<Message>,
    mut backend: Backend,
    config: ExporterConfig,
    counters: Arc<Counters>,
) {
    let resource = resource(&config);
    let mut client = Exporting {
        backend: &mut backend,
        config: &config,
        resource: &resource,
    };
    let mut batch: Vec<Span> = Vec::with_capacity(config.max_batch);
    let mut ticker = tokio::time::interval(config.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Some(Message::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= config.max_batch {
                        client.export(&mut batch, &counters).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    client.export(&mut batch, &counters).await;
                    let _ = done.send(());
                }
                None => {
                    // Every handle is gone: send what is left and stop.
                    client.export(&mut batch, &counters).await;
                    return;
                }
            },
            _ = ticker.tick() => client.export(&mut batch, &counters).await,
        }
    }
}

struct Exporting<'a> {
    backend: &'a mut Backend,
    config: &'a ExporterConfig,
    resource: &'a proto::Resource,
}

impl Exporting<'_> {
    async fn export(&mut self, batch: &mut Vec<Span>, counters: &Counters) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let spans: Vec<Span> = std::mem::take(batch);
        let outcome = match &mut *self.backend {
            Backend::Grpc(grpc) => {
                let (client, metadata) = &mut **grpc;
                let mut request = tonic::Request::new(otlp_request(self.resource, spans));
                *request.metadata_mut() = metadata.clone();
                client
                    .export(request)
                    .await
                    .map(|response| {
                        response
                            .into_inner()
                            .partial_success
                            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
                    })
                    .map_err(|status| status.to_string())
            }
            Backend::Http {
                authority,
                path,
                zipkin: true,
            } => {
                let body = zipkin::encode(&spans, &self.config.service_name);
                post::post(
                    authority,
                    path,
                    "application/json",
                    &self.config.headers,
                    body,
                    self.config.timeout,
                )
                .await
                .map(|()| 0)
            }
            Backend::Http {
                authority, path, ..
            } => {
                let body = prost::Message::encode_to_vec(&otlp_request(self.resource, spans));
                post::post(
                    authority,
                    path,
                    "application/x-protobuf",
                    &self.config.headers,
                    body,
                    self.config.timeout,
                )
                .await
                .map(|()| 0)
            }
        };
        match outcome {
            Ok(rejected) => {
                let rejected = rejected.min(count);
                if rejected > 0 {
                    warn!(rejected, "the collector rejected spans");
                }
                counters
                    .exported
                    .fetch_add(count - rejected, Ordering::Relaxed);
                counters.failed.fetch_add(rejected, Ordering::Relaxed);
                debug!(spans = count, "spans exported");
            }
            Err(error) => {
                // Spans are telemetry, not data: losing a batch beats holding memory for a
                // collector that may never come back.
                counters.failed.fetch_add(count, Ordering::Relaxed);
                warn!(spans = count, %error, endpoint = %self.config.endpoint, "exporting spans failed; dropped them");
            }
        }
    }
}

fn otlp_request(resource: &proto::Resource, spans: Vec<Span>) -> proto::ExportTraceServiceRequest {
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.into_iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn key_value(key: &str, value: &AttributeValue) -> proto::KeyValue {
    let value = match value {
        AttributeValue::String(s) => any_value::Value::StringValue(s.clone()),
        AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttributeValue::Int(i) => any_value::Value::IntValue(*i),
        AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
    };
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue { value: Some(value) }),
    }
}

fn resource(config: &ExporterConfig) -> proto::Resource {
    let service = AttributeValue::String(config.service_name.clone());
    proto::Resource {
        attributes: std::iter::once(key_value("service.name", &service))
            .chain(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| key_value(k, &AttributeValue::String(v.clone()))),
            )
            .collect(),
        dropped_attributes_count: 0,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Bits 8 and 9 of OTLP's span flags: whether the parent's remoteness is known, and
/// whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

fn to_proto(span: Span) -> proto::Span {
    let kind = match span.kind {
        SpanKind::Internal => proto::SpanKind::Internal,
        SpanKind::Server => proto::SpanKind::Server,
        SpanKind::Client => proto::SpanKind::Client,
    };
    let status = match &span.status {
        SpanStatus::Unset => None,
        SpanStatus::Ok => Some(proto::Status {
            message: String::new(),
            code: proto::StatusCode::Ok as i32,
        }),
        SpanStatus::Error(message) => Some(proto::Status {
            message: message.clone(),
            code: proto::StatusCode::Error as i32,
        }),
    };
    // A server span's parent is the caller's, in another process.
    let remote = match (span.kind, span.parent_span_id) {
        (SpanKind::Server, Some(_)) => HAS_IS_REMOTE | IS_REMOTE,
        _ => HAS_IS_REMOTE,
    };
    proto::Span {
        trace_id: span.trace_id.to_bytes().to_vec(),
        span_id: span.span_id.to_bytes().to_vec(),
        trace_state: span.tracestate.clone().unwrap_or_default(),
        parent_span_id: span
            .parent_span_id
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        name: span.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end.unwrap_or(span.start)),
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        dropped_attributes_count: 0,
        status,
        flags: u32::from(span.sampled) | remote,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::codegen::BoxFuture;

    use super::*;
    use crate::telemetry::proto::{
        ExportTraceServiceRequest, ExportTraceServiceResponse, TraceService, TraceServiceServer,
    };
    use crate::telemetry::{SpanStatus, TraceContext};

    /// A collector that keeps what it receives.
    #[derive(Default)]
    struct Collector {
        requests: Mutex<Vec<ExportTraceServiceRequest>>,
    }

    impl TraceService for Collector {
        fn export(
            self: Arc<Self>,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> BoxFuture<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            crate::sync::lock(&self.requests).push(request.into_inner());
            Box::pin(async { Ok(tonic::Response::new(ExportTraceServiceResponse::default())) })
        }
    }

    async fn collector() -> (Arc<Collector>, String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Arc::new(Collector::default());
        let service = TraceServiceServer::from_arc(collector.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (collector, format!("http://{addr}"), server)
    }

    fn spans(collector: &Collector) -> Vec<proto::Span> {
        crate::sync::lock(&collector.requests)
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    #[tokio::test]
    async fn spans_reach_a_collector_with_their_ids_and_parents() {
        let (collector, endpoint, collector_task) = collector().await;
        let mut config = ExporterConfig::otlp(endpoint, "weft-test");
        config
            .resource
            .push(("k8s.node.name".into(), "node-1".into()));
        let exporter = SpanExporter::start(config).expect("starts");

        let incoming =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
        let server_ctx = incoming.child();
        let client_ctx = server_ctx.child();
        let mut server_span = Span::start(&server_ctx, "inbound", SpanKind::Server)
            .with_attribute("http.response.status_code", 200u16);
        let mut client_span = Span::start(&client_ctx, "outbound", SpanKind::Client);
        client_span.set_status(SpanStatus::Error("upstream reset".into()));
        client_span.end();
        server_span.end();
        exporter.record(client_span);
        exporter.record(server_span);
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid")
                .child();
        exporter.record(Span::start(&unsampled, "unsampled", SpanKind::Server));
        exporter.flush().await;

        let got = spans(&collector);
        assert_eq!(got.len(), 2, "{got:?}");
        let trace = incoming.trace_id().to_bytes().to_vec();
        let client = got
            .iter()
            .find(|s| s.name == "outbound")
            .expect("client span");
        let server = got
            .iter()
            .find(|s| s.name == "inbound")
            .expect("server span");
        assert_eq!(server.trace_id, trace);
        assert_eq!(client.trace_id, trace);
        assert_eq!(server.span_id, server_ctx.span_id().to_bytes().to_vec());
        assert_eq!(
            server.parent_span_id,
            incoming.span_id().to_bytes().to_vec()
        );
        assert_eq!(client.span_id, client_ctx.span_id().to_bytes().to_vec());
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(server.kind, proto::SpanKind::Server as i32);
        assert_eq!(client.kind, proto::SpanKind::Client as i32);
        assert_eq!(server.flags, 0x301, "sampled, remote parent");
        assert_eq!(client.flags, 0x101);
        assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
        assert!(server.start_time_unix_nano > 0);
        assert_eq!(
            client.status.as_ref().map(|s| (s.code, s.message.as_str())),
            Some((proto::StatusCode::Error as i32, "upstream reset"))
        );
        let status_attr = server
            .attributes
            .iter()
            .find(|kv| kv.key == "http.response.status_code")
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value);
        assert_eq!(status_attr, Some(any_value::Value::IntValue(200)));

        let requests = crate::sync::lock(&collector.requests).clone();
        let resource = requests[0].resource_spans[0]
            .resource
            .clone()
            .expect("resource");
        let attr = |key: &str| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            attr("service.name"),
            Some(any_value::Value::StringValue("weft-test".into()))
        );
        assert_eq!(
            attr("k8s.node.name"),
            Some(any_value::Value::StringValue("node-1".into()))
        );
        assert_eq!(
            exporter.stats(),
            ExporterStats {
                exported: 2,
                dropped: 0,
                failed: 0
            }
        );
        collector_task.abort();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // Nothing listens here: exports fail, and the one-slot queue overflows.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let mut config = ExporterConfig::otlp(endpoint, "weft-test");
        config.queue_capacity = 1;
        config.max_batch = 100;
        config.flush_interval = Duration::from_secs(3600);
        config.timeout = Duration::from_millis(500);
        let exporter = SpanExporter::start(config).expect("starts");
        let context = TraceContext::new_root(true).child();
        for _ in 0..10 {
            exporter.record(Span::start(&context, "s", SpanKind::Internal));
        }
        let stats = exporter.stats();
        assert!(stats.dropped >= 8, "{stats:?}");
        exporter.flush().await;
        let stats = exporter.stats();
        assert_eq!(stats.dropped + stats.failed, 10, "{stats:?}");
        assert_eq!(stats.exported, 0);
    }

    /// An HTTP server that keeps the (path, content type, body) of each POST and answers
    /// `status`.
    async fn http_collector(
        status: u16,
    ) -> (
        Arc<Mutex<Vec<(String, String, Vec<u8>)>>>,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let kept = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let content_type = request
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            crate::sync::lock(&kept).push((path, content_type, body));
                            let mut response =
                                http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                            *response.status_mut() =
                                http::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (got, format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn zipkin_spans_are_posted_as_json_v2_and_refusals_count_as_failed() {
        let (got, endpoint, task) = http_collector(202).await;
        let mut config = ExporterConfig::new(
            Protocol::Zipkin {
                path: "/api/v2/spans".into(),
            },
            endpoint,
            "waypoint.shop",
        );
        config.headers.push(("x-tenant".into(), "a".into()));
        let exporter = SpanExporter::start(config).expect("starts");
        let context = TraceContext::new_root(true).child();
        exporter.record(Span::start(&context, "GET /", SpanKind::Server));
        exporter.record(Span::start(
            &TraceContext::new_root(false).child(),
            "unsampled",
            SpanKind::Server,
        ));
        exporter.flush().await;
        assert_eq!(exporter.stats().exported, 1, "{:?}", exporter.stats());
        let posts = crate::sync::lock(&got).clone();
        assert_eq!(posts.len(), 1);
        let (path, content_type, body) = &posts[0];
        assert_eq!(path, "/api/v2/spans");
        assert_eq!(content_type, "application/json");
        let spans: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(spans[0]["traceId"], context.trace_id().to_string());
        assert_eq!(spans[0]["localEndpoint"]["serviceName"], "waypoint.shop");
        task.abort();

        let (_, endpoint, task) = http_collector(400).await;
        let exporter = SpanExporter::start(ExporterConfig::new(
            Protocol::OtlpHttp {
                path: "/v1/traces".into(),
            },
            endpoint,
            "s",
        ))
        .expect("starts");
        exporter.record(Span::start(&context, "GET /", SpanKind::Server));
        exporter.flush().await;
        assert_eq!(
            exporter.stats(),
            ExporterStats {
                exported: 0,
                dropped: 0,
                failed: 1
            }
        );
        task.abort();
    }

    #[test]
    fn a_disabled_exporter_takes_spans_and_does_nothing() {
        let exporter = SpanExporter::disabled();
        assert!(!exporter.is_enabled());
        exporter.record(Span::start(
            &TraceContext::new_root(true).child(),
            "s",
            SpanKind::Client,
        ));
        assert_eq!(exporter.stats(), ExporterStats::default());
    }
}
