//! Reading the Kubernetes objects the lab acts on from a directory of YAML.
//!
//! Only the fields the lab plays a part for are typed here (what a kubelet, a CNI and
//! kube-proxy would read). Every other object is kept as it is, so the cluster view the
//! lab writes for weft-agent holds the user's Istio resources unchanged.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_controller::gateway::Gateway;
use weft_controller::object::ObjectKind;
use weft_controller::reconcile::{Verdict, desired};
use weft_controller::waypoint::Settings;

use crate::LabError;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
    /// The downward API (`fieldRef`), which the lab's kubelet fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// The kubelet's probes, which the lab plays (`crate::kubelet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

/// A pod's volume, cut to the sources the lab provides (`crate::volumes`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected: Option<ProjectedVolume>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ConfigMapVolume {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ProjectedVolume {
    #[serde(default)]
    pub sources: Vec<ProjectedSource>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectedSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<TokenProjection>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TokenProjection {
    pub path: String,
}

/// A container probe (`core/v1 Probe`): one handler and its timing. Unknown fields are
/// refused rather than silently not played.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// For liveness and startup failures: how long the container gets between SIGTERM and
    /// SIGKILL (the pod's 30 s by default in Kubernetes; the lab waits at most 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: TargetPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (the default); the lab refuses `HTTPS`, which it does not play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    pub port: TargetPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcAction {
    pub port: u16,
    /// The service name asked about in `grpc.health.v1.Health/Check` ("" when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// What the kubelet does when a container exits (`crate::kubelet`); Always unless said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

/// A pod's `spec.restartPolicy`, Kubernetes' three values (any other is refused).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Every exit is followed by a restart (a Deployment's and a DaemonSet's only policy).
    #[default]
    Always,
    /// Only a failed exit (a non-zero status, or killed by a signal).
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `success` is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TemplateMeta {
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct DeploymentSpec {
    #[serde(default = "one")]
    pub replicas: u32,
    pub template: PodTemplate,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Deployment {
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
}

/// A Service port's `targetPort`: a number, or the name of a container port.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// For Services of type NodePort and LoadBalancer: the port on every node (allocated
    /// from 30000–32767 when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

fn tcp() -> String {
    "TCP".to_string()
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// Dual-stack fields, as the API server reads them: the addresses asked for, the
    /// families (`IPv4`, `IPv6`) in order, and `SingleStack`, `PreferDualStack` or
    /// `RequireDualStack`.
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `ClusterIP` (the default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `Cluster` (the default: any node forwards, and masquerades) or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    /// `PreferClose`: clients prefer endpoints in their zone (the agents honour it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// The address a LoadBalancer asks for (deprecated in Kubernetes, still honoured by
    /// cloud controllers); one of the lab's range is allocated otherwise.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Service {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

/// A Node of the lab (`node-1` …), declared for its labels: the lab's nodes carry them as a
/// cluster's Node objects do (`topology.kubernetes.io/zone`, …).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Node {
    pub metadata: ObjectMeta,
}

/// Everything read from a manifest directory.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    /// Objects the lab does not act on (ServiceAccounts, Istio resources, …), kept verbatim.
    pub others: Vec<serde_yaml::Value>,
    /// Gateway API Gateways read without a namespace: what the controller makes of them was
    /// made in `default`, and is made again where [`Manifests::in_namespace`] puts them.
    unplaced_gateways: Vec<String>,
}

impl Manifests {
    /// Puts the namespaced objects that name no namespace in `namespace`, as
    /// `kubectl apply -n NAMESPACE` does.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        const CLUSTER_SCOPED: [&str; 12] = [
            "Namespace",
            "Node",
            "PersistentVolume",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "StorageClass",
            "GatewayClass",
            "PriorityClass",
            "IngressClass",
            "RuntimeClass",
            "APIService",
        ];
        let unplaced = std::mem::take(&mut self.unplaced_gateways);
        let made_for_unplaced = |meta: &ObjectMeta| {
            meta.namespace.as_deref() == Some("default")
                && meta
                    .labels
                    .get(GATEWAY_NAME_LABEL)
                    .is_some_and(|name| unplaced.contains(name))
        };
        self.deployments.retain(|d| !made_for_unplaced(&d.metadata));
        self.services.retain(|s| !made_for_unplaced(&s.metadata));
        let set = |meta: &mut ObjectMeta| {
            meta.namespace.get_or_insert_with(|| namespace.to_string());
        };
        self.pods.iter_mut().for_each(|p| set(&mut p.metadata));
        self.deployments
            .iter_mut()
            .for_each(|d| set(&mut d.metadata));
        self.services.iter_mut().for_each(|s| set(&mut s.metadata));
        for object in &mut self.others {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            if CLUSTER_SCOPED.contains(&kind.as_str()) {
                continue;
            }
            if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_mapping_mut())
                && !meta.contains_key("namespace")
            {
                meta.insert("namespace".into(), namespace.into());
            }
        }
        let gateways: Vec<serde_yaml::Value> = self
            .others
            .iter()
            .filter(|o| o.get("kind").and_then(|k| k.as_str()) == Some("Gateway"))
            .filter(|o| is_gateway_api(o))
            .filter(|o| {
                o.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| unplaced.iter().any(|u| u == n))
            })
            .cloned()
            .collect();
        for gateway in gateways {
            if let Err(e) = self.add_gateway(&gateway, &LabError::Invalid) {
                tracing::warn!("a Gateway placed in namespace {namespace}: {e}");
            }
        }
        self
    }

    /// Adds everything of `other` after this one's.
    pub fn extend(&mut self, other: Manifests) {
        self.namespaces.extend(other.namespaces);
        self.nodes.extend(other.nodes);
        self.pods.extend(other.pods);
        self.deployments.extend(other.deployments);
        self.services.extend(other.services);
        self.others.extend(other.others);
        self.unplaced_gateways.extend(other.unplaced_gateways);
    }

    /// Reads every `*.yaml` / `*.yml` file under `dir` (nested folders included, in path
    /// order so the result does not depend on the file system's listing order).
    pub fn load_dir(dir: &Path) -> Result<Self, LabError> {
        let mut files = Vec::new();
        collect_yaml_files(dir, &mut files)?;
        files.sort();
        let mut manifests = Manifests::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| LabError::Io {
                what: format!("reading {}", file.display()),
                source,
            })?;
            manifests.add_yaml(&text, &file)?;
        }
        Ok(manifests)
    }

    /// Adds the objects of one (possibly multi-document) YAML text; `origin` names it in errors.
    pub fn add_yaml(&mut self, text: &str, origin: &Path) -> Result<(), LabError> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let invalid = |reason: String| LabError::Manifest {
                file: origin.to_path_buf(),
                document: index,
                reason,
            };
            let value =
                serde_yaml::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .ok_or_else(|| invalid("object has no `kind`".into()))?
                .to_string();
            match kind.as_str() {
                "Namespace" => self.namespaces.push(from_value(value, &invalid)?),
                "Node" => self.nodes.push(from_value(value, &invalid)?),
                "Pod" => self.pods.push(from_value(value, &invalid)?),
                "Deployment" => self.deployments.push(from_value(value, &invalid)?),
                "Service" => self.services.push(from_value(value, &invalid)?),
                "Gateway" if is_gateway_api(&value) => {
                    self.add_gateway(&value, &invalid)?;
                    let meta = value.get("metadata");
                    if meta.and_then(|m| m.get("namespace")).is_none()
                        && let Some(name) =
                            meta.and_then(|m| m.get("name")).and_then(|n| n.as_str())
                    {
                        self.unplaced_gateways.push(name.to_string());
                    }
                    self.others.push(value);
                }
                "List" => {
                    let items = value
                        .get("items")
                        .cloned()
                        .unwrap_or(serde_yaml::Value::Sequence(Vec::new()));
                    let text = serde_yaml::to_string(&items).map_err(|e| invalid(e.to_string()))?;
                    let items: Vec<serde_yaml::Value> =
                        serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
                    for item in items {
                        let text =
                            serde_yaml::to_string(&item).map_err(|e| invalid(e.to_string()))?;
                        self.add_yaml(&text, origin)?;
                    }
                }
                _ => self.others.push(value),
            }
        }
        Ok(())
    }
}

/// Refuses a probe the lab cannot play as Kubernetes would, naming it; the API server's
/// validation rules (one handler, positive timings, success threshold 1 for liveness and
/// startup) included.
pub fn validate_probes(pod: &str, container: &Container) -> Result<(), LabError> {
    let probes = [
        ("startupProbe", &container.startup_probe),
        ("livenessProbe", &container.liveness_probe),
        ("readinessProbe", &container.readiness_probe),
    ];
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        let invalid = |reason: String| {
            LabError::Invalid(format!(
                "pod {pod} container {}: {kind}: {reason}",
                container.name
            ))
        };
        let handlers = usize::from(probe.http_get.is_some())
            + usize::from(probe.tcp_socket.is_some())
            + usize::from(probe.grpc.is_some())
            + usize::from(probe.exec.is_some());
        if handlers != 1 {
            return Err(invalid(format!(
                "must have exactly one of httpGet, tcpSocket, grpc, exec (has {handlers})"
            )));
        }
        for (field, value) in [
            ("periodSeconds", probe.period_seconds),
            ("timeoutSeconds", probe.timeout_seconds),
            ("successThreshold", probe.success_threshold),
            ("failureThreshold", probe.failure_threshold),
        ] {
            if value == Some(0) {
                return Err(invalid(format!("{field} must be at least 1")));
            }
        }
        if kind != "readinessProbe" && probe.success_threshold.is_some_and(|n| n != 1) {
            return Err(invalid("successThreshold must be 1".into()));
        }
        if let Some(http) = &probe.http_get {
            match http.scheme.as_deref() {
                None | Some("HTTP") => {}
                Some("HTTPS") => {
                    return Err(invalid(
                        "scheme HTTPS is not played by the lab (only HTTP)".into(),
                    ));
                }
                Some(other) => return Err(invalid(format!("scheme {other:?} is not HTTP"))),
            }
            probe_port(container, &http.port).map_err(invalid)?;
        }
        if let Some(tcp) = &probe.tcp_socket {
            probe_port(container, &tcp.port).map_err(invalid)?;
        }
        if probe.grpc.as_ref().is_some_and(|g| g.port == 0) {
            return Err(invalid("grpc.port must be 1-65535".into()));
        }
        if probe.exec.as_ref().is_some_and(|e| e.command.is_empty()) {
            return Err(invalid("exec.command is empty".into()));
        }
    }
    Ok(())
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn probe_port(container: &Container, port: &TargetPort) -> Result<u16, String> {
    match port {
        TargetPort::Number(0) => Err("port must be 1-65535".into()),
        TargetPort::Number(n) => Ok(*n),
        TargetPort::Name(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("port {name:?} names no port of the container")),
    }
}

pub use weft_core::mesh::waypoint::GATEWAY_NAME_LABEL;

/// A Gateway of the Kubernetes Gateway API (not Istio's `networking.istio.io` one).
fn is_gateway_api(value: &serde_yaml::Value) -> bool {
    value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.starts_with("gateway.networking.k8s.io/"))
}

impl Manifests {
    /// Runs what the control plane's waypoint controller makes of a Gateway in a cluster:
    /// its Deployment and Service, from the same code (`weft_controller::reconcile::desired`,
    /// with the settings of a default install). Its ServiceAccount only names the pods'
    /// identity here, and the lab has no RBAC to bind. A Gateway of another class is left to
    /// its own controller, a refused one gets nothing (as in a cluster, where its status
    /// says why).
    fn add_gateway(
        &mut self,
        value: &serde_yaml::Value,
        invalid: &dyn Fn(String) -> LabError,
    ) -> Result<(), LabError> {
        let json = serde_json::to_value(value).map_err(|e| invalid(e.to_string()))?;
        let gateway = Gateway::from_json(&json).map_err(|e| invalid(e.to_string()))?;
        let (verdict, objects) = desired(&gateway, &Settings::default());
        if let Verdict::Refused(refusal) = &verdict {
            tracing::warn!(
                gateway = %gateway.key(),
                reason = refusal.reason,
                "no waypoint runs for it: {}",
                refusal.message
            );
        }
        for (kind, body) in objects {
            let what = |e: serde_json::Error| invalid(format!("the waypoint's {kind:?}: {e}"));
            match kind {
                ObjectKind::Deployment => self
                    .deployments
                    .push(serde_json::from_value(body).map_err(what)?),
                ObjectKind::Service => self
                    .services
                    .push(serde_json::from_value(body).map_err(what)?),
                _ => {}
            }
        }
        Ok(())
    }
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    invalid: &dyn Fn(String) -> LabError,
) -> Result<T, LabError> {
    serde_yaml::from_value(value).map_err(|e| invalid(e.to_string()))
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LabError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LabError::Io {
        what: format!("listing manifest directory {}", dir.display()),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LabError::Io {
            what: format!("listing {}", dir.display()),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_keeps_unknown_kinds() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {hosts: [web]}
---
"#;
        let mut m = Manifests::default();
        m.add_yaml(yaml, Path::new("t.yaml")).expect("valid");
        assert_eq!(
            m.namespaces[0].metadata.labels["istio.io/dataplane-mode"],
            "ambient"
        );
        assert_eq!(
            m.services[0].spec.ports[0].target_port,
            Some(TargetPort::Name("http".into()))
        );
        assert_eq!(m.services[0].spec.ports[0].protocol, "TCP");
        assert_eq!(m.others.len(), 1);
    }

    #[test]
    fn a_waypoint_gateway_runs_what_the_controller_makes_of_it() {
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken, namespace: shop}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: http, port: 80, protocol: HTTP}]}
"#;
        let mut m = Manifests::default();
        m.add_yaml(yaml, Path::new("gw.yaml")).expect("valid");
        assert_eq!(m.others.len(), 3, "the Gateways reach the cluster view");
        let names: Vec<&str> = m
            .deployments
            .iter()
            .map(|d| d.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["wp"], "only the accepted waypoint runs");
        let gateway = weft_controller::gateway::Gateway::from_json(
            &serde_json::to_value(&m.others[0]).expect("JSON"),
        )
        .expect("gateway");
        let (_, objects) = desired(&gateway, &Settings::default());
        let expected: Deployment = serde_json::from_value(
            objects
                .into_iter()
                .find(|(k, _)| *k == ObjectKind::Deployment)
                .expect("a Deployment")
                .1,
        )
        .expect("lab Deployment");
        assert_eq!(m.deployments[0], expected);
        let container = &m.deployments[0].spec.template.spec.containers[0];
        assert!(container.command.is_empty(), "the image's entrypoint");
        assert_eq!(container.volume_mounts.len(), 2);
        assert_eq!(m.deployments[0].spec.template.spec.volumes.len(), 2);
        let ports: Vec<u16> = m.services[0].spec.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [15021, 15008]);
    }

    #[test]
    fn an_ingress_gateway_applied_to_a_namespace_runs_there() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bookinfo-gateway}\nspec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
        let mut m = Manifests::default();
        m.add_yaml(yaml, Path::new("gw.yaml")).expect("valid");
        let m = m.in_namespace("bookinfo");
        let placed: Vec<(String, Option<String>)> = m
            .deployments
            .iter()
            .map(|d| (d.metadata.name.clone(), d.metadata.namespace.clone()))
            .chain(
                m.services
                    .iter()
                    .map(|s| (s.metadata.name.clone(), s.metadata.namespace.clone())),
            )
            .collect();
        let expected = (
            "bookinfo-gateway-istio".to_string(),
            Some("bookinfo".to_string()),
        );
        assert_eq!(placed, [expected.clone(), expected]);
        assert_eq!(m.services[0].spec.type_.as_deref(), Some("LoadBalancer"));
    }

    #[test]
    fn names_the_file_and_document_of_a_bad_object() {
        let yaml = "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: 7\n";
        let err = Manifests::default()
            .add_yaml(yaml, Path::new("pods.yaml"))
            .expect_err("second document is invalid");
        let text = err.to_string();
        assert!(
            text.contains("pods.yaml") && text.contains("document 1"),
            "{text}"
        );
    }

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).expect("container")
    }

    #[test]
    fn validation_refuses_what_kubernetes_or_the_lab_would_not_run() {
        let ok = container(
            "{name: app, ports: [{name: http, containerPort: 8080}], readinessProbe: {httpGet: {path: /ready, port: http}}, livenessProbe: {grpc: {port: 9090}}}",
        );
        assert!(validate_probes("shop/a", &ok).is_ok());
        for (yaml, says) in [
            (
                "{name: app, readinessProbe: {httpGet: {port: web}}}",
                "names no port",
            ),
            (
                "{name: app, readinessProbe: {httpGet: {port: 80, scheme: HTTPS}}}",
                "HTTPS",
            ),
            (
                "{name: app, livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}",
                "successThreshold must be 1",
            ),
            (
                "{name: app, readinessProbe: {tcpSocket: {port: 80}, exec: {command: [true]}}}",
                "exactly one",
            ),
            (
                "{name: app, readinessProbe: {periodSeconds: 0, tcpSocket: {port: 80}}}",
                "periodSeconds",
            ),
        ] {
            let err = validate_probes("shop/a", &container(yaml))
                .expect_err(yaml)
                .to_string();
            assert!(
                err.contains(says) && err.contains("shop/a"),
                "{yaml}: {err}"
            );
        }
        let unknown: Result<Container, _> = serde_yaml::from_str(
            "{name: app, readinessProbe: {tcpSocket: {port: 80}, periodSecond: 1}}",
        );
        assert!(unknown.is_err(), "a misspelt field is refused, not ignored");
    }
}
