//! The tracing parts of the mesh config: `zipkin` and `opentelemetry` extension providers,
//! `defaultProviders.tracing`, `enableTracing`, `defaultConfig.tracing`.
//!
//! Refused, as istiod refuses them: a tracing provider without a service or with a port
//! that is not one, an unparsable `timeout`.
//!
//! Warned about: `defaultProviders.tracing` naming no provider, or one weft does not
//! export to (only the first name is used, as in Istio); provider fields weft does not act
//! on (`resourceDetectors`, `serviceAttributeEnrichment`, `dynatraceSampler`, headers from
//! istiod's environment, `grpc` beside `http`); providers whose service names no known
//! host; a `sampling` that is not a percentage; custom tags without exactly one kind;
//! `defaultConfig` fields other than `tracing`, and `tracing` fields weft does not act on.
use super::paths::{FieldPath, Issues};
use crate::api::mesh::ExtensionProvider;
use crate::api::mesh::MeshConfig;
use crate::api::mesh_tracing::{HttpHeader, ISTIO_PROXY_TRACING_FIELDS};
use crate::duration;

const NO_EFFECT: &str = "weft does not act on this field; it has no effect";

/// Refusals of one extension provider's tracing kind.
pub(super) fn provider(provider: &ExtensionProvider, at: &FieldPath, issues: &mut Issues) {
    let mut check = |kind: &str, service: &str, port: u32, timeouts: &[(&str, Option<&str>)]| {
        let at = at.field(kind);
        if service.is_empty() {
            issues.add(&at.field("service"), "required");
        }
        if port == 0 || port > u32::from(u16::MAX) {
            issues.add(&at.field("port"), "required: a port from 1 to 65535");
        }
        for (field, text) in timeouts {
            if let Some(text) = text
                && let Err(e) = duration::parse(text)
            {
                issues.add(&at.field(field), e.to_string());
            }
        }
    };
    if let Some(z) = &provider.zipkin {
        check(
            "zipkin",
            &z.service,
            z.port,
            &[("timeout", z.timeout.as_deref())],
        );
    }
    if let Some(o) = &provider.opentelemetry {
        check(
            "opentelemetry",
            &o.service,
            o.port,
            &[
                (
                    "http.timeout",
                    o.http.as_ref().and_then(|h| h.timeout.as_deref()),
                ),
                (
                    "grpc.timeout",
                    o.grpc.as_ref().and_then(|g| g.timeout.as_deref()),
                ),
            ],
        );
    }
}

fn headers(list: &[HttpHeader], at: &FieldPath, issues: &mut Issues) {
    for (i, header) in list.iter().enumerate() {
        if header.value.is_none() {
            issues.add(
                &at.index(i),
                if header.env_name.is_some() {
                    "weft's proxies cannot read istiod's environment: this header is not sent"
                } else {
                    "has no value: not sent"
                },
            );
        }
    }
}

/// What weft accepts in the tracing parts of `mesh` without acting on it as written.
pub(super) fn warnings(
    mesh: &MeshConfig,
    root: &FieldPath,
    known: &dyn Fn(&str) -> bool,
    issues: &mut Issues,
) {
    for (i, provider) in mesh.extension_providers.iter().enumerate() {
        let at = root.field("extensionProviders").index(i);
        if let Some(z) = &provider.zipkin {
            let at = at.field("zipkin");
            unknown_host(&z.service, &at, known, issues);
            headers(&z.headers, &at.field("headers"), issues);
        }
        if let Some(o) = &provider.opentelemetry {
            let at = at.field("opentelemetry");
            unknown_host(&o.service, &at, known, issues);
            if let Some(http) = &o.http {
                headers(&http.headers, &at.field("http").field("headers"), issues);
                if o.grpc.is_some() {
                    issues.add(
                        &at.field("grpc"),
                        "ignored: with http set, spans go over OTLP/HTTP (as in Istio)",
                    );
                }
            } else if let Some(grpc) = &o.grpc {
                headers(
                    &grpc.initial_metadata,
                    &at.field("grpc").field("initialMetadata"),
                    issues,
                );
            }
            for (field, set) in [
                ("resourceDetectors", o.resource_detectors.is_some()),
                (
                    "serviceAttributeEnrichment",
                    o.service_attribute_enrichment.is_some(),
                ),
                ("dynatraceSampler", o.dynatrace_sampler.is_some()),
            ] {
                if set {
                    issues.add(&at.field(field), NO_EFFECT);
                }
            }
        }
    }
    default_providers(mesh, root, issues);
    default_config(mesh, root, issues);
}

fn unknown_host(service: &str, at: &FieldPath, known: &dyn Fn(&str) -> bool, issues: &mut Issues) {
    let host = service.split_once('/').map_or(service, |(_, h)| h);
    if !host.is_empty() && !known(host) {
        issues.add(
            &at.field("service"),
            format!(
                "{host:?} names no known Service or ServiceEntry host: spans are not exported \
                 until it exists"
            ),
        );
    }
}

fn default_providers(mesh: &MeshConfig, root: &FieldPath, issues: &mut Issues) {
    let Some(defaults) = &mesh.default_providers else {
        return;
    };
    let at = root.field("defaultProviders").field("tracing");
    let Some(first) = defaults.tracing.first() else {
        return;
    };
    match mesh.extension_provider(first) {
        None => issues.add(
            &at.index(0),
            format!("names no extension provider {first:?}: nothing is traced"),
        ),
        Some(p) if p.zipkin.is_none() && p.opentelemetry.is_none() => issues.add(
            &at.index(0),
            format!(
                "{first:?} is not a zipkin or opentelemetry provider, the tracing providers weft \
                 exports to: nothing is traced"
            ),
        ),
        Some(_) => {}
    }
    for i in 1..defaults.tracing.len() {
        issues.add(
            &at.index(i),
            "only the first tracing provider is used (as in Istio)",
        );
    }
}

fn default_config(mesh: &MeshConfig, root: &FieldPath, issues: &mut Issues) {
    let Some(config) = &mesh.default_config else {
        return;
    };
    let at = root.field("defaultConfig");
    for name in config.other.keys() {
        issues.add(&at.field(name), NO_EFFECT);
    }
    let Some(tracing) = &config.tracing else {
        return;
    };
    let at = at.field("tracing");
    if let Some(sampling) = tracing.sampling
        && !(0.0..=100.0).contains(&sampling)
    {
        issues.add(
            &at.field("sampling"),
            format!("{sampling} is not a percentage from 0 to 100: Istio's default, 1%, is used"),
        );
    }
    for (name, tag) in &tracing.custom_tags {
        let kinds = usize::from(tag.literal.is_some())
            + usize::from(tag.environment.is_some())
            + usize::from(tag.header.is_some());
        if kinds != 1 {
            issues.add(
                &at.field("customTags").key(name),
                format!(
                    "needs exactly one of literal, environment, header (has {kinds}): not added"
                ),
            );
        }
    }
    let from_providers = mesh
        .default_providers
        .as_ref()
        .is_some_and(|d| !d.tracing.is_empty());
    for name in tracing.other.keys() {
        let reason = if !ISTIO_PROXY_TRACING_FIELDS.contains(&name.as_str()) {
            "not a field of Istio's ProxyConfig.Tracing (misspelt?); ignored".to_owned()
        } else if name == "zipkin" && from_providers {
            "not used: defaultProviders.tracing names the provider (as in Istio)".to_owned()
        } else if name == "zipkin" && mesh.enable_tracing != Some(true) {
            "used only with enableTracing: true (as in Istio)".to_owned()
        } else if name == "zipkin" {
            continue;
        } else {
            NO_EFFECT.to_owned()
        };
        issues.add(&at.field(name), reason);
    }
}
