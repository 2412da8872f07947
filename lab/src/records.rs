//! What the lab writes to disk: its own records, and the cluster view that agents read the
//! way they would read the API server.
use std::path::{Path, PathBuf};

use serde_json::json;
use weft_host::netns::named_netns_path;
use weft_host::pod_locations::{PodLocation, PodLocations};

use crate::LabError;
use crate::cni::NodeCni;
use crate::plan::{IpFamily, Plan, PodPlan, ServicePlan};

/// Parent of every lab's records.
pub const STATE_ROOT: &str = "/run/weft-lab";
/// Parent of every lab's pinned eBPF objects.
pub const BPF_PIN_ROOT: &str = "/sys/fs/bpf/weft-lab";

/// The files of one lab.
#[derive(Clone, Debug)]
pub struct LabPaths {
    pub lab: String,
    pub root: PathBuf,
}

impl LabPaths {
    pub fn new(lab: &str) -> Self {
        Self {
            lab: lab.to_string(),
            root: Path::new(STATE_ROOT).join(lab),
        }
    }

    pub fn plan(&self) -> PathBuf {
        self.root.join("plan.json")
    }

    /// The Kubernetes objects as an API server would hold them, with addresses filled in.
    pub fn cluster_dir(&self) -> PathBuf {
        self.root.join("cluster")
    }

    /// The manifests' objects the lab does not act on, kept for the cluster view.
    pub fn others(&self) -> PathBuf {
        self.root.join("others.json")
    }

    /// How the lab runs its processes (binaries, agent settings).
    pub fn runtime(&self) -> PathBuf {
        self.root.join("runtime.json")
    }

    pub fn pod_locations(&self) -> PathBuf {
        self.root.join("pod-locations.json")
    }

    /// The CA's files: the root certificate it publishes, its kept root, node tokens.
    /// The external hosts' files (`external::ExternalHostFiles`) and the lab's external CA.
    pub fn external_dir(&self) -> PathBuf {
        self.root.join("external")
    }

    /// The CA that signed the external hosts' certificates (PEM), as a public CA's root
    /// would be known to a client.
    pub fn external_ca(&self) -> PathBuf {
        self.external_dir().join("ca.crt")
    }

    /// The pods' trust roots: the machine's (`process::SYSTEM_ROOTS`) and the external CA.
    pub fn external_roots(&self) -> PathBuf {
        self.external_dir().join("roots.pem")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The root certificate the CA writes (`--write-root`) when it starts.
    pub fn ca_root(&self) -> PathBuf {
        self.ca_dir().join("root.pem")
    }

    /// Where the CA keeps its generated root across restarts (`--root-dir`).
    pub fn ca_root_dir(&self) -> PathBuf {
        self.ca_dir().join("root")
    }

    /// The trust bundle as a ConfigMap volume: the lab publishes the CA's root there at
    /// start, and [`crate::Lab::set_trust_bundle`] updates it the kubelet's way.
    pub fn trust_dir(&self) -> PathBuf {
        self.root.join("trust")
    }

    /// The file agents and waypoints are given as `--trust-bundle`.
    pub fn trust_bundle(&self) -> PathBuf {
        self.trust_dir().join(TRUST_BUNDLE_KEY)
    }

    /// The CA credential of `node`.
    pub fn ca_token(&self, node: &str) -> PathBuf {
        self.ca_dir().join(format!("{node}.token"))
    }

    /// Where a node's new agent takes the listeners over from the running one: one per
    /// node, since a lab's nodes share this machine's file system.
    pub fn agent_handoff_socket(&self, node: &str) -> PathBuf {
        self.root.join("handoff").join(format!("{node}.sock"))
    }

    /// Where the agent of `node` answers weft-cni.
    pub fn agent_cni_socket(&self, node: &str) -> PathBuf {
        self.root.join("cni").join(format!("{node}.sock"))
    }

    /// The node's CNI directories: its `/etc/cni/net.d` and `/opt/cni/bin`.
    pub fn node_cni(&self, node: &str) -> NodeCni {
        let dir = self.root.join("nodes").join(node).join("cni");
        NodeCni {
            conf_dir: dir.join("net.d"),
            bin_dir: dir.join("bin"),
        }
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn pod_dir(&self, pod: &PodPlan) -> PathBuf {
        self.root
            .join("pods")
            .join(format!("{}-{}", pod.namespace, pod.name))
    }

    pub fn bpf_pins(&self) -> PathBuf {
        Path::new(BPF_PIN_ROOT).join(&self.lab)
    }

    pub fn node_bpf_pins(&self, node: &str) -> PathBuf {
        self.bpf_pins().join(node)
    }
}

pub fn write(path: &Path, contents: &str) -> Result<(), LabError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(LabError::io(format!("creating {}", parent.display())))?;
    }
    // Readers (agents polling the cluster view, `down` reading records) must never see a
    // half-written file: write beside it, then rename over it.
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, contents)
        .map_err(LabError::io(format!("writing {}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(LabError::io(format!("writing {}", path.display())))
}

/// The key of the lab's trust bundle "ConfigMap" (Istio's name for the root's file).
pub const TRUST_BUNDLE_KEY: &str = "root-cert.pem";

/// Writes `contents` as the key `key` of a ConfigMap volume at `dir`, the way the kubelet
/// updates one: the data goes into a new `..<version>` directory, the `..data` symlink is
/// swapped to it with a rename (atomic), and `<key>` is a symlink to `..data/<key>`. A
/// reader of `<dir>/<key>` sees the old file or the new one, never half of one.
pub fn write_config_map_volume(dir: &Path, key: &str, contents: &str) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let version = format!("..{stamp}");
    let data = dir.join(&version);
    std::fs::create_dir(&data).map_err(LabError::io(format!("creating {}", data.display())))?;
    std::fs::write(data.join(key), contents).map_err(LabError::io(format!(
        "writing {}",
        data.join(key).display()
    )))?;
    let link = dir.join("..data");
    let previous = std::fs::read_link(&link).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)
        .map_err(LabError::io(format!("linking {}", tmp.display())))?;
    std::fs::rename(&tmp, &link).map_err(LabError::io(format!("swapping {}", link.display())))?;
    let file = dir.join(key);
    if std::fs::symlink_metadata(&file).is_err() {
        std::os::unix::fs::symlink(Path::new("..data").join(key), &file)
            .map_err(LabError::io(format!("linking {}", file.display())))?;
    }
    if let Some(previous) = previous
        && previous != Path::new(&version)
    {
        // As the kubelet does: the old version goes once nothing points at it.
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    Ok(())
}

pub fn to_json(value: &impl serde::Serialize) -> Result<String, LabError> {
    serde_json::to_string_pretty(value).map_err(|e| LabError::Invalid(e.to_string()))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

pub fn pod_locations(plan: &Plan, pod_cgroup: impl Fn(&PodPlan) -> PathBuf) -> PodLocations {
    PodLocations {
        pods: plan
            .pods
            .iter()
            .map(|p| PodLocation {
                uid: p.uid.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: p.node.clone(),
                netns: named_netns_path(&p.netns),
                cgroup: pod_cgroup(p),
            })
            .collect(),
    }
}

/// A pod as its kubelet reports it: Ready, and each container's (name, ready, started,
/// restartCount). Pods the kubelet has no entry for are Ready.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodRuntime {
    pub ready: bool,
    pub containers: Vec<(String, bool, bool, u32)>,
}

/// The EndpointSlices of `svc` for `family`: one per distinct port mapping, as the
/// EndpointSlice controller makes for pods whose target ports agree. The IPv4 ones are named
/// `<service>-<n>`, the IPv6 ones `<service>-ipv6-<n>`.
fn endpoint_slices(
    svc: &ServicePlan,
    family: IpFamily,
    ready: &dyn Fn(&str) -> bool,
) -> Vec<serde_json::Value> {
    let mut groups: Vec<(Vec<Option<u16>>, Vec<serde_json::Value>)> = Vec::new();
    for ep in &svc.endpoints {
        let address = match family {
            IpFamily::V4 => ep.ip.to_string(),
            IpFamily::V6 => match ep.ip6 {
                Some(ip6) => ip6.to_string(),
                None => continue,
            },
        };
        let ready = ready(&ep.pod);
        let endpoint = json!({
            "addresses": [address], "nodeName": ep.node,
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {"kind": "Pod", "namespace": svc.namespace,
                          "name": ep.pod.split('/').nth(1).unwrap_or_default()},
        });
        match groups.iter_mut().find(|(ports, _)| *ports == ep.ports) {
            Some((_, endpoints)) => endpoints.push(endpoint),
            None => groups.push((ep.ports.clone(), vec![endpoint])),
        }
    }
    let prefix = match family {
        IpFamily::V4 => svc.name.clone(),
        IpFamily::V6 => format!("{}-ipv6", svc.name),
    };
    groups
        .into_iter()
        .enumerate()
        .map(|(index, (targets, endpoints))| {
            let ports: Vec<_> = svc
                .ports
                .iter()
                .zip(&targets)
                .filter_map(|(p, t)| t.map(|t| json!({"name": p.name.clone().unwrap_or_default(), "port": t, "protocol": p.protocol})))
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{prefix}-{index}"), "namespace": svc.namespace,
                    "labels": {"kubernetes.io/service-name": svc.name},
                },
                "addressType": family.as_str(), "endpoints": endpoints, "ports": ports,
            })
        })
        .collect()
}

/// The cluster as `kubectl get -o yaml` would show it after scheduling: Namespaces, Pods
/// with node and IPs, Services with their ClusterIPs and families, EndpointSlices (one set
/// per family of the Service, as the EndpointSlice controller makes them), and every other
/// object of the manifests unchanged.
///
/// Pods carry their kubelet's view (`runtime`, by `namespace/name`): the `Ready` and
/// `ContainersReady` conditions and `containerStatuses`, and their endpoints' `ready` and
/// `serving` conditions follow it.
pub fn cluster_view(
    plan: &Plan,
    others: &[serde_yaml::Value],
    runtime: &std::collections::BTreeMap<String, PodRuntime>,
) -> Result<String, LabError> {
    let ready = |pod: &str| runtime.get(pod).is_none_or(|r| r.ready);
    let mut objects = Vec::new();
    for (name, labels) in &plan.namespaces {
        objects.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }));
    }
    for node in &plan.nodes {
        objects.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": node.labels},
        }));
    }
    for pod in &plan.pods {
        let node_ip = plan.node(&pod.node).map(|n| n.ip.to_string());
        let status = runtime
            .get(&pod.key())
            .cloned()
            .unwrap_or_else(|| PodRuntime {
                ready: true,
                containers: pod
                    .containers
                    .iter()
                    .map(|c| (c.name.clone(), true, true, 0))
                    .collect(),
            });
        let condition = |ok: bool| if ok { "True" } else { "False" };
        objects.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                "labels": pod.labels, "annotations": pod.annotations,
            },
            "spec": {
                "nodeName": pod.node, "serviceAccountName": pod.service_account,
                "containers": pod.containers,
            },
            "status": if pod.pending {
                // A pod whose sandbox is not up has no address yet.
                json!({"phase": "Pending", "hostIP": node_ip})
            } else {
                json!({
                    "phase": "Running", "podIP": pod.ip.to_string(),
                    "podIPs": pod.ips().iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                    "hostIP": node_ip,
                    "conditions": [
                        {"type": "Ready", "status": condition(status.ready)},
                        {"type": "ContainersReady", "status": condition(status.ready)},
                    ],
                    "containerStatuses": status.containers.iter().map(|(name, ready, started, restarts)| json!({
                        "name": name, "ready": ready, "started": started, "restartCount": restarts,
                    })).collect::<Vec<_>>(),
                })
            },
        }));
    }
    for svc in &plan.services {
        let ports: Vec<_> = svc
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"name": p.name, "port": p.port, "protocol": p.protocol});
                if let Some(node_port) = p.node_port {
                    port["nodePort"] = json!(node_port);
                }
                port
            })
            .collect();
        let cluster_ips: Vec<String> = svc.cluster_ips.iter().map(|ip| ip.to_string()).collect();
        let families: Vec<&str> = svc.ip_families.iter().map(|f| f.as_str()).collect();
        let mut service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": svc.name, "namespace": svc.namespace, "labels": svc.labels,
                "annotations": svc.annotations,
            },
            "spec": {
                "type": svc.type_,
                "clusterIP": svc.vip.to_string(), "clusterIPs": cluster_ips,
                "ipFamilies": families, "ipFamilyPolicy": svc.ip_family_policy,
                "ports": ports,
            },
        });
        if let Some(distribution) = &svc.traffic_distribution {
            service["spec"]["trafficDistribution"] = json!(distribution);
        }
        if let Some(ip) = svc.load_balancer_ip {
            service["spec"]["externalTrafficPolicy"] = json!("Cluster");
            service["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}});
        }
        objects.push(service);
        for family in &svc.ip_families {
            objects.extend(endpoint_slices(svc, *family, &ready));
        }
    }
    let mut out =
        String::from("# Written by the weft lab: the cluster as its API server would hold it.\n");
    for object in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml::to_string(&object).map_err(|e| LabError::Invalid(e.to_string()))?,
        );
    }
    for other in others {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(other).map_err(|e| LabError::Invalid(e.to_string()))?);
    }
    Ok(out)
}
