//! Istio's mesh-wide configuration (`MeshConfig`), read where Istio reads it: the ConfigMap
//! `istio` in Istio's namespace (the root namespace, `istio-system`), key `mesh`, a YAML
//! document of `istio.mesh.v1alpha1.MeshConfig` in its JSON form.
//!
//! Only the fields weft acts on are typed. Every other field Istio defines is kept by name
//! ([`MeshConfig::other`]) so validation can say that weft does not act on it; a name Istio
//! does not define is refused, as istiod refuses a mesh config it cannot parse.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ConfigMap's name, as Istio's installers create it.
pub const MESH_CONFIG_MAP: &str = "istio";
/// The key holding the mesh config YAML.
pub const MESH_KEY: &str = "mesh";

/// The `istio` ConfigMap with its `mesh` key parsed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MeshConfigMap {
    pub metadata: ObjectMeta,
    /// Defaults when the ConfigMap has no `mesh` key (as istiod does).
    pub mesh: MeshConfig,
}

/// `istio.mesh.v1alpha1.MeshConfig`, the fields weft uses typed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// How HTTP paths are normalized before authorization and routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<ProxyPathNormalization>,
    /// Named providers that AuthorizationPolicy `CUSTOM` (and, later, Telemetry) refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// What the node agents do with connections to destinations the registry does not
    /// know (`ALLOW_ANY`, Istio's default, or `REGISTRY_ONLY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Must agree with weft's root namespace (`istio-system`, where the ConfigMap is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    /// Must agree with `--trust-domain` (weft takes it from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Whether HTTP/1.1 requests to ports declared HTTP go upstream in HTTP/2, unless a
    /// DestinationRule's `h2UpgradePolicy` or `useClientProtocol` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<MeshH2UpgradePolicy>,
    /// `exportTo` of a VirtualService that has none (empty: `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    /// `exportTo` of a DestinationRule that has none (empty: `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// The mesh-wide default of DestinationRules' `loadBalancer.localityLbSetting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<super::networking::LocalityLbSetting>,
    /// Where waypoints, gateways and agents write access logs (`/dev/stdout`, a file);
    /// empty or unset is off, Istio's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_log_file: String,
    /// The line format: Envoy command operators for TEXT, a JSON object of them for JSON;
    /// empty is Istio's default for the encoding.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_log_format: String,
    /// `TEXT` (the default) or `JSON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// The extension providers (by name) used for tracing, metrics and access logging when
    /// no Telemetry resource names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Spans and request ids (Istio's installations set it; see `crate::trace_settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,
    /// The proxies' defaults; only `tracing` is typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<super::mesh_tracing::DefaultProxyConfig>,
    /// Every other field, by its JSON name: Istio fields weft does not act on (warned
    /// about) or names Istio does not define (refused).
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

impl MeshConfig {
    /// The normalization in force: Istio's default (`DEFAULT`, which is `BASE`) when unset.
    pub fn path_normalization(&self) -> PathNormalization {
        self.path_normalization
            .as_ref()
            .and_then(|p| p.normalization)
            .unwrap_or_default()
            .effective()
    }

    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// Whether the mesh's default upgrades HTTP/1.1 requests to HTTP/2 (`h2UpgradePolicy:
    /// UPGRADE`).
    pub fn upgrades_to_h2(&self) -> bool {
        self.h2_upgrade_policy == Some(MeshH2UpgradePolicy::Upgrade)
    }

    /// The access log encoding in force (`TEXT` unless `JSON`).
    pub fn access_log_encoding(&self) -> weft_core::access_log::Encoding {
        match self.access_log_encoding {
            Some(AccessLogEncoding::Json) => weft_core::access_log::Encoding::Json,
            _ => weft_core::access_log::Encoding::Text,
        }
    }

    /// The outbound traffic policy in force: `ALLOW_ANY` unless the mesh config says
    /// `REGISTRY_ONLY`.
    pub fn outbound_traffic_mode(&self) -> OutboundTrafficMode {
        self.outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode)
            .unwrap_or_default()
    }
}

/// `MeshConfig.DefaultProviders`: names of `extensionProviders` (or the built-in
/// `prometheus` for metrics) in force where no Telemetry resource says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// `MeshConfig.AccessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// `MeshConfig.H2UpgradePolicy`; `DO_NOT_UPGRADE` by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeshH2UpgradePolicy {
    #[default]
    DoNotUpgrade,
    Upgrade,
}

/// `MeshConfig.OutboundTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
    /// Istio's sidecars send what `ALLOW_ANY` lets out through this destination; weft's
    /// agents cannot (validation refuses it under `ALLOW_ANY`, warns under `REGISTRY_ONLY`,
    /// where it has no effect in Istio either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Value>,
}

/// `MeshConfig.OutboundTrafficPolicy.Mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Connections to unknown destinations leave the mesh as they were addressed.
    #[default]
    AllowAny,
    /// Only destinations the registry knows (pods, Services, ServiceEntries) are reached;
    /// any other connection is refused and reported as Istio's `BlackHoleCluster`.
    RegistryOnly,
}

impl OutboundTrafficMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundTrafficMode::AllowAny => "ALLOW_ANY",
            OutboundTrafficMode::RegistryOnly => "REGISTRY_ONLY",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPathNormalization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<PathNormalization>,
}

/// `ProxyPathNormalization.NormalizationType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// Istio's default: currently `BASE`.
    #[default]
    Default,
    /// Paths are used as sent.
    None,
    /// RFC 3986 normalization: `.` and `..` segments removed, unreserved characters
    /// percent-decoded (Envoy's `normalize_path`).
    Base,
    /// `BASE`, and consecutive slashes merged.
    MergeSlashes,
    /// `MERGE_SLASHES`, after decoding `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\`.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// `DEFAULT` is `BASE`.
    pub fn effective(self) -> Self {
        match self {
            PathNormalization::Default => PathNormalization::Base,
            other => other,
        }
    }
}

/// `MeshConfig.ExtensionProvider`: a name and one provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<EnvoyExtAuthzHttpProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<EnvoyExtAuthzGrpcProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<super::mesh_access_log::EnvoyFileAccessLogProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<super::mesh_access_log::EnvoyOtelAlsProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<super::mesh_tracing::ZipkinTracingProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<super::mesh_tracing::OpenTelemetryTracingProvider>,
    /// Providers of other kinds (tracing, access logs, metrics, SDS), by their JSON name.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// `EnvoyExternalAuthorizationHttpProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzHttpProvider {
    /// `[<namespace>/]<hostname>` of a Service or ServiceEntry.
    pub service: String,
    pub port: u32,
    /// Go duration; Istio's default is 600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    /// The HTTP status when the service cannot be reached; 403 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Deprecated by Istio in favour of `includeRequestHeadersInCheck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `EnvoyExternalAuthorizationGrpcProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzGrpcProvider {
    pub service: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

/// `EnvoyExternalAuthorizationRequestBody`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzRequestBody {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

/// Every top-level field of Istio's `MeshConfig` (JSON names), current and deprecated, so
/// that a field weft does not act on is told apart from a misspelt one.
pub const ISTIO_MESH_FIELDS: &[&str] = &[
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "hboneIdleTimeout",
    "protocolDetectionTimeout",
    "tcpKeepalive",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "enableTracing",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "defaultConfig",
    "outboundTrafficPolicy",
    "inboundTrafficPolicy",
    "configSources",
    "enableAutoMtls",
    "trustDomain",
    "trustDomainAliases",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "rootNamespace",
    "localityLbSetting",
    "zoneAwareLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "serviceSettings",
    "serviceScopeConfigs",
    "enablePrometheusMerge",
    "ca",
    "extensionProviders",
    "discoverySelectors",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "meshMTLS",
    "tlsDefaults",
    "defaultTrafficPolicy",
    "serviceEntryVisibility",
    // Deprecated or removed fields istiod still parses.
    "mixerCheckServer",
    "mixerReportServer",
    "disablePolicyChecks",
    "policyCheckFailOpen",
    "sidecarToTelemetrySessionAffinity",
    "authPolicy",
    "rdsRefreshDelay",
    "enableClientSidePolicyCheck",
    "sdsUdsPath",
    "sdsRefreshDelay",
    "thriftConfig",
    "verifyCertificateAtClient",
    "certificates",
    "reportBatchMaxEntries",
    "reportBatchMaxTime",
    "enableSdsTokenMount",
    "sdsUseK8sSaJwt",
    "outboundTrafficPolicyMode",
];

/// Provider kinds of `ExtensionProvider` other than the ext-authz ones (JSON names).
pub const ISTIO_PROVIDER_KINDS: &[&str] = &[
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "opencensus",
    "skywalking",
    "opentelemetry",
    "prometheus",
    "envoyFileAccessLog",
    "envoyHttpAls",
    "envoyTcpAls",
    "envoyOtelAls",
    "sds",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    #[test]
    fn path_normalization_defaults_to_base() {
        assert_eq!(
            MeshConfig::default().path_normalization(),
            PathNormalization::Base
        );
        let none = parse("pathNormalization: {normalization: NONE}");
        assert_eq!(none.path_normalization(), PathNormalization::None);
        let default = parse("pathNormalization: {normalization: DEFAULT}");
        assert_eq!(default.path_normalization(), PathNormalization::Base);
        let merge = parse("pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}");
        assert_eq!(
            merge.path_normalization(),
            PathNormalization::DecodeAndMergeSlashes
        );
    }

    #[test]
    fn the_outbound_traffic_policy_defaults_to_allow_any() {
        assert_eq!(
            MeshConfig::default().outbound_traffic_mode(),
            OutboundTrafficMode::AllowAny
        );
        let locked = parse("outboundTrafficPolicy: {mode: REGISTRY_ONLY}");
        assert_eq!(
            locked.outbound_traffic_mode(),
            OutboundTrafficMode::RegistryOnly
        );
        assert!(locked.other.is_empty(), "typed, not kept as another field");
        let open = parse("outboundTrafficPolicy: {}");
        assert_eq!(open.outbound_traffic_mode(), OutboundTrafficMode::AllowAny);
        assert!(
            serde_yaml::from_str::<MeshConfig>("outboundTrafficPolicy: {mode: DENY_ALL}").is_err(),
            "a mode Istio does not define"
        );
    }

    #[test]
    fn other_fields_are_kept_by_name() {
        let mesh = parse(
            "dnsRefreshRate: 5s\ndefaultConfig: {discoveryAddress: istiod:15012}\nextensionProviders:\n- name: authz\n  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n",
        );
        assert_eq!(mesh.other.keys().collect::<Vec<_>>(), ["dnsRefreshRate"]);
        let defaults = mesh.default_config.as_ref().expect("defaultConfig typed");
        assert!(defaults.other.contains_key("discoveryAddress"));
        let authz = mesh.extension_provider("authz").expect("authz provider");
        let grpc = authz.envoy_ext_authz_grpc.as_ref().expect("grpc provider");
        assert_eq!(grpc.port, 9000);
        assert!(!grpc.fail_open);
        let zipkin = mesh.extension_provider("zipkin").expect("zipkin provider");
        assert_eq!(zipkin.zipkin.as_ref().map(|z| z.port), Some(9411));
    }
}
