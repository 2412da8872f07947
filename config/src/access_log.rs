//! Which access-log sinks are in force, from the mesh config: the providers a list names
//! (a Telemetry resource's `accessLogging.providers`), or the mesh's defaults
//! (`defaultProviders.accessLogging`, else meshConfig `accessLogFile`), as Istio picks
//! them. The proxies build their writers from the answer
//! ([`weft_core::access_log::AccessLog::active_for`]); an OTLP collector's service is
//! found in the registry as an ext-authz provider's is ([`otlp_endpoint`]).
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;
use weft_core::access_log::{AccessLogSink, Encoding, OtlpSink};
use weft_core::ext_authz::settings::Settings;

use crate::api::mesh::{ExtensionProvider, MeshConfig};
use crate::api::mesh_access_log::AccessLogFormat;
use crate::authz::ext_authz::{ProviderService, provider_service};
use crate::registry::Snapshot;

/// The built-in provider: meshConfig's own file (`accessLogFile`, `/dev/stdout` when
/// unset), in its `accessLogEncoding` and `accessLogFormat`, as Istio's `envoy`.
pub const ENVOY_PROVIDER: &str = "envoy";
/// Where a file provider without a `path` writes, as Istio.
pub const DEFAULT_PATH: &str = "/dev/stdout";
/// `logName` of an `envoyOtelAls` provider without one, as Istio.
pub const DEFAULT_OTEL_LOG_NAME: &str = "otel_envoy_accesslog";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessLogProviderError {
    #[error("the mesh config defines no extension provider {0:?}")]
    Unknown(String),
    #[error(
        "extension provider {0:?} is not an access log provider (envoyFileAccessLog or envoyOtelAls)"
    )]
    NotAccessLog(String),
    #[error(
        "extension provider {name:?}: envoyOtelAls needs a service and a port, not {service:?} and {port}"
    )]
    Service {
        name: String,
        service: String,
        port: u32,
    },
}

/// The sinks of `providers` (names of extension providers, or `envoy`), each once; an
/// empty list is the mesh's defaults: `defaultProviders.accessLogging` when it names any,
/// else meshConfig's `accessLogFile` when set (Istio's legacy setting, used only where no
/// provider is in force), else none (off). A provider that cannot be used is skipped, as
/// istiod skips it, and returned beside the sinks so the caller can say why.
pub fn access_log_sinks(
    mesh: &MeshConfig,
    providers: &[String],
) -> (Vec<AccessLogSink>, Vec<AccessLogProviderError>) {
    let names: &[String] = if providers.is_empty() {
        match &mesh.default_providers {
            Some(defaults) if !defaults.access_logging.is_empty() => &defaults.access_logging,
            _ if !mesh.access_log_file.is_empty() => return (vec![mesh_file(mesh)], Vec::new()),
            _ => return (Vec::new(), Vec::new()),
        }
    } else {
        providers
    };
    let mut sinks = Vec::with_capacity(names.len());
    let mut skipped = Vec::new();
    for name in names {
        match provider_sink(mesh, name) {
            Ok(sink) if !sinks.contains(&sink) => sinks.push(sink),
            Ok(_) => {}
            Err(error) => skipped.push(error),
        }
    }
    (sinks, skipped)
}

/// The mesh's default sinks, as the proxies use them: a default provider that cannot be
/// used (validation warns about it) is skipped with a log line saying why; the others
/// write.
pub fn default_sinks(mesh: &MeshConfig) -> Vec<AccessLogSink> {
    let (sinks, skipped) = access_log_sinks(mesh, &[]);
    for error in skipped {
        tracing::warn!(%error, "defaultProviders.accessLogging: provider skipped");
    }
    sinks
}

/// The sink of provider `name`.
pub fn provider_sink(
    mesh: &MeshConfig,
    name: &str,
) -> Result<AccessLogSink, AccessLogProviderError> {
    let Some(provider) = mesh.extension_provider(name) else {
        return if name == ENVOY_PROVIDER {
            Ok(mesh_file(mesh))
        } else {
            Err(AccessLogProviderError::Unknown(name.to_string()))
        };
    };
    sink(provider)
}

fn sink(provider: &ExtensionProvider) -> Result<AccessLogSink, AccessLogProviderError> {
    if let Some(file) = &provider.envoy_file_access_log {
        let path = if file.path.is_empty() {
            DEFAULT_PATH.to_string()
        } else {
            file.path.clone()
        };
        let format = file.log_format.as_ref();
        let (encoding, format) = match format.and_then(|f| f.labels.as_ref()) {
            // Text and labels are one of: validation refuses both.
            Some(labels) if format.and_then(|f| f.text.as_ref()).is_none() => {
                let object: serde_json::Map<String, Value> = label_formats(labels)
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                (Encoding::Json, Value::Object(object).to_string())
            }
            _ => (Encoding::Text, text(format)),
        };
        return Ok(AccessLogSink::File {
            path,
            encoding,
            format,
        });
    }
    if let Some(otel) = &provider.envoy_otel_als {
        let port = u16::try_from(otel.port).ok().filter(|p| *p > 0);
        let (Some(port), false) = (port, otel.service.is_empty()) else {
            return Err(AccessLogProviderError::Service {
                name: provider.name.clone(),
                service: otel.service.clone(),
                port: otel.port,
            });
        };
        let format = otel.log_format.as_ref();
        return Ok(AccessLogSink::Otlp(OtlpSink {
            service: otel.service.clone(),
            port,
            log_name: if otel.log_name.is_empty() {
                DEFAULT_OTEL_LOG_NAME.to_string()
            } else {
                otel.log_name.clone()
            },
            format: text(format),
            labels: format
                .and_then(|f| f.labels.as_ref())
                .map(label_formats)
                .unwrap_or_default(),
        }));
    }
    Err(AccessLogProviderError::NotAccessLog(provider.name.clone()))
}

/// meshConfig's own file: `accessLogFile` (`/dev/stdout` for the `envoy` provider when
/// unset), `accessLogEncoding`, `accessLogFormat`.
fn mesh_file(mesh: &MeshConfig) -> AccessLogSink {
    AccessLogSink::File {
        path: if mesh.access_log_file.is_empty() {
            DEFAULT_PATH.to_string()
        } else {
            mesh.access_log_file.clone()
        },
        encoding: mesh.access_log_encoding(),
        format: mesh.access_log_format.clone(),
    }
}

/// `logFormat.text`; empty (Istio's default line) when unset.
fn text(format: Option<&AccessLogFormat>) -> String {
    format.and_then(|f| f.text.clone()).unwrap_or_default()
}

/// Each label's operators: a string as written, a number or boolean as its text; other
/// values (lists, objects, null) are left out (validation warns about them).
pub fn label_formats(labels: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    labels
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((key.clone(), text))
        })
        .collect()
}

/// Where an OTLP sink's collector is reached, `http://address:port`: a ready endpoint of
/// its Service (the port it listens on), the Service's address when it has none, or a
/// ServiceEntry's first address; found as an ext-authz provider's service is.
pub fn otlp_endpoint(snapshot: &Snapshot, sink: &OtlpSink) -> Result<String, String> {
    let settings = Settings::grpc("envoyOtelAls", sink.service.clone(), sink.port);
    match provider_service(snapshot, &settings)? {
        ProviderService::Service(service) => {
            let endpoint = service.endpoints.iter().filter(|e| e.ready).find_map(|e| {
                service
                    .endpoint_port(sink.port, e)
                    .map(|port| SocketAddr::new(e.address, port))
            });
            let address = endpoint
                .or_else(|| {
                    service
                        .vips
                        .first()
                        .map(|ip| SocketAddr::new(*ip, sink.port))
                })
                .ok_or_else(|| format!("service {} has no address", service.hostname))?;
            Ok(format!("http://{address}"))
        }
        ProviderService::External(targets) => {
            let (host, port) = targets
                .first()
                .ok_or_else(|| format!("ServiceEntry {} has no address", sink.service))?;
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(format!("http://{}", SocketAddr::new(ip, *port))),
                Err(_) => Ok(format!("http://{host}:{port}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    const PROVIDERS: &str = "extensionProviders:
- name: otel
  envoyOtelAls:
    service: observability/otel.observability.svc.cluster.local
    port: 4317
    logFormat:
      text: '%RESPONSE_CODE% %REQ(:PATH)%'
      labels: {code: '%RESPONSE_CODE%', peer: '%DOWNSTREAM_PEER_URI_SAN%', weight: 3}
- name: json-file
  envoyFileAccessLog:
    path: /var/log/weft.json
    logFormat:
      labels: {code: '%RESPONSE_CODE%', path: '%REQ(:PATH)%'}
- name: plain-file
  envoyFileAccessLog: {}
- name: authz
  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}
";

    #[test]
    fn without_providers_the_legacy_file_is_in_force_and_off_by_default() {
        assert_eq!(
            access_log_sinks(&MeshConfig::default(), &[]),
            (Vec::new(), Vec::new())
        );
        let legacy = mesh("accessLogFile: /dev/stdout\naccessLogEncoding: JSON");
        assert_eq!(
            access_log_sinks(&legacy, &[]),
            (
                vec![AccessLogSink::File {
                    path: "/dev/stdout".into(),
                    encoding: Encoding::Json,
                    format: String::new(),
                }],
                Vec::new()
            )
        );
    }

    #[test]
    fn default_providers_replace_the_legacy_file_and_envoy_is_built_in() {
        let m = mesh(&format!(
            "{PROVIDERS}accessLogFile: /tmp/mesh.log\naccessLogFormat: '%DURATION%'\ndefaultProviders:\n  accessLogging: [otel, otel]\n"
        ));
        let (sinks, skipped) = access_log_sinks(&m, &[]);
        assert_eq!(skipped, []);
        assert_eq!(
            sinks.len(),
            1,
            "named twice, one sink; no legacy file: {sinks:?}"
        );
        let AccessLogSink::Otlp(otlp) = &sinks[0] else {
            panic!("{sinks:?}")
        };
        assert_eq!(
            otlp.service,
            "observability/otel.observability.svc.cluster.local"
        );
        assert_eq!(otlp.port, 4317);
        assert_eq!(otlp.log_name, DEFAULT_OTEL_LOG_NAME);
        assert_eq!(otlp.format, "%RESPONSE_CODE% %REQ(:PATH)%");
        assert_eq!(
            otlp.labels,
            [
                ("code".to_string(), "%RESPONSE_CODE%".to_string()),
                ("peer".to_string(), "%DOWNSTREAM_PEER_URI_SAN%".to_string()),
                ("weight".to_string(), "3".to_string()),
            ]
        );
        let (named, _) = access_log_sinks(&m, &["envoy".into(), "plain-file".into()]);
        assert_eq!(
            named,
            [
                AccessLogSink::File {
                    path: "/tmp/mesh.log".into(),
                    encoding: Encoding::Text,
                    format: "%DURATION%".into(),
                },
                AccessLogSink::File {
                    path: DEFAULT_PATH.into(),
                    encoding: Encoding::Text,
                    format: String::new(),
                },
            ]
        );
    }

    #[test]
    fn a_file_providers_labels_are_its_json_format() {
        let m = mesh(PROVIDERS);
        let (sinks, _) = access_log_sinks(&m, &["json-file".into()]);
        let [
            AccessLogSink::File {
                path,
                encoding,
                format,
            },
        ] = sinks.as_slice()
        else {
            panic!("{sinks:?}")
        };
        assert_eq!(path, "/var/log/weft.json");
        assert_eq!(*encoding, Encoding::Json);
        let parsed =
            weft_core::access_log::Format::parse(*encoding, format).expect("a JSON format");
        let mut entry = weft_core::access_log::HttpEntry::started(
            "GET",
            "/ratings/1",
            "ratings",
            http::Version::HTTP_11,
        );
        entry.response_code = 503;
        assert_eq!(parsed.render(&entry), r#"{"code":503,"path":"/ratings/1"}"#);
    }

    #[test]
    fn unusable_providers_are_skipped_and_said_the_others_write() {
        let m = mesh(PROVIDERS);
        assert_eq!(
            access_log_sinks(&m, &["nope".into(), "plain-file".into()]),
            (
                vec![AccessLogSink::File {
                    path: DEFAULT_PATH.into(),
                    encoding: Encoding::Text,
                    format: String::new(),
                }],
                vec![AccessLogProviderError::Unknown("nope".into())]
            )
        );
        assert_eq!(
            access_log_sinks(&m, &["authz".into()]),
            (
                Vec::new(),
                vec![AccessLogProviderError::NotAccessLog("authz".into())]
            )
        );
        let portless = mesh(
            "extensionProviders:\n- name: o\n  envoyOtelAls: {service: otel.obs.svc.cluster.local}\n",
        );
        let (sinks, skipped) = access_log_sinks(&portless, &["o".into()]);
        assert!(sinks.is_empty());
        assert!(matches!(
            skipped.as_slice(),
            [AccessLogProviderError::Service { .. }]
        ));
        // As mesh defaults: the usable provider still writes (istiod skips the unknown one).
        let defaults = mesh(&format!(
            "{PROVIDERS}defaultProviders:\n  accessLogging: [missing, plain-file]\n"
        ));
        assert_eq!(default_sinks(&defaults).len(), 1);
    }
}
