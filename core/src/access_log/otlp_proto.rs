//! `opentelemetry.proto.collector.logs.v1.LogsService/Export`, the subset of OTLP/gRPC logs
//! weft sends, written by hand with prost's derive as the trace messages are
//! ([`crate::telemetry::proto`], whose common messages — `Resource`, `KeyValue`,
//! `AnyValue`, `InstrumentationScope` — these share). Field numbers and types are those of
//! opentelemetry-proto's `logs.proto` and `logs_service.proto`; fields weft never sends are
//! left out, which protobuf allows.
use std::sync::Arc;

use tonic::codegen::BoxFuture;

use crate::grpc::{UnaryClient, UnaryHandler, UnaryMethod, UnaryServer};
pub use crate::telemetry::proto::{AnyValue, InstrumentationScope, KeyValue, Resource, any_value};

pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportLogsServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportLogsPartialSuccess>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportLogsPartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_log_records: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    #[prost(string, tag = "3")]
    pub severity_text: String,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "7")]
    pub dropped_attributes_count: u32,
    #[prost(fixed32, tag = "8")]
    pub flags: u32,
    /// 16 bytes, or empty when the record belongs to no trace.
    #[prost(bytes = "vec", tag = "9")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    pub span_id: Vec<u8>,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
}

/// `Export`, the service's one method.
#[derive(Debug)]
pub struct Export;

impl UnaryMethod for Export {
    const SERVICE: &'static str = SERVICE_NAME;
    const METHOD: &'static str = "Export";
    const PATH: &'static str = EXPORT_PATH;
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    const PEER: &'static str = "the OTLP logs collector";
}

/// The server side: what a collector implements (the tests run one).
pub trait LogsService: Send + Sync + 'static {
    fn export(
        self: Arc<Self>,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> BoxFuture<tonic::Response<ExportLogsServiceResponse>, tonic::Status>;
}

impl<T: LogsService> UnaryHandler<Export> for T {
    fn call(
        self: Arc<Self>,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> BoxFuture<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.export(request)
    }
}

/// A tower service routing gRPC requests to a [`LogsService`].
pub type LogsServiceServer<T> = UnaryServer<Export, T>;

/// The client side of the service.
pub type LogsServiceClient<T> = UnaryClient<Export, T>;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes protoc-generated code produces for these fields: tags and wire types must match
    /// OTLP's `logs.proto`.
    #[test]
    fn log_record_wire_encoding_matches_otlp() {
        let record = LogRecord {
            time_unix_nano: 1,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("b".into())),
            }),
            attributes: vec![KeyValue {
                key: "a".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".into())),
                }),
            }],
            trace_id: vec![0xab],
            observed_time_unix_nano: 2,
            ..Default::default()
        };
        let mut expected = vec![0x09, 1, 0, 0, 0, 0, 0, 0, 0]; // time = 1, fixed64
        expected.extend_from_slice(&[0x2a, 3, 0x0a, 1, b'b']); // body = 5 { string = 1 }
        // attributes = 6: KeyValue { key = 1 "a", value = 2 { string = 1 "v" } }
        expected.extend_from_slice(&[0x32, 8, 0x0a, 1, b'a', 0x12, 3, 0x0a, 1, b'v']);
        expected.extend_from_slice(&[0x4a, 1, 0xab]); // trace_id = 9
        expected.extend_from_slice(&[0x59, 2, 0, 0, 0, 0, 0, 0, 0]); // observed = 11, fixed64
        assert_eq!(record.encode_to_vec(), expected);
    }
}
