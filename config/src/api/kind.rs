//! Which kinds weft reads (their API group, versions and resource names), and how one
//! object is named: the vocabulary refusals, sources and the registry share.
use std::fmt;

use super::gateway_api::{GATEWAY_API_GROUP, GATEWAY_API_VERSIONS};
use super::gateway_routes::{
    GRPC_ROUTE_VERSIONS, HTTP_ROUTE_VERSIONS, REFERENCE_GRANT_VERSIONS, TCP_ROUTE_VERSIONS,
    TLS_ROUTE_VERSIONS,
};

/// The namespace of namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Every kind of object weft reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    /// Read for the locality labels of each node (`topology.kubernetes.io/region`, `/zone`,
    /// `topology.istio.io/subzone`), which locality load balancing compares.
    Node,
    Pod,
    Service,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    /// The Kubernetes Gateway API's Gateway (waypoints are declared with it).
    KubernetesGateway,
    /// Istio's mesh config: the ConfigMap `istio` (key `mesh`); other ConfigMaps are not
    /// read.
    MeshConfig,
    RequestAuthentication,
    /// The Gateway API's routes: attached to Services (GAMMA: a waypoint routes by them)
    /// or to Gateways.
    HttpRoute,
    GrpcRoute,
    /// Routes of connections: served by ingress Gateways' TLS and TCP listeners.
    TlsRoute,
    TcpRoute,
    /// Cross-namespace references the Gateway API's routes may make.
    ReferenceGrant,
    /// Secrets of type `kubernetes.io/tls`, read by an ingress gateway only, in its own
    /// namespace (not by the agents or waypoints: see `source::kube::AGENT_WATCHED`).
    Secret,
    /// Istio's Telemetry API: access logging, metrics and tracing per workload.
    Telemetry,
}

pub const NETWORKING_GROUP: &str = "networking.istio.io";
pub const SECURITY_GROUP: &str = "security.istio.io";
pub const TELEMETRY_GROUP: &str = "telemetry.istio.io";

/// Versions Istio serves for its networking kinds; one schema for all of them.
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// Versions Istio serves for its security kinds.
pub const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// Versions Istio serves for Telemetry.
pub const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

impl Kind {
    pub const ALL: [Kind; 21] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Gateway,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::KubernetesGateway,
        Kind::MeshConfig,
        Kind::RequestAuthentication,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ReferenceGrant,
        Kind::Secret,
        Kind::Telemetry,
    ];

    pub const ISTIO: [Kind; 8] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Gateway,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::Telemetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Gateway => "Gateway",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::KubernetesGateway => "Gateway",
            Kind::MeshConfig => "ConfigMap",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::Telemetry => "Telemetry",
        }
    }

    /// The API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace
            | Kind::Node
            | Kind::Pod
            | Kind::Service
            | Kind::MeshConfig
            | Kind::Secret => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::VirtualService | Kind::DestinationRule | Kind::ServiceEntry | Kind::Gateway => {
                NETWORKING_GROUP
            }
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                SECURITY_GROUP
            }
            Kind::KubernetesGateway
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::TlsRoute
            | Kind::TcpRoute
            | Kind::ReferenceGrant => GATEWAY_API_GROUP,
            Kind::Telemetry => TELEMETRY_GROUP,
        }
    }

    /// Versions accepted in `apiVersion`, the preferred one first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::HttpRoute => return HTTP_ROUTE_VERSIONS,
            Kind::GrpcRoute => return GRPC_ROUTE_VERSIONS,
            Kind::TlsRoute => return TLS_ROUTE_VERSIONS,
            Kind::TcpRoute => return TCP_ROUTE_VERSIONS,
            Kind::ReferenceGrant => return REFERENCE_GRANT_VERSIONS,
            _ => {}
        }
        match self.group() {
            NETWORKING_GROUP => NETWORKING_VERSIONS,
            SECURITY_GROUP => SECURITY_VERSIONS,
            TELEMETRY_GROUP => TELEMETRY_VERSIONS,
            GATEWAY_API_GROUP => GATEWAY_API_VERSIONS,
            _ => &["v1"],
        }
    }

    /// The resource name in API paths (`virtualservices`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::ServiceEntry => "serviceentries",
            Kind::Gateway => "gateways",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::KubernetesGateway => "gateways",
            Kind::MeshConfig => "configmaps",
            Kind::RequestAuthentication => "requestauthentications",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
            Kind::TlsRoute => "tlsroutes",
            Kind::TcpRoute => "tcproutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::Secret => "secrets",
            Kind::Telemetry => "telemetries",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    pub fn is_istio(self) -> bool {
        matches!(
            self.group(),
            NETWORKING_GROUP | SECURITY_GROUP | TELEMETRY_GROUP
        )
    }

    /// Kinds read through the dynamic API (custom resources whose API may not be served),
    /// as opposed to Kubernetes' built-in kinds.
    pub fn is_custom(self) -> bool {
        self.is_istio() || self.group() == GATEWAY_API_GROUP
    }

    /// Kind names repeat across groups (Istio's Gateway and the Gateway API's).
    pub fn by_group_and_name(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.name() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kinds of Istio and the Gateway API that a user may apply and weft does not read (API
/// group, kind): sidecar and Envoy extensions, workload registration. Accepted and ignored, each with a
/// warning, by the directory source and `weftctl validate`.
pub const UNSUPPORTED_KINDS: &[(&str, &str)] = &[
    (NETWORKING_GROUP, "Sidecar"),
    (NETWORKING_GROUP, "EnvoyFilter"),
    (NETWORKING_GROUP, "ProxyConfig"),
    (NETWORKING_GROUP, "WorkloadEntry"),
    (NETWORKING_GROUP, "WorkloadGroup"),
    ("extensions.istio.io", "WasmPlugin"),
];

/// The warning for a document of a kind in [`UNSUPPORTED_KINDS`], naming it; `None` for
/// any other document.
pub fn unsupported(document: &serde_json::Value) -> Option<String> {
    let kind = document.get("kind")?.as_str()?;
    let api_version = document.get("apiVersion")?.as_str()?;
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    UNSUPPORTED_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
        .then(|| {
            let name = document
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let namespace = document
                .pointer("/metadata/namespace")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(DEFAULT_NAMESPACE);
            format!("{kind} {namespace}/{name}: {group}/{kind} is not supported by weft: ignored")
        })
}

/// Which object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}
