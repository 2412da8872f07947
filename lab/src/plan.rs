//! Turning manifests into a concrete topology: which node runs which pod, every address,
//! every name. Pure: nothing here touches the machine, so all of it is unit-tested.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use weft_core::mesh::enrollment::ambient_enrolled;

use crate::LabError;
use crate::manifest::{Container, Labels, Manifests, Pod, PodSpec, Service, TargetPort, Volume};

/// The gateway every pod routes through: an address its node answers on each pod's veth, as
/// routed CNIs (Calico, Cilium) do, so every pod-to-pod packet crosses the node's IP layer
/// where the lab's kube-proxy rules see it.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The same for IPv6: a link-local address of the node on each pod's veth (Calico uses
/// `fe80::ecee:eeff:feee:eeee` the same way).
pub const POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Cluster-wide address plan, chosen like a kubeadm cluster's defaults. These addresses exist
/// only inside the lab's own network namespaces.
const NODE_SUBNET: [u8; 3] = [10, 240, 0];
const POD_SUBNET_PREFIX: [u8; 2] = [10, 244];
const SERVICE_SUBNET_PREFIX: [u8; 2] = [10, 96];
/// The IPv6 plan of a dual-stack lab, unique local addresses mirroring the IPv4 ones:
/// nodes `fd00:10:240::/64`, pods `fd00:10:244:<node>::/64` (one /64 per node, a /128 per
/// pod), Services `fd00:10:96::/112`. Node 10.240.0.10 is fd00:10:240::a, pod 10.244.1.10
/// is fd00:10:244:1::a, Service 10.96.0.10 is fd00:10:96::a.
const NODE_SUBNET6: [u16; 3] = [0xfd00, 0x10, 0x240];
const POD_SUBNET6_PREFIX: [u16; 3] = [0xfd00, 0x10, 0x244];
const SERVICE_SUBNET6_PREFIX: [u16; 3] = [0xfd00, 0x10, 0x96];
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The lab's router (in the fabric namespace) on the node network, which carries the
/// outside world's traffic to the nodes, as a cloud's VPC router does.
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
/// The outside world: a network beyond the router (TEST-NET-3, which exists only inside
/// the lab's namespaces), with the router at .1 and the `outside` host at .10.
pub const OUTSIDE_NETWORK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
pub const OUTSIDE_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The internet the cluster's workloads reach out to (TEST-NET-1, which exists only inside
/// the lab's namespaces): the router at .1, the external hosts from .10, their DNS server at
/// .53. Nodes masquerade their pods' connections to it, as a cloud's NAT does.
pub const EXTERNAL_NETWORK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
pub const EXTERNAL_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const EXTERNAL_DNS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The external hosts every lab has: (DNS name, last octet of the address, short name for
/// the router's interface). Each serves HTTP on 80 and HTTPS on 443.
pub const EXTERNAL_HOSTS: &[(&str, u8, &str)] = &[
    ("api.external.test", 10, "api"),
    ("secure.external.test", 11, "secure"),
];
/// The addresses the lab's "cloud" gives Services of type LoadBalancer (TEST-NET-2),
/// routed by the router to the nodes, where kube-proxy's rules take them.
const LOAD_BALANCER_SUBNET: [u8; 3] = [198, 51, 100];
/// Kubernetes' default NodePort range.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Short name (a-z, 0-9); prefixes every namespace, cgroup and file of this lab.
    pub name: String,
    pub nodes: usize,
    /// A dual-stack cluster (IPv4 first, as kubeadm's `--pod-network-cidr=10.244.0.0/16,
    /// fd00:10:244::/56`): every pod gets an IPv6 address beside its IPv4 one, and Services
    /// that ask for it (`ipFamilyPolicy`, `ipFamilies`, `clusterIPs`) an IPv6 ClusterIP.
    /// Off by default: an IPv4 cluster, where a Service requiring dual-stack is refused.
    pub dual_stack: bool,
}

impl LabOptions {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: 2,
            dual_stack: false,
        }
    }

    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    pub fn dual_stack(mut self, dual_stack: bool) -> Self {
        self.dual_stack = dual_stack;
        self
    }

    /// The cluster's IP families, the default first.
    fn families(&self) -> Vec<IpFamily> {
        if self.dual_stack {
            vec![IpFamily::V4, IpFamily::V6]
        } else {
            vec![IpFamily::V4]
        }
    }

    fn validate(&self) -> Result<(), LabError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 16
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        // No '-': names of the lab's namespaces start with `wl-<lab>-`, which must not be a
        // prefix of another lab's.
        if !name_ok {
            return Err(LabError::Invalid(format!(
                "lab name {:?} must be 1-16 characters of a-z and 0-9",
                self.name
            )));
        }
        if self.nodes == 0 || self.nodes > 200 {
            return Err(LabError::Invalid(format!(
                "a lab has 1 to 200 nodes, not {}",
                self.nodes
            )));
        }
        Ok(())
    }
}

/// An address family, named as Kubernetes names them in `ipFamilies`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    fn other(self) -> Self {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// This node's pods take addresses from `<pod_cidr_base>/24`.
    pub pod_cidr_base: Ipv4Addr,
    /// In a dual-stack lab: the node's IPv6 address on the fabric, and its pods' /64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6_base: Option<Ipv6Addr>,
    /// The fabric side of the node's link, inside the fabric namespace.
    pub fabric_if: String,
    /// The Node object's labels: `kubernetes.io/hostname` and those a manifest's Node of this
    /// name gives it (its topology: `topology.kubernetes.io/region`, `…/zone`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ControlPlanePlan {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub fabric_if: String,
}

/// The CA's port (istiod's).
pub const CA_PORT: u16 = 15012;

/// The name of the control plane's Service in a default install (`weft-ca.weft-system.svc`),
/// which the waypoint controller gives waypoints as the CA's address.
pub const CONTROL_PLANE_SERVICE: &str = weft_controller::waypoint::CA_SERVER_NAME;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address, in a dual-stack lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub netns: String,
    /// The node side of the pod's veth pair, inside the node namespace.
    pub host_if: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<Container>,
    /// The pod's volumes, for the lab's kubelet (`crate::volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Whether the pod is in the mesh: its own label, else its namespace's (Istio's rule).
    pub ambient: bool,
    /// Created after the lab came up and not started yet: the API server holds it without
    /// addresses (phase Pending) until its sandbox is up (`Lab::start_pod`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// What its kubelet does when a container exits (`spec.restartPolicy`).
    #[serde(default)]
    pub restart_policy: crate::manifest::RestartPolicy,
}

impl PodPlan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `status.podIPs`: IPv4 first, then IPv6 in a dual-stack lab.
    pub fn ips(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.ip))
            .chain(self.ip6.map(IpAddr::V6))
            .collect()
    }

    /// A pod the lab runs for a waypoint Gateway.
    pub fn is_waypoint(&self) -> bool {
        self.labels
            .contains_key(crate::manifest::GATEWAY_NAME_LABEL)
    }

    /// A pod of weft's proxies (a waypoint, an ingress gateway): started once the CA is
    /// up, reading the cluster where the agents read it.
    pub fn is_mesh_proxy(&self) -> bool {
        self.is_waypoint()
            || self.containers.iter().any(|c| {
                let program = c
                    .command
                    .first()
                    .cloned()
                    .or_else(|| c.image.as_deref().and_then(crate::volumes::entrypoint));
                program.is_some_and(|p| p.rsplit('/').next() == Some("weft-waypoint"))
            })
    }

    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{CLUSTER_DOMAIN}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServicePortPlan {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: String,
    /// Services of type NodePort and LoadBalancer: the port on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// The host outside the cluster (`lab exec outside -- …`): a namespace on the far side
/// of the lab's router, from which LoadBalancer addresses and NodePorts are reachable as
/// from the internet, and nothing else of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutsidePlan {
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The router's side of its link, in the fabric namespace.
    pub router_if: String,
}

/// The internet the cluster reaches out to (`lab/src/external.rs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExternalPlan {
    /// The DNS server (dnsmasq) the pods' resolv.conf names and the agents forward to.
    pub dns: ExternalHostPlan,
    /// Hosts serving HTTP and HTTPS under their DNS names.
    pub hosts: Vec<ExternalHostPlan>,
}

/// A host of the external network: a namespace with one address, behind the router.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExternalHostPlan {
    /// Its DNS name (`api.external.test`).
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The router's side of its link, in the fabric namespace.
    pub router_if: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointPlan {
    pub pod: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address (dual-stack lab), listed in the Service's IPv6 slices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub node: String,
    /// Target port for each of the service's ports, in the same order; `None` where a
    /// named target port does not exist on this pod (kube-proxy skips it too).
    pub ports: Vec<Option<u16>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIP`: the ClusterIP of the first of `ip_families`.
    pub vip: IpAddr,
    /// `spec.clusterIPs`, one per family of `ip_families`, in that order.
    #[serde(default)]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default)]
    pub ip_families: Vec<IpFamily>,
    /// `SingleStack`, `PreferDualStack` or `RequireDualStack`.
    #[serde(default)]
    pub ip_family_policy: String,
    pub ports: Vec<ServicePortPlan>,
    pub endpoints: Vec<EndpointPlan>,
    pub labels: Labels,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default = "cluster_ip_type", rename = "type")]
    pub type_: String,
    /// A LoadBalancer's external address (`status.loadBalancer.ingress[0].ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// `spec.trafficDistribution`, and the annotations (Istio's
    /// `networking.istio.io/traffic-distribution` among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn cluster_ip_type() -> String {
    "ClusterIP".to_string()
}

impl ServicePlan {
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }

    /// The ClusterIP of `family`, if the Service has that family.
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(*ip) == family)
    }

    /// The endpoints' addresses of `family` with their target port for service port index
    /// `port` (what the EndpointSlices of that family list), skipping endpoints without
    /// the port; empty when the Service is not of that family.
    pub fn targets(&self, family: IpFamily, port: usize) -> Vec<(IpAddr, u16)> {
        self.ready_targets(family, port, &|_| true)
    }

    /// [`ServicePlan::targets`] of the endpoints whose pod is `ready`.
    pub fn ready_targets(
        &self,
        family: IpFamily,
        port: usize,
        ready: &dyn Fn(&str) -> bool,
    ) -> Vec<(IpAddr, u16)> {
        if !self.ip_families.contains(&family) {
            return Vec::new();
        }
        self.endpoints
            .iter()
            .filter(|e| ready(&e.pod))
            .filter_map(|e| {
                let ip = match family {
                    IpFamily::V4 => IpAddr::V4(e.ip),
                    IpFamily::V6 => IpAddr::V6(e.ip6?),
                };
                Some((ip, e.ports.get(port).copied().flatten()?))
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub lab: String,
    /// The cluster's families, the default first: `[IPv4]`, or `[IPv4, IPv6]` when
    /// dual-stack.
    #[serde(default = "ipv4_only")]
    pub families: Vec<IpFamily>,
    pub fabric_netns: String,
    /// Where the lab runs the mesh's control plane (the CA), as a cluster would on its
    /// control-plane nodes: a namespace of its own on the fabric.
    pub control_plane: ControlPlanePlan,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    pub namespaces: BTreeMap<String, Labels>,
    /// `None` in the records of labs from before there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<OutsidePlan>,
    /// The internet beyond the router: external hosts and the DNS server that names them.
    /// `None` in the records of labs from before there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPlan>,
    /// What pods created after `up` were handed last (`Plan::add_pod`).
    #[serde(default, skip_serializing_if = "Allocations::is_empty")]
    pub allocations: Allocations,
}

/// The last pod address and host-side veth handed out, so that a deleted pod's are not
/// handed out again at once: the kernel removes a deleted pod's veth (and the route to its
/// address on the node) only when its network namespace is gone, which can be after the
/// next pod starts. Kubernetes' host-local IPAM hands addresses out round-robin for the
/// same reason, and real CNI plugins name veths after the container, never twice.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Allocations {
    /// The highest `vpN` number handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_host_if: Option<usize>,
    /// Per node, the host part of the last IPv4 pod address handed out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_octet: BTreeMap<String, u8>,
}

impl Allocations {
    fn is_empty(&self) -> bool {
        self.last_host_if.is_none() && self.last_octet.is_empty()
    }
}

/// Pod addresses' host parts on a node: .10 to .254.
const FIRST_POD_OCTET: u8 = 10;
const LAST_POD_OCTET: u8 = 254;

/// The host part after `last`, round-robin over the node's range, skipping those in use
/// (host-local IPAM's order); `None` when every one is in use.
fn next_octet(last: Option<u8>, in_use: &BTreeSet<u8>) -> Option<u8> {
    let start = match last {
        Some(last) if last < LAST_POD_OCTET => last + 1,
        _ => FIRST_POD_OCTET,
    };
    (start..=LAST_POD_OCTET)
        .chain(FIRST_POD_OCTET..start)
        .find(|octet| !in_use.contains(octet))
}

fn ipv4_only() -> Vec<IpFamily> {
    vec![IpFamily::V4]
}

fn external_plan(prefix: &str) -> ExternalPlan {
    let host = |name: &str, octet: u8, short: &str| {
        let [a, b, c, _] = EXTERNAL_NETWORK.octets();
        ExternalHostPlan {
            name: name.to_string(),
            netns: format!("{prefix}x-{short}"),
            ip: Ipv4Addr::new(a, b, c, octet),
            router_if: format!("x-{short}"),
        }
    };
    ExternalPlan {
        dns: host("dns.external.test", EXTERNAL_DNS_IP.octets()[3], "dns"),
        hosts: EXTERNAL_HOSTS
            .iter()
            .map(|(name, octet, short)| host(name, *octet, short))
            .collect(),
    }
}

impl ExternalPlan {
    /// The external host named `name` (its DNS name or its short name).
    pub fn host(&self, name: &str) -> Option<&ExternalHostPlan> {
        self.hosts
            .iter()
            .find(|h| h.name == name || h.name.split('.').next() == Some(name))
    }
}

/// Prefix of every network namespace of lab `lab`; `down` finds leftovers by it.
pub fn netns_prefix(lab: &str) -> String {
    format!("wl-{lab}-")
}

impl Plan {
    pub fn build(options: &LabOptions, manifests: &Manifests) -> Result<Self, LabError> {
        options.validate()?;
        let lab = options.name.clone();
        let prefix = netns_prefix(&lab);
        let families = options.families();
        let dual_stack = families.contains(&IpFamily::V6);
        let nodes: Vec<NodePlan> = (0..options.nodes)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                let [a, b, c] = NODE_SUBNET6;
                let [pa, pb, pc] = POD_SUBNET6_PREFIX;
                NodePlan {
                    netns: format!("{prefix}{name}"),
                    ip: Ipv4Addr::new(NODE_SUBNET[0], NODE_SUBNET[1], NODE_SUBNET[2], 10 + i as u8),
                    pod_cidr_base: Ipv4Addr::new(
                        POD_SUBNET_PREFIX[0],
                        POD_SUBNET_PREFIX[1],
                        1 + i as u8,
                        0,
                    ),
                    ip6: dual_stack.then(|| Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 10 + i as u16)),
                    pod_cidr6_base: dual_stack
                        .then(|| Ipv6Addr::new(pa, pb, pc, 1 + i as u16, 0, 0, 0, 0)),
                    fabric_if: format!("n{}", i + 1),
                    labels: Labels::from([("kubernetes.io/hostname".to_string(), name.clone())]),
                    name,
                }
            })
            .collect();
        let mut nodes = nodes;
        for declared in &manifests.nodes {
            let name = &declared.metadata.name;
            let node = nodes.iter_mut().find(|n| &n.name == name).ok_or_else(|| {
                LabError::Invalid(format!(
                    "Node {name:?} is not a lab node (node-1 … node-{})",
                    options.nodes
                ))
            })?;
            node.labels.extend(declared.metadata.labels.clone());
        }

        let mut namespaces: BTreeMap<String, Labels> = manifests
            .namespaces
            .iter()
            .map(|n| (n.metadata.name.clone(), n.metadata.labels.clone()))
            .collect();

        let mut all_pods: Vec<Pod> = manifests.pods.clone();
        for deployment in &manifests.deployments {
            for replica in 0..deployment.spec.replicas {
                let mut metadata = deployment.metadata.clone();
                metadata.name = format!("{}-{}", deployment.metadata.name, replica);
                metadata.labels = deployment.spec.template.metadata.labels.clone();
                metadata.annotations = deployment.spec.template.metadata.annotations.clone();
                all_pods.push(Pod {
                    metadata,
                    spec: deployment.spec.template.spec.clone(),
                });
            }
        }

        let mut seen = BTreeSet::new();
        let mut next_host_octet = vec![10u8; nodes.len()];
        let mut pods = Vec::with_capacity(all_pods.len());
        for (index, pod) in all_pods.iter().enumerate() {
            let namespace = pod.metadata.namespace_or_default().to_string();
            namespaces.entry(namespace.clone()).or_default();
            let key = format!("{namespace}/{}", pod.metadata.name);
            if !seen.insert(key.clone()) {
                return Err(LabError::Invalid(format!("pod {key} is defined twice")));
            }
            validate_dns_label(&pod.metadata.name, "pod name")?;
            for container in &pod.spec.containers {
                crate::manifest::validate_probes(&key, container)?;
            }
            let node_index = match &pod.spec.node_name {
                Some(wanted) => nodes.iter().position(|n| &n.name == wanted).ok_or_else(|| {
                    LabError::Invalid(format!(
                        "pod {key}: spec.nodeName {wanted:?} is not a lab node (node-1 … node-{})",
                        nodes.len()
                    ))
                })?,
                None => index % nodes.len(),
            };
            let node = &nodes[node_index];
            let octet = next_host_octet[node_index];
            if octet == 255 {
                return Err(LabError::Invalid(format!(
                    "node {} has no pod addresses left (at most 245 pods per node)",
                    node.name
                )));
            }
            next_host_octet[node_index] += 1;
            let base = node.pod_cidr_base.octets();
            let ambient = ambient_enrolled(&pod.metadata.labels, namespaces.get(&namespace));
            // The same host part as the IPv4 address, in the node's IPv6 /64.
            let ip6 = node.pod_cidr6_base.map(|base| {
                let s = base.segments();
                Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, u16::from(octet))
            });
            pods.push(PodPlan {
                uid: stable_uid(&lab, &key),
                netns: format!("{prefix}{namespace}-{}", pod.metadata.name),
                host_if: format!("vp{index}"),
                node: node.name.clone(),
                ip: Ipv4Addr::new(base[0], base[1], base[2], octet),
                ip6,
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                service_account: service_account(&pod.spec),
                containers: pod.spec.containers.clone(),
                volumes: pod.spec.volumes.clone(),
                restart_policy: pod.spec.restart_policy.unwrap_or_default(),
                ambient,
                namespace,
                name: pod.metadata.name.clone(),
                pending: false,
            });
        }

        let services = plan_services(&manifests.services, &pods, &mut namespaces, &families)?;
        Ok(Plan {
            families,
            fabric_netns: format!("{prefix}fabric"),
            control_plane: ControlPlanePlan {
                netns: format!("{prefix}cp"),
                ip: Ipv4Addr::new(NODE_SUBNET[0], NODE_SUBNET[1], NODE_SUBNET[2], 2),
                fabric_if: "cp".into(),
            },
            outside: Some(OutsidePlan {
                netns: format!("{prefix}outside"),
                ip: OUTSIDE_IP,
                router_if: "out".into(),
            }),
            external: Some(external_plan(&prefix)),
            allocations: Allocations::default(),
            lab,
            nodes,
            pods,
            services,
            namespaces,
        })
    }

    pub fn pod(&self, key: &str) -> Option<&PodPlan> {
        self.pods.iter().find(|p| p.key() == key)
    }

    /// A Pod created after the lab came up, as the API server and the scheduler would take
    /// it: on its `spec.nodeName`, else on the node with the fewest pods; the next free
    /// address of that node; pending until started. It backs no Service (the Services'
    /// endpoints were planned with the lab).
    pub fn add_pod(&mut self, pod: &Pod) -> Result<&PodPlan, LabError> {
        let namespace = pod.metadata.namespace_or_default().to_string();
        let key = format!("{namespace}/{}", pod.metadata.name);
        if self.pod(&key).is_some() {
            return Err(LabError::Invalid(format!("pod {key} already exists")));
        }
        validate_dns_label(&pod.metadata.name, "pod name")?;
        let pods_on = |node: &NodePlan| self.pods.iter().filter(|p| p.node == node.name).count();
        let node = match &pod.spec.node_name {
            Some(wanted) => self.node(wanted).ok_or_else(|| {
                LabError::Invalid(format!(
                    "pod {key}: spec.nodeName {wanted:?} is not a lab node"
                ))
            })?,
            None => self
                .nodes
                .iter()
                .min_by_key(|n| pods_on(n))
                .ok_or_else(|| LabError::Invalid("the lab has no node".into()))?,
        }
        .clone();
        let in_use: BTreeSet<u8> = self
            .pods
            .iter()
            .filter(|p| p.node == node.name)
            .map(|p| p.ip.octets()[3])
            .collect();
        let last = self
            .allocations
            .last_octet
            .get(&node.name)
            .copied()
            .max(in_use.last().copied());
        let Some(octet) = next_octet(last, &in_use) else {
            return Err(LabError::Invalid(format!(
                "node {} has no pod addresses left (at most 245 pods per node)",
                node.name
            )));
        };
        let host_if = self
            .pods
            .iter()
            .filter_map(|p| p.host_if.strip_prefix("vp")?.parse::<usize>().ok())
            .max()
            .max(self.allocations.last_host_if)
            .map_or(self.pods.len(), |last| last + 1);
        self.allocations.last_octet.insert(node.name.clone(), octet);
        self.allocations.last_host_if = Some(host_if);
        self.namespaces.entry(namespace.clone()).or_default();
        let base = node.pod_cidr_base.octets();
        let prefix = netns_prefix(&self.lab);
        self.pods.push(PodPlan {
            uid: stable_uid(&self.lab, &key),
            netns: format!("{prefix}{namespace}-{}", pod.metadata.name),
            host_if: format!("vp{host_if}"),
            node: node.name.clone(),
            ip: Ipv4Addr::new(base[0], base[1], base[2], octet),
            ip6: node.pod_cidr6_base.map(|base| {
                let s = base.segments();
                Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, u16::from(octet))
            }),
            labels: pod.metadata.labels.clone(),
            annotations: pod.metadata.annotations.clone(),
            service_account: service_account(&pod.spec),
            containers: pod.spec.containers.clone(),
            volumes: pod.spec.volumes.clone(),
            restart_policy: pod.spec.restart_policy.unwrap_or_default(),
            ambient: ambient_enrolled(&pod.metadata.labels, self.namespaces.get(&namespace)),
            namespace,
            name: pod.metadata.name.clone(),
            pending: true,
        });
        self.pods
            .last()
            .ok_or_else(|| LabError::Invalid("no pod was added".into()))
    }

    /// Where agents reach the CA.
    pub fn ca_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.control_plane.ip, CA_PORT))
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// `/etc/hosts` of a pod: its own name, then every Service by its cluster names. The
    /// short name is only listed for Services of the pod's own namespace, as the search path
    /// of a Kubernetes pod's resolv.conf makes it resolve.
    /// In a dual-stack lab the pod's name and each Service's name have a line per address,
    /// as DNS would answer A and AAAA.
    pub fn hosts_file(&self, pod: &PodPlan) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        for ip in pod.ips() {
            out.push_str(&format!("{ip}\t{}\n", pod.name));
        }
        for svc in &self.services {
            let mut names = vec![
                svc.fqdn(),
                format!("{}.{}.svc", svc.name, svc.namespace),
                format!("{}.{}", svc.name, svc.namespace),
            ];
            if svc.namespace == pod.namespace {
                names.push(svc.name.clone());
            }
            for ip in &svc.cluster_ips {
                out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
            }
        }
        // The control plane's Service, which waypoints dial the CA by: in the lab, the
        // control-plane namespace.
        let ca_host = CONTROL_PLANE_SERVICE;
        out.push_str(&format!(
            "{}\t{ca_host} {ca_host}.{CLUSTER_DOMAIN}\n",
            self.control_plane.ip
        ));
        out
    }

    /// The nftables ruleset with which the lab plays kube-proxy in every node namespace:
    /// ClusterIP:port is DNATed to a random ready endpoint. weft itself never adds such rules.
    /// Like kube-proxy's nftables mode, one table per family of the cluster (`ip`, and `ip6`
    /// when dual-stack), each with the ClusterIPs and endpoints of its family.
    pub fn kube_proxy_ruleset(&self) -> String {
        self.kube_proxy_ruleset_ready(&|_| true)
    }

    /// The ruleset with only the endpoints whose pod (`namespace/name`) is `ready`, as
    /// kube-proxy programs the ready endpoints of each EndpointSlice.
    pub fn kube_proxy_ruleset_ready(&self, ready: &dyn Fn(&str) -> bool) -> String {
        self.families
            .iter()
            .map(|family| self.kube_proxy_table(*family, ready))
            .collect()
    }

    /// [`Plan::kube_proxy_ruleset_ready`] as one nftables transaction that replaces the
    /// tables in place (`nft -f`): new connections meet either the old rules or the new.
    pub fn kube_proxy_reload(&self, ready: &dyn Fn(&str) -> bool) -> String {
        let mut out = String::new();
        for family in &self.families {
            let table = match family {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            };
            out.push_str(&format!(
                "table {table} {KUBE_PROXY_TABLE}\ndelete table {table} {KUBE_PROXY_TABLE}\n"
            ));
        }
        out.push_str(&self.kube_proxy_ruleset_ready(ready));
        out
    }

    fn kube_proxy_table(&self, family: IpFamily, ready: &dyn Fn(&str) -> bool) -> String {
        let (table, match_address) = match family {
            IpFamily::V4 => ("ip", "ip"),
            IpFamily::V6 => ("ip6", "ip6"),
        };
        let mut rules = String::new();
        let mut chains = String::new();
        for (s, svc) in self.services.iter().enumerate() {
            let Some(vip) = svc.cluster_ip(family) else {
                continue;
            };
            for (p, port) in svc.ports.iter().enumerate() {
                let targets = svc.ready_targets(family, p, ready);
                if targets.is_empty() {
                    continue;
                }
                let proto = port.protocol.to_ascii_lowercase();
                let mut vmap = Vec::new();
                for (e, (ip, target)) in targets.iter().enumerate() {
                    let chain = format!("svc{s}-port{p}-ep{e}");
                    let to = std::net::SocketAddr::new(*ip, *target);
                    chains.push_str(&format!(
                        "  chain {chain} {{\n    {match_address} saddr {ip} meta mark set {HAIRPIN_MARK}\n    meta l4proto {proto} dnat to {to}\n  }}\n"
                    ));
                    vmap.push(format!("{e} : jump {chain}"));
                }
                let vmap = vmap.join(", ");
                rules.push_str(&format!(
                    "    {match_address} daddr {vip} {proto} dport {} numgen random mod {} vmap {{ {vmap} }}\n",
                    port.port,
                    targets.len(),
                ));
                // From outside the cluster (externalTrafficPolicy Cluster): to the
                // LoadBalancer's address the router sends here, or to the NodePort on any
                // of this node's addresses; masqueraded, so that an endpoint on another
                // node answers through this one.
                if family == IpFamily::V4
                    && let Some(lb) = svc.load_balancer_ip
                {
                    rules.push_str(&format!(
                        "    ip daddr {lb} {proto} dport {} meta mark set {HAIRPIN_MARK} numgen random mod {} vmap {{ {vmap} }}\n",
                        port.port,
                        targets.len(),
                    ));
                }
                if let Some(node_port) = port.node_port {
                    rules.push_str(&format!(
                        "    fib daddr type local {proto} dport {node_port} meta mark set {HAIRPIN_MARK} numgen random mod {} vmap {{ {vmap} }}\n",
                        targets.len(),
                    ));
                }
            }
        }
        format!(
            "table {table} {KUBE_PROXY_TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }}\n  chain output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark {HAIRPIN_MARK} masquerade\n  }}\n  chain services {{\n{rules}  }}\n{chains}}}\n"
        )
    }
}

/// Marks a connection from a pod to a Service that picked that same pod. Without source NAT
/// its replies would come from the pod's own address and be dropped as martians; kube-proxy
/// masquerades such hairpin connections the same way.
const HAIRPIN_MARK: &str = "0x4000";

/// The nftables table the lab's kube-proxy owns in each node namespace.
pub const KUBE_PROXY_TABLE: &str = "weft_lab_kube_proxy";

fn service_account(spec: &PodSpec) -> String {
    spec.service_account_name
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

fn validate_dns_label(name: &str, what: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "{what} {name:?} is not a DNS label (a-z, 0-9, '-', at most 63)"
        )))
    }
}

/// A UID that stays the same for the same lab and pod, so records survive a re-run.
fn stable_uid(lab: &str, key: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in lab.bytes().chain([0]).chain(key.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    let h = format!("{hash:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Service's families as the API server settles them, with the addresses the manifest
/// asked for (by position in `families`; `None`: allocate one).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceFamilies {
    policy: &'static str,
    families: Vec<IpFamily>,
    requested: Vec<Option<IpAddr>>,
}

const SINGLE_STACK: &str = "SingleStack";
const PREFER_DUAL_STACK: &str = "PreferDualStack";
const REQUIRE_DUAL_STACK: &str = "RequireDualStack";

/// What the API server makes of a Service's `clusterIP`, `clusterIPs`, `ipFamilies` and
/// `ipFamilyPolicy` on a cluster of `cluster` families (the first the default), following
/// Kubernetes' allocator (`initIPFamilyFields` in pkg/registry/core/service/storage/alloc.go)
/// and its validation: no policy means SingleStack; SingleStack with two families or two
/// addresses is invalid; families follow the addresses given; RequireDualStack needs a
/// dual-stack cluster, and every family must be the cluster's; no family means the
/// cluster's default; PreferDualStack and RequireDualStack add the other family on a
/// dual-stack cluster.
fn service_families(svc: &Service, cluster: &[IpFamily]) -> Result<ServiceFamilies, LabError> {
    let name = &svc.metadata.name;
    let spec = &svc.spec;
    let invalid = |reason: String| LabError::Invalid(format!("service {name}: {reason}"));
    let given: Vec<&str> = if spec.cluster_ips.is_empty() {
        spec.cluster_ip.as_deref().into_iter().collect()
    } else {
        if let Some(ip) = spec.cluster_ip.as_deref()
            && spec.cluster_ips[0] != ip
        {
            return Err(invalid(format!(
                "clusterIP {ip:?} must be the first of clusterIPs {:?}",
                spec.cluster_ips
            )));
        }
        spec.cluster_ips.iter().map(String::as_str).collect()
    };
    let mut addresses = Vec::new();
    for text in given.into_iter().filter(|t| !t.is_empty()) {
        if text == "None" {
            return Err(invalid(
                "headless services (clusterIP: None) are not supported by the lab".into(),
            ));
        }
        let ip: IpAddr = text
            .parse()
            .map_err(|_| invalid(format!("clusterIP {text:?} is not an IP address")))?;
        addresses.push(ip);
    }
    if addresses.len() > 2
        || (addresses.len() == 2 && IpFamily::of(addresses[0]) == IpFamily::of(addresses[1]))
    {
        return Err(invalid(format!(
            "clusterIPs {addresses:?} must be at most one address of each family"
        )));
    }
    let mut families = Vec::new();
    for text in &spec.ip_families {
        let family = IpFamily::parse(text)
            .ok_or_else(|| invalid(format!("ipFamilies: {text:?} is neither IPv4 nor IPv6")))?;
        if families.contains(&family) {
            return Err(invalid(format!(
                "ipFamilies {:?} repeats a family",
                spec.ip_families
            )));
        }
        families.push(family);
    }
    for (i, ip) in addresses.iter().enumerate() {
        if families
            .get(i)
            .is_some_and(|family| *family != IpFamily::of(*ip))
        {
            return Err(invalid(format!(
                "clusterIPs[{i}] {ip} is not of family ipFamilies[{i}] {}",
                families[i].as_str()
            )));
        }
    }
    let policy = match spec.ip_family_policy.as_deref() {
        None => SINGLE_STACK,
        Some(SINGLE_STACK) => SINGLE_STACK,
        Some(PREFER_DUAL_STACK) => PREFER_DUAL_STACK,
        Some(REQUIRE_DUAL_STACK) => REQUIRE_DUAL_STACK,
        Some(other) => {
            return Err(invalid(format!(
                "ipFamilyPolicy {other:?} is not SingleStack, PreferDualStack or RequireDualStack"
            )));
        }
    };
    if policy == SINGLE_STACK && (addresses.len() == 2 || families.len() == 2) {
        return Err(invalid(
            "ipFamilyPolicy must be RequireDualStack or PreferDualStack when multiple cluster \
             IPs or IP families are specified"
                .into(),
        ));
    }
    for ip in addresses.iter().skip(families.len()) {
        let family = IpFamily::of(*ip);
        if !cluster.contains(&family) {
            return Err(invalid(format!(
                "clusterIP {ip}: {} is not configured on this cluster (a dual-stack lab has both)",
                family.as_str()
            )));
        }
        families.push(family);
    }
    if policy == REQUIRE_DUAL_STACK && cluster.len() < 2 {
        return Err(invalid(
            "ipFamilyPolicy RequireDualStack: this cluster is not configured for dual-stack \
             services (bring the lab up dual-stack)"
                .into(),
        ));
    }
    if let Some(family) = families.iter().find(|f| !cluster.contains(f)) {
        return Err(invalid(format!(
            "ipFamilies: {} is not configured on this cluster",
            family.as_str()
        )));
    }
    if families.is_empty() {
        families.push(cluster[0]);
    }
    if policy != SINGLE_STACK && families.len() == 1 && cluster.len() == 2 {
        families.push(families[0].other());
    }
    let requested = (0..families.len())
        .map(|i| addresses.get(i).copied())
        .collect();
    Ok(ServiceFamilies {
        policy,
        families,
        requested,
    })
}

/// Hands out ClusterIPs in order, as the API server's allocator would (it picks at random;
/// in order keeps the lab's addresses predictable), skipping those taken explicitly.
struct ClusterIpAllocator {
    taken: BTreeSet<IpAddr>,
    next_v4: u32,
    next_v6: u32,
}

impl ClusterIpAllocator {
    fn next(&mut self, family: IpFamily) -> Result<IpAddr, LabError> {
        loop {
            let ip = match family {
                IpFamily::V4 => {
                    let n = self.next_v4;
                    self.next_v4 += 1;
                    IpAddr::V4(Ipv4Addr::new(
                        SERVICE_SUBNET_PREFIX[0],
                        SERVICE_SUBNET_PREFIX[1],
                        (n >> 8) as u8,
                        (n & 0xff) as u8,
                    ))
                }
                IpFamily::V6 => {
                    let n = self.next_v6;
                    self.next_v6 += 1;
                    let [a, b, c] = SERVICE_SUBNET6_PREFIX;
                    IpAddr::V6(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, n as u16))
                }
            };
            if self.next_v4 > 0xfffe || self.next_v6 > 0xfffe {
                return Err(LabError::Invalid("service address range exhausted".into()));
            }
            if self.taken.insert(ip) {
                return Ok(ip);
            }
        }
    }
}

fn plan_services(
    services: &[Service],
    pods: &[PodPlan],
    namespaces: &mut BTreeMap<String, Labels>,
    cluster: &[IpFamily],
) -> Result<Vec<ServicePlan>, LabError> {
    let mut settled = Vec::with_capacity(services.len());
    let mut allocator = ClusterIpAllocator {
        taken: BTreeSet::new(),
        next_v4: 10,
        next_v6: 10,
    };
    for svc in services {
        let families = service_families(svc, cluster)?;
        for ip in families.requested.iter().flatten() {
            if !allocator.taken.insert(*ip) {
                return Err(LabError::Invalid(format!(
                    "service {}: clusterIP {ip} is already taken",
                    svc.metadata.name
                )));
            }
        }
        settled.push(families);
    }
    let mut external = ExternalAllocator::new(services)?;
    let mut out = Vec::with_capacity(services.len());
    for (svc, families) in services.iter().zip(settled) {
        let namespace = svc.metadata.namespace_or_default().to_string();
        namespaces.entry(namespace.clone()).or_default();
        validate_dns_label(&svc.metadata.name, "service name")?;
        let type_ = service_type(svc)?;
        let mut cluster_ips = Vec::with_capacity(families.families.len());
        for (family, requested) in families.families.iter().zip(&families.requested) {
            cluster_ips.push(match requested {
                Some(ip) => *ip,
                None => allocator.next(*family)?,
            });
        }
        let endpoints = if svc.spec.selector.is_empty() {
            Vec::new()
        } else {
            pods.iter()
                .filter(|p| p.namespace == namespace)
                .filter(|p| {
                    svc.spec
                        .selector
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .map(|p| EndpointPlan {
                    pod: p.key(),
                    ip: p.ip,
                    ip6: p.ip6,
                    node: p.node.clone(),
                    ports: svc
                        .spec
                        .ports
                        .iter()
                        .map(|sp| {
                            resolve_target_port(sp.target_port.as_ref(), sp.port, &p.containers)
                        })
                        .collect(),
                })
                .collect()
        };
        out.push(ServicePlan {
            namespace,
            name: svc.metadata.name.clone(),
            vip: cluster_ips[0],
            cluster_ips,
            ip_families: families.families,
            ip_family_policy: families.policy.to_string(),
            ports: svc
                .spec
                .ports
                .iter()
                .map(|p| {
                    Ok(ServicePortPlan {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: p.protocol.clone(),
                        node_port: match type_ {
                            "ClusterIP" => None,
                            _ => Some(external.node_port(p.node_port)?),
                        },
                    })
                })
                .collect::<Result<_, LabError>>()?,
            endpoints,
            labels: svc.metadata.labels.clone(),
            traffic_distribution: svc.spec.traffic_distribution.clone(),
            annotations: svc.metadata.annotations.clone(),
            type_: type_.to_string(),
            load_balancer_ip: match type_ {
                "LoadBalancer" => Some(external.load_balancer_ip(svc)?),
                _ => None,
            },
        });
    }
    Ok(out)
}

/// A Service's `type`, as far as the lab plays it: ClusterIP, NodePort, LoadBalancer
/// (whose external traffic is handled as `externalTrafficPolicy: Cluster` asks).
fn service_type(svc: &Service) -> Result<&'static str, LabError> {
    let name = &svc.metadata.name;
    let type_ = match svc.spec.type_.as_deref() {
        None | Some("ClusterIP") => "ClusterIP",
        Some("NodePort") => "NodePort",
        Some("LoadBalancer") => "LoadBalancer",
        Some(other) => {
            return Err(LabError::Invalid(format!(
                "service {name}: type {other:?} is not played by the lab (ClusterIP, NodePort, LoadBalancer)"
            )));
        }
    };
    if let Some(policy) = svc.spec.external_traffic_policy.as_deref()
        && policy != "Cluster"
    {
        return Err(LabError::Invalid(format!(
            "service {name}: externalTrafficPolicy {policy:?}: the lab plays Cluster only"
        )));
    }
    Ok(type_)
}

/// NodePorts and LoadBalancer addresses, as the API server and a cloud's controller hand
/// them out: in order (predictable addresses), around those asked for explicitly.
struct ExternalAllocator {
    node_ports: BTreeSet<u16>,
    next_node_port: u16,
    addresses: BTreeSet<Ipv4Addr>,
    next_address: u8,
}

impl ExternalAllocator {
    fn new(services: &[Service]) -> Result<Self, LabError> {
        let mut node_ports = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for svc in services {
            for port in svc.spec.ports.iter().filter_map(|p| p.node_port) {
                if !NODE_PORTS.contains(&port) || !node_ports.insert(port) {
                    return Err(LabError::Invalid(format!(
                        "service {}: nodePort {port} is outside {}-{} or already taken",
                        svc.metadata.name,
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    )));
                }
            }
            if let Some(text) = &svc.spec.load_balancer_ip {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    LabError::Invalid(format!(
                        "service {}: loadBalancerIP {text:?} is not an IPv4 address",
                        svc.metadata.name
                    ))
                })?;
                let [a, b, c, _] = ip.octets();
                if [a, b, c] != LOAD_BALANCER_SUBNET || !addresses.insert(ip) {
                    return Err(LabError::Invalid(format!(
                        "service {}: loadBalancerIP {ip} is not free in the lab's range {}.{}.{}.0/24",
                        svc.metadata.name,
                        LOAD_BALANCER_SUBNET[0],
                        LOAD_BALANCER_SUBNET[1],
                        LOAD_BALANCER_SUBNET[2]
                    )));
                }
            }
        }
        Ok(Self {
            node_ports,
            next_node_port: *NODE_PORTS.start(),
            addresses,
            next_address: 10,
        })
    }

    fn node_port(&mut self, asked: Option<u16>) -> Result<u16, LabError> {
        if let Some(port) = asked {
            return Ok(port);
        }
        while self.node_ports.contains(&self.next_node_port) {
            self.next_node_port += 1;
        }
        if !NODE_PORTS.contains(&self.next_node_port) {
            return Err(LabError::Invalid("NodePort range exhausted".into()));
        }
        let port = self.next_node_port;
        self.node_ports.insert(port);
        Ok(port)
    }

    fn load_balancer_ip(&mut self, svc: &Service) -> Result<Ipv4Addr, LabError> {
        if let Some(ip) = svc
            .spec
            .load_balancer_ip
            .as_deref()
            .and_then(|t| t.parse().ok())
        {
            return Ok(ip);
        }
        loop {
            let [a, b, c] = LOAD_BALANCER_SUBNET;
            let ip = Ipv4Addr::new(a, b, c, self.next_address);
            if self.next_address == 255 {
                return Err(LabError::Invalid(
                    "LoadBalancer address range exhausted".into(),
                ));
            }
            self.next_address += 1;
            if self.addresses.insert(ip) {
                return Ok(ip);
            }
        }
    }
}

fn resolve_target_port(
    target: Option<&TargetPort>,
    port: u16,
    containers: &[Container],
) -> Option<u16> {
    match target {
        None => Some(port),
        Some(TargetPort::Number(n)) => Some(*n),
        Some(TargetPort::Name(name)) => containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn plan(yaml: &str, nodes: usize) -> Plan {
        let mut m = Manifests::default();
        m.add_yaml(yaml, Path::new("test.yaml"))
            .expect("valid yaml");
        Plan::build(&LabOptions::new("t").nodes(nodes), &m).expect("valid plan")
    }

    const SHOP: &str = r#"
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, command: [weft-testapp, serve], ports: [{containerPort: 8080, name: http}]}]
---
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web, istio.io/dataplane-mode: none}}
spec:
  nodeName: node-1
  serviceAccountName: web
  containers: [{name: app, ports: [{containerPort: 9090, name: http}]}]
---
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {containers: [{name: c}]}
---
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}, {port: 81, targetPort: metrics, name: m}]
---
kind: Service
metadata: {name: pinned, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 1}]}
"#;

    #[test]
    fn pods_added_later_take_the_next_address_of_the_emptiest_node() {
        let mut p = plan(SHOP, 2);
        let mut more = Manifests::default();
        more.add_yaml(
            "kind: Pod\nmetadata: {name: late, namespace: shop}\nspec: {containers: [{name: c}]}\n---\n\
             kind: Pod\nmetadata: {name: pinned}\nspec: {nodeName: node-1, containers: [{name: c}]}\n",
            Path::new("more.yaml"),
        )
        .expect("valid yaml");
        let late = p.add_pod(&more.pods[0]).expect("added").clone();
        // node-1 has all three of SHOP's pods.
        assert_eq!(late.node, "node-2");
        assert_eq!(late.ip.to_string(), "10.244.2.10");
        assert!(late.pending && late.ambient, "{late:?}");
        assert_eq!(late.host_if, "vp3");
        assert_eq!(late.netns, "wl-t-shop-late");
        let pinned = p.add_pod(&more.pods[1]).expect("added").clone();
        assert_eq!(pinned.node, "node-1");
        assert_eq!(pinned.ip.to_string(), "10.244.1.13");
        assert!(!pinned.ambient);
        assert!(p.add_pod(&more.pods[1]).is_err(), "twice");
    }

    #[test]
    fn a_deleted_pods_address_and_veth_are_not_handed_out_again_at_once() {
        let mut p = plan(SHOP, 1);
        let mut more = Manifests::default();
        more.add_yaml(
            "kind: Pod\nmetadata: {name: first}\nspec: {containers: [{name: c}]}\n---\n\
             kind: Pod\nmetadata: {name: second}\nspec: {containers: [{name: c}]}\n",
            Path::new("more.yaml"),
        )
        .expect("valid yaml");
        let first = p.add_pod(&more.pods[0]).expect("added").clone();
        assert_eq!(
            (first.ip.to_string().as_str(), first.host_if.as_str()),
            ("10.244.1.13", "vp3")
        );
        // `Lab::delete_pod` takes it out of the plan; its veth may outlive it.
        p.pods.retain(|pod| pod.key() != first.key());
        let second = p.add_pod(&more.pods[1]).expect("added").clone();
        assert_eq!(
            (second.ip.to_string().as_str(), second.host_if.as_str()),
            ("10.244.1.14", "vp4")
        );
        // Round-robin: past .254 the range starts again at .10, skipping addresses in use.
        p.allocations.last_octet.insert("node-1".into(), 254);
        p.pods.retain(|pod| pod.key() != second.key());
        let third = p.add_pod(&more.pods[0]).expect("added").clone();
        assert_eq!(third.ip.to_string(), "10.244.1.13");
    }

    #[test]
    fn spreads_pods_over_nodes_unless_pinned() {
        let p = plan(SHOP, 2);
        let node = |k: &str| p.pod(k).expect("pod").node.clone();
        assert_eq!(node("shop/web-a"), "node-1");
        assert_eq!(node("shop/web-b"), "node-1");
        assert_eq!(node("default/client"), "node-1");
        let p3 = plan(SHOP, 3);
        assert_eq!(p3.pod("default/client").expect("pod").node, "node-3");
    }

    #[test]
    fn gives_each_pod_an_address_from_its_node() {
        let p = plan(SHOP, 2);
        let ips: Vec<_> = p.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(ips, ["10.244.1.10", "10.244.1.11", "10.244.1.12"]);
        assert_eq!(p.nodes[1].ip, Ipv4Addr::new(10, 240, 0, 11));
    }

    #[test]
    fn follows_istio_rules_for_enrollment() {
        let p = plan(SHOP, 2);
        assert!(p.pod("shop/web-a").expect("pod").ambient);
        assert!(
            !p.pod("shop/web-b").expect("pod").ambient,
            "pod label none opts out"
        );
        assert!(!p.pod("default/client").expect("pod").ambient);
    }

    #[test]
    fn assigns_cluster_ips_around_explicit_ones_and_resolves_named_ports() {
        let p = plan(SHOP, 2);
        let web = &p.services[0];
        assert_eq!(
            web.vip,
            Ipv4Addr::new(10, 96, 0, 11),
            "10.96.0.10 is taken by `pinned`"
        );
        assert_eq!(web.endpoints.len(), 2);
        assert_eq!(web.endpoints[0].ports, [Some(8080), None]);
        assert_eq!(web.endpoints[1].ports, [Some(9090), None]);
        assert_eq!(p.services[1].vip, Ipv4Addr::new(10, 96, 0, 10));
        assert!(p.services[1].endpoints.is_empty());
    }

    #[test]
    fn hosts_file_lists_short_names_only_in_the_same_namespace() {
        let p = plan(SHOP, 2);
        let own = p.hosts_file(p.pod("shop/web-a").expect("pod"));
        assert!(
            own.contains("10.96.0.11\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n"),
            "{own}"
        );
        let other = p.hosts_file(p.pod("default/client").expect("pod"));
        assert!(
            other.contains("10.96.0.11\tweb.shop.svc.cluster.local web.shop.svc web.shop\n"),
            "{other}"
        );
    }

    /// The waypoint controller's Deployment dials the CA by its Service's name, which the
    /// lab's DNS answers with the control plane's address, where the lab runs weft-ca.
    #[test]
    fn pods_find_the_ca_by_the_name_the_waypoint_controller_gives() {
        let p = plan(SHOP, 2);
        let hosts = p.hosts_file(p.pod("shop/web-a").expect("pod"));
        let settings = weft_controller::waypoint::Settings::default();
        let (host, port) = settings.ca_address.rsplit_once(':').expect("host:port");
        assert_eq!(port, CA_PORT.to_string());
        let line = hosts
            .lines()
            .find(|l| l.split_whitespace().skip(1).any(|name| name == host))
            .unwrap_or_else(|| panic!("{host} in {hosts}"));
        assert!(
            line.starts_with(&format!("{}\t", p.ca_address().ip())),
            "{line}"
        );
    }

    #[test]
    fn kube_proxy_rules_balance_over_endpoints_with_a_target_port() {
        let p = plan(SHOP, 2);
        let rules = p.kube_proxy_ruleset();
        assert!(
            rules.contains("ip daddr 10.96.0.11 tcp dport 80 numgen random mod 2 vmap"),
            "{rules}"
        );
        assert!(rules.contains("dnat to 10.244.1.10:8080"), "{rules}");
        assert!(
            rules.contains("ip saddr 10.244.1.10 meta mark set 0x4000\n    meta l4proto tcp dnat to 10.244.1.10:8080"),
            "a pod reaching itself through its Service is masqueraded: {rules}"
        );
        assert!(rules.contains("dnat to 10.244.1.11:9090"), "{rules}");
        assert!(
            !rules.contains("dport 81"),
            "no endpoint has a `metrics` port: {rules}"
        );
    }

    #[test]
    fn nodes_carry_the_labels_their_manifests_give_them_into_the_cluster_view() {
        let p = plan(
            "kind: Node\nmetadata: {name: node-2, labels: {topology.kubernetes.io/zone: b}}\n---\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {trafficDistribution: PreferClose, ports: [{port: 80}]}\n",
            2,
        );
        assert_eq!(p.nodes[0].labels.get("topology.kubernetes.io/zone"), None);
        assert_eq!(p.nodes[1].labels["topology.kubernetes.io/zone"], "b");
        assert_eq!(p.nodes[1].labels["kubernetes.io/hostname"], "node-2");
        let view = crate::records::cluster_view(&p, &[], &Default::default()).expect("view");
        let objects: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&view)
            .filter_map(|d| serde_json::Value::deserialize(d).ok())
            .collect();
        let node = objects
            .iter()
            .find(|o| o["kind"] == "Node" && o["metadata"]["name"] == "node-2")
            .expect("node-2's Node");
        assert_eq!(
            node["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "b"
        );
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("the Service");
        assert_eq!(service["spec"]["trafficDistribution"], "PreferClose");

        let mut m = Manifests::default();
        m.add_yaml(
            "kind: Node\nmetadata: {name: node-9}\n",
            Path::new("t.yaml"),
        )
        .expect("valid yaml");
        assert!(Plan::build(&LabOptions::new("t").nodes(2), &m).is_err());
    }

    #[test]
    fn expands_deployments_into_pods() {
        let p = plan(
            "kind: Deployment\nmetadata: {name: api, namespace: x}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: api, version: v2}}\n    spec: {containers: [{name: a}]}\n",
            2,
        );
        let names: Vec<_> = p.pods.iter().map(PodPlan::key).collect();
        assert_eq!(names, ["x/api-0", "x/api-1", "x/api-2"]);
        assert_eq!(p.pods[2].labels["version"], "v2");
    }

    #[test]
    fn refuses_what_it_cannot_build() {
        let mut m = Manifests::default();
        m.add_yaml(
            "kind: Pod\nmetadata: {name: a}\nspec: {nodeName: node-9}\n",
            Path::new("x"),
        )
        .expect("yaml");
        let err = Plan::build(&LabOptions::new("t"), &m).expect_err("no node-9");
        assert!(err.to_string().contains("node-9"), "{err}");
        assert!(Plan::build(&LabOptions::new("Bad_Name"), &Manifests::default()).is_err());
    }

    fn dual_plan(yaml: &str) -> Plan {
        let mut m = Manifests::default();
        m.add_yaml(yaml, Path::new("test.yaml"))
            .expect("valid yaml");
        Plan::build(&LabOptions::new("t").nodes(2).dual_stack(true), &m).expect("valid plan")
    }

    /// `web` asks for both families, `v6only` for IPv6 alone, `legacy` for nothing.
    const DUAL: &str = r#"
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, ports: [{containerPort: 8080, name: http}]}]
---
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, ports: [{containerPort: 8080, name: http}]}]
---
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
kind: Service
metadata: {name: v6only, namespace: shop}
spec:
  ipFamilies: [IPv6]
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

    #[test]
    fn dual_stack_pods_get_an_ipv6_address_mirroring_the_ipv4_one() {
        let p = dual_plan(DUAL);
        let a = p.pod("shop/web-a").expect("pod");
        assert_eq!(
            a.ips(),
            [
                "10.244.1.10".parse::<IpAddr>().expect("ip"),
                "fd00:10:244:1::a".parse().expect("ip")
            ]
        );
        let b = p.pod("shop/web-b").expect("pod");
        assert_eq!(b.ip6, Some("fd00:10:244:2::a".parse().expect("ip")));
        assert_eq!(p.nodes[1].ip6, Some("fd00:10:240::b".parse().expect("ip")));
        assert_eq!(
            p.nodes[1].pod_cidr6_base,
            Some("fd00:10:244:2::".parse().expect("ip"))
        );
        let single = plan(SHOP, 2);
        assert!(
            single.pods.iter().all(|p| p.ip6.is_none()),
            "IPv4 by default"
        );
        assert!(single.nodes.iter().all(|n| n.ip6.is_none()));
    }

    #[test]
    fn services_get_the_cluster_ips_kubernetes_would_allocate() {
        let p = dual_plan(DUAL);
        let ips = |name: &str| -> Vec<String> {
            let svc = p.services.iter().find(|s| s.name == name).expect("service");
            svc.cluster_ips.iter().map(ToString::to_string).collect()
        };
        assert_eq!(ips("web"), ["10.96.0.10", "fd00:10:96::a"]);
        assert_eq!(ips("v6only"), ["fd00:10:96::b"]);
        assert_eq!(
            ips("legacy"),
            ["10.96.0.11"],
            "SingleStack IPv4 stays the default"
        );
        let v6only = &p.services[1];
        assert_eq!(v6only.vip.to_string(), "fd00:10:96::b");
        assert_eq!(v6only.ip_families, [IpFamily::V6]);
        assert_eq!(v6only.ip_family_policy, "SingleStack");
        assert_eq!(p.services[0].ip_family_policy, "PreferDualStack");
    }

    fn families(spec: &str, cluster: &[IpFamily]) -> Result<Vec<String>, String> {
        let mut m = Manifests::default();
        m.add_yaml(
            &format!("kind: Service\nmetadata: {{name: s}}\nspec: {spec}\n"),
            Path::new("s.yaml"),
        )
        .expect("yaml");
        service_families(&m.services[0], cluster)
            .map(|f| {
                f.families
                    .iter()
                    .zip(&f.requested)
                    .map(|(family, ip)| match ip {
                        Some(ip) => format!("{}={ip}", family.as_str()),
                        None => family.as_str().to_string(),
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ip_families_follow_the_api_server_s_rules() {
        use IpFamily::{V4, V6};
        let dual = [V4, V6];
        let single = [V4];
        assert_eq!(families("{}", &dual), Ok(vec!["IPv4".into()]));
        assert_eq!(
            families("{ipFamilyPolicy: PreferDualStack}", &single),
            Ok(vec!["IPv4".into()]),
            "PreferDualStack falls back to single-stack"
        );
        assert_eq!(
            families(
                "{ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv6]}",
                &dual
            ),
            Ok(vec!["IPv6".into(), "IPv4".into()]),
            "the first family listed is the primary one"
        );
        assert_eq!(
            families(
                "{clusterIP: 10.96.5.5, clusterIPs: [10.96.5.5, 'fd00:10:96::55'], ipFamilyPolicy: RequireDualStack}",
                &dual
            ),
            Ok(vec!["IPv4=10.96.5.5".into(), "IPv6=fd00:10:96::55".into()]),
            "families follow the addresses given"
        );
        for (spec, cluster, reason) in [
            (
                "{ipFamilyPolicy: RequireDualStack}",
                &single[..],
                "not configured for dual-stack",
            ),
            (
                "{ipFamilies: [IPv6]}",
                &single[..],
                "IPv6 is not configured",
            ),
            (
                "{ipFamilies: [IPv4, IPv6]}",
                &dual[..],
                "must be RequireDualStack or PreferDualStack",
            ),
            (
                "{clusterIP: 'fd00:10:96::5'}",
                &single[..],
                "IPv6 is not configured",
            ),
            (
                "{clusterIPs: [10.96.0.5, 10.96.0.6], ipFamilyPolicy: PreferDualStack}",
                &dual[..],
                "one address of each family",
            ),
            (
                "{clusterIP: 10.96.0.5, clusterIPs: [10.96.0.6]}",
                &dual[..],
                "must be the first of clusterIPs",
            ),
            (
                "{ipFamilies: [IPv6], clusterIPs: [10.96.0.6]}",
                &dual[..],
                "is not of family",
            ),
            (
                "{ipFamilyPolicy: Sometimes}",
                &dual[..],
                "is not SingleStack",
            ),
            ("{ipFamilies: [IPv5]}", &dual[..], "neither IPv4 nor IPv6"),
        ] {
            let refused = families(spec, cluster).expect_err(spec);
            assert!(refused.contains(reason), "{spec}: {refused}");
        }
    }

    #[test]
    fn kube_proxy_has_an_ip6_table_with_the_ipv6_cluster_ips() {
        let p = dual_plan(DUAL);
        let rules = p.kube_proxy_ruleset();
        let (v4, v6) = rules
            .split_once("table ip6 weft_lab_kube_proxy {")
            .expect("an ip6 table");
        assert!(v4.starts_with("table ip weft_lab_kube_proxy {"), "{rules}");
        assert!(
            v6.contains("ip6 daddr fd00:10:96::a tcp dport 80 numgen random mod 2 vmap"),
            "{rules}"
        );
        assert!(v6.contains("dnat to [fd00:10:244:1::a]:8080"), "{rules}");
        assert!(
            v6.contains("ip6 saddr fd00:10:244:2::a meta mark set 0x4000"),
            "hairpin connections are masqueraded in IPv6 too: {rules}"
        );
        assert!(
            v6.contains("ip6 daddr fd00:10:96::b tcp dport 80"),
            "{rules}"
        );
        assert!(
            !v6.contains("10.96."),
            "only IPv6 in the ip6 table: {rules}"
        );
        assert!(v4.contains("ip daddr 10.96.0.11 tcp dport 80"), "{rules}");
        assert!(!v4.contains("fd00"), "only IPv4 in the ip table: {rules}");
        assert!(
            !plan(SHOP, 2).kube_proxy_ruleset().contains("ip6"),
            "no ip6 table in an IPv4 cluster"
        );
    }

    #[test]
    fn dual_stack_hosts_files_name_every_address() {
        let p = dual_plan(DUAL);
        let hosts = p.hosts_file(p.pod("shop/web-a").expect("pod"));
        assert!(
            hosts.contains("10.244.1.10\tweb-a\nfd00:10:244:1::a\tweb-a\n"),
            "{hosts}"
        );
        assert!(
            hosts.contains("10.96.0.10\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n")
                && hosts.contains(
                    "fd00:10:96::a\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n"
                ),
            "{hosts}"
        );
        assert!(!hosts.contains("fd00:10:96::c"), "{hosts}");
    }

    #[test]
    fn the_cluster_view_has_pod_ips_and_endpoint_slices_of_each_family() {
        let p = dual_plan(DUAL);
        let view = crate::records::cluster_view(&p, &[], &Default::default()).expect("view");
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&view)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .filter(|v: &serde_yaml::Value| !v.is_null())
            .collect();
        let find = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
                })
                .unwrap_or_else(|| panic!("no {kind} {name} in\n{view}"))
        };
        let pod = find("Pod", "web-a");
        assert_eq!(
            pod["status"]["podIPs"][1]["ip"].as_str(),
            Some("fd00:10:244:1::a")
        );
        let web = find("Service", "web");
        assert_eq!(web["spec"]["clusterIPs"][1].as_str(), Some("fd00:10:96::a"));
        assert_eq!(web["spec"]["ipFamilies"][1].as_str(), Some("IPv6"));
        assert_eq!(
            web["spec"]["ipFamilyPolicy"].as_str(),
            Some("PreferDualStack")
        );
        let slice6 = find("EndpointSlice", "web-ipv6-0");
        assert_eq!(slice6["addressType"].as_str(), Some("IPv6"));
        assert_eq!(
            slice6["endpoints"][0]["addresses"][0].as_str(),
            Some("fd00:10:244:1::a")
        );
        assert_eq!(
            find("EndpointSlice", "web-0")["addressType"].as_str(),
            Some("IPv4")
        );
        assert!(
            !view.contains("legacy-ipv6"),
            "a SingleStack IPv4 Service has IPv4 slices only"
        );
        assert_eq!(
            find("EndpointSlice", "v6only-ipv6-0")["addressType"].as_str(),
            Some("IPv6")
        );
        assert!(
            !view.contains("name: v6only-0"),
            "and an IPv6 one IPv6 slices only"
        );
    }

    #[test]
    fn uids_are_stable_and_distinct() {
        assert_eq!(stable_uid("a", "x/y"), stable_uid("a", "x/y"));
        assert_ne!(stable_uid("a", "x/y"), stable_uid("b", "x/y"));
        assert_eq!(stable_uid("a", "x/y").len(), 36);
    }

    #[test]
    fn an_unready_pod_is_out_of_its_endpoint_slices_and_kube_proxy() {
        let p = dual_plan(DUAL);
        let runtime = std::collections::BTreeMap::from([(
            "shop/web-b".to_string(),
            crate::records::PodRuntime {
                ready: false,
                containers: vec![("app".into(), false, true, 2)],
            },
        )]);
        let view = crate::records::cluster_view(&p, &[], &runtime).expect("view");
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&view)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .filter(|v: &serde_yaml::Value| !v.is_null())
            .collect();
        let pod = |name: &str| {
            docs.iter()
                .find(|d| d["kind"] == "Pod" && d["metadata"]["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("no pod {name}"))
        };
        assert_eq!(pod("web-b")["status"]["conditions"][0]["status"], "False");
        assert_eq!(
            pod("web-b")["status"]["containerStatuses"][0]["restartCount"],
            2
        );
        assert_eq!(pod("web-a")["status"]["conditions"][0]["status"], "True");
        let slice = docs
            .iter()
            .find(|d| d["kind"] == "EndpointSlice" && d["metadata"]["name"] == "web-0")
            .expect("web-0");
        let ready: Vec<(String, bool)> = slice["endpoints"]
            .as_sequence()
            .expect("endpoints")
            .iter()
            .map(|e| {
                (
                    e["targetRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    e["conditions"]["ready"].as_bool().unwrap_or(true),
                )
            })
            .collect();
        assert_eq!(
            ready,
            vec![("web-a".to_string(), true), ("web-b".to_string(), false)]
        );
        let web_b = p.pod("shop/web-b").expect("web-b").ip.to_string();
        let rules = p.kube_proxy_reload(&|pod| pod != "shop/web-b");
        assert!(!rules.contains(&web_b), "{rules}");
        assert!(
            rules.starts_with(&format!(
                "table ip {KUBE_PROXY_TABLE}\ndelete table ip {KUBE_PROXY_TABLE}\n"
            )),
            "the tables are replaced in one transaction: {rules}"
        );
    }
}
