//! `telemetry.istio.io`: the Telemetry kind (tracing, metrics and access logging of the
//! workloads it selects), as `istio.telemetry.v1.Telemetry` defines it.
//!
//! What it means for a workload (precedence, merging) is `crate::telemetry_api`.
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PolicyTargetReference, WorkloadSelector};

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.istio.io",
    version = "v1",
    kind = "Telemetry",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    shortname = "telemetry",
    category = "istio-io",
    category = "telemetry-istio-io",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Telemetry configuration for workloads."
)]
#[serde(default, rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Workloads (of the Telemetry's namespace) by their labels; none: namespace-wide (or
    /// mesh-wide in the root namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated by Istio in favour of `targetRefs`; still read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

impl TelemetrySpec {
    /// `targetRef` and `targetRefs` together.
    pub fn targets(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(&self.target_refs)
    }

    /// Whether it selects workloads by labels (not namespace-wide).
    pub fn has_selector(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// `ProviderRef`: an `extensionProviders` entry of the mesh config, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ProviderRef {
    pub name: String,
}

/// `WorkloadMode`: which side of the traffic a section applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

impl WorkloadMode {
    /// Whether a section selected with `self` applies to traffic seen as `side`.
    pub fn covers(self, side: WorkloadMode) -> bool {
        self == WorkloadMode::ClientAndServer || self == side
    }
}

/// A section's `match` (`TracingSelector`, `LogSelector`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ModeSelector {
    pub mode: WorkloadMode,
}

// ---------------------------------------------------------------------------------------
// Tracing

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Tracing {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// 0.0–100.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// A span tag: exactly one of a literal, an environment variable or a request header (or
/// Envoy's `formatter`, which weft refuses).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomTag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatter: Option<LiteralTag>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvironmentTag {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HeaderTag {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

// ---------------------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Metrics {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// A Go duration; how often metrics are reported to a push provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsOverrides {
    /// None: every metric, both modes.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metric an override applies to: one of Istio's (`metric`, `ALL_METRICS` when
/// neither is set) or a custom one by name, in a mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetricName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    pub mode: WorkloadMode,
}

/// `MetricSelector.IstioMetric`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetricName {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TagOverride {
    pub operation: TagOperation,
    /// A CEL expression giving the tag's value (UPSERT).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    #[default]
    Upsert,
    Remove,
}

// ---------------------------------------------------------------------------------------
// Access logging

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessLogging {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<LogFilter>,
}

/// `AccessLogging.Filter`: a CEL expression; a line is written when it is true.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct LogFilter {
    pub expression: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_documented_telemetry_parses() {
        let spec: TelemetrySpec = serde_yaml::from_str(
            "selector: {matchLabels: {app: reviews}}\naccessLogging:\n- providers: [{name: envoy}]\n  filter: {expression: 'response.code >= 400'}\n  match: {mode: SERVER}\nmetrics:\n- providers: [{name: prometheus}]\n  overrides:\n  - match: {metric: REQUEST_COUNT, mode: CLIENT}\n    disabled: true\n  - tagOverrides: {request_host: {value: request.host}, request_protocol: {operation: REMOVE}}\ntracing:\n- randomSamplingPercentage: 10.5\n  customTags: {cluster: {literal: {value: east}}}\n",
        )
        .expect("telemetry");
        assert!(spec.has_selector());
        assert_eq!(
            spec.access_logging[0].match_.as_ref().map(|m| m.mode),
            Some(WorkloadMode::Server)
        );
        let overrides = &spec.metrics[0].overrides;
        assert_eq!(
            overrides[0].match_.as_ref().and_then(|m| m.metric),
            Some(IstioMetricName::RequestCount)
        );
        assert_eq!(
            overrides[1].tag_overrides["request_protocol"].operation,
            TagOperation::Remove
        );
        assert_eq!(spec.tracing[0].random_sampling_percentage, Some(10.5));
    }
}
