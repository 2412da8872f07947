//! The label sets of Istio's standard metrics, and how their values are derived from a
//! workload's name, namespace and Kubernetes labels, the way istiod and ztunnel derive them
//! (so dashboards written for Istio group weft's series the same way).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::overrides::TagChanges;

/// What every label that cannot be known says, as in Istio.
pub const UNKNOWN: &str = "unknown";
/// Istio's cluster id when none is configured.
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Labels naming a workload's canonical service, checked in order (istiod's rule).
const CANONICAL_NAME_LABELS: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
/// Labels naming a workload's canonical revision, checked in order (istiod's rule).
const CANONICAL_REVISION_LABELS: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];
/// istiod's canonical revision for a workload without a revision label.
pub const DEFAULT_REVISION: &str = "latest";

/// The canonical service of a workload: its canonical-name label, or failing that its
/// `app.kubernetes.io/name` or `app` label, or failing all of them its workload name.
pub fn canonical_service<'a>(labels: &'a BTreeMap<String, String>, workload: &'a str) -> &'a str {
    CANONICAL_NAME_LABELS
        .iter()
        .find_map(|key| labels.get(*key))
        .map_or(workload, String::as_str)
}

/// The canonical revision of a workload: its canonical-revision, `app.kubernetes.io/version`
/// or `version` label, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> &str {
    CANONICAL_REVISION_LABELS
        .iter()
        .find_map(|key| labels.get(*key))
        .map_or(DEFAULT_REVISION, String::as_str)
}

fn shared(value: &str) -> Arc<str> {
    if value.is_empty() {
        Arc::from(UNKNOWN)
    } else {
        Arc::from(value)
    }
}

/// One side of a connection or request, as the `source_*` or `destination_*` labels
/// describe it. Every field is `unknown` until known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadLabels {
    /// The workload's name: its Deployment (or other controller), else the pod's name.
    pub workload: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub namespace: Arc<str>,
    /// The SPIFFE id, with its `spiffe://` scheme, as Istio reports principals in metrics.
    pub principal: Arc<str>,
    /// Istio fills `*_app` with the canonical service and `*_version` with the canonical
    /// revision.
    pub app: Arc<str>,
    pub version: Arc<str>,
    pub cluster: Arc<str>,
}

impl Default for WorkloadLabels {
    fn default() -> Self {
        Self::unknown()
    }
}

impl WorkloadLabels {
    pub fn unknown() -> Self {
        let unknown: Arc<str> = Arc::from(UNKNOWN);
        Self {
            workload: unknown.clone(),
            canonical_service: unknown.clone(),
            canonical_revision: unknown.clone(),
            namespace: unknown.clone(),
            principal: unknown.clone(),
            app: unknown.clone(),
            version: unknown.clone(),
            cluster: unknown,
        }
    }

    /// The labels of a known workload. `principal` is left `unknown`: who proved which
    /// identity depends on the connection (see [`WorkloadLabels::with_principal`]).
    pub fn new(
        workload: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cluster: &str,
    ) -> Self {
        let service = shared(canonical_service(labels, workload));
        let revision = shared(canonical_revision(labels));
        Self {
            workload: shared(workload),
            canonical_service: service.clone(),
            canonical_revision: revision.clone(),
            namespace: shared(namespace),
            principal: Arc::from(UNKNOWN),
            app: service,
            version: revision,
            cluster: shared(cluster),
        }
    }

    /// Sets the principal (a SPIFFE id; `None` or empty leaves it `unknown`).
    pub fn with_principal(mut self, principal: Option<&str>) -> Self {
        self.principal = shared(principal.unwrap_or_default());
        self
    }
}

/// The Service a connection or request was addressed to (`destination_service*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    /// The service's host name, `name.namespace.svc.cluster.local`.
    pub host: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl Default for ServiceLabels {
    fn default() -> Self {
        Self::unknown()
    }
}

impl ServiceLabels {
    pub fn unknown() -> Self {
        let unknown: Arc<str> = Arc::from(UNKNOWN);
        Self {
            host: unknown.clone(),
            name: unknown.clone(),
            namespace: unknown,
        }
    }

    pub fn new(host: &str, name: &str, namespace: &str) -> Self {
        Self {
            host: shared(host),
            name: shared(name),
            namespace: shared(namespace),
        }
    }
}

/// Which proxy reports: the client's (`source`), the server's (`destination`), or a
/// waypoint in between (`waypoint`, as Istio's waypoints report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
    Waypoint,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Tcp,
    Http,
    Grpc,
}

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Tcp => "tcp",
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// `connection_security_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// Carried inside mutual TLS between mesh identities (HBONE).
    MutualTls,
    /// Plain TCP.
    None,
    Unknown,
}

impl SecurityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
            SecurityPolicy::Unknown => "unknown",
        }
    }
}

/// `response_flags`: `-` when nothing went wrong, else a short code. ztunnel's codes for
/// connections, Envoy's for requests (what the waypoint reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseFlags(pub &'static str);

impl ResponseFlags {
    pub const NONE: Self = Self("-");
    /// Refused by policy (ztunnel).
    pub const DENY: Self = Self("DENY");
    /// The upstream connection could not be established (ztunnel).
    pub const CONNECT: Self = Self("CONNECT");
    /// No route matched (Envoy `NR`).
    pub const NO_ROUTE: Self = Self("NR");
    /// No healthy upstream (Envoy `UH`).
    pub const NO_HEALTHY_UPSTREAM: Self = Self("UH");
    /// Upstream connection failure (Envoy `UF`).
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self("UF");
    /// Upstream request timeout (Envoy `UT`).
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self("UT");
    /// Retry limit exceeded (Envoy `URX`).
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self("URX");
    /// Upstream connection terminated (Envoy `UC`).
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self("UC");
    /// Downstream connection terminated (Envoy `DC`).
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self("DC");
    /// Refused by the circuit breaker: a connection pool or request limit overflowed
    /// (Envoy `UO`).
    pub const UPSTREAM_OVERFLOW: Self = Self("UO");
    /// Denied by an external authorization service, or because one could not be asked
    /// (Envoy `UAEX`).
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self("UAEX");
    /// Aborted by fault injection (Envoy `FI`).
    pub const FAULT_INJECTED: Self = Self("FI");
    /// Delayed by fault injection (Envoy `DI`).
    pub const DELAY_INJECTED: Self = Self("DI");

    /// These flags with `URX` added: the last of the retries the policy allowed failed
    /// too. Envoy lists the flags in its own order, comma-separated (`UF,URX`).
    pub fn with_retry_limit_exceeded(self) -> Self {
        match self.0 {
            "UH" => Self("UH,URX"),
            "UT" => Self("UT,URX"),
            "UF" => Self("UF,URX"),
            "UC" => Self("UC,URX"),
            "UO" => Self("UO,URX"),
            _ => Self::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        }
    }
}

/// The labels of every TCP metric, and of HTTP metrics besides `response_code`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source: WorkloadLabels,
    pub destination_service: ServiceLabels,
    pub destination: WorkloadLabels,
    pub request_protocol: RequestProtocol,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// The labels of a request: a connection's labels with `request_protocol` `http` or `grpc`.
pub type RequestLabels = ConnectionLabels;

impl ConnectionLabels {
    /// A TCP connection reported by `reporter`, everything else unknown.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            source: WorkloadLabels::unknown(),
            destination_service: ServiceLabels::unknown(),
            destination: WorkloadLabels::unknown(),
            request_protocol: RequestProtocol::Tcp,
            response_flags: ResponseFlags::NONE,
            connection_security_policy: SecurityPolicy::Unknown,
        }
    }

    pub fn with_source(mut self, source: WorkloadLabels) -> Self {
        self.source = source;
        self
    }

    pub fn with_destination(mut self, destination: WorkloadLabels) -> Self {
        self.destination = destination;
        self
    }

    pub fn with_destination_service(mut self, service: Option<ServiceLabels>) -> Self {
        self.destination_service = service.unwrap_or_default();
        self
    }

    pub fn with_protocol(mut self, protocol: RequestProtocol) -> Self {
        self.request_protocol = protocol;
        self
    }

    pub fn with_security_policy(mut self, policy: SecurityPolicy) -> Self {
        self.connection_security_policy = policy;
        self
    }

    pub fn with_response_flags(mut self, flags: ResponseFlags) -> Self {
        self.response_flags = flags;
        self
    }
}

pub(super) fn label(
    encoder: &mut LabelSetEncoder,
    key: &str,
    value: &str,
) -> Result<(), std::fmt::Error> {
    (key, value).encode(encoder.encode_label())
}

impl EncodeLabelSet for ConnectionLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.encode_changed(encoder, &TagChanges::default())
    }
}

/// Istio's labels of request metrics, in its order: tags the Telemetry API adds are the
/// names not in this list.
pub(crate) const REQUEST_LABEL_NAMES: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
];

impl ConnectionLabels {
    /// The labels with the Telemetry API's changes to them (added tags are not written).
    pub(crate) fn encode_changed(
        &self,
        encoder: &mut LabelSetEncoder,
        tags: &TagChanges,
    ) -> Result<(), std::fmt::Error> {
        let label =
            |encoder: &mut LabelSetEncoder, key: &str, value: &str| tags.label(encoder, key, value);
        // Istio's order, so the text output reads like Istio's.
        label(encoder, "reporter", self.reporter.as_str())?;
        let s = &self.source;
        label(encoder, "source_workload", &s.workload)?;
        label(encoder, "source_canonical_service", &s.canonical_service)?;
        label(encoder, "source_canonical_revision", &s.canonical_revision)?;
        label(encoder, "source_workload_namespace", &s.namespace)?;
        label(encoder, "source_principal", &s.principal)?;
        label(encoder, "source_app", &s.app)?;
        label(encoder, "source_version", &s.version)?;
        label(encoder, "source_cluster", &s.cluster)?;
        let svc = &self.destination_service;
        label(encoder, "destination_service", &svc.host)?;
        label(encoder, "destination_service_namespace", &svc.namespace)?;
        label(encoder, "destination_service_name", &svc.name)?;
        let d = &self.destination;
        label(encoder, "destination_workload", &d.workload)?;
        label(
            encoder,
            "destination_canonical_service",
            &d.canonical_service,
        )?;
        label(
            encoder,
            "destination_canonical_revision",
            &d.canonical_revision,
        )?;
        label(encoder, "destination_workload_namespace", &d.namespace)?;
        label(encoder, "destination_principal", &d.principal)?;
        label(encoder, "destination_app", &d.app)?;
        label(encoder, "destination_version", &d.version)?;
        label(encoder, "destination_cluster", &d.cluster)?;
        label(encoder, "request_protocol", self.request_protocol.as_str())?;
        label(encoder, "response_flags", self.response_flags.0)?;
        label(
            encoder,
            "connection_security_policy",
            self.connection_security_policy.as_str(),
        )
    }
}

/// `response_code` and `grpc_response_status`, for HTTP metrics only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResponseCode {
    pub status: u16,
    /// The `grpc-status` of a gRPC response; empty for anything else, as in Istio.
    pub grpc_status: Option<u32>,
}

impl EncodeLabelSet for ResponseCode {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.encode_changed(encoder, &TagChanges::default())
    }
}

impl ResponseCode {
    fn encode_changed(
        &self,
        encoder: &mut LabelSetEncoder,
        tags: &TagChanges,
    ) -> Result<(), std::fmt::Error> {
        let mut code = String::with_capacity(3);
        let _ = write!(code, "{}", self.status);
        tags.label(encoder, "response_code", &code)?;
        let mut grpc = String::new();
        if let Some(status) = self.grpc_status {
            let _ = write!(grpc, "{status}");
        }
        tags.label(encoder, "grpc_response_status", &grpc)
    }
}

/// One series of a request metric: the request's labels and code, changed by the
/// Telemetry API's tags for that metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RequestSeries {
    pub labels: ConnectionLabels,
    pub code: ResponseCode,
    pub tags: TagChanges,
}

impl EncodeLabelSet for RequestSeries {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.labels.encode_changed(encoder, &self.tags)?;
        self.code.encode_changed(encoder, &self.tags)?;
        self.tags.added(encoder, &REQUEST_LABEL_NAMES)
    }
}

/// `istio_build`'s labels: which Istio component the process plays and its version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BuildLabels {
    pub component: String,
    pub tag: String,
}

impl EncodeLabelSet for BuildLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        label(encoder, "component", &self.component)?;
        label(encoder, "tag", &self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn retry_exhaustion_is_added_after_the_attempts_own_flag() {
        assert_eq!(
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE.with_retry_limit_exceeded(),
            ResponseFlags("UF,URX")
        );
        assert_eq!(
            ResponseFlags::UPSTREAM_REQUEST_TIMEOUT.with_retry_limit_exceeded(),
            ResponseFlags("UT,URX")
        );
        assert_eq!(
            ResponseFlags::NONE.with_retry_limit_exceeded(),
            ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
        );
    }

    #[test]
    fn canonical_service_follows_istiods_order() {
        let all = labels(&[
            ("app", "a"),
            ("app.kubernetes.io/name", "k"),
            ("service.istio.io/canonical-name", "c"),
        ]);
        assert_eq!(canonical_service(&all, "wl"), "c");
        assert_eq!(
            canonical_service(
                &labels(&[("app", "a"), ("app.kubernetes.io/name", "k")]),
                "wl"
            ),
            "k"
        );
        assert_eq!(canonical_service(&labels(&[("app", "a")]), "wl"), "a");
        assert_eq!(canonical_service(&labels(&[]), "wl"), "wl");
    }

    #[test]
    fn canonical_revision_follows_istiods_order() {
        let all = labels(&[
            ("version", "v1"),
            ("app.kubernetes.io/version", "k1"),
            ("service.istio.io/canonical-revision", "c1"),
        ]);
        assert_eq!(canonical_revision(&all), "c1");
        assert_eq!(
            canonical_revision(&labels(&[
                ("version", "v1"),
                ("app.kubernetes.io/version", "k1")
            ])),
            "k1"
        );
        assert_eq!(canonical_revision(&labels(&[("version", "v1")])), "v1");
        assert_eq!(canonical_revision(&labels(&[])), "latest");
    }

    #[test]
    fn workload_labels_fill_app_and_version_from_the_canonical_service() {
        let w = WorkloadLabels::new(
            "reviews",
            "shop",
            &labels(&[("app", "reviews"), ("version", "v2")]),
            DEFAULT_CLUSTER_ID,
        )
        .with_principal(Some("spiffe://cluster.local/ns/shop/sa/reviews"));
        assert_eq!(&*w.workload, "reviews");
        assert_eq!(&*w.canonical_service, "reviews");
        assert_eq!(&*w.app, "reviews");
        assert_eq!(&*w.canonical_revision, "v2");
        assert_eq!(&*w.version, "v2");
        assert_eq!(&*w.namespace, "shop");
        assert_eq!(&*w.cluster, "Kubernetes");
        assert_eq!(&*w.principal, "spiffe://cluster.local/ns/shop/sa/reviews");
        assert_eq!(&*w.clone().with_principal(None).principal, "unknown");
        assert_eq!(
            &*WorkloadLabels::new("", "", &labels(&[]), "").workload,
            "unknown"
        );
    }
}
