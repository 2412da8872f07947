//! Access log lines as OTLP log records over gRPC (Istio's `envoyOtelAls` provider): the
//! formatted line is the record's body, the provider's labels its attributes, the request's
//! trace id its trace id. Records go into a bounded queue read by one batching task per
//! collector: writing never waits, a record that does not fit is dropped and counted (with
//! the file lines, `istio_weft_access_log_lines_dropped_total`), and so is a batch the
//! collector does not take.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::otlp_proto::{
    self as proto, AnyValue, ExportLogsServiceRequest, KeyValue, LogsServiceClient, any_value,
};

/// Records waiting for export beyond which new ones are dropped.
pub const QUEUE_RECORDS: usize = 4096;
/// Records per Export request.
pub const MAX_BATCH: usize = 512;
/// How long a record may wait for its batch to fill.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Per Export request, and for connecting.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One access log record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub time: Option<SystemTime>,
    pub body: String,
    pub attributes: Vec<(String, AttributeValue)>,
    /// The 32 hex digits of the request's W3C trace id.
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Text(String),
    Int(i64),
}

/// Where records go and what they say about who sent them.
#[derive(Clone, Debug)]
pub struct LogExporterConfig {
    /// `http://host:port` of the collector's OTLP/gRPC receiver.
    pub endpoint: String,
    /// The provider's `logName` (a resource attribute, as Envoy sets it).
    pub log_name: String,
    /// Resource attributes: `service.name` first, then the process's (`k8s.node.name`, …).
    pub resource: Vec<(String, String)>,
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
}

impl LogExporterConfig {
    pub fn new(endpoint: impl Into<String>, log_name: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            log_name: log_name.into(),
            resource: Vec::new(),
            queue_capacity: QUEUE_RECORDS,
            max_batch: MAX_BATCH,
            flush_interval: FLUSH_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogExporterError {
    #[error("OTLP logs endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the OTLP logs exporter runs on a tokio runtime, and there is none here")]
    NoRuntime,
    #[error("the OTLP logs exporter needs a queue and batches of at least one record")]
    Capacity,
}

/// The sending end; cheap to clone. The batching task ends (sending what it holds) once
/// every clone is gone.
#[derive(Clone, Debug)]
pub struct LogExporter {
    queue: mpsc::Sender<Record>,
    dropped: Counter,
}

impl LogExporter {
    /// Starts the batching task on the current tokio runtime; the collector is connected to
    /// lazily (an unreachable one shows as dropped records, not as an error here).
    pub fn start(config: LogExporterConfig, dropped: Counter) -> Result<Self, LogExporterError> {
        if config.queue_capacity == 0 || config.max_batch == 0 {
            return Err(LogExporterError::Capacity);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| LogExporterError::NoRuntime)?;
        let channel = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|source| LogExporterError::Endpoint {
                endpoint: config.endpoint.clone(),
                source,
            })?
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .connect_lazy();
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        runtime.spawn(run(
            receiver,
            LogsServiceClient::new(channel),
            config,
            dropped.clone(),
        ));
        Ok(Self { queue, dropped })
    }

    /// Queues `record`; dropped and counted when the queue is full.
    pub fn send(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

async fn run(
    mut receiver: mpsc::Receiver<Record>,
    mut client: LogsServiceClient<Channel>,
    config: LogExporterConfig,
    dropped: Counter,
) {
    let resource = resource(&config);
    let mut batch: Vec<Record> = Vec::with_capacity(config.max_batch);
    let mut ticker = tokio::time::interval(config.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = receiver.recv() => match record {
                Some(record) => {
                    batch.push(record);
                    if batch.len() >= config.max_batch {
                        export(&mut client, &resource, &mut batch, &dropped).await;
                    }
                }
                None => {
                    export(&mut client, &resource, &mut batch, &dropped).await;
                    return;
                }
            },
            _ = ticker.tick() => export(&mut client, &resource, &mut batch, &dropped).await,
        }
    }
}

async fn export(
    client: &mut LogsServiceClient<Channel>,
    resource: &proto::Resource,
    batch: &mut Vec<Record>,
    dropped: &Counter,
) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len() as u64;
    let request = request(resource, batch.drain(..), SystemTime::now());
    match client.call(request).await {
        Ok(response) => {
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
                .min(count);
            if rejected > 0 {
                warn!(
                    rejected,
                    "the OTLP logs collector rejected access log records"
                );
                dropped.inc_by(rejected);
            }
            debug!(records = count, "access log records exported");
        }
        Err(status) => {
            dropped.inc_by(count);
            warn!(records = count, error = %status, "exporting access log records over OTLP failed; dropped them");
        }
    }
}

/// One Export request for `records`.
fn request(
    resource: &proto::Resource,
    records: impl Iterator<Item = Record>,
    observed: SystemTime,
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![proto::ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![proto::ScopeLogs {
                scope: Some(proto::InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records.map(|r| to_proto(r, observed)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn string(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    })
}

fn resource(config: &LogExporterConfig) -> proto::Resource {
    let attributes = config
        .resource
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(std::iter::once(("log_name", config.log_name.as_str())))
        .map(|(key, value)| KeyValue {
            key: key.to_owned(),
            value: string(value),
        })
        .collect();
    proto::Resource {
        attributes,
        dropped_attributes_count: 0,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The 16 bytes of a W3C trace id in hex; empty when it is not one.
fn trace_bytes(hex: &str) -> Vec<u8> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Vec::new();
    }
    (0..16)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn to_proto(record: Record, observed: SystemTime) -> proto::LogRecord {
    proto::LogRecord {
        time_unix_nano: record.time.map_or(0, unix_nanos),
        observed_time_unix_nano: unix_nanos(observed),
        body: string(&record.body),
        attributes: record
            .attributes
            .into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: Some(AnyValue {
                    value: Some(match value {
                        AttributeValue::Text(text) => any_value::Value::StringValue(text),
                        AttributeValue::Int(n) => any_value::Value::IntValue(n),
                    }),
                }),
            })
            .collect(),
        trace_id: record
            .trace_id
            .as_deref()
            .map(trace_bytes)
            .unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::codegen::BoxFuture;

    use super::*;
    use crate::access_log::otlp_proto::{
        ExportLogsServiceResponse, LogsService, LogsServiceServer,
    };

    #[derive(Default)]
    struct Collector {
        requests: Mutex<Vec<ExportLogsServiceRequest>>,
    }

    impl LogsService for Collector {
        fn export(
            self: Arc<Self>,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> BoxFuture<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            crate::sync::lock(&self.requests).push(request.into_inner());
            Box::pin(async { Ok(tonic::Response::new(ExportLogsServiceResponse::default())) })
        }
    }

    #[tokio::test]
    async fn records_reach_a_collector_with_body_attributes_resource_and_trace() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Arc::new(Collector::default());
        let service = LogsServiceServer::from_arc(collector.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        let mut config = LogExporterConfig::new(format!("http://{addr}"), "otel");
        config.resource = vec![("service.name".into(), "weft-waypoint".into())];
        config.flush_interval = Duration::from_millis(50);
        let dropped = Counter::default();
        let exporter = LogExporter::start(config, dropped.clone()).expect("starts");
        exporter.send(Record {
            time: Some(UNIX_EPOCH + Duration::from_secs(1)),
            body: "GET /ok 200".into(),
            attributes: vec![
                ("code".into(), AttributeValue::Text("200".into())),
                ("bytes".into(), AttributeValue::Int(12)),
            ],
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::sync::lock(&collector.requests).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = crate::sync::lock(&collector.requests).clone();
        server.abort();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let logs = &requests[0].resource_logs[0];
        let resource: Vec<(String, Option<any_value::Value>)> = logs
            .resource
            .clone()
            .expect("resource")
            .attributes
            .into_iter()
            .map(|kv| (kv.key, kv.value.and_then(|v| v.value)))
            .collect();
        assert_eq!(
            resource,
            [
                (
                    "service.name".to_string(),
                    Some(any_value::Value::StringValue("weft-waypoint".into()))
                ),
                (
                    "log_name".to_string(),
                    Some(any_value::Value::StringValue("otel".into()))
                ),
            ]
        );
        let record = &logs.scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_000_000_000);
        assert_eq!(
            record.body.clone().and_then(|b| b.value),
            Some(any_value::Value::StringValue("GET /ok 200".into()))
        );
        assert_eq!(record.attributes.len(), 2);
        assert_eq!(record.attributes[1].key, "bytes");
        assert_eq!(
            record.attributes[1].value.clone().and_then(|v| v.value),
            Some(any_value::Value::IntValue(12))
        );
        assert_eq!(
            record.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(dropped.get(), 0);
    }

    #[tokio::test]
    async fn records_past_a_full_queue_or_to_no_collector_are_dropped_and_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let mut config = LogExporterConfig::new(endpoint, "otel");
        config.queue_capacity = 1;
        config.flush_interval = Duration::from_millis(50);
        let dropped = Counter::default();
        let exporter = LogExporter::start(config, dropped.clone()).expect("starts");
        for _ in 0..10 {
            exporter.send(Record::default());
        }
        assert!(dropped.get() >= 8, "{}", dropped.get());
        let deadline = Instant::now() + Duration::from_secs(15);
        while dropped.get() < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            dropped.get(),
            10,
            "every record is either queued or counted"
        );
    }

    #[test]
    fn without_a_runtime_the_exporter_is_refused() {
        let result = LogExporter::start(
            LogExporterConfig::new("http://127.0.0.1:4317", "otel"),
            Counter::default(),
        );
        assert!(matches!(result, Err(LogExporterError::NoRuntime)));
    }
}
