//! What the registry holds: workloads and services as the data path needs them, already
//! resolved (identity, enrollment, waypoint, endpoints).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::bound_route::BoundRoute;
use crate::api::networking::{DestinationRule, VirtualService};

/// The waypoint a workload or service sends its traffic through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WaypointRef {
    pub name: String,
    pub namespace: String,
}

/// Which traffic a waypoint handles (`istio.io/waypoint-for` on its Gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaypointFor {
    /// Traffic addressed to a bound service (Istio's default).
    Service,
    /// Traffic addressed to a bound workload's own address.
    Workload,
    All,
    None,
}

impl WaypointFor {
    pub fn serves_services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    pub fn serves_workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
            WaypointFor::None => "none",
        }
    }
}

/// A waypoint declared by a Gateway API Gateway of a waypoint class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waypoint {
    pub name: String,
    pub namespace: String,
    pub traffic: WaypointFor,
    /// The HBONE listener's port (15008).
    pub port: u16,
}

/// A label (or annotation) map shared by every holder of the same content: every agent
/// holds a workload per pod of the cluster, and the pods of one ReplicaSet have the same
/// labels, so the registry keeps one copy of each distinct map (`registry::intern`). Reads
/// as the map it derefs to.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(Arc::new(map))
    }

    /// The shared map itself (for interning).
    pub fn shared(&self) -> &Arc<BTreeMap<String, String>> {
        &self.0
    }

    pub fn from_shared(map: Arc<BTreeMap<String, String>>) -> Self {
        Self(map)
    }

    /// An owned copy of the map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        (*self.0).clone()
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::new(map)
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The annotations the mesh reads of a pod, and so the only ones a [`Workload`] keeps:
/// Istio's (`*.istio.io/*` and `istio.io/*`: capture exclusions
/// `traffic.sidecar.istio.io/*`, DNS capture `ambient.istio.io/dns-capture`, ...). Others
/// (`prometheus.io/*`, `kubectl.kubernetes.io/restartedAt`, ...) cost every agent memory
/// per pod of the cluster and are read by nothing in the mesh.
pub fn is_mesh_annotation(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(domain, _)| domain == "istio.io" || domain.ends_with(".istio.io"))
}

/// A pod, as the mesh sees it. Strings many workloads share (namespace, service account,
/// identity, node, phase) and label maps are shared between them (`registry::intern`).
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub identity: Arc<str>,
    pub node: Option<Arc<str>>,
    /// Pod IPs; empty until the pod has one, and for host-network pods (whose address is
    /// the node's and belongs to no single pod).
    pub ips: Box<[IpAddr]>,
    pub labels: Labels,
    /// The pod's annotations the mesh reads ([`is_mesh_annotation`]; capture exclusions
    /// such as `traffic.sidecar.istio.io/excludeOutboundPorts` are read from them).
    pub annotations: Labels,
    /// Shared with the other workloads bound to the same waypoint.
    pub waypoint: Option<Arc<WaypointRef>>,
    /// Captured by the mesh, by Istio's `istio.io/dataplane-mode` rule.
    pub in_mesh: bool,
    pub host_network: bool,
    /// `status.phase`: Pending, Running, Succeeded, Failed.
    pub phase: Option<Arc<str>>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Named container ports, for Services whose `targetPort` is a name.
    pub ports: Arc<[NamedPort]>,
    /// The ports the kubelet's HTTP, TCP and gRPC probes connect to on the pod's IPs,
    /// sorted, without duplicates.
    pub probe_ports: Arc<[u16]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: String,
}

/// Where a workload runs: its node's `topology.kubernetes.io/region`, `topology.kubernetes.io/zone`
/// and `topology.istio.io/subzone` labels (or the pod's `istio-locality` label,
/// `region.zone.subzone`, as Istio reads it). Empty parts are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// A pod's own locality, overriding its node's: `region.zone.subzone`.
pub const LOCALITY_LABEL: &str = "istio-locality";

impl Locality {
    /// A node's locality, from its labels.
    pub fn of_node(labels: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| labels.get(key).cloned().unwrap_or_default();
        Self {
            region: get(REGION_LABEL),
            zone: get(ZONE_LABEL),
            subzone: get(SUBZONE_LABEL),
        }
    }

    /// `region.zone.subzone` (the `istio-locality` label's form; Istio writes `/` as `.`
    /// because label values may not hold `/`).
    pub fn from_label(value: &str) -> Self {
        let mut parts = value.splitn(3, '.').map(str::to_string);
        Self {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)
    }
}

/// `spec.trafficDistribution` of a Service (or Istio's annotation
/// `networking.istio.io/traffic-distribution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficDistribution {
    /// Any ready endpoint.
    #[default]
    Any,
    /// `PreferClose`: endpoints in the client's zone, else its region, else any.
    PreferClose,
}

/// A Kubernetes Service with its endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `name.namespace.svc.<cluster domain>`.
    pub hostname: String,
    /// ClusterIPs; empty for headless and ExternalName services.
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub selector: Option<BTreeMap<String, String>>,
    pub labels: BTreeMap<String, String>,
    /// Those of its EndpointSlices, in order (a Service with one slice shares the list the
    /// registry keeps of the slice).
    pub endpoints: Arc<[Endpoint]>,
    pub waypoint: Option<WaypointRef>,
    pub traffic_distribution: TrafficDistribution,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per endpoint.
    Name(String),
}

/// One address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Unknown conditions count as true, as the EndpointSlice API says.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Shared with the node's other endpoints and workloads.
    pub node: Option<Arc<str>>,
    /// The pod behind the address (`targetRef`), as namespace and name (shared with the
    /// pod's workload).
    pub target: Option<(Arc<str>, Arc<str>)>,
    /// The ports of the slice this endpoint came from (shared by its endpoints).
    pub ports: Arc<[EndpointPort]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: String,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// The port `endpoint` listens on for the service port `port`: the slice port with the
    /// service port's name (which is how the EndpointSlice controller records a resolved
    /// `targetPort`), or the target port number when the slice names none.
    pub fn endpoint_port(&self, port: u16, endpoint: &Endpoint) -> Option<u16> {
        let service_port = self.port(port)?;
        let same_name = |name: &Option<String>| {
            name.as_deref().unwrap_or_default() == service_port.name.as_deref().unwrap_or_default()
        };
        if let Some(p) = endpoint.ports.iter().find(|p| same_name(&p.name)) {
            return Some(p.port);
        }
        match &service_port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(_) => None,
        }
    }
}

/// The routing configuration of one host: VirtualServices that apply to the mesh, oldest
/// first (Istio uses the first; later ones are kept for the config dump), the Gateway API
/// routes attached to the host's Service (oldest first; the waypoint decides which of
/// them and the VirtualServices apply, `waypoint/src/route/mod.rs`), and its
/// DestinationRule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostRoutes {
    pub virtual_services: Vec<Arc<VirtualService>>,
    pub gateway_routes: Vec<Arc<BoundRoute>>,
    pub destination_rule: Option<Arc<DestinationRule>>,
}

impl HostRoutes {
    /// The labels of `subset` in this host's DestinationRule.
    pub fn subset_labels(&self, subset: &str) -> Option<&BTreeMap<String, String>> {
        self.destination_rule
            .as_ref()?
            .spec
            .subsets
            .iter()
            .find(|s| s.name == subset)
            .map(|s| &s.labels)
    }
}

/// One host of a ServiceEntry, as the data path needs it: what clients dial to reach it,
/// and where its connections go.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryHost {
    /// The host (`api.example.com`, `*.example.com`): `destination_service` in metrics, the
    /// name the DNS proxy answers, the VirtualService and DestinationRule host.
    pub host: String,
    /// The ServiceEntry's namespace and name.
    pub namespace: String,
    pub name: String,
    /// The addresses clients dial: the entry's single addresses, or one the registry
    /// allocated from 240.240.0.0/16 ([`EntryHost::auto_allocated`]).
    pub vips: Vec<IpAddr>,
    /// Whether `vips` were allocated by the registry (no `addresses`, resolution not NONE).
    pub auto_allocated: bool,
    /// The entry's CIDR blocks (`addresses` with a prefix): a destination inside one is
    /// this host's.
    pub blocks: Vec<(IpAddr, u8)>,
    pub ports: Vec<EntryPort>,
    pub location: crate::api::networking::Location,
    pub resolution: crate::api::networking::Resolution,
    pub endpoints: Vec<EntryEndpoint>,
    /// `workloadSelector.labels`: the entry's endpoints are the pods of its namespace with
    /// these labels.
    pub workload_selector: Option<BTreeMap<String, String>>,
    /// `exportTo`; empty is everywhere (Istio's default).
    pub export_to: Vec<String>,
    /// `istio.io/use-waypoint` of the entry or its namespace.
    pub waypoint: Option<WaypointRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPort {
    pub number: u16,
    pub name: String,
    /// Upper case; empty when unset (TCP).
    pub protocol: String,
    pub target_port: Option<u16>,
}

/// An endpoint of a ServiceEntry (`endpoints[]`): an IP address, or a name to resolve
/// (resolution DNS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryEndpoint {
    pub address: String,
    /// Port name → the port this endpoint listens on for it.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
}

impl EntryHost {
    pub fn port(&self, number: u16) -> Option<&EntryPort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Whether a client in `namespace` sees this host (`exportTo`: `*` or empty everywhere,
    /// `.` its own namespace, `~` nowhere, else the namespaces named).
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self.export_to.iter().any(|to| {
                to == "*" || (to == "." && namespace == self.namespace) || to == namespace
            })
    }

    /// Whether `ip` is one of the addresses clients dial for this host (a VIP, or inside a
    /// block).
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.vips.contains(&ip)
            || self
                .blocks
                .iter()
                .any(|(block, prefix)| crate::validate::cidr::in_block(ip, *block, *prefix))
    }

    /// The port an endpoint serves the entry's port `number` on: the endpoint's own port
    /// for that port's name, else the port's `targetPort`, else the number itself.
    pub fn endpoint_port(&self, number: u16, endpoint: Option<&EntryEndpoint>) -> Option<u16> {
        let port = self.port(number)?;
        if let Some(own) = endpoint.and_then(|e| e.ports.get(&port.name)) {
            return Some(*own);
        }
        Some(port.target_port.unwrap_or(port.number))
    }
}
