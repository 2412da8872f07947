//! The Telemetry API (`telemetry.istio.io/Telemetry`): which resources apply to a workload
//! and what they decide ([`effective`]), and the CEL subset their expressions are written
//! in ([`cel`]). Pure: the waypoint and the agent call [`Snapshot::effective_telemetry`]
//! (or the functions below) where they log and record metrics.
pub mod cel;
pub mod effective;

pub use effective::{
    AccessLogging, EffectiveTelemetry, LogProvider, MetricOverride, MetricSettings, TagValue,
    TelemetryTarget, TracingSpec, WorkloadTracing, applicable, effective_telemetry,
};

use crate::api::telemetry::WorkloadMode;
use crate::registry::Snapshot;

impl Snapshot {
    /// What the Telemetry resources (and the mesh config) decide for traffic to `target`,
    /// seen from `side`.
    pub fn effective_telemetry(
        &self,
        target: &TelemetryTarget<'_>,
        side: WorkloadMode,
    ) -> EffectiveTelemetry {
        let root = self.settings().root_namespace.as_str();
        let specs = applicable(|ns| self.telemetries(ns), root, target);
        effective_telemetry(&specs, self.mesh_config(), side)
    }
}
