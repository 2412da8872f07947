//! Turning manifests into a concrete topology: which node runs which pod, every address,
//! every name. Pure: nothing here touches the machine, so all of it is unit-tested.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use weft_core::mesh::enrollment::ambient_enrolled;

use crate::LabError;
use crate::manifest::{Container, Labels, Manifests, Pod, PodSpec, Service, TargetPort, Volume};

/// The gateway every pod routes through: an address its node answers on each pod's veth, as
/// routed CNIs (Calico, Cilium) do, so every pod-to-pod packet crosses the node's IP layer
/// where the lab's kube-proxy rules see it.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Cluster-wide address plan, chosen like a kubeadm cluster's defaults. These addresses exist
/// only inside the lab's own network namespaces.
const NODE_SUBNET: [u8; 3] = [10, 240, 0];
const POD_SUBNET_PREFIX: [u8; 2] = [10, 244];
const SERVICE_SUBNET_PREFIX: [u8; 2] = [10, 96];
pub const CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Short name (a-z, 0-9); prefixes every namespace, cgroup and file of this lab.
    pub name: String,
    pub nodes: usize,
}

impl LabOptions {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: 2,
        }
    }

    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// This node's pods take addresses from `<pod_cidr_base>/24`.
    pub pod_cidr_base: Ipv4Addr,
    /// The fabric side of the node's link, inside the fabric namespace.
    pub fabric_if: String,
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
}

impl PodPlan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A pod the lab runs for a waypoint Gateway.
    pub fn is_waypoint(&self) -> bool {
        self.labels
            .contains_key(crate::manifest::GATEWAY_NAME_LABEL)
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
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointPlan {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub node: String,
    /// Target port for each of the service's ports, in the same order; `None` where a
    /// named target port does not exist on this pod (kube-proxy skips it too).
    pub ports: Vec<Option<u16>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePortPlan>,
    pub endpoints: Vec<EndpointPlan>,
    pub labels: Labels,
}

impl ServicePlan {
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub lab: String,
    pub fabric_netns: String,
    /// Where the lab runs the mesh's control plane (the CA), as a cluster would on its
    /// control-plane nodes: a namespace of its own on the fabric.
    pub control_plane: ControlPlanePlan,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    pub namespaces: BTreeMap<String, Labels>,
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
        let nodes: Vec<NodePlan> = (0..options.nodes)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                NodePlan {
                    netns: format!("{prefix}{name}"),
                    ip: Ipv4Addr::new(NODE_SUBNET[0], NODE_SUBNET[1], NODE_SUBNET[2], 10 + i as u8),
                    pod_cidr_base: Ipv4Addr::new(
                        POD_SUBNET_PREFIX[0],
                        POD_SUBNET_PREFIX[1],
                        1 + i as u8,
                        0,
                    ),
                    fabric_if: format!("n{}", i + 1),
                    name,
                }
            })
            .collect();

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
            pods.push(PodPlan {
                uid: stable_uid(&lab, &key),
                netns: format!("{prefix}{namespace}-{}", pod.metadata.name),
                host_if: format!("vp{index}"),
                node: node.name.clone(),
                ip: Ipv4Addr::new(base[0], base[1], base[2], octet),
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                service_account: service_account(&pod.spec),
                containers: pod.spec.containers.clone(),
                volumes: pod.spec.volumes.clone(),
                ambient,
                namespace,
                name: pod.metadata.name.clone(),
            });
        }

        let services = plan_services(&manifests.services, &pods, &mut namespaces)?;
        Ok(Plan {
            fabric_netns: format!("{prefix}fabric"),
            control_plane: ControlPlanePlan {
                netns: format!("{prefix}cp"),
                ip: Ipv4Addr::new(NODE_SUBNET[0], NODE_SUBNET[1], NODE_SUBNET[2], 2),
                fabric_if: "cp".into(),
            },
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
    pub fn hosts_file(&self, pod: &PodPlan) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        out.push_str(&format!("{}\t{}\n", pod.ip, pod.name));
        for svc in &self.services {
            let mut names = vec![
                svc.fqdn(),
                format!("{}.{}.svc", svc.name, svc.namespace),
                format!("{}.{}", svc.name, svc.namespace),
            ];
            if svc.namespace == pod.namespace {
                names.push(svc.name.clone());
            }
            out.push_str(&format!("{}\t{}\n", svc.vip, names.join(" ")));
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
    pub fn kube_proxy_ruleset(&self) -> String {
        let mut rules = String::new();
        let mut chains = String::new();
        for (s, svc) in self.services.iter().enumerate() {
            for (p, port) in svc.ports.iter().enumerate() {
                let targets: Vec<(Ipv4Addr, u16)> = svc
                    .endpoints
                    .iter()
                    .filter_map(|e| e.ports.get(p).copied().flatten().map(|tp| (e.ip, tp)))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let proto = port.protocol.to_ascii_lowercase();
                let mut vmap = Vec::new();
                for (e, (ip, target)) in targets.iter().enumerate() {
                    let chain = format!("svc{s}-port{p}-ep{e}");
                    chains.push_str(&format!(
                        "  chain {chain} {{\n    ip saddr {ip} meta mark set {HAIRPIN_MARK}\n    meta l4proto {proto} dnat to {ip}:{target}\n  }}\n"
                    ));
                    vmap.push(format!("{e} : jump {chain}"));
                }
                rules.push_str(&format!(
                    "    ip daddr {} {proto} dport {} numgen random mod {} vmap {{ {} }}\n",
                    svc.vip,
                    port.port,
                    targets.len(),
                    vmap.join(", ")
                ));
            }
        }
        format!(
            "table ip {KUBE_PROXY_TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }}\n  chain output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark {HAIRPIN_MARK} masquerade\n  }}\n  chain services {{\n{rules}  }}\n{chains}}}\n"
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

fn plan_services(
    services: &[Service],
    pods: &[PodPlan],
    namespaces: &mut BTreeMap<String, Labels>,
) -> Result<Vec<ServicePlan>, LabError> {
    let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for svc in services {
        if let Some(ip) = explicit_cluster_ip(svc)?
            && !taken.insert(ip)
        {
            return Err(LabError::Invalid(format!(
                "service {}: clusterIP {ip} is already taken",
                svc.metadata.name
            )));
        }
    }
    let mut next = 10u32;
    let mut out = Vec::with_capacity(services.len());
    for svc in services {
        let namespace = svc.metadata.namespace_or_default().to_string();
        namespaces.entry(namespace.clone()).or_default();
        validate_dns_label(&svc.metadata.name, "service name")?;
        let vip = match explicit_cluster_ip(svc)? {
            Some(ip) => ip,
            None => loop {
                let ip = Ipv4Addr::new(
                    SERVICE_SUBNET_PREFIX[0],
                    SERVICE_SUBNET_PREFIX[1],
                    (next >> 8) as u8,
                    (next & 0xff) as u8,
                );
                next += 1;
                if next > 0xfffe {
                    return Err(LabError::Invalid("service address range exhausted".into()));
                }
                if taken.insert(ip) {
                    break ip;
                }
            },
        };
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
            vip,
            ports: svc
                .spec
                .ports
                .iter()
                .map(|p| ServicePortPlan {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.clone(),
                })
                .collect(),
            endpoints,
            labels: svc.metadata.labels.clone(),
        });
    }
    Ok(out)
}

fn explicit_cluster_ip(svc: &Service) -> Result<Option<Ipv4Addr>, LabError> {
    match svc.spec.cluster_ip.as_deref() {
        None | Some("") => Ok(None),
        Some("None") => Err(LabError::Invalid(format!(
            "service {}: headless services (clusterIP: None) are not supported by the lab",
            svc.metadata.name
        ))),
        Some(text) => text.parse().map(Some).map_err(|_| {
            LabError::Invalid(format!(
                "service {}: clusterIP {text:?} is not an IPv4 address",
                svc.metadata.name
            ))
        }),
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

    #[test]
    fn uids_are_stable_and_distinct() {
        assert_eq!(stable_uid("a", "x/y"), stable_uid("a", "x/y"));
        assert_ne!(stable_uid("a", "x/y"), stable_uid("b", "x/y"));
        assert_eq!(stable_uid("a", "x/y").len(), 36);
    }
}
