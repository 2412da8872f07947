//! `opentelemetry.proto.collector.trace.v1.TraceService/Export`, the subset of OTLP/gRPC
//! weft sends, written by hand with prost's derive (no protoc here, and the
//! `opentelemetry-proto` crate pulls in the OpenTelemetry SDK). Field numbers and types are
//! those of opentelemetry-proto's `trace.proto`, `common.proto`, `resource.proto` and
//! `trace_service.proto`; fields weft never sends (events, links, entity refs) are left
//! out, which protobuf allows.
use std::sync::Arc;

use tonic::codegen::BoxFuture;

use crate::grpc::{UnaryClient, UnaryHandler, UnaryMethod, UnaryServer};

pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    /// Empty for a root span.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(enumeration = "SpanKind", tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags in the low byte; bits 8 and 9 say whether the parent is remote.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(enumeration = "StatusCode", tag = "3")]
    pub code: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

/// `Export`, the service's one method.
#[derive(Debug)]
pub struct Export;

impl UnaryMethod for Export {
    const SERVICE: &'static str = SERVICE_NAME;
    const METHOD: &'static str = "Export";
    const PATH: &'static str = EXPORT_PATH;
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    const PEER: &'static str = "the collector";
}

/// The server side: what a collector implements (the tests run one).
pub trait TraceService: Send + Sync + 'static {
    fn export(
        self: Arc<Self>,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> BoxFuture<tonic::Response<ExportTraceServiceResponse>, tonic::Status>;
}

impl<T: TraceService> UnaryHandler<Export> for T {
    fn call(
        self: Arc<Self>,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> BoxFuture<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.export(request)
    }
}

/// A tower service routing gRPC requests to a [`TraceService`].
pub type TraceServiceServer<T> = UnaryServer<Export, T>;

/// The client side of the service.
pub type TraceServiceClient<T> = UnaryClient<Export, T>;

impl<T> UnaryClient<Export, T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    pub async fn export(
        &mut self,
        request: impl tonic::IntoRequest<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes protoc-generated code produces for these fields: tags and wire types must match
    /// OTLP's definition.
    #[test]
    fn span_wire_encoding_matches_otlp() {
        let span = Span {
            trace_id: vec![0xab],
            span_id: vec![0xcd],
            trace_state: "k=v".into(),
            parent_span_id: vec![0xef],
            name: "n".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue {
                key: "a".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(7)),
                }),
            }],
            dropped_attributes_count: 0,
            status: Some(Status {
                message: String::new(),
                code: StatusCode::Error as i32,
            }),
            flags: 0x101,
        };
        let mut expected = vec![0x0a, 1, 0xab, 0x12, 1, 0xcd, 0x1a, 3, b'k', b'=', b'v'];
        expected.extend_from_slice(&[0x22, 1, 0xef, 0x2a, 1, b'n', 0x30, 2]);
        expected.extend_from_slice(&[0x39, 1, 0, 0, 0, 0, 0, 0, 0]); // fixed64 = 7
        expected.extend_from_slice(&[0x41, 2, 0, 0, 0, 0, 0, 0, 0]); // fixed64 = 8
        // attributes = 9: KeyValue { key = 1 "a", value = 2 AnyValue { int_value = 3: 7 } }
        expected.extend_from_slice(&[0x4a, 7, 0x0a, 1, b'a', 0x12, 2, 0x18, 7]);
        expected.extend_from_slice(&[0x7a, 2, 0x18, 2]); // status = 15 { code = 3 }
        expected.extend_from_slice(&[0x85, 0x01, 0x01, 0x01, 0, 0]); // flags = 16, fixed32
        assert_eq!(span.encode_to_vec(), expected);
    }
}
