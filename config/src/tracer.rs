//! A proxy's tracing as the registry's snapshots say it should be: the settings of the
//! current mesh config and an exporter to its provider's collector, made again only when
//! the collector (or how to reach it) changes.
use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use weft_core::sync::lock;
use weft_core::telemetry::{ExporterConfig, SpanExporter};

use crate::registry::Snapshot;
use crate::telemetry_api::TracingSpec;
use crate::trace_settings::{TracingSettings, collector_address, exporter_config};

/// The tracing in force for one snapshot.
#[derive(Debug)]
pub struct ActiveTracing {
    /// The snapshot version it was built from.
    pub version: u64,
    pub settings: TracingSettings,
    /// Disabled when no provider can be reached (or span reporting is off).
    pub exporter: SpanExporter,
}

impl ActiveTracing {
    /// Whether spans are made: something takes them.
    pub fn reports_spans(&self) -> bool {
        self.exporter.is_enabled()
    }
}

/// Identifies an exporter: the same target keeps the same exporter (and its queue).
#[derive(Clone, Debug, PartialEq)]
struct Target {
    protocol: weft_core::telemetry::Protocol,
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: std::time::Duration,
}

impl Target {
    fn of(config: &ExporterConfig) -> Self {
        Self {
            protocol: config.protocol.clone(),
            endpoint: config.endpoint.clone(),
            headers: config.headers.clone(),
            timeout: config.timeout,
        }
    }
}

pub struct Tracer {
    service_name: String,
    resource: Vec<(String, String)>,
    /// An OTLP/gRPC collector that takes the spans whatever the mesh config says (the
    /// `--otlp-endpoint` flag); the mesh config's sampling still applies.
    otlp_override: Option<String>,
    /// The tracings built for the current snapshot: the mesh's own (`None`) and those of
    /// the Telemetry resources' specs asked for.
    current: Mutex<Built>,
    /// Exporters by collector: those in use since the last snapshot change, and those of
    /// before it (kept until the next change, so an unchanged collector keeps its exporter
    /// and its queue).
    exporters: Mutex<Exporters>,
}

#[derive(Default)]
struct Built {
    version: Option<u64>,
    tracings: Vec<(Option<TracingSpec>, Arc<ActiveTracing>)>,
}

#[derive(Default)]
struct Exporters {
    current: Vec<(Target, SpanExporter)>,
    previous: Vec<(Target, SpanExporter)>,
}

impl Tracer {
    pub fn new(
        service_name: impl Into<String>,
        resource: Vec<(String, String)>,
        otlp_override: Option<String>,
    ) -> Self {
        Self {
            service_name: service_name.into(),
            resource,
            otlp_override,
            current: Mutex::new(Built::default()),
            exporters: Mutex::new(Exporters::default()),
        }
    }

    /// The tracing of `snapshot`'s mesh config. Must run on a tokio runtime (an exporter
    /// may start).
    pub fn active(&self, snapshot: &Snapshot) -> Arc<ActiveTracing> {
        self.active_with(snapshot, None)
    }

    /// The tracing of `snapshot` for traffic a Telemetry resource's `spec` applies to
    /// (`None`: the mesh config's alone); built once per snapshot and spec.
    pub fn active_with(
        &self,
        snapshot: &Snapshot,
        spec: Option<&TracingSpec>,
    ) -> Arc<ActiveTracing> {
        let mut built = lock(&self.current);
        if built.version != Some(snapshot.version()) {
            built.version = Some(snapshot.version());
            built.tracings.clear();
            let mut exporters = lock(&self.exporters);
            exporters.previous = std::mem::take(&mut exporters.current);
        }
        if let Some((_, active)) = built.tracings.iter().find(|(s, _)| s.as_ref() == spec) {
            return active.clone();
        }
        let mesh = TracingSettings::from_mesh(snapshot.mesh_config());
        let settings = match spec {
            Some(spec) => mesh.with_telemetry(snapshot.mesh_config(), spec),
            None => mesh,
        };
        let exporter = self.exporter(snapshot, &settings);
        let active = Arc::new(ActiveTracing {
            version: snapshot.version(),
            settings,
            exporter,
        });
        built.tracings.push((spec.cloned(), active.clone()));
        active
    }

    /// The exporter to the collector `settings` name: the one already exporting there, or
    /// a new one.
    fn exporter(&self, snapshot: &Snapshot, settings: &TracingSettings) -> SpanExporter {
        let Some(config) = self.exporter_config(snapshot, settings) else {
            return SpanExporter::disabled();
        };
        let target = Target::of(&config);
        let mut exporters = lock(&self.exporters);
        if let Some((_, exporter)) = exporters.current.iter().find(|(t, _)| *t == target) {
            return exporter.clone();
        }
        let previous = exporters
            .previous
            .iter()
            .find(|(t, e)| *t == target && e.is_enabled())
            .map(|(_, e)| e.clone());
        let exporter = previous.unwrap_or_else(|| {
            let endpoint = config.endpoint.clone();
            match SpanExporter::start(config) {
                Ok(exporter) => {
                    info!(%endpoint, "exporting spans");
                    exporter
                }
                Err(error) => {
                    warn!(%error, "no span exporter");
                    SpanExporter::disabled()
                }
            }
        });
        exporters.current.push((target, exporter.clone()));
        exporter
    }

    fn exporter_config(
        &self,
        snapshot: &Snapshot,
        settings: &TracingSettings,
    ) -> Option<ExporterConfig> {
        if settings.disable_span_reporting {
            return None;
        }
        let mut config = match (&self.otlp_override, &settings.provider) {
            (Some(endpoint), _) => ExporterConfig::otlp(endpoint.clone(), &self.service_name),
            (None, Some(provider)) => match collector_address(snapshot, provider) {
                Ok(address) => exporter_config(provider, &address, &self.service_name),
                Err(reason) => {
                    warn!(provider = %provider.name, %reason, "spans are not exported");
                    return None;
                }
            },
            (None, None) => return None,
        };
        config.resource = self.resource.clone();
        Some(config)
    }
}
