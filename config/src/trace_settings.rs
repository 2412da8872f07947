//! The tracing a proxy does, as a plain value built from the mesh config by a pure
//! function: which provider spans go to, how many traces are sampled, which custom tags
//! spans carry. Istio's order: a tracing provider named by `defaultProviders.tracing` (the
//! Telemetry API's mesh-wide default) wins; without one, `enableTracing` turns on the
//! bootstrap tracer of `defaultConfig.tracing.zipkin.address`. The sampling percentage is
//! `defaultConfig.tracing.sampling` (0, Istio's "unset", and values over 100 give Istio's
//! default of 1%).
use std::collections::BTreeMap;
use std::time::Duration;

use weft_core::telemetry::{ExporterConfig, Propagation, Protocol, zipkin};

use crate::api::mesh::{ExtensionProvider, MeshConfig};
use crate::api::mesh_tracing::{
    CustomTag, EnvironmentTag, HeaderTag, HttpHeader, LiteralTag, ZipkinTraceContextOption,
};
use crate::authz::ext_authz::ProviderService;
use crate::duration;
use crate::registry::Snapshot;
use crate::telemetry_api::TracingSpec;

/// Istio's `PILOT_TRACE_SAMPLING` default.
pub const DEFAULT_SAMPLING_PERCENTAGE: f64 = 1.0;
/// Envoy's default longest path tag (Istio's `maxTagLength`/`maxPathTagLength` default).
pub const DEFAULT_MAX_TAG_LENGTH: u32 = 256;
/// OTLP/HTTP's path.
pub const OTLP_HTTP_PATH: &str = "/v1/traces";
/// Envoy's default timeout of a Zipkin or OTLP/HTTP export.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A value by name (an environment variable, a request header).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The resolved tracing of a proxy. The Telemetry API (per namespace, per workload) feeds
/// its overrides into this same value.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// Where spans go; `None`: no spans (context is still propagated).
    pub provider: Option<TracingProvider>,
    /// Percentage (0–100) of traces this proxy starts that are sampled.
    pub random_sampling_percentage: f64,
    /// Tags added to every span, by name.
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Sample and propagate, but report no spans (Telemetry's `disableSpanReporting`).
    pub disable_span_reporting: bool,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            provider: None,
            random_sampling_percentage: DEFAULT_SAMPLING_PERCENTAGE,
            custom_tags: BTreeMap::new(),
            disable_span_reporting: false,
        }
    }
}

/// A tracing provider, as a proxy uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingProvider {
    /// The `extensionProviders` name (`defaultConfig.tracing.zipkin` for the bootstrap one).
    pub name: String,
    pub collector: Collector,
    pub port: u16,
    /// Longest value of the path tag (`http.url`).
    pub max_tag_length: u32,
    pub kind: ProviderKind,
    pub timeout: Duration,
    /// Headers (gRPC: metadata) sent with every export.
    pub headers: Vec<(String, String)>,
}

/// Where a provider's collector runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collector {
    /// `[<namespace>/]<hostname>` of a Service or ServiceEntry in the registry.
    Service(String),
    /// A host name or address as written (`defaultConfig.tracing.zipkin.address`).
    Address(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    Zipkin {
        path: String,
        /// Traces this proxy starts have 64-bit ids.
        trace_id_64_bit: bool,
        /// `USE_B3_WITH_W3C_PROPAGATION`: `traceparent` written as well as B3.
        w3c_too: bool,
    },
    OpenTelemetry {
        /// OTLP/HTTP to this path; OTLP/gRPC when `None`.
        http_path: Option<String>,
    },
}

impl TracingSettings {
    /// The settings of `mesh`, Istio's defaults applied. Fields that cannot be used are
    /// left out here and warned about by validation (`validate::mesh`).
    pub fn from_mesh(mesh: &MeshConfig) -> Self {
        let tracing = mesh
            .default_config
            .as_ref()
            .and_then(|c| c.tracing.as_ref());
        let sampling = tracing
            .and_then(|t| t.sampling)
            .filter(|s| *s > 0.0 && *s <= 100.0)
            .unwrap_or(DEFAULT_SAMPLING_PERCENTAGE);
        let max_path = tracing
            .and_then(|t| t.max_path_tag_length)
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_MAX_TAG_LENGTH);
        let from_providers = mesh
            .default_providers
            .as_ref()
            .and_then(|d| d.tracing.first())
            .and_then(|name| mesh.extension_provider(name))
            .and_then(provider);
        let provider = match from_providers {
            Some(provider) => Some(provider),
            None if mesh.enable_tracing == Some(true) => tracing
                .and_then(|t| t.other.get("zipkin"))
                .and_then(|z| z.get("address"))
                .and_then(|a| a.as_str())
                .and_then(|address| bootstrap_zipkin(address, max_path)),
            None => None,
        };
        Self {
            provider,
            random_sampling_percentage: sampling,
            custom_tags: tracing.map(|t| t.custom_tags.clone()).unwrap_or_default(),
            disable_span_reporting: false,
        }
    }

    /// These (the mesh's) settings as a workload's Telemetry resources change them
    /// (`telemetry_api::TracingSpec`, precedence already applied): its provider replaces
    /// the mesh's (none: no spans), its `randomSamplingPercentage` the mesh's sampling, its
    /// `customTags` are added to the mesh's (replacing those of the same name), and
    /// `disableSpanReporting` keeps the sampling decision and the propagated context but
    /// reports no span.
    pub fn with_telemetry(&self, mesh: &MeshConfig, spec: &TracingSpec) -> Self {
        let provider = spec
            .provider
            .as_deref()
            .and_then(|name| mesh.extension_provider(name))
            .and_then(provider);
        let mut custom_tags = self.custom_tags.clone();
        for (name, tag) in &spec.custom_tags {
            custom_tags.insert(
                name.clone(),
                CustomTag {
                    literal: tag.literal.as_ref().map(|l| LiteralTag {
                        value: l.value.clone(),
                    }),
                    environment: tag.environment.as_ref().map(|e| EnvironmentTag {
                        name: e.name.clone(),
                        default_value: e.default_value.clone(),
                    }),
                    header: tag.header.as_ref().map(|h| HeaderTag {
                        name: h.name.clone(),
                        default_value: h.default_value.clone(),
                    }),
                },
            );
        }
        Self {
            provider,
            random_sampling_percentage: spec
                .random_sampling_percentage
                .filter(|p| (0.0..=100.0).contains(p))
                .unwrap_or(self.random_sampling_percentage),
            custom_tags,
            disable_span_reporting: spec.disabled,
        }
    }

    /// Whether spans are made and sent anywhere.
    pub fn reports_spans(&self) -> bool {
        self.provider.is_some() && !self.disable_span_reporting
    }

    /// The header formats the provider's tracer writes (Envoy: Zipkin writes B3 multi
    /// headers, OpenTelemetry `traceparent`), to which a proxy adds the formats a request
    /// came with.
    pub fn propagation(&self) -> Propagation {
        match self.provider.as_ref().map(|p| &p.kind) {
            Some(ProviderKind::Zipkin { w3c_too, .. }) => Propagation {
                w3c: *w3c_too,
                ..Propagation::B3_MULTI
            },
            _ => Propagation::W3C,
        }
    }

    /// The values of the custom tags: literals, the proxy's environment variables, the
    /// request's headers (`header` is `None` where there is no request, on a connection),
    /// each with its default when the variable or header is absent. Tags without exactly
    /// one kind are left out (and warned about).
    pub fn custom_tag_values(
        &self,
        env: Lookup<'_>,
        header: Option<Lookup<'_>>,
    ) -> Vec<(String, String)> {
        self.custom_tags
            .iter()
            .filter_map(|(name, tag)| {
                let value = match (&tag.literal, &tag.environment, &tag.header) {
                    (Some(literal), None, None) => literal.value.clone(),
                    (None, Some(e), None) => {
                        env(&e.name).unwrap_or_else(|| e.default_value.clone())
                    }
                    (None, None, Some(h)) => header
                        .and_then(|get| get(&h.name))
                        .unwrap_or_else(|| h.default_value.clone()),
                    _ => return None,
                };
                Some((name.clone(), value))
            })
            .collect()
    }

    /// Whether the traces this proxy starts get 64-bit ids.
    pub fn trace_id_64_bit(&self) -> bool {
        matches!(
            self.provider.as_ref().map(|p| &p.kind),
            Some(ProviderKind::Zipkin {
                trace_id_64_bit: true,
                ..
            })
        )
    }
}

/// The provider behind an `extensionProviders` entry, when it is a tracing one weft
/// exports to and its port is a port.
pub fn provider(entry: &ExtensionProvider) -> Option<TracingProvider> {
    let port = |p: u32| u16::try_from(p).ok().filter(|p| *p > 0);
    let max_tag = |l: u32| if l == 0 { DEFAULT_MAX_TAG_LENGTH } else { l };
    let timeout = |t: Option<&String>| {
        t.and_then(|t| duration::parse(t).ok())
            .unwrap_or(DEFAULT_EXPORT_TIMEOUT)
    };
    if let Some(z) = &entry.zipkin {
        return Some(TracingProvider {
            name: entry.name.clone(),
            collector: Collector::Service(z.service.clone()),
            port: port(z.port)?,
            max_tag_length: max_tag(z.max_tag_length),
            kind: ProviderKind::Zipkin {
                path: z
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| zipkin::DEFAULT_PATH.to_owned()),
                trace_id_64_bit: z.enable_64bit_trace_id,
                w3c_too: z.trace_context_option
                    == Some(ZipkinTraceContextOption::UseB3WithW3cPropagation),
            },
            timeout: timeout(z.timeout.as_ref()),
            headers: headers(&z.headers),
        });
    }
    let o = entry.opentelemetry.as_ref()?;
    let (timeout, headers) = match (&o.http, &o.grpc) {
        (Some(http), _) => (timeout(http.timeout.as_ref()), headers(&http.headers)),
        (None, Some(grpc)) => (
            timeout(grpc.timeout.as_ref()),
            headers(&grpc.initial_metadata),
        ),
        (None, None) => (DEFAULT_EXPORT_TIMEOUT, Vec::new()),
    };
    Some(TracingProvider {
        name: entry.name.clone(),
        collector: Collector::Service(o.service.clone()),
        port: port(o.port)?,
        max_tag_length: max_tag(o.max_tag_length),
        kind: ProviderKind::OpenTelemetry {
            http_path: o.http.as_ref().map(|h| {
                if h.path.is_empty() {
                    OTLP_HTTP_PATH.to_owned()
                } else if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                }
            }),
        },
        timeout,
        headers,
    })
}

/// Headers with a value; `envName` (an environment variable of istiod's) is warned about
/// and left out.
fn headers(list: &[HttpHeader]) -> Vec<(String, String)> {
    list.iter()
        .filter_map(|h| Some((h.name.clone(), h.value.clone()?)))
        .collect()
}

/// `defaultConfig.tracing.zipkin.address`: `host:port`.
fn bootstrap_zipkin(address: &str, max_path: u32) -> Option<TracingProvider> {
    let (host, port) = address.rsplit_once(':')?;
    Some(TracingProvider {
        name: "defaultConfig.tracing.zipkin".to_owned(),
        collector: Collector::Address(host.trim_matches(['[', ']']).to_owned()),
        port: port.parse().ok().filter(|p| *p > 0)?,
        max_tag_length: max_path,
        kind: ProviderKind::Zipkin {
            path: zipkin::DEFAULT_PATH.to_owned(),
            trace_id_64_bit: false,
            w3c_too: false,
        },
        timeout: DEFAULT_EXPORT_TIMEOUT,
        headers: Vec::new(),
    })
}

/// The `host:port` a proxy sends `provider`'s spans to: a Service's first cluster IP (or,
/// headless, a ready endpoint), a ServiceEntry's first endpoint or host, or the address
/// as written. The exporters connect from the proxy itself, as Envoy's tracers do.
pub fn collector_address(
    snapshot: &Snapshot,
    provider: &TracingProvider,
) -> Result<String, String> {
    let service = match &provider.collector {
        Collector::Address(host) => return Ok(join(host, provider.port)),
        Collector::Service(service) => service,
    };
    let settings = weft_core::ext_authz::settings::Settings::grpc(
        provider.name.clone(),
        service.clone(),
        provider.port,
    );
    match crate::authz::ext_authz::provider_service(snapshot, &settings)? {
        ProviderService::Service(service) => {
            if let Some(vip) = service.vips.first() {
                return Ok(std::net::SocketAddr::new(*vip, provider.port).to_string());
            }
            let endpoint = service
                .endpoints
                .iter()
                .find(|e| e.ready)
                .ok_or_else(|| format!("{}: no ready endpoint", service.hostname))?;
            let port = service
                .endpoint_port(provider.port, endpoint)
                .unwrap_or(provider.port);
            Ok(std::net::SocketAddr::new(endpoint.address, port).to_string())
        }
        ProviderService::External(targets) => targets
            .first()
            .map(|(host, port)| join(host, *port))
            .ok_or_else(|| format!("{service}: the ServiceEntry has no address")),
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The exporter configuration for `provider`, whose collector is at `address`.
pub fn exporter_config(
    provider: &TracingProvider,
    address: &str,
    service_name: &str,
) -> ExporterConfig {
    let protocol = match &provider.kind {
        ProviderKind::Zipkin { path, .. } => Protocol::Zipkin { path: path.clone() },
        ProviderKind::OpenTelemetry {
            http_path: Some(path),
        } => Protocol::OtlpHttp { path: path.clone() },
        ProviderKind::OpenTelemetry { http_path: None } => Protocol::OtlpGrpc,
    };
    let mut config = ExporterConfig::new(protocol, format!("http://{address}"), service_name);
    config.timeout = provider.timeout;
    config.headers = provider.headers.clone();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    const PROVIDERS: &str = r#"
extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, enable64bitTraceId: true, maxTagLength: 99}
- name: otel
  opentelemetry:
    service: observability/otel-collector.observability.svc.cluster.local
    port: 4317
    grpc: {timeout: 2s, initialMetadata: [{name: authorization, value: Bearer x}]}
- name: otel-http
  opentelemetry:
    service: otel.example.com
    port: 4318
    http: {path: v1/traces, timeout: 1s}
"#;

    #[test]
    fn istios_defaults_trace_nothing_and_sample_one_percent() {
        let settings = TracingSettings::from_mesh(&MeshConfig::default());
        assert_eq!(settings.provider, None);
        assert_eq!(settings.random_sampling_percentage, 1.0);
        assert!(!settings.reports_spans());
        assert_eq!(settings.propagation(), Propagation::W3C);
        // Providers alone are not used: nothing names them.
        assert_eq!(TracingSettings::from_mesh(&mesh(PROVIDERS)).provider, None);
    }

    #[test]
    fn the_default_provider_and_sampling_are_read_as_istio_reads_them() {
        let zipkin = TracingSettings::from_mesh(&mesh(&format!(
            "{PROVIDERS}defaultProviders: {{tracing: [zipkin, otel]}}\ndefaultConfig: {{tracing: {{sampling: 10}}}}\n"
        )));
        assert_eq!(zipkin.random_sampling_percentage, 10.0);
        let provider = zipkin.provider.clone().expect("zipkin");
        assert_eq!(provider.name, "zipkin");
        assert_eq!(
            provider.collector,
            Collector::Service("zipkin.istio-system.svc.cluster.local".into())
        );
        assert_eq!((provider.port, provider.max_tag_length), (9411, 99));
        assert_eq!(
            provider.kind,
            ProviderKind::Zipkin {
                path: "/api/v2/spans".into(),
                trace_id_64_bit: true,
                w3c_too: false
            }
        );
        assert_eq!(zipkin.propagation(), Propagation::B3_MULTI);
        assert!(zipkin.trace_id_64_bit());
        let config = exporter_config(&provider, "10.96.0.9:9411", "waypoint");
        assert_eq!(
            config.protocol,
            Protocol::Zipkin {
                path: "/api/v2/spans".into()
            }
        );
        assert_eq!(config.endpoint, "http://10.96.0.9:9411");

        let otel = TracingSettings::from_mesh(&mesh(&format!(
            "{PROVIDERS}defaultProviders: {{tracing: [otel]}}\ndefaultConfig: {{tracing: {{sampling: 0}}}}\n"
        )));
        assert_eq!(otel.random_sampling_percentage, 1.0, "0 is proto3's unset");
        let provider = otel.provider.clone().expect("otel");
        assert_eq!(
            provider.kind,
            ProviderKind::OpenTelemetry { http_path: None }
        );
        assert_eq!(provider.timeout, Duration::from_secs(2));
        assert_eq!(
            provider.headers,
            [("authorization".to_owned(), "Bearer x".to_owned())]
        );
        assert_eq!(provider.max_tag_length, 256);
        assert_eq!(otel.propagation(), Propagation::W3C);
        assert_eq!(
            exporter_config(&provider, "a:1", "s").protocol,
            Protocol::OtlpGrpc
        );

        let http = TracingSettings::from_mesh(&mesh(&format!(
            "{PROVIDERS}defaultProviders: {{tracing: [otel-http]}}\ndefaultConfig: {{tracing: {{sampling: 250}}}}\n"
        )));
        assert_eq!(
            http.random_sampling_percentage, 1.0,
            "over 100: the default"
        );
        let provider = http.provider.expect("otel-http");
        assert_eq!(
            exporter_config(&provider, "a:1", "s").protocol,
            Protocol::OtlpHttp {
                path: "/v1/traces".into()
            }
        );
        assert_eq!(provider.timeout, Duration::from_secs(1));
    }

    #[test]
    fn enable_tracing_uses_the_bootstrap_zipkin_address_when_no_provider_is_named() {
        let legacy = "enableTracing: true\ndefaultConfig:\n  tracing:\n    sampling: 50.5\n    maxPathTagLength: 64\n    zipkin: {address: zipkin.istio-system:9411}\n    customTags:\n      team: {literal: {value: payments}}\n";
        let settings = TracingSettings::from_mesh(&mesh(legacy));
        assert_eq!(settings.random_sampling_percentage, 50.5);
        let provider = settings.provider.clone().expect("bootstrap zipkin");
        assert_eq!(
            provider.collector,
            Collector::Address("zipkin.istio-system".into())
        );
        assert_eq!((provider.port, provider.max_tag_length), (9411, 64));
        assert!(settings.custom_tags.contains_key("team"));
        let off = legacy.replace("enableTracing: true", "enableTracing: false");
        assert_eq!(TracingSettings::from_mesh(&mesh(&off)).provider, None);
        // A named provider wins over the bootstrap tracer.
        let named = TracingSettings::from_mesh(&mesh(&format!(
            "{PROVIDERS}defaultProviders: {{tracing: [otel]}}\n{legacy}"
        )));
        assert_eq!(named.provider.map(|p| p.name).as_deref(), Some("otel"));
    }

    #[test]
    fn custom_tags_take_literals_environment_and_headers_with_defaults() {
        let settings = TracingSettings::from_mesh(&mesh(
            "defaultConfig:\n  tracing:\n    customTags:\n      team: {literal: {value: payments}}\n      node: {environment: {name: NODE, defaultValue: unknown}}\n      zone: {environment: {name: ZONE, defaultValue: z0}}\n      user: {header: {name: x-user, defaultValue: anonymous}}\n      bad: {literal: {value: a}, header: {name: b}}\n",
        ));
        let env = |name: &str| (name == "NODE").then(|| "node-1".to_owned());
        let header = |name: &str| (name == "x-user").then(|| "alice".to_owned());
        assert_eq!(
            settings.custom_tag_values(&env, Some(&header)),
            [
                ("node".to_owned(), "node-1".to_owned()),
                ("team".to_owned(), "payments".to_owned()),
                ("user".to_owned(), "alice".to_owned()),
                ("zone".to_owned(), "z0".to_owned()),
            ]
        );
        let on_a_connection = settings.custom_tag_values(&env, None);
        assert!(on_a_connection.contains(&("user".to_owned(), "anonymous".to_owned())));
    }

    #[test]
    fn zipkin_with_w3c_writes_both_formats() {
        let settings = TracingSettings::from_mesh(&mesh(
            "extensionProviders:\n- name: z\n  zipkin: {service: z.example.com, port: 9411, path: /zipkin/spans, traceContextOption: USE_B3_WITH_W3C_PROPAGATION}\ndefaultProviders: {tracing: [z]}\n",
        ));
        let propagation = settings.propagation();
        assert!(propagation.w3c && propagation.b3_multi && !propagation.b3_single);
        assert!(!settings.trace_id_64_bit());
        let provider = settings.provider.expect("z");
        assert_eq!(
            exporter_config(&provider, "a:1", "s").protocol,
            Protocol::Zipkin {
                path: "/zipkin/spans".into()
            }
        );
    }
}
