//! The access-log kinds of `MeshConfig.ExtensionProvider`: `envoyFileAccessLog` and
//! `envoyOtelAls` (Istio's `EnvoyFileAccessLogProvider` and
//! `EnvoyOpenTelemetryLogProvider`). Fields Istio adds later are kept by name
//! (`other`) so validation warns about them.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `EnvoyFileAccessLogProvider`: lines to a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFileAccessLogProvider {
    /// `/dev/stdout` when empty, as Istio.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<AccessLogFormat>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// `EnvoyOpenTelemetryLogProvider`: OTLP log records over gRPC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyOtelAlsProvider {
    /// `[<namespace>/]<hostname>` of the collector's Service or ServiceEntry.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// `otel_envoy_accesslog` when empty, as Istio.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<AccessLogFormat>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// The providers' `LogFormat`: a text line (Envoy command operators), and/or labels (a
/// protobuf `Struct` of operators: JSON lines for a file, attributes for OTLP).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Value>>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}
