//! Istio's mesh config (the `istio` ConfigMap, key `mesh`).
//!
//! Refused, as istiod refuses a mesh config it cannot use: a field name Istio's MeshConfig
//! does not define (a misspelling would otherwise silently mean the default), extension
//! providers without a name, with a duplicate name, with no provider or two, and ext-authz
//! providers without a service or port, with an unparsable timeout or `statusOnError`, a
//! body buffer of 0 bytes (Envoy refuses it), or a lone `*` in the HTTP provider's header
//! lists (Istio refuses it); an `outboundTrafficPolicy.mode` Istio does not define (refused
//! when parsed); an `outboundTrafficPolicy.egressProxy` under `ALLOW_ANY` (Istio's sidecars
//! send unknown destinations through it; weft's agents would let them out directly, past
//! the proxy the operator meant them to pass).
//!
//! Warned about: an `accessLogFormat` with command operators weft does not evaluate, or a
//! JSON one that is not an object of strings (Istio's default is used);
//! since weft accepts them but does not act on them: every other Istio field,
//! and provider kinds other than the ext-authz and access-log ones (those are checked in
//! `mesh_access_log`, with `defaultProviders.accessLogging`); ext-authz providers whose service names
//! no known host (the requests sent to them are denied); `trustDomain` or `rootNamespace`
//! different from weft's own settings; an `egressProxy` under `REGISTRY_ONLY` (no effect, as
//! in Istio) (the `--trust-domain` flag; the root namespace,
//! `istio-system`, is where this ConfigMap is read); an `istio`
//! ConfigMap outside the root namespace (not read, as Istio does not read it).
use std::collections::HashSet;

use super::paths::{FieldPath, Issues};
use crate::api::ObjectRef;
use crate::api::mesh::{
    EnvoyExtAuthzGrpcProvider, EnvoyExtAuthzHttpProvider, ExtAuthzRequestBody, ISTIO_MESH_FIELDS,
    ISTIO_PROVIDER_KINDS, MESH_KEY, MeshConfig, OutboundTrafficMode,
};
use crate::duration;
use crate::refusal::FieldIssue;
use crate::translate::hosts::MeshSettings;
use weft_core::access_log::Format;

fn root() -> FieldPath {
    FieldPath::root("data").field(MESH_KEY)
}

pub(super) fn mesh_config(mesh: &MeshConfig) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = root();
    for name in mesh.other.keys() {
        if !ISTIO_MESH_FIELDS.contains(&name.as_str()) {
            issues.add(
                &root.field(name),
                "not a field of Istio's MeshConfig (misspelt?)",
            );
        }
    }
    if let Some(policy) = &mesh.outbound_traffic_policy
        && policy.egress_proxy.is_some()
        && mesh.outbound_traffic_mode() == OutboundTrafficMode::AllowAny
    {
        issues.add(
            &root.field("outboundTrafficPolicy").field("egressProxy"),
            "not supported: weft's agents send connections to unknown destinations out \
             directly, not through an egress proxy; use REGISTRY_ONLY with ServiceEntries bound \
             to an egress waypoint instead",
        );
    }
    if let Some(locality) = &mesh.locality_lb_setting {
        super::networking::locality_lb_setting(
            locality,
            &root.field("localityLbSetting"),
            &mut issues,
        );
    }
    let mut names = HashSet::new();
    for (i, provider) in mesh.extension_providers.iter().enumerate() {
        let at = root.field("extensionProviders").index(i);
        if provider.name.is_empty() {
            issues.add(&at.field("name"), "required");
        } else if !names.insert(provider.name.as_str()) {
            issues.add(
                &at.field("name"),
                format!(
                    "{:?} is already the name of another provider",
                    provider.name
                ),
            );
        }
        for kind in provider.other.keys() {
            if !ISTIO_PROVIDER_KINDS.contains(&kind.as_str()) {
                issues.add(&at.field(kind), "not a provider kind Istio defines");
            }
        }
        let kinds = usize::from(provider.envoy_ext_authz_http.is_some())
            + usize::from(provider.envoy_ext_authz_grpc.is_some())
            + usize::from(provider.envoy_file_access_log.is_some())
            + usize::from(provider.envoy_otel_als.is_some())
            + usize::from(provider.zipkin.is_some())
            + usize::from(provider.opentelemetry.is_some())
            + provider.other.len();
        if kinds != 1 {
            issues.add(
                &at,
                format!("must configure exactly one provider, found {kinds}"),
            );
        }
        if let Some(http) = &provider.envoy_ext_authz_http {
            ext_authz_http(http, &at.field("envoyExtAuthzHttp"), &mut issues);
        }
        if let Some(grpc) = &provider.envoy_ext_authz_grpc {
            ext_authz_grpc(grpc, &at.field("envoyExtAuthzGrpc"), &mut issues);
        }
        super::mesh_access_log::refusals(provider, &at, &mut issues);
        super::mesh_tracing::provider(provider, &at, &mut issues);
    }
    issues.into_vec()
}

fn ext_authz_http(provider: &EnvoyExtAuthzHttpProvider, at: &FieldPath, issues: &mut Issues) {
    service_and_port(&provider.service, provider.port, at, issues);
    request_body(provider.include_request_body_in_check.as_ref(), at, issues);
    // Istio refuses a lone `*`: it would send (or copy) every header.
    for (name, list) in [
        (
            "includeRequestHeadersInCheck",
            &provider.include_request_headers_in_check,
        ),
        ("includeHeadersInCheck", &provider.include_headers_in_check),
        (
            "headersToUpstreamOnAllow",
            &provider.headers_to_upstream_on_allow,
        ),
        (
            "headersToDownstreamOnDeny",
            &provider.headers_to_downstream_on_deny,
        ),
        (
            "headersToDownstreamOnAllow",
            &provider.headers_to_downstream_on_allow,
        ),
    ] {
        for (i, value) in list.iter().enumerate() {
            if value == "*" {
                issues.add(
                    &at.field(name).index(i),
                    "a lone \"*\" is not supported: use a prefix (\"x-*\") or a suffix (\"*-id\")",
                );
            }
        }
    }
    timeout(provider.timeout.as_deref(), at, issues);
    status_on_error(provider.status_on_error.as_deref(), at, issues);
    if let Some(prefix) = &provider.path_prefix
        && !prefix.is_empty()
        && !prefix.starts_with('/')
    {
        issues.add(&at.field("pathPrefix"), "must start with '/'");
    }
}

fn ext_authz_grpc(provider: &EnvoyExtAuthzGrpcProvider, at: &FieldPath, issues: &mut Issues) {
    service_and_port(&provider.service, provider.port, at, issues);
    request_body(provider.include_request_body_in_check.as_ref(), at, issues);
    timeout(provider.timeout.as_deref(), at, issues);
    status_on_error(provider.status_on_error.as_deref(), at, issues);
}

/// Envoy refuses a body buffer of 0 bytes (`max_request_bytes` must be > 0).
fn request_body(body: Option<&ExtAuthzRequestBody>, at: &FieldPath, issues: &mut Issues) {
    if body.is_some_and(|b| b.max_request_bytes == 0) {
        issues.add(
            &at.field("includeRequestBodyInCheck")
                .field("maxRequestBytes"),
            "required: at least 1 byte, as Envoy requires",
        );
    }
}

fn service_and_port(service: &str, port: u32, at: &FieldPath, issues: &mut Issues) {
    if service.is_empty() {
        issues.add(&at.field("service"), "required");
    }
    if port == 0 || port > u32::from(u16::MAX) {
        issues.add(&at.field("port"), "required: a port from 1 to 65535");
    }
}

fn timeout(timeout: Option<&str>, at: &FieldPath, issues: &mut Issues) {
    if let Some(text) = timeout
        && let Err(e) = duration::parse(text)
    {
        issues.add(&at.field("timeout"), e.to_string());
    }
}

fn status_on_error(status: Option<&str>, at: &FieldPath, issues: &mut Issues) {
    if let Some(text) = status
        && !text
            .parse::<u16>()
            .is_ok_and(|code| (100..=599).contains(&code))
    {
        issues.add(
            &at.field("statusOnError"),
            format!("{text:?} is not an HTTP status code"),
        );
    }
}

/// What weft accepts in a mesh config without acting on it, and ext-authz providers whose
/// service names no known host (`known` answers for hostnames).
pub(super) fn warnings(
    object: &ObjectRef,
    mesh: &MeshConfig,
    settings: &MeshSettings,
    known: &dyn Fn(&str) -> bool,
) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = root();
    if object.namespace != settings.root_namespace {
        issues.add(
            &FieldPath::root("metadata").field("namespace"),
            format!(
                "not read: the mesh config is the ConfigMap istio in {} (the root namespace)",
                settings.root_namespace
            ),
        );
        return issues.into_vec();
    }
    for name in mesh.other.keys() {
        if ISTIO_MESH_FIELDS.contains(&name.as_str()) {
            issues.add(
                &root.field(name),
                "weft does not act on this field of Istio's MeshConfig; it has no effect",
            );
        }
    }
    if let Some(policy) = &mesh.outbound_traffic_policy
        && policy.egress_proxy.is_some()
        && mesh.outbound_traffic_mode() == OutboundTrafficMode::RegistryOnly
    {
        issues.add(
            &root.field("outboundTrafficPolicy").field("egressProxy"),
            "has no effect under REGISTRY_ONLY (as in Istio): unknown destinations are refused",
        );
    }
    for (i, provider) in mesh.extension_providers.iter().enumerate() {
        let at = root.field("extensionProviders").index(i);
        // Written to by Telemetry access logging (`telemetry_api::effective`).
        for kind in provider.other.keys() {
            issues.add(
                &at.field(kind),
                "weft does not support this provider kind yet; a Telemetry resource or defaultProviders naming it has no effect",
            );
        }
        super::mesh_access_log::warnings(provider, &at, known, &mut issues);
        let services = [
            provider
                .envoy_ext_authz_grpc
                .as_ref()
                .map(|p| ("envoyExtAuthzGrpc", &p.service)),
            provider
                .envoy_ext_authz_http
                .as_ref()
                .map(|p| ("envoyExtAuthzHttp", &p.service)),
        ];
        for (kind, service) in services.into_iter().flatten() {
            let host = service.split_once('/').map_or(service.as_str(), |(_, h)| h);
            if !host.is_empty() && !known(host) {
                issues.add(
                    &at.field(kind).field("service"),
                    format!(
                        "{host:?} names no known Service or ServiceEntry host: requests that \
                         CUSTOM policies send to this provider are denied until it exists"
                    ),
                );
            }
        }
    }
    access_log_format(mesh, &root, &mut issues);
    super::mesh_access_log::default_providers(mesh, &root, &mut issues);
    super::mesh_tracing::warnings(mesh, &root, known, &mut issues);
    // defaultProviders.metrics: the Telemetry API's (`telemetry_api`), which reads it.
    if let Some(domain) = &mesh.trust_domain
        && *domain != settings.trust_domain
    {
        issues.add(
            &root.field("trustDomain"),
            format!(
                "weft uses the trust domain {:?} from its --trust-domain flag, not {domain:?}",
                settings.trust_domain
            ),
        );
    }
    if let Some(namespace) = &mesh.root_namespace
        && *namespace != settings.root_namespace
    {
        issues.add(
            &root.field("rootNamespace"),
            format!(
                "weft's root namespace is {:?} (where it reads this ConfigMap), not {namespace:?}",
                settings.root_namespace
            ),
        );
    }
    issues.into_vec()
}

/// An `accessLogFormat` weft cannot use as written: a JSON format that is not an object of
/// strings (Istio, and weft, log its default instead), operators weft does not evaluate
/// (they print `-`).
fn access_log_format(mesh: &MeshConfig, root: &FieldPath, issues: &mut Issues) {
    let at = root.field("accessLogFormat");
    match Format::parse(mesh.access_log_encoding(), &mesh.access_log_format) {
        Err(error) => issues.add(&at, format!("{error}; Istio's default JSON format is used")),
        Ok(format) => {
            let unknown = format.unknown_operators();
            if !unknown.is_empty() {
                issues.add(
                    &at,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn misspelt_fields_are_refused_and_istio_fields_warned_about() {
        let m = mesh("pathNormalisation: {normalization: NONE}\ndnsRefreshRate: 5s\n");
        assert_eq!(
            fields(&mesh_config(&m)),
            ["data.mesh.pathNormalisation"],
            "British spelling is not Istio's field"
        );
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let warned = warnings(&istio, &m, &MeshSettings::default(), &|_| true);
        assert_eq!(fields(&warned), ["data.mesh.dnsRefreshRate"]);
    }

    #[test]
    fn access_log_settings_are_read_and_unknown_operators_named() {
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let m = mesh(
            "accessLogFile: /dev/stdout\naccessLogEncoding: TEXT\naccessLogFormat: \"%RESPONSE_CODE% %FILTER_STATE(x)%\"\n",
        );
        assert!(mesh_config(&m).is_empty());
        let warned = warnings(&istio, &m, &MeshSettings::default(), &|_| true);
        assert_eq!(fields(&warned), ["data.mesh.accessLogFormat"]);
        assert!(warned[0].reason.contains("%FILTER_STATE(x)%"), "{warned:?}");
        let json = mesh(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: \"not json\"\n",
        );
        let warned = warnings(&istio, &json, &MeshSettings::default(), &|_| true);
        assert_eq!(fields(&warned), ["data.mesh.accessLogFormat"]);
        let default = mesh("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n");
        assert!(warnings(&istio, &default, &MeshSettings::default(), &|_| true).is_empty());
        assert!(
            serde_yaml::from_str::<MeshConfig>("accessLogEncoding: XML").is_err(),
            "an encoding Istio does not define"
        );
    }

    #[test]
    fn extension_providers_need_a_name_one_kind_and_an_address() {
        let m = mesh(
            r#"
extensionProviders:
- name: a
  envoyExtAuthzGrpc: {service: authz.x.svc.cluster.local, port: 9000, timeout: 2s}
- name: a
  envoyExtAuthzHttp: {service: "", port: 0, statusOnError: "abc", pathPrefix: check}
- name: b
- name: c
  zipkin: {service: z, port: 9411}
  envoyExtAuthzGrpc: {service: s, port: 1}
- name: d
  envoyExtAuthzGrpc: {service: s, port: 1, timeout: soon}
"#,
        );
        assert_eq!(
            fields(&mesh_config(&m)),
            [
                "data.mesh.extensionProviders[1].name",
                "data.mesh.extensionProviders[1].envoyExtAuthzHttp.service",
                "data.mesh.extensionProviders[1].envoyExtAuthzHttp.port",
                "data.mesh.extensionProviders[1].envoyExtAuthzHttp.statusOnError",
                "data.mesh.extensionProviders[1].envoyExtAuthzHttp.pathPrefix",
                "data.mesh.extensionProviders[2]",
                "data.mesh.extensionProviders[3]",
                "data.mesh.extensionProviders[4].envoyExtAuthzGrpc.timeout",
            ]
        );
    }

    #[test]
    fn ext_authz_providers_are_checked_as_istio_checks_them() {
        let m = mesh(
            r#"
extensionProviders:
- name: http
  envoyExtAuthzHttp:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["*"]
    headersToUpstreamOnAllow: ["x-*"]
- name: grpc
  envoyExtAuthzGrpc:
    service: missing.foo.svc.cluster.local
    port: 9000
    includeRequestBodyInCheck: {allowPartialMessage: true}
"#,
        );
        assert_eq!(
            fields(&mesh_config(&m)),
            [
                "data.mesh.extensionProviders[0].envoyExtAuthzHttp.includeRequestHeadersInCheck[0]",
                "data.mesh.extensionProviders[1].envoyExtAuthzGrpc.includeRequestBodyInCheck.maxRequestBytes",
            ]
        );
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let known = |host: &str| host == "ext-authz.foo.svc.cluster.local";
        assert_eq!(
            fields(&warnings(&istio, &m, &MeshSettings::default(), &known)),
            ["data.mesh.extensionProviders[1].envoyExtAuthzGrpc.service"]
        );
    }

    #[test]
    fn an_egress_proxy_is_refused_where_it_would_be_bypassed() {
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let allow = mesh(
            "outboundTrafficPolicy:\n  egressProxy: {host: squid.proxy.svc.cluster.local, port: {number: 3128}}\n",
        );
        assert_eq!(
            fields(&mesh_config(&allow)),
            ["data.mesh.outboundTrafficPolicy.egressProxy"]
        );
        let locked = mesh(
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n  egressProxy: {host: squid.proxy.svc.cluster.local}\n",
        );
        assert!(mesh_config(&locked).is_empty());
        assert_eq!(
            fields(&warnings(
                &istio,
                &locked,
                &MeshSettings::default(),
                &|_| true
            )),
            ["data.mesh.outboundTrafficPolicy.egressProxy"]
        );
        let plain = mesh("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
        assert!(mesh_config(&plain).is_empty());
        assert!(warnings(&istio, &plain, &MeshSettings::default(), &|_| true).is_empty());
    }

    #[test]
    fn settings_that_differ_from_the_flags_are_named() {
        let m = mesh("trustDomain: example.org\nrootNamespace: mesh\n");
        let istio = ObjectRef::new(Kind::MeshConfig, "istio-system", "istio");
        let warned = warnings(&istio, &m, &MeshSettings::default(), &|_| true);
        assert_eq!(
            fields(&warned),
            ["data.mesh.trustDomain", "data.mesh.rootNamespace"]
        );
        let elsewhere = ObjectRef::new(Kind::MeshConfig, "default", "istio");
        assert_eq!(
            fields(&warnings(&elsewhere, &m, &MeshSettings::default(), &|_| {
                true
            })),
            ["metadata.namespace"]
        );
    }
}
