//! The mesh config's access-log providers (`envoyFileAccessLog`, `envoyOtelAls`) and
//! `defaultProviders.accessLogging`.
//!
//! Refused, as istiod cannot use them: a file provider's `logFormat` with both `text` and
//! `labels` (one of, in Istio's API); an OTLP provider without a service or port.
//!
//! Warned about: fields of these providers weft does not act on (by name); labels that are
//! not a string, number or boolean (left out); command operators weft does not evaluate
//! (printed `-`); an OTLP provider whose service names no known host (its records are not
//! sent until it exists); default providers that name no access-log provider (no access
//! logs while they do), and an `accessLogFile` the default providers replace (as in Istio,
//! unless they name `envoy`).
use std::collections::BTreeMap;

use serde_json::Value;
use weft_core::access_log::{Encoding, Format};

use super::paths::{FieldPath, Issues};
use crate::access_log::{ENVOY_PROVIDER, label_formats, provider_sink};
use crate::api::mesh::{ExtensionProvider, MeshConfig};
use crate::api::mesh_access_log::AccessLogFormat;

/// What istiod would refuse in provider `provider` (at `at`).
pub(super) fn refusals(provider: &ExtensionProvider, at: &FieldPath, issues: &mut Issues) {
    if let Some(file) = &provider.envoy_file_access_log
        && let Some(format) = &file.log_format
        && format.text.is_some()
        && format.labels.is_some()
    {
        issues.add(
            &at.field("envoyFileAccessLog").field("logFormat"),
            "text and labels are one of: set only one",
        );
    }
    if let Some(otel) = &provider.envoy_otel_als {
        let at = at.field("envoyOtelAls");
        if otel.service.is_empty() {
            issues.add(&at.field("service"), "required");
        }
        if otel.port == 0 || otel.port > u32::from(u16::MAX) {
            issues.add(&at.field("port"), format!("{} is not a port", otel.port));
        }
    }
}

/// What weft accepts in provider `provider` without acting on it as written.
pub(super) fn warnings(
    provider: &ExtensionProvider,
    at: &FieldPath,
    known: &dyn Fn(&str) -> bool,
    issues: &mut Issues,
) {
    if let Some(file) = &provider.envoy_file_access_log {
        let at = at.field("envoyFileAccessLog");
        unsupported(&file.other, &at, issues);
        if let Some(format) = &file.log_format {
            let encoding = if format.labels.is_some() {
                Encoding::Json
            } else {
                Encoding::Text
            };
            log_format(format, encoding, &at.field("logFormat"), issues);
        }
    }
    if let Some(otel) = &provider.envoy_otel_als {
        let at = at.field("envoyOtelAls");
        unsupported(&otel.other, &at, issues);
        if let Some(format) = &otel.log_format {
            log_format(format, Encoding::Text, &at.field("logFormat"), issues);
        }
        let host = otel
            .service
            .split_once('/')
            .map_or(otel.service.as_str(), |(_, h)| h);
        if !host.is_empty() && !known(host) {
            issues.add(
                &at.field("service"),
                format!(
                    "{host:?} names no known Service or ServiceEntry host: access log records \
                     are not sent until it exists"
                ),
            );
        }
    }
}

/// `defaultProviders.accessLogging` naming what is not an access-log provider, and an
/// `accessLogFile` it replaces.
pub(super) fn default_providers(mesh: &MeshConfig, root: &FieldPath, issues: &mut Issues) {
    let Some(defaults) = &mesh.default_providers else {
        return;
    };
    if defaults.access_logging.is_empty() {
        return;
    }
    let at = root.field("defaultProviders").field("accessLogging");
    for (i, name) in defaults.access_logging.iter().enumerate() {
        if let Err(error) = provider_sink(mesh, name) {
            issues.add(
                &at.index(i),
                format!("{error}: skipped (as Istio skips it); the other providers named here still write"),
            );
        }
    }
    if !mesh.access_log_file.is_empty()
        && !defaults.access_logging.iter().any(|n| n == ENVOY_PROVIDER)
    {
        issues.add(
            &root.field("accessLogFile"),
            "not used: defaultProviders.accessLogging names the access log providers in \
             force (as in Istio); add \"envoy\" to it to keep this file",
        );
    }
}

fn unsupported(other: &BTreeMap<String, Value>, at: &FieldPath, issues: &mut Issues) {
    for name in other.keys() {
        issues.add(
            &at.field(name),
            "weft does not act on this field of the provider; it has no effect",
        );
    }
}

fn log_format(format: &AccessLogFormat, encoding: Encoding, at: &FieldPath, issues: &mut Issues) {
    unsupported(&format.other, at, issues);
    if let Some(text) = &format.text {
        operators(&Format::parse(encoding, text), &at.field("text"), issues);
    }
    if let Some(labels) = &format.labels {
        let at = at.field("labels");
        for (key, value) in labels {
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                issues.add(
                    &at.field(key),
                    "not a string, number or boolean: left out of the access log",
                );
            }
        }
        operators(&Ok(Format::labels(&label_formats(labels))), &at, issues);
    }
}

fn operators(
    format: &Result<Format, weft_core::access_log::FormatError>,
    at: &FieldPath,
    issues: &mut Issues,
) {
    let Ok(format) = format else { return };
    let unknown = format.unknown_operators();
    if !unknown.is_empty() {
        issues.add(
            at,
            format!(
                "weft does not evaluate {}: printed as \"-\"",
                unknown
                    .iter()
                    .map(|op| format!("%{op}%"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::api::mesh::MeshConfig;
    use crate::api::{Kind, ObjectRef};
    use crate::translate::hosts::MeshSettings;
    use crate::validate::mesh::{mesh_config, warnings};

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    fn fields(issues: &[crate::refusal::FieldIssue]) -> Vec<String> {
        issues.iter().map(|i| i.field.clone()).collect()
    }

    #[test]
    fn access_log_providers_are_refused_or_warned_by_field() {
        let m = mesh(
            r#"
accessLogFile: /dev/stdout
extensionProviders:
- name: otel
  envoyOtelAls:
    service: obs/otel.obs.svc.cluster.local
    port: 4317
    authority: otel
    logFormat:
      text: '%RESPONSE_CODE% %FILTER_STATE(x)%'
      labels: {code: '%RESPONSE_CODE%', nested: {a: b}}
- name: both
  envoyFileAccessLog:
    path: /tmp/a.log
    logFormat: {text: '%DURATION%', labels: {d: '%DURATION%'}}
- name: portless
  envoyOtelAls: {service: missing.obs.svc.cluster.local}
defaultProviders:
  accessLogging: [otel, nowhere]
"#,
        );
        assert_eq!(
            fields(&mesh_config(&m)),
            [
                "data.mesh.extensionProviders[1].envoyFileAccessLog.logFormat",
                "data.mesh.extensionProviders[2].envoyOtelAls.port",
            ]
        );
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let known = |host: &str| host == "otel.obs.svc.cluster.local";
        assert_eq!(
            fields(&warnings(&istio, &m, &MeshSettings::default(), &known)),
            [
                "data.mesh.extensionProviders[0].envoyOtelAls.authority",
                "data.mesh.extensionProviders[0].envoyOtelAls.logFormat.text",
                "data.mesh.extensionProviders[0].envoyOtelAls.logFormat.labels.nested",
                "data.mesh.extensionProviders[2].envoyOtelAls.service",
                "data.mesh.defaultProviders.accessLogging[1]",
                "data.mesh.accessLogFile",
            ]
        );
    }

    #[test]
    fn default_providers_naming_access_log_providers_are_not_warned() {
        let m = mesh(
            "accessLogFile: /dev/stdout\nextensionProviders:\n- name: otel\n  envoyOtelAls: {service: otel.obs.svc.cluster.local, port: 4317}\ndefaultProviders:\n  accessLogging: [envoy, otel]\n",
        );
        assert!(mesh_config(&m).is_empty());
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        assert_eq!(
            fields(&warnings(&istio, &m, &MeshSettings::default(), &|_| true)),
            Vec::<String>::new()
        );
    }
}
