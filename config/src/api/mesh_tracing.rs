//! The tracing parts of Istio's mesh config: the `zipkin` and `opentelemetry` extension
//! providers (`MeshConfig.ExtensionProvider`) and `defaultConfig.tracing` (`ProxyConfig`'s
//! `Tracing`), as istio/api `mesh/v1alpha1/config.proto` and `proxy.proto` define them.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `ZipkinTracingProvider`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinTracingProvider {
    /// `[<namespace>/]<hostname>` of a Service or ServiceEntry.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Longest value of a tag (Envoy: of the path tag); 0 is Istio's default, 256.
    #[serde(default)]
    pub max_tag_length: u32,
    /// 64-bit trace ids for the traces this proxy starts.
    #[serde(default, rename = "enable64bitTraceId")]
    pub enable_64bit_trace_id: bool,
    /// The collector's path, `/api/v2/spans` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context_option: Option<ZipkinTraceContextOption>,
    /// Per request to the collector; Envoy's default is 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// `ZipkinTracingProvider.TraceContextOption`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ZipkinTraceContextOption {
    /// B3 headers only.
    #[default]
    UseB3,
    /// B3 first, else `traceparent`; both written onwards.
    UseB3WithW3cPropagation,
}

/// `OpenTelemetryTracingProvider`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetryTracingProvider {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub max_tag_length: u32,
    /// OTLP over HTTP (protobuf) to this path; gRPC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<OtelHttpService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<OtelGrpcService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_attribute_enrichment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<Value>,
}

/// `OpenTelemetryTracingProvider.HttpService` (istio/api `HttpService`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelHttpService {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// istio/api `GrpcService`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelGrpcService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_metadata: Vec<HttpHeader>,
}

/// istio/api `HttpHeader`: a value, or the name of an environment variable of istiod's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
}

/// `MeshConfig.defaultConfig` (a `ProxyConfig`): only `tracing` is typed; the rest is kept
/// by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProxyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProxyTracing>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// `ProxyConfig.Tracing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTracing {
    /// Percentage of requests sampled, 0.0 to 100.0 (Istio's default: 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    /// The bootstrap tracers (`zipkin`, `lightstep`, `datadog`, `stackdriver`,
    /// `openCensusAgent`), `tlsSettings`, `enableIstioTags`: kept by name.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// `Tracing.CustomTag`: exactly one of its kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

/// Fields of `ProxyConfig.Tracing` Istio defines (JSON names), to tell the ones weft does
/// not act on from misspelt ones.
pub const ISTIO_PROXY_TRACING_FIELDS: &[&str] = &[
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "openCensusAgent",
    "customTags",
    "maxPathTagLength",
    "sampling",
    "tlsSettings",
    "enableIstioTags",
];
