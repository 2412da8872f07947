//! The Kubernetes objects weft reads, cut down to the fields it uses.
//!
//! Each type inherits its `kube::Resource` identity from k8s-openapi's full type, so the
//! same struct is read by the API watchers and from YAML. Unused fields are skipped while
//! deserialising instead of being held for every pod of a large cluster.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::{Deserialize, Serialize};

#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::Namespace")]
#[serde(default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

/// A Node, read for its labels only (its locality).
#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::Node")]
#[serde(default)]
pub struct Node {
    pub metadata: ObjectMeta,
}

/// A ConfigMap, read only for Istio's mesh config (the `istio` ConfigMap); see
/// [`super::mesh`].
#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::ConfigMap")]
#[serde(default)]
pub struct ConfigMap {
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
}

#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::Pod")]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: Option<String>,
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    pub service_account: Option<String>,
    pub host_network: bool,
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub ports: Vec<ContainerPort>,
    /// The kubelet's probes, cut to where they connect: the agent lets the node's own
    /// connections to these ports reach the application (`node-agent/src/capture/`).
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
}

/// A container probe's network actions (an `exec` probe opens no connection).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Probe {
    pub http_get: Option<ProbePort>,
    pub tcp_socket: Option<ProbePort>,
    pub grpc: Option<GrpcProbe>,
}

/// `httpGet` and `tcpSocket`: a port by number or by the name of a container port, and the
/// host the kubelet dials (the pod's IP when absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProbePort {
    pub port: Option<IntOrString>,
    pub host: Option<String>,
}

/// `grpc`: a port number only (the API allows no name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcProbe {
    pub port: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    pub conditions: Vec<PodCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::Service")]
#[serde(default)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub selector: Option<BTreeMap<String, String>>,
    pub external_name: Option<String>,
    /// `PreferClose`: clients prefer endpoints close to them (same zone, then region).
    pub traffic_distribution: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Resource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::discovery::v1::EndpointSlice")]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    /// `None` (as opposed to empty) means "all ports" in the EndpointSlice API.
    pub ports: Option<Vec<EndpointPort>>,
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl Pod {
    /// Drops what weft never reads of a pod (its owners, `generateName`, `hostIP`, the
    /// `resourceVersion` — so an update that changes nothing weft reads, such as a
    /// container's status, leaves the registry unchanged — and every condition but Ready
    /// when it has Ready) and the spare capacity decoding leaves in its lists. Every agent
    /// holds every pod of the cluster: the scale bench (`config/benches/scale/`) measures it.
    pub fn compact(&mut self) {
        self.metadata.owner_references = None;
        self.metadata.generate_name = None;
        self.metadata.resource_version = None;
        self.status.host_ip = None;
        let conditions = &mut self.status.conditions;
        if conditions.iter().any(|c| c.type_ == "Ready") {
            conditions.retain(|c| c.type_ == "Ready");
        }
        conditions.shrink_to_fit();
        self.status.pod_ips.shrink_to_fit();
        for container in &mut self.spec.containers {
            container.ports.shrink_to_fit();
        }
        self.spec.containers.shrink_to_fit();
    }
}

impl EndpointSlice {
    /// Gives back the spare capacity decoding leaves in its lists (an endpoint's one
    /// address in room for four).
    pub fn compact(&mut self) {
        for endpoint in &mut self.endpoints {
            endpoint.addresses.shrink_to_fit();
        }
        self.endpoints.shrink_to_fit();
        if let Some(ports) = self.ports.as_mut() {
            ports.shrink_to_fit();
        }
    }

    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub conditions: EndpointConditions,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectReference>,
    pub hostname: Option<String>,
    pub zone: Option<String>,
}

/// Absent conditions mean "unknown", which consumers treat as ready/serving (the
/// EndpointSlice API's rule).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

/// The Secret type an ingress gateway's `credentialName` must name (Istio also reads
/// generic Secrets with `cert`/`key`/`cacert`; weft reads this type only).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The keys of a `kubernetes.io/tls` Secret: the certificate chain, its private key, and
/// (Istio's convention, for `MUTUAL`) the CA that client certificates must chain to.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const CA_CERT_KEY: &str = "ca.crt";

/// A Secret of type `kubernetes.io/tls`, read only by an ingress gateway, only in its own
/// namespace (where Istio's gateway reads the Secrets its servers' `credentialName` name).
/// `data` holds base64, as the API serves it; `stringData` (which the API server folds into
/// `data`) is read too, for manifests in a directory. Its `Debug` shows the keys, never the
/// values.
#[derive(Resource, Clone, Default, PartialEq, Serialize, Deserialize)]
#[resource(inherit = "k8s_openapi::api::core::v1::Secret")]
#[serde(default, rename_all = "camelCase")]
pub struct Secret {
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub data: BTreeMap<String, String>,
    pub string_data: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("type", &self.type_)
            .field(
                "keys",
                &self
                    .data
                    .keys()
                    .chain(self.string_data.keys())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A Secret key whose value is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data.{0} is not base64")]
pub struct NotBase64(pub String);

impl Secret {
    pub fn is_tls(&self) -> bool {
        self.type_.as_deref() == Some(TLS_SECRET_TYPE)
    }

    /// The bytes of `key`: `stringData` as written, `data` decoded from base64 (the API
    /// server lets `stringData` win, and so does this).
    pub fn value(&self, key: &str) -> Result<Option<Vec<u8>>, NotBase64> {
        use base64::Engine;
        if let Some(text) = self.string_data.get(key) {
            return Ok(Some(text.clone().into_bytes()));
        }
        let Some(encoded) = self.data.get(key) else {
            return Ok(None);
        };
        let compact: String = encoded.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|_| NotBase64(key.to_string()))
    }
}

/// Fields kubectl and the API server add that weft never reads and that can dwarf the rest
/// of an object: dropped on arrival.
pub fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
