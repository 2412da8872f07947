//! A proxy's tracing as the registry's snapshots say it should be: the settings of the
//! current mesh config and an exporter to its provider's collector, made again only when
//! the collector (or how to reach it) changes.
use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use weft_core::sync::lock;
use weft_core::telemetry::{ExporterConfig, SpanExporter};

use crate::registry::Snapshot;
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
    current: Mutex<Option<(Arc<ActiveTracing>, Option<Target>)>>,
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
            current: Mutex::new(None),
        }
    }

    /// The tracing of `snapshot`. Must run on a tokio runtime (an exporter may start).
    pub fn active(&self, snapshot: &Snapshot) -> Arc<ActiveTracing> {
        let mut current = lock(&self.current);
        if let Some((active, _)) = current.as_ref()
            && active.version == snapshot.version()
        {
            return active.clone();
        }
        let settings = TracingSettings::from_mesh(snapshot.mesh_config());
        let config = self.exporter_config(snapshot, &settings);
        let target = config.as_ref().map(Target::of);
        let exporter = match (current.as_ref(), config) {
            (Some((previous, previous_target)), Some(_))
                if *previous_target == target && previous.exporter.is_enabled() =>
            {
                previous.exporter.clone()
            }
            (_, Some(config)) => {
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
            }
            (_, None) => SpanExporter::disabled(),
        };
        let active = Arc::new(ActiveTracing {
            version: snapshot.version(),
            settings,
            exporter,
        });
        *current = Some((active.clone(), target));
        active
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
