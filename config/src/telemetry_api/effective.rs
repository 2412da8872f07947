//! Which Telemetry resources apply to a workload, and what they add up to, as istiod
//! computes it (`pilot/pkg/model/telemetry.go`).
//!
//! Precedence: the root namespace's namespace-wide Telemetry (no selector, no targetRefs),
//! then the workload's namespace's namespace-wide one, then the oldest Telemetry of its
//! namespace that selects it (`selector.matchLabels`, or `targetRefs` naming the Service
//! or ServiceEntry the traffic was sent to or the waypoint's Gateway). Each section is merged from the
//! least to the most specific:
//! - access logging: an entry's `providers` replace its parent's (inherited when empty,
//!   from meshConfig `defaultProviders.accessLogging` at the top); `disabled` turns its
//!   providers off, `filter` sets their filter; entries whose `match.mode` does not cover
//!   the side are skipped. With no entry and no default provider, meshConfig's
//!   `accessLogFile` decides ([`AccessLogging::MeshDefault`]).
//! - metrics: the last `providers` named wins (default: `defaultProviders.metrics`, else
//!   Istio's `prometheus`); overrides apply in order on top of each other (per metric and
//!   side: `disabled`, and tag overrides by name); `ALL_METRICS` disabled turns the
//!   provider off until a later override.
//! - tracing: per side, a later entry's provider, `disableSpanReporting`,
//!   `randomSamplingPercentage`, `customTags` and `useRequestIdForTraceSampling` replace the
//!   earlier ones; no provider means no spans.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::cel::{self, Expr};
use crate::api::common::PolicyTargetReference;
use crate::api::mesh::MeshConfig;
use crate::api::telemetry::{
    CustomTag, IstioMetricName, ProviderRef, TagOperation, Telemetry, TelemetrySpec, WorkloadMode,
};
use crate::translate::policy::selects;
use weft_core::access_log::AccessLogSink;

pub use crate::access_log::ENVOY_PROVIDER;
/// Istio's built-in (and weft's only) metrics provider.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Who the traffic is for, as Telemetry resources select it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TelemetryTarget<'a> {
    /// The proxy's namespace: the workload's own, or the waypoint's for a request through
    /// a waypoint (istiod's `proxy.ConfigNamespace`).
    pub namespace: &'a str,
    /// The workload's labels, which `selector.matchLabels` compares (none: no selector
    /// matches).
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The Service the traffic was sent to, `(namespace, name)`.
    pub service: Option<(&'a str, &'a str)>,
    /// The ServiceEntry whose host the traffic was sent to, `(namespace, name)`.
    pub service_entry: Option<(&'a str, &'a str)>,
    /// The waypoint's Gateway, `(namespace, name)`.
    pub gateway: Option<(&'a str, &'a str)>,
}

/// The Telemetry resources applying to `target`, least specific first: the root
/// namespace's namespace-wide one, the target namespace's namespace-wide one, the first
/// (oldest) of the target's namespace that selects the target. `of_namespace` lists a
/// namespace's Telemetries oldest first.
pub fn applicable<'t>(
    of_namespace: impl Fn(&str) -> &'t [Arc<Telemetry>],
    root_namespace: &str,
    target: &TelemetryTarget<'_>,
) -> Vec<&'t TelemetrySpec> {
    let namespace_wide = |ns: &str| {
        of_namespace(ns)
            .iter()
            .find(|t| !t.spec.has_selector() && t.spec.targets().next().is_none())
            .map(|t| &t.spec)
    };
    let mut found = Vec::new();
    found.extend(namespace_wide(root_namespace));
    if target.namespace != root_namespace {
        found.extend(namespace_wide(target.namespace));
    }
    let selected = of_namespace(target.namespace).iter().find(|t| {
        let spec = &t.spec;
        let by_labels = spec.has_selector()
            && target
                .labels
                .is_some_and(|labels| selects(spec.selector.as_ref(), labels));
        let by_ref = spec
            .targets()
            .any(|r| names_target(r, target.namespace, target));
        by_labels || by_ref
    });
    found.extend(selected.map(|t| &t.spec));
    found
}

/// Whether a targetRef of a Telemetry in `namespace` names the target's Service or
/// waypoint Gateway.
fn names_target(r: &PolicyTargetReference, namespace: &str, target: &TelemetryTarget<'_>) -> bool {
    if r.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return false;
    }
    let service = matches!(r.group.as_str(), "" | "core")
        && r.kind == "Service"
        && target.service == Some((namespace, r.name.as_str()));
    let service_entry = r.group == "networking.istio.io"
        && r.kind == "ServiceEntry"
        && target.service_entry == Some((namespace, r.name.as_str()));
    let gateway = r.group == GATEWAY_GROUP
        && r.kind == "Gateway"
        && target.gateway == Some((namespace, r.name.as_str()));
    service || service_entry || gateway
}

/// What the applicable Telemetries (and the mesh config) decide for one side of traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveTelemetry {
    pub access_logging: AccessLogging,
    pub metrics: MetricSettings,
    /// `None`: no Telemetry and no default provider configure tracing (the mesh's own
    /// tracing settings apply).
    pub tracing: Option<WorkloadTracing>,
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessLogging {
    /// No Telemetry configures access logs: meshConfig `accessLogFile` decides.
    MeshDefault,
    /// The Telemetry API decides: these providers, by name (none: no lines).
    Providers(Vec<LogProvider>),
}

/// One access-log provider in force, and its filter.
#[derive(Clone, Debug, PartialEq)]
pub struct LogProvider {
    pub name: String,
    /// Where its lines go (`crate::access_log::provider_sink`).
    pub sink: AccessLogSink,
    /// Lines are written when it is true (none: always).
    pub filter: Option<Arc<Expr>>,
}

/// Metrics of one side of a workload's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricSettings {
    /// Whether Prometheus (weft's `/metrics`) records them at all.
    pub prometheus: bool,
    /// Overrides of Istio's standard metrics (never `ALL_METRICS`: expanded).
    pub overrides: BTreeMap<IstioMetricName, MetricOverride>,
    /// Overrides of metrics by `customMetric` name.
    pub custom: BTreeMap<String, MetricOverride>,
}

impl MetricSettings {
    /// Whether `metric` is recorded.
    pub fn records(&self, metric: IstioMetricName) -> bool {
        self.prometheus && !self.overrides.get(&metric).is_some_and(|o| o.disabled)
    }
}

/// One metric's merged overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricOverride {
    pub disabled: bool,
    /// By tag (label) name.
    pub tags: BTreeMap<String, TagValue>,
}

/// What a tag override does.
#[derive(Clone, Debug, PartialEq)]
pub enum TagValue {
    Remove,
    /// Add or replace the tag with the expression's value.
    Upsert(Arc<Expr>),
}

/// Tracing of one workload, per side (the `tracing` helper's data path reads it).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadTracing {
    pub client: TracingSpec,
    pub server: TracingSpec,
}

impl WorkloadTracing {
    pub fn side(&self, side: WorkloadMode) -> &TracingSpec {
        match side {
            WorkloadMode::Client => &self.client,
            _ => &self.server,
        }
    }
}

/// Istio's `TracingSpec`.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSpec {
    /// The `extensionProviders` entry spans go to; `None` (no provider, or a name the mesh
    /// config does not define): no spans.
    pub provider: Option<String>,
    /// No spans reported (`disableSpanReporting`, or no provider).
    pub disabled: bool,
    /// `randomSamplingPercentage`; `None`: the mesh's default sampling.
    pub random_sampling_percentage: Option<f64>,
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Istio's default: true.
    pub use_request_id_for_trace_sampling: bool,
}

impl TracingSpec {
    fn new(provider: Option<String>) -> Self {
        Self {
            provider,
            disabled: false,
            random_sampling_percentage: None,
            custom_tags: BTreeMap::new(),
            use_request_id_for_trace_sampling: true,
        }
    }
}

/// What `applicable` (least specific first) and the mesh config decide for traffic seen
/// from `side` (a waypoint serves: `SERVER`; an agent's outbound connection: `CLIENT`).
pub fn effective_telemetry(
    applicable: &[&TelemetrySpec],
    mesh: &MeshConfig,
    side: WorkloadMode,
) -> EffectiveTelemetry {
    // The common case, without allocating: no Telemetry and no default provider.
    if applicable.is_empty() && mesh.default_providers.is_none() {
        return EffectiveTelemetry {
            access_logging: AccessLogging::MeshDefault,
            metrics: MetricSettings {
                prometheus: true,
                ..Default::default()
            },
            tracing: None,
        };
    }
    EffectiveTelemetry {
        access_logging: access_logging(applicable, mesh, side),
        metrics: metrics(applicable, mesh, side),
        tracing: tracing(applicable, mesh),
    }
}

fn names(providers: &[ProviderRef]) -> Vec<String> {
    providers.iter().map(|p| p.name.clone()).collect()
}

fn defaults(
    mesh: &MeshConfig,
    pick: fn(&crate::api::mesh::DefaultProviders) -> &Vec<String>,
) -> Vec<String> {
    mesh.default_providers
        .as_ref()
        .map(|d| pick(d).clone())
        .unwrap_or_default()
}

/// The name of the mesh's `extensionProviders` entry a Telemetry's `name` refers to:
/// istiod compares provider names ignoring case.
fn defined_provider<'m>(mesh: &'m MeshConfig, name: &str) -> Option<&'m str> {
    mesh.extension_providers
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.name.as_str())
}

/// An access-log provider by name: one of the mesh's `extensionProviders` or the built-in
/// `envoy`; `None` for a name the mesh config does not define (dropped, as istiod does).
fn log_sink(mesh: &MeshConfig, name: &str) -> Option<AccessLogSink> {
    let name = defined_provider(mesh, name).unwrap_or(name);
    crate::access_log::provider_sink(mesh, name).ok()
}

fn access_logging(
    applicable: &[&TelemetrySpec],
    mesh: &MeshConfig,
    side: WorkloadMode,
) -> AccessLogging {
    let mesh_defaults = defaults(mesh, |d| &d.access_logging);
    let levels: Vec<_> = applicable
        .iter()
        .filter(|t| !t.access_logging.is_empty())
        .collect();
    if levels.is_empty() && mesh_defaults.is_empty() {
        return AccessLogging::MeshDefault;
    }
    // The providers in scope: the most specific level that names any.
    let mut in_scope = mesh_defaults.clone();
    for level in &levels {
        let named: Vec<String> = level
            .access_logging
            .iter()
            .flat_map(|entry| names(&entry.providers))
            .collect();
        if !named.is_empty() {
            in_scope = named;
        }
    }
    // provider → its filter, in the order first turned on.
    let mut on: Vec<(String, Option<String>)> = if levels.is_empty() {
        mesh_defaults.iter().map(|p| (p.clone(), None)).collect()
    } else {
        Vec::new()
    };
    let mut parent = mesh_defaults;
    for level in &levels {
        for entry in &level.access_logging {
            let mut providers = names(&entry.providers);
            if providers.is_empty() {
                providers = parent.clone();
            }
            parent = providers.clone();
            let mode = entry.match_.as_ref().map(|m| m.mode).unwrap_or_default();
            if !mode.covers(side) {
                continue;
            }
            for provider in providers.into_iter().filter(|p| in_scope.contains(p)) {
                on.retain(|(name, _)| *name != provider);
                if entry.disabled != Some(true) {
                    let filter = entry.filter.as_ref().map(|f| f.expression.clone());
                    on.push((provider, filter));
                }
            }
        }
    }
    let providers = on
        .into_iter()
        .filter_map(|(name, filter)| {
            let sink = log_sink(mesh, &name)?;
            // A filter weft cannot evaluate is refused when the Telemetry is applied.
            let filter = match filter.filter(|f| !f.trim().is_empty()) {
                Some(expression) => Some(Arc::new(cel::parse_filter(&expression).ok()?)),
                None => None,
            };
            Some(LogProvider { name, sink, filter })
        })
        .collect();
    AccessLogging::Providers(providers)
}

/// Istio's standard metrics `ALL_METRICS` stands for.
pub const ALL_METRICS: [IstioMetricName; 10] = [
    IstioMetricName::RequestCount,
    IstioMetricName::RequestDuration,
    IstioMetricName::RequestSize,
    IstioMetricName::ResponseSize,
    IstioMetricName::TcpOpenedConnections,
    IstioMetricName::TcpClosedConnections,
    IstioMetricName::TcpSentBytes,
    IstioMetricName::TcpReceivedBytes,
    IstioMetricName::GrpcRequestMessages,
    IstioMetricName::GrpcResponseMessages,
];

fn metrics(applicable: &[&TelemetrySpec], mesh: &MeshConfig, side: WorkloadMode) -> MetricSettings {
    let configured = mesh
        .default_providers
        .as_ref()
        .is_some_and(|d| !d.metrics.is_empty());
    let mesh_defaults = if configured {
        defaults(mesh, |d| &d.metrics)
    } else {
        vec![PROMETHEUS_PROVIDER.to_string()]
    };
    let sections: Vec<_> = applicable.iter().flat_map(|t| &t.metrics).collect();
    let mut in_scope = mesh_defaults.clone();
    for section in &sections {
        let named = names(&section.providers);
        if !named.is_empty() {
            in_scope = named;
        }
    }
    let mut settings = MetricSettings {
        prometheus: in_scope.iter().any(|p| p == PROMETHEUS_PROVIDER),
        ..Default::default()
    };
    let mut parent = mesh_defaults;
    let mut all_disabled = false;
    for section in sections {
        let mut providers = names(&section.providers);
        if providers.is_empty() {
            providers = parent.clone();
        }
        parent = providers.clone();
        if !providers.iter().any(|p| p == PROMETHEUS_PROVIDER) {
            continue;
        }
        for o in &section.overrides {
            let selector = o.match_.clone().unwrap_or_default();
            let custom = selector.custom_metric.as_ref().filter(|c| !c.is_empty());
            let metric = selector.metric.unwrap_or_default();
            if custom.is_none() && metric == IstioMetricName::AllMetrics && o.disabled == Some(true)
            {
                all_disabled = true;
                continue;
            }
            all_disabled = false;
            if !selector.mode.covers(side) {
                continue;
            }
            let apply = |target: &mut MetricOverride| {
                if let Some(disabled) = o.disabled {
                    target.disabled = disabled;
                }
                for (tag, change) in &o.tag_overrides {
                    let value = match change.operation {
                        TagOperation::Remove => TagValue::Remove,
                        // Refused when the Telemetry is applied; skipped here.
                        TagOperation::Upsert => match cel::parse(&change.value) {
                            Ok(expr) => TagValue::Upsert(Arc::new(expr)),
                            Err(_) => continue,
                        },
                    };
                    target.tags.insert(tag.clone(), value);
                }
            };
            match custom {
                Some(name) => apply(settings.custom.entry(name.clone()).or_default()),
                None if metric == IstioMetricName::AllMetrics => {
                    for m in ALL_METRICS {
                        apply(settings.overrides.entry(m).or_default());
                    }
                }
                None => apply(settings.overrides.entry(metric).or_default()),
            }
        }
    }
    if all_disabled {
        settings.prometheus = false;
    }
    settings
}

fn tracing(applicable: &[&TelemetrySpec], mesh: &MeshConfig) -> Option<WorkloadTracing> {
    let sections: Vec<_> = applicable.iter().flat_map(|t| &t.tracing).collect();
    let mesh_defaults = defaults(mesh, |d| &d.tracing);
    if sections.is_empty() && mesh_defaults.is_empty() {
        return None;
    }
    let fetch = |name: &str| defined_provider(mesh, name).map(str::to_string);
    let default_provider = mesh_defaults.first().and_then(|name| fetch(name));
    let mut client = TracingSpec::new(default_provider.clone());
    let mut server = TracingSpec::new(default_provider);
    for section in sections {
        let mode = section.match_.as_ref().map(|m| m.mode).unwrap_or_default();
        let mut specs: Vec<&mut TracingSpec> = Vec::with_capacity(2);
        if mode.covers(WorkloadMode::Client) {
            specs.push(&mut client);
        }
        if mode.covers(WorkloadMode::Server) {
            specs.push(&mut server);
        }
        // Only one provider per side: the first named.
        let provider = section.providers.first().map(|p| fetch(&p.name));
        for spec in specs {
            if let Some(provider) = &provider {
                spec.provider = provider.clone();
            }
            if let Some(disabled) = section.disable_span_reporting {
                spec.disabled = disabled;
            }
            if !section.custom_tags.is_empty() {
                spec.custom_tags = section.custom_tags.clone();
            }
            if let Some(percentage) = section.random_sampling_percentage {
                spec.random_sampling_percentage = Some(percentage);
            }
            if let Some(by_id) = section.use_request_id_for_trace_sampling {
                spec.use_request_id_for_trace_sampling = by_id;
            }
        }
    }
    for spec in [&mut client, &mut server] {
        if spec.provider.is_none() {
            spec.disabled = true;
        }
    }
    Some(WorkloadTracing { client, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(namespace: &str, name: &str, spec: &str) -> Arc<Telemetry> {
        let mut t = Telemetry::new(name, serde_yaml::from_str(spec).expect("spec"));
        t.metadata.namespace = Some(namespace.to_string());
        Arc::new(t)
    }

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh")
    }

    struct Cluster(BTreeMap<String, Vec<Arc<Telemetry>>>);

    impl Cluster {
        fn new(all: Vec<Arc<Telemetry>>) -> Self {
            let mut by_ns: BTreeMap<String, Vec<Arc<Telemetry>>> = BTreeMap::new();
            for t in all {
                let ns = t.metadata.namespace.clone().unwrap_or_default();
                by_ns.entry(ns).or_default().push(t);
            }
            Self(by_ns)
        }

        fn effective(
            &self,
            target: &TelemetryTarget<'_>,
            mesh: &MeshConfig,
            side: WorkloadMode,
        ) -> EffectiveTelemetry {
            let specs = applicable(
                |ns| self.0.get(ns).map(Vec::as_slice).unwrap_or_default(),
                "istio-system",
                target,
            );
            effective_telemetry(&specs, mesh, side)
        }
    }

    fn in_ns(namespace: &str) -> TelemetryTarget<'_> {
        TelemetryTarget {
            namespace,
            ..Default::default()
        }
    }

    fn log_names(e: &EffectiveTelemetry) -> Vec<(String, Option<String>)> {
        match &e.access_logging {
            AccessLogging::MeshDefault => panic!("mesh default"),
            AccessLogging::Providers(p) => p
                .iter()
                .map(|p| (p.name.clone(), p.filter.as_ref().map(|f| format!("{f:?}"))))
                .collect(),
        }
    }

    #[test]
    fn without_telemetry_or_default_provider_the_mesh_access_log_decides() {
        let cluster = Cluster::new(vec![]);
        let e = cluster.effective(&in_ns("a"), &MeshConfig::default(), WorkloadMode::Server);
        assert_eq!(e.access_logging, AccessLogging::MeshDefault);
        assert!(e.tracing.is_none());
        assert!(
            e.metrics.prometheus,
            "Istio's default metrics provider is prometheus"
        );
        // A default provider alone turns the Telemetry API's logging on.
        let m = mesh("defaultProviders: {accessLogging: [envoy]}");
        let e = cluster.effective(&in_ns("a"), &m, WorkloadMode::Server);
        assert_eq!(log_names(&e), vec![("envoy".to_string(), None)]);
    }

    #[test]
    fn namespace_overrides_root_and_workload_overrides_namespace() {
        let cluster = Cluster::new(vec![
            telemetry(
                "istio-system",
                "mesh",
                "accessLogging: [{providers: [{name: envoy}]}]",
            ),
            telemetry("quiet", "off", "accessLogging: [{disabled: true}]"),
            telemetry(
                "errors",
                "filtered",
                "accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]",
            ),
            telemetry(
                "quiet",
                "reviews",
                "selector: {matchLabels: {app: reviews}}\naccessLogging: [{disabled: false}]",
            ),
        ]);
        let m = MeshConfig::default();
        let side = WorkloadMode::Server;
        assert_eq!(
            log_names(&cluster.effective(&in_ns("other"), &m, side)),
            vec![("envoy".to_string(), None)],
            "the root namespace's Telemetry applies mesh-wide"
        );
        assert!(
            log_names(&cluster.effective(&in_ns("quiet"), &m, side)).is_empty(),
            "disabled inherits the root's providers and turns them off"
        );
        let errors = log_names(&cluster.effective(&in_ns("errors"), &m, side));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .1
                .as_deref()
                .is_some_and(|f| f.contains("ResponseCode"))
        );
        let labels: BTreeMap<String, String> = [("app".to_string(), "reviews".to_string())].into();
        let reviews = TelemetryTarget {
            namespace: "quiet",
            labels: Some(&labels),
            ..Default::default()
        };
        assert_eq!(
            log_names(&cluster.effective(&reviews, &m, side)),
            vec![("envoy".to_string(), None)],
            "the workload's Telemetry turns logging back on for it alone"
        );
    }

    #[test]
    fn target_refs_select_a_service_or_the_waypoint_gateway_in_their_namespace() {
        let cluster = Cluster::new(vec![
            telemetry(
                "bookinfo",
                "svc",
                "targetRefs: [{kind: Service, group: '', name: reviews}]\naccessLogging: [{providers: [{name: envoy}]}]",
            ),
            telemetry(
                "bookinfo",
                "gw",
                "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\naccessLogging: [{disabled: true, providers: [{name: envoy}]}]",
            ),
        ]);
        let m = MeshConfig::default();
        let to_reviews = TelemetryTarget {
            namespace: "bookinfo",
            service: Some(("bookinfo", "reviews")),
            ..Default::default()
        };
        assert_eq!(
            log_names(&cluster.effective(&to_reviews, &m, WorkloadMode::Server)).len(),
            1
        );
        let via_waypoint = TelemetryTarget {
            namespace: "bookinfo",
            service: Some(("bookinfo", "ratings")),
            gateway: Some(("bookinfo", "waypoint")),
            ..Default::default()
        };
        assert!(log_names(&cluster.effective(&via_waypoint, &m, WorkloadMode::Server)).is_empty());
        let entry = TelemetryTarget {
            namespace: "bookinfo",
            service_entry: Some(("bookinfo", "api")),
            ..Default::default()
        };
        let cluster_with_entry = Cluster::new(vec![telemetry(
            "bookinfo",
            "se",
            "targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: api}]\naccessLogging: [{providers: [{name: envoy}]}]",
        )]);
        assert_eq!(
            log_names(&cluster_with_entry.effective(&entry, &m, WorkloadMode::Server)).len(),
            1
        );
        // targetRefs are not namespace-wide: another service gets the mesh's default.
        let other = TelemetryTarget {
            namespace: "bookinfo",
            service: Some(("bookinfo", "ratings")),
            ..Default::default()
        };
        assert_eq!(
            cluster
                .effective(&other, &m, WorkloadMode::Server)
                .access_logging,
            AccessLogging::MeshDefault
        );
    }

    #[test]
    fn the_oldest_selecting_telemetry_wins_and_match_mode_picks_the_side() {
        let cluster = Cluster::new(vec![
            telemetry(
                "a",
                "first",
                "selector: {matchLabels: {app: x}}\naccessLogging: [{providers: [{name: envoy}], match: {mode: CLIENT}}]",
            ),
            telemetry(
                "a",
                "second",
                "selector: {matchLabels: {app: x}}\naccessLogging: [{providers: [{name: envoy}]}]",
            ),
        ]);
        let labels: BTreeMap<String, String> = [("app".to_string(), "x".to_string())].into();
        let x = TelemetryTarget {
            namespace: "a",
            labels: Some(&labels),
            ..Default::default()
        };
        let m = MeshConfig::default();
        assert_eq!(
            log_names(&cluster.effective(&x, &m, WorkloadMode::Client)).len(),
            1
        );
        assert!(log_names(&cluster.effective(&x, &m, WorkloadMode::Server)).is_empty());
    }

    #[test]
    fn providers_are_resolved_from_the_mesh_config() {
        let m = mesh(
            "extensionProviders:\n- name: file\n  envoyFileAccessLog: {path: /var/log/access.log}\n- name: otel\n  envoyOtelAls: {service: otel.observability.svc.cluster.local, port: 4317}\n",
        );
        let cluster = Cluster::new(vec![telemetry(
            "a",
            "t",
            "accessLogging: [{providers: [{name: file}, {name: OTEL}, {name: nowhere}]}]",
        )]);
        let e = cluster.effective(&in_ns("a"), &m, WorkloadMode::Server);
        let AccessLogging::Providers(providers) = e.access_logging else {
            panic!("providers")
        };
        let sinks: Vec<_> = providers.iter().map(|p| p.sink.clone()).collect();
        assert_eq!(
            sinks,
            vec![
                AccessLogSink::File {
                    path: "/var/log/access.log".into(),
                    encoding: weft_core::access_log::Encoding::Text,
                    format: String::new(),
                },
                AccessLogSink::Otlp(weft_core::access_log::OtlpSink {
                    service: "otel.observability.svc.cluster.local".into(),
                    port: 4317,
                    log_name: "otel_envoy_accesslog".into(),
                    format: String::new(),
                    labels: Vec::new(),
                })
            ],
            "a name the mesh config does not define is dropped, as istiod drops it"
        );
    }

    #[test]
    fn metric_overrides_merge_per_metric_and_tag() {
        let cluster = Cluster::new(vec![
            telemetry(
                "istio-system",
                "mesh",
                "metrics: [{overrides: [{tagOverrides: {request_protocol: {operation: REMOVE}}}]}]",
            ),
            telemetry(
                "a",
                "ns",
                "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}, {match: {metric: REQUEST_DURATION, mode: CLIENT}, tagOverrides: {user: {value: \"request.headers['x-user']\"}}}]}]",
            ),
        ]);
        let m = MeshConfig::default();
        let server = cluster
            .effective(&in_ns("a"), &m, WorkloadMode::Server)
            .metrics;
        assert!(!server.records(IstioMetricName::RequestCount));
        assert!(server.records(IstioMetricName::RequestDuration));
        assert_eq!(
            server.overrides[&IstioMetricName::TcpSentBytes].tags["request_protocol"],
            TagValue::Remove,
            "ALL_METRICS (no match) applies to every metric"
        );
        assert!(
            !server.overrides[&IstioMetricName::RequestDuration]
                .tags
                .contains_key("user")
        );
        let client = cluster
            .effective(&in_ns("a"), &m, WorkloadMode::Client)
            .metrics;
        assert!(matches!(
            client.overrides[&IstioMetricName::RequestDuration].tags["user"],
            TagValue::Upsert(_)
        ));
        // Other namespaces only get the root's override.
        let other = cluster
            .effective(&in_ns("b"), &m, WorkloadMode::Server)
            .metrics;
        assert!(other.records(IstioMetricName::RequestCount));
    }

    #[test]
    fn all_metrics_disabled_at_the_root_is_reenabled_by_a_namespace_override() {
        let cluster = Cluster::new(vec![
            telemetry(
                "istio-system",
                "mesh",
                "metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]",
            ),
            telemetry(
                "a",
                "ns",
                "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: false}]}]",
            ),
        ]);
        let m = MeshConfig::default();
        assert!(
            !cluster
                .effective(&in_ns("b"), &m, WorkloadMode::Server)
                .metrics
                .prometheus
        );
        assert!(
            cluster
                .effective(&in_ns("a"), &m, WorkloadMode::Server)
                .metrics
                .records(IstioMetricName::RequestCount)
        );
        // A provider other than prometheus named by the most specific level: no metrics here.
        let cluster = Cluster::new(vec![telemetry(
            "a",
            "ns",
            "metrics: [{providers: [{name: stackdriver}]}]",
        )]);
        assert!(
            !cluster
                .effective(&in_ns("a"), &m, WorkloadMode::Server)
                .metrics
                .prometheus
        );
    }

    #[test]
    fn tracing_fields_are_replaced_per_side_by_more_specific_telemetries() {
        let m = mesh(
            "extensionProviders:\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\ndefaultProviders: {tracing: [zipkin]}\n",
        );
        let cluster = Cluster::new(vec![
            telemetry(
                "istio-system",
                "mesh",
                "tracing: [{randomSamplingPercentage: 10, customTags: {env: {literal: {value: prod}}}}]",
            ),
            telemetry(
                "a",
                "ns",
                "tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 50, useRequestIdForTraceSampling: false}, {match: {mode: CLIENT}, disableSpanReporting: true}]",
            ),
        ]);
        let tracing = cluster
            .effective(&in_ns("a"), &m, WorkloadMode::Server)
            .tracing
            .expect("configured");
        assert_eq!(tracing.server.provider.as_deref(), Some("zipkin"));
        assert_eq!(tracing.server.random_sampling_percentage, Some(50.0));
        assert!(!tracing.server.use_request_id_for_trace_sampling);
        assert!(!tracing.server.disabled);
        assert_eq!(tracing.client.random_sampling_percentage, Some(10.0));
        assert!(tracing.client.disabled);
        assert!(
            tracing.client.custom_tags.contains_key("env"),
            "inherited from the root"
        );
        // No provider anywhere: tracing is off.
        let cluster = Cluster::new(vec![telemetry(
            "a",
            "ns",
            "tracing: [{randomSamplingPercentage: 50}]",
        )]);
        let tracing = cluster
            .effective(&in_ns("a"), &MeshConfig::default(), WorkloadMode::Server)
            .tracing
            .expect("configured");
        assert!(tracing.server.disabled && tracing.client.disabled);
    }
}
