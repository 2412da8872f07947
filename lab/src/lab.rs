//! Bringing a lab up, reaching into it, and taking it down.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_host::netns::{named_netns_path, run_in_netns};

use crate::cmd::{ip_batch, run, run_with_input};
use crate::kubelet::{Kubelets, Launcher, PodState, Shared};
use crate::manifest::{Manifests, Pod};
use crate::plan::{LabOptions, POD_GATEWAY, POD_GATEWAY6, Plan, PodPlan, netns_prefix};
use crate::process::{Placement, place};
use crate::records::{self, LabPaths, STATE_ROOT};
use crate::{LabError, cgroup, cni, external, outside};

/// How a lab runs its processes.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Runtime {
    /// Prepended to PATH for pod commands, so manifests can say `weft-testapp`.
    pub bin_dir: Option<PathBuf>,
    /// Start this weft-agent binary once per node, as the DaemonSet would.
    pub agent: Option<PathBuf>,
    /// The weft-ca binary the agents get their certificates from (required with `agent`).
    pub ca: Option<PathBuf>,
    /// Extra arguments for every agent.
    pub agent_args: Vec<String>,
    /// RUST_LOG for the agents.
    pub agent_log: Option<String>,
    /// Run each agent from this image (`localhost/weft-agent:dev`) under podman and runc,
    /// as the DaemonSet's pod template runs it (`crate::container`), instead of as a
    /// process of the lab. The binary in `agent` is then not used.
    #[serde(default)]
    pub agent_image: Option<String>,
    /// Run each application pod's containers (not waypoints' or gateways') from this image
    /// (`localhost/weft-testapp:…`, `crate::image::TESTAPP`) under podman and runc, in the
    /// pod's network namespace and a cgroup below the pod's (`crate::container::AppRun`),
    /// instead of as processes of the lab.
    #[serde(default)]
    pub app_image: Option<String>,
}

impl Runtime {
    /// Whether the lab runs node agents (as processes or in containers).
    pub fn has_agents(&self) -> bool {
        self.agent.is_some() || self.agent_image.is_some()
    }
}

/// Appends `line` to the file `path`.
fn append(path: &Path, line: &str) -> Result<(), LabError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(LabError::io(format!("writing {}", path.display())))
}

/// A lab that is up. Dropping it takes it down, so a test that panics leaves nothing behind.
pub struct Lab {
    pub plan: Plan,
    pub paths: LabPaths,
    cgroup_root: PathBuf,
    runtime: Runtime,
    /// The manifests' objects the lab does not act on, for the cluster view.
    others: Vec<serde_yaml::Value>,
    children: Vec<Child>,
    keep: bool,
    /// What the lab shares with its kubelets: container processes, probe results, the
    /// cluster view's inputs (`crate::kubelet`).
    shared: Arc<Shared>,
    kubelets: Option<Kubelets>,
}

/// How long a pod's declared container ports may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `up` waits for every agent to see every probed endpoint ready: a probe that
/// fails while a waypoint is still getting its certificate is tried again only a
/// `periodSeconds` later (10 s by default), so a slow start costs whole probe periods.
const ENDPOINTS_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the lab, as a kubelet, tries a pod's sandbox again when its CNI ADD fails (the
/// kubelet backs off and retries for as long as the pod exists; the lab gives up after
/// `attempts` and reports the last failure).
#[derive(Clone, Copy, Debug)]
pub struct CniRetry {
    pub attempts: u32,
    pub interval: Duration,
}

impl Default for CniRetry {
    /// 15 s: what a pod of a lab coming up may wait for its node's agent.
    fn default() -> Self {
        Self {
            attempts: 30,
            interval: Duration::from_millis(500),
        }
    }
}

impl Lab {
    /// Builds the lab described by the manifests in `dir`.
    pub fn up_from_dir(
        options: &LabOptions,
        dir: &Path,
        runtime: &Runtime,
    ) -> Result<Self, LabError> {
        let manifests = Manifests::load_dir(dir)?;
        Self::up(options, &manifests, runtime)
    }

    pub fn up(
        options: &LabOptions,
        manifests: &Manifests,
        runtime: &Runtime,
    ) -> Result<Self, LabError> {
        let plan = Plan::build(options, manifests)?;
        let paths = LabPaths::new(&plan.lab);
        if paths.root.exists() || named_netns_path(&plan.fabric_netns).exists() {
            return Err(LabError::Invalid(format!(
                "lab {} is already up (or a crashed run left it): `cargo xtask lab down {}` first",
                plan.lab, plan.lab
            )));
        }
        let cgroup_root = cgroup::lab_root(&plan.lab)?;
        let shared = Arc::new(Shared::new(
            Launcher {
                paths: paths.clone(),
                bin_dir: runtime.bin_dir.clone(),
                agent_log: runtime.agent_log.clone(),
                app_image: runtime.app_image.clone(),
                cgroup_root: cgroup_root.clone(),
                node_ips: node_ips(&plan),
            },
            plan.clone(),
            manifests.others.clone(),
        ));
        let mut lab = Lab {
            cgroup_root,
            plan,
            paths,
            runtime: runtime.clone(),
            others: manifests.others.clone(),
            children: Vec::new(),
            keep: false,
            shared,
            kubelets: None,
        };
        // From here on a failure tears down whatever was built (Drop).
        lab.build()?;
        Ok(lab)
    }

    /// Attaches to a lab brought up by another process (e.g. `cargo xtask lab up`).
    pub fn attach(lab: &str) -> Result<Self, LabError> {
        let paths = LabPaths::new(lab);
        let text =
            std::fs::read_to_string(paths.plan()).map_err(|_| LabError::NotUp(lab.to_string()))?;
        let plan: Plan = serde_json::from_str(&text)
            .map_err(|e| LabError::Invalid(format!("{}: {e}", paths.plan().display())))?;
        let others: Vec<serde_yaml::Value> =
            records::read_json(&paths.others()).unwrap_or_default();
        let runtime: Runtime = records::read_json(&paths.runtime()).unwrap_or_default();
        let cgroup_root = cgroup::lab_root(lab)?;
        let shared = Arc::new(Shared::new(
            Launcher {
                paths: paths.clone(),
                bin_dir: runtime.bin_dir.clone(),
                agent_log: runtime.agent_log.clone(),
                app_image: runtime.app_image.clone(),
                cgroup_root: cgroup_root.clone(),
                node_ips: node_ips(&plan),
            },
            plan.clone(),
            others.clone(),
        ));
        Ok(Lab {
            cgroup_root,
            plan,
            paths,
            runtime,
            others,
            children: Vec::new(),
            keep: true,
            shared,
            kubelets: None,
        })
    }

    /// Leaves the lab running when this handle is dropped (for `lab up` from the CLI).
    pub fn keep_running(mut self) {
        self.keep = true;
    }

    fn pod_cgroup(&self, pod: &PodPlan) -> PathBuf {
        self.shared.launcher.pod_cgroup(pod)
    }

    fn node_cgroup(&self, node: &str) -> PathBuf {
        self.cgroup_root.join("nodes").join(node)
    }

    fn build(&mut self) -> Result<(), LabError> {
        // Records first: `down` of a half-built lab reads them.
        self.write_records()?;
        self.write_node_cni()?;
        std::fs::create_dir_all(self.paths.logs())
            .map_err(LabError::io("creating the logs directory"))?;
        self.build_network()?;
        self.start_external()?;
        if self.runtime.has_agents() {
            // As in a cluster, the node agents (a DaemonSet) run before the pods: each
            // chains weft-cni into its node's CNI configuration, so every pod is captured
            // before its first process starts. Waypoints also need the CA first.
            self.start_agents()?;
        }
        self.start_pods_of_plan(|p| !p.is_mesh_proxy())?;
        // Probes, and restarts of containers that exit (`crate::kubelet`).
        self.kubelets = Some(Kubelets::start(self.shared.clone())?);
        self.wait_until_ready(|p| !p.is_mesh_proxy())?;
        if self.runtime.has_agents() {
            // Waypoints and gateways need the CA and their certificate before they listen.
            self.start_pods_of_plan(PodPlan::is_mesh_proxy)?;
            self.wait_until_ready(PodPlan::is_mesh_proxy)?;
            if self.plan.pods.iter().any(crate::kubelet::has_probes) {
                // Probed pods' endpoints turned ready after the agents read the cluster:
                // `up` returns once every agent has seen them, as a client in a cluster
                // would wait for a rollout.
                self.wait_for_agents_to_see_ready_endpoints()?;
            }
        }
        Ok(())
    }

    /// Until each agent's registry holds every Service's endpoints ready.
    fn wait_for_agents_to_see_ready_endpoints(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + ENDPOINTS_READY_TIMEOUT;
        for node in &self.plan.nodes {
            loop {
                let body = self.agent_get(&node.name, "/services")?;
                let services: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                    LabError::Invalid(format!("the agent of {}'s /services: {e}", node.name))
                })?;
                let unready: Vec<String> = services
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["endpoints_ready"] != s["endpoints_total"])
                    .map(|s| format!("{}/{}", s["namespace"], s["name"]))
                    .collect();
                if unready.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LabError::Invalid(format!(
                        "the agent of {} did not see these Services' endpoints ready within {}s: {}",
                        node.name,
                        ENDPOINTS_READY_TIMEOUT.as_secs(),
                        unready.join(", ")
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Each node's CNI directories, with the lab's own plugin alone in the configuration
    /// list (an agent adds weft-cni).
    fn write_node_cni(&self) -> Result<(), LabError> {
        for node in &self.plan.nodes {
            let cni = self.paths.node_cni(&node.name);
            std::fs::create_dir_all(&cni.bin_dir)
                .map_err(LabError::io(format!("creating {}", cni.bin_dir.display())))?;
            records::write(
                &cni.conf_dir.join(cni::CONFLIST_NAME),
                &cni::initial_conflist(),
            )?;
        }
        Ok(())
    }

    fn build_network(&self) -> Result<(), LabError> {
        let plan = &self.plan;
        let mut host = vec![
            format!("netns add {}", plan.fabric_netns),
            format!("netns add {}", plan.control_plane.netns),
        ];
        host.extend(plan.nodes.iter().map(|n| format!("netns add {}", n.netns)));
        host.extend(
            plan.outside
                .iter()
                .map(|o| format!("netns add {}", o.netns)),
        );
        if let Some(ext) = &plan.external {
            host.extend(external::hosts(ext).map(|h| format!("netns add {}", h.netns)));
        }
        ip_batch(&host)?;

        let mut fabric = vec![
            "link set lo up".to_string(),
            "link add br0 type bridge".to_string(),
            "link set br0 up".to_string(),
        ];
        let cp = &plan.control_plane;
        let attached = plan
            .nodes
            .iter()
            .map(|n| (&n.fabric_if, &n.netns))
            .chain([(&cp.fabric_if, &cp.netns)]);
        for (fabric_if, netns) in attached {
            fabric.push(format!(
                "link add {fabric_if} type veth peer name eth0 netns {netns}"
            ));
            fabric.push(format!("link set {fabric_if} master br0 up"));
        }
        fabric.extend(outside::router_commands(plan));
        if let Some(ext) = &plan.external {
            fabric.extend(external::router_commands(ext));
        }
        ns_batch(&plan.fabric_netns, &fabric)?;
        outside::enable_forwarding(plan)?;
        if let Some(out) = &plan.outside {
            outside::batch(&out.netns, &outside::host_commands(plan))?;
        }
        if let Some(ext) = &plan.external {
            for host in external::hosts(ext) {
                outside::batch(&host.netns, &external::host_commands(host))?;
            }
        }
        // Pods reach the control plane too (a waypoint asks the CA for its certificate):
        // the way back to each node's pods is through that node.
        let mut control_plane = vec![
            "link set lo up".to_string(),
            format!("addr add {}/24 dev eth0", cp.ip),
            "link set eth0 up".to_string(),
        ];
        control_plane.extend(
            plan.nodes
                .iter()
                .map(|n| format!("route add {}/24 via {}", n.pod_cidr_base, n.ip)),
        );
        ns_batch(&cp.netns, &control_plane)?;

        // IPv6 addresses are added `nodad`: usable at once, as a CNI makes them, instead of
        // tentative for the second duplicate address detection takes.
        for node in &plan.nodes {
            let mut cmds = vec![
                "link set lo up".to_string(),
                format!("addr add {}/24 dev eth0", node.ip),
                "link set eth0 up".to_string(),
            ];
            if let Some(ip6) = node.ip6 {
                cmds.push(format!("addr add {ip6}/64 dev eth0 nodad"));
            }
            cmds.extend(outside::node_route(plan));
            if plan.external.is_some() {
                cmds.push(external::node_route());
            }
            for other in plan.nodes.iter().filter(|o| o.name != node.name) {
                cmds.push(format!(
                    "route add {}/24 via {}",
                    other.pod_cidr_base, other.ip
                ));
                if let (Some(cidr6), Some(via6)) = (other.pod_cidr6_base, other.ip6) {
                    cmds.push(format!("route add {cidr6}/64 via {via6}"));
                }
            }
            ns_batch(&node.netns, &cmds)?;
            let netns = named_netns_path(&node.netns);
            let ipv6 = node.ip6.is_some();
            run_in_netns(&netns, || {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                    .map_err(LabError::io("enabling IPv4 forwarding"))?;
                if ipv6 {
                    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                        .map_err(LabError::io("enabling IPv6 forwarding"))?;
                }
                Ok::<(), LabError>(())
            })??;
            let runtime = self.shared.runtime();
            let ruleset =
                plan.kube_proxy_ruleset_ready(&|pod| runtime.get(pod).is_none_or(|r| r.ready));
            run_in_netns(&netns, || {
                run_with_input("nft", &["-f", "-"], Some(&ruleset))
            })??;
            if plan.external.is_some() {
                let masquerade = external::node_masquerade(
                    node.pod_cidr_base,
                    plan.outside.as_ref().map(|_| crate::plan::OUTSIDE_NETWORK),
                );
                run_in_netns(&netns, || {
                    run_with_input("nft", &["-f", "-"], Some(&masquerade))
                })??;
            }
        }

        let pods: Vec<&PodPlan> = plan.pods.iter().filter(|p| !p.pending).collect();
        self.build_sandboxes(&pods)
    }

    /// What the lab's own CNI plugin (`lab-veth`) does for `pods`: their network namespaces,
    /// each with a veth to its node (the node's gateway address on its end, a route to the
    /// pod's addresses) and the pod's addresses and default routes inside.
    fn build_sandboxes(&self, pods: &[&PodPlan]) -> Result<(), LabError> {
        if pods.is_empty() {
            return Ok(());
        }
        let host: Vec<String> = pods
            .iter()
            .map(|p| format!("netns add {}", p.netns))
            .collect();
        ip_batch(&host)?;
        for node in &self.plan.nodes {
            let mut cmds = Vec::new();
            for pod in pods.iter().filter(|p| p.node == node.name) {
                cmds.push(format!(
                    "link add {} type veth peer name eth0 netns {}",
                    pod.host_if, pod.netns
                ));
                cmds.push(format!("addr add {POD_GATEWAY}/32 dev {}", pod.host_if));
                if pod.ip6.is_some() {
                    cmds.push(format!(
                        "addr add {POD_GATEWAY6}/64 dev {} nodad",
                        pod.host_if
                    ));
                }
                cmds.push(format!("link set {} up", pod.host_if));
                cmds.push(format!("route add {}/32 dev {}", pod.ip, pod.host_if));
                if let Some(ip6) = pod.ip6 {
                    cmds.push(format!("route add {ip6}/128 dev {}", pod.host_if));
                }
            }
            if !cmds.is_empty() {
                ns_batch(&node.netns, &cmds)?;
            }
        }
        for pod in pods {
            let mut cmds = vec![
                "link set lo up".to_string(),
                format!("addr add {}/32 dev eth0", pod.ip),
            ];
            if let Some(ip6) = pod.ip6 {
                cmds.push(format!("addr add {ip6}/128 dev eth0 nodad"));
            }
            cmds.extend([
                "link set eth0 up".to_string(),
                format!("route add {POD_GATEWAY} dev eth0 scope link"),
                format!("route add default via {POD_GATEWAY} dev eth0"),
            ]);
            if pod.ip6.is_some() {
                cmds.push(format!("route add default via {POD_GATEWAY6} dev eth0"));
            }
            ns_batch(&pod.netns, &cmds)?;
        }
        Ok(())
    }

    /// Writes everything derived from the plan: the plan itself, each pod's hosts and
    /// resolv.conf, the pod locations and the cluster view the agents read.
    fn write_records(&self) -> Result<(), LabError> {
        records::write(&self.paths.plan(), &records::to_json(&self.plan)?)?;
        records::write(&self.paths.others(), &records::to_json(&self.others)?)?;
        records::write(&self.paths.runtime(), &records::to_json(&self.runtime)?)?;
        for pod in &self.plan.pods {
            let dir = self.paths.pod_dir(pod);
            records::write(&dir.join("hosts"), &self.plan.hosts_file(pod))?;
            records::write(
                &dir.join("resolv.conf"),
                &format!(
                    "# weft lab: cluster names resolve from /etc/hosts, others from the DNS server\nnameserver {dns}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:1\n",
                    ns = pod.namespace,
                    dns = crate::plan::EXTERNAL_DNS_IP
                ),
            )?;
        }
        let locations = records::pod_locations(&self.plan, |p| self.pod_cgroup(p));
        records::write(&self.paths.pod_locations(), &records::to_json(&locations)?)?;
        {
            let mut view = self
                .shared
                .view
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.plan = self.plan.clone();
            view.others = self.others.clone();
        }
        // With each pod's readiness as its kubelet last saw it.
        self.shared.publish(false)
    }

    /// A process of `pod` in `cgroup` (the pod's, or one of its containers' below it).
    fn pod_placement(&self, pod: &PodPlan, cgroup: PathBuf, detach: bool) -> Placement {
        self.shared.launcher.placement(pod, cgroup, detach)
    }

    fn pod_env(&self, pod: &PodPlan, command: &mut Command) {
        self.shared.launcher.env(pod, command)
    }

    /// The log level the lab gives weft's own processes, over what a manifest says.
    /// Starts the pods of the plan `which` selects (the lab coming up).
    fn start_pods_of_plan(&mut self, which: impl Fn(&PodPlan) -> bool) -> Result<(), LabError> {
        for pod in self.plan.pods.clone().into_iter().filter(|p| which(p)) {
            self.run_pod(&pod, CniRetry::default())?;
        }
        Ok(())
    }

    /// The kubelet's part for a pod whose sandbox network is built: the pod's cgroup, CNI
    /// ADD through its node's configuration (tried again as `retry` says while it fails),
    /// then each container in a cgroup of its own below the pod's, made now, as a runtime
    /// makes it after the sandbox.
    fn run_pod(&mut self, pod: &PodPlan, retry: CniRetry) -> Result<(), LabError> {
        cgroup::create(&self.pod_cgroup(pod))?;
        self.cni_add(pod, retry)?;
        for container in &pod.containers {
            // Kept with the kubelet, which restarts a container whose liveness fails.
            if let Some(child) = self.shared.launcher.spawn_container(pod, container)? {
                weft_core::sync::lock(&self.shared.containers)
                    .insert((pod.key(), container.name.clone()), child);
            }
        }
        Ok(())
    }

    /// CNI ADD of the pod's sandbox through its node's configuration, as the runtime runs
    /// it; each attempt and its outcome goes to `logs/cni-<node>.log` (the pod's events, in
    /// a cluster).
    fn cni_add(&self, pod: &PodPlan, retry: CniRetry) -> Result<(), LabError> {
        let node = self.paths.node_cni(&pod.node);
        let log = self.paths.logs().join(format!("cni-{}.log", pod.node));
        let attempts = retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let sandbox = cni::Sandbox {
                container_id: format!("{}-{attempt}", pod.uid),
                netns: named_netns_path(&pod.netns),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                ips: pod.ips(),
            };
            let started = Instant::now();
            let outcome = cni::add(&node, &sandbox)?;
            let line = match &outcome {
                Ok(_) => format!(
                    "ADD {} attempt {attempt}: ok in {} ms\n",
                    pod.key(),
                    started.elapsed().as_millis()
                ),
                Err(failure) => format!("ADD {} attempt {attempt}: {failure}\n", pod.key()),
            };
            append(&log, &line)?;
            match outcome {
                Ok(_) => return Ok(()),
                Err(failure) => last = failure.to_string(),
            }
            if attempt < attempts {
                std::thread::sleep(retry.interval);
            }
        }
        Err(LabError::PodNotStarted {
            pod: pod.key(),
            attempts,
            last,
        })
    }

    /// Creates Pods from a YAML text of Pod documents, as the API server and the scheduler
    /// take them (`Plan::add_pod`): written to the cluster view at once, pending, without
    /// addresses. Nothing runs yet: [`Lab::start_pods`] is the kubelet's part. Returns the
    /// new pods' keys.
    pub fn create_pods(&mut self, yaml: &str) -> Result<Vec<String>, LabError> {
        let mut manifests = Manifests::default();
        manifests.add_yaml(yaml, Path::new("create_pods"))?;
        let mut keys = Vec::new();
        for pod in &manifests.pods {
            keys.push(self.add_pod(pod)?);
        }
        self.write_records()?;
        Ok(keys)
    }

    fn add_pod(&mut self, pod: &Pod) -> Result<String, LabError> {
        Ok(self.plan.add_pod(pod)?.key())
    }

    /// Starts pods [`Lab::create_pods`] created, in order, as their node's kubelet would:
    /// each one's sandbox (network namespace, veth, addresses, routes: the lab's plugin),
    /// CNI ADD through the node's configuration (tried again as `retry` says), its
    /// containers; then the started pods' addresses reach the cluster view, as the kubelet
    /// reports them. The first pod that cannot start ends the call with its error; it stays
    /// pending (its network namespace kept) and can be started again.
    pub fn start_pods(&mut self, keys: &[String], retry: CniRetry) -> Result<(), LabError> {
        let mut pods = Vec::new();
        for key in keys {
            let pod = self
                .plan
                .pod(key)
                .ok_or_else(|| LabError::NoSuchPod(key.clone()))?;
            if !pod.pending {
                return Err(LabError::Invalid(format!("pod {key} is already running")));
            }
            pods.push(pod.clone());
        }
        let unbuilt: Vec<&PodPlan> = pods
            .iter()
            .filter(|p| !named_netns_path(&p.netns).exists())
            .collect();
        self.build_sandboxes(&unbuilt)?;
        for (index, pod) in pods.iter().enumerate() {
            if let Err(error) = self.run_pod(pod, retry) {
                self.publish_started(&pods[..index])?;
                return Err(error);
            }
        }
        self.publish_started(&pods)
    }

    /// Deletes a pod [`Lab::create_pods`] created, as `kubectl delete pod` and its node's
    /// kubelet would: its containers stopped (SIGTERM, then SIGKILL after `grace`), CNI DEL
    /// through its node's configuration, its sandbox (network namespace and veth) and cgroup
    /// removed, then the pod gone from the cluster view. Its address is free for a later pod.
    pub fn delete_pod(&mut self, key: &str, grace: Duration) -> Result<(), LabError> {
        if self.runtime.app_image.is_some() {
            return Err(LabError::Invalid(
                "pods are deleted when their containers run as processes, not under podman".into(),
            ));
        }
        let pod = self
            .plan
            .pod(key)
            .ok_or_else(|| LabError::NoSuchPod(key.to_string()))?
            .clone();
        let cgroup = self.pod_cgroup(&pod);
        for pid in cgroup::members_below(&cgroup) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while !cgroup::members_below(&cgroup).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        cgroup::destroy(&cgroup)?;
        {
            let mut containers = weft_core::sync::lock(&self.shared.containers);
            let names: Vec<(String, String)> = containers
                .keys()
                .filter(|(p, _)| *p == pod.key())
                .cloned()
                .collect();
            for name in names {
                if let Some(mut child) = containers.remove(&name) {
                    let _ = child.wait();
                }
            }
        }
        if !pod.pending {
            let sandbox = cni::Sandbox {
                container_id: format!("{}-del", pod.uid),
                netns: named_netns_path(&pod.netns),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                ips: pod.ips(),
            };
            cni::del(&self.paths.node_cni(&pod.node), &sandbox)?;
        }
        if named_netns_path(&pod.netns).exists() {
            // The veth goes with the namespace; its route on the node with the veth.
            run("ip", &["netns", "del", &pod.netns])?;
        }
        self.plan.pods.retain(|p| p.key() != pod.key());
        weft_core::sync::lock(&self.shared.pods).remove(&pod.key());
        let _ = std::fs::remove_dir_all(self.paths.pod_dir(&pod));
        self.write_records()
    }

    /// The kubelet's status update of started pods: their addresses, phase Running.
    fn publish_started(&mut self, started: &[PodPlan]) -> Result<(), LabError> {
        if started.is_empty() {
            return Ok(());
        }
        for pod in self.plan.pods.iter_mut() {
            if started.iter().any(|s| s.key() == pod.key()) {
                pod.pending = false;
            }
        }
        self.write_records()?;
        self.wait_until_ready(|p| started.iter().any(|s| s.key() == p.key()))
    }

    /// The lab's log of CNI ADD attempts on `node`, one line each (`cni_add`).
    pub fn cni_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.paths.logs().join(format!("cni-{node}.log")))
            .unwrap_or_default()
    }

    fn spawn_logged(
        &mut self,
        mut command: Command,
        placement: &Placement,
        log: &Path,
    ) -> Result<(), LabError> {
        // Appended: an agent started again keeps the story of its previous run.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(LabError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(LabError::io("duplicating a log file handle"))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        place(&mut command, placement)?;
        let child = command.spawn().map_err(LabError::io(format!(
            "spawning {:?}",
            command.get_program()
        )))?;
        self.children.push(child);
        Ok(())
    }

    /// A pod is ready when its kubelet says so (its probes), or, without readiness or
    /// startup probes, when each declared container port accepts a connection.
    fn wait_until_ready(&self, which: impl Fn(&PodPlan) -> bool) -> Result<(), LabError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for pod in self.plan.pods.iter().filter(|p| which(p)) {
            if crate::kubelet::probes_gate_readiness(pod) {
                // Its kubelet decides: Ready once its probes say so.
                while !self.pod_ready(&pod.key())? {
                    if Instant::now() >= deadline {
                        return Err(LabError::Invalid(format!(
                            "pod {} was not Ready within {}s; its kubelet says:\n{}\n(logs in {})",
                            pod.key(),
                            READY_TIMEOUT.as_secs(),
                            self.pod_events(&pod.key()).join("\n"),
                            self.paths.logs().display(),
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            let ports: Vec<u16> = pod
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .map(|p| p.container_port)
                .collect();
            if ports.is_empty() {
                continue;
            }
            let ip = pod.ip;
            let ready = run_in_netns(&named_netns_path(&pod.netns), move || {
                ports.iter().all(|port| {
                    let addr = SocketAddr::from((ip, *port));
                    loop {
                        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                            return true;
                        }
                        if Instant::now() >= deadline {
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })?;
            if !ready {
                // The lab is torn down after this error, logs included: quote them now.
                let tails: String = pod
                    .containers
                    .iter()
                    .map(|c| {
                        let log = self
                            .paths
                            .logs()
                            .join(format!("{}-{}-{}.log", pod.namespace, pod.name, c.name));
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                        format!("\n--- {} ---\n{tail}", c.name)
                    })
                    .collect();
                return Err(LabError::Invalid(format!(
                    "pod {} did not accept connections on its container ports within {}s; the end of its log:{tails}",
                    pod.key(),
                    READY_TIMEOUT.as_secs(),
                )));
            }
        }
        Ok(())
    }

    /// The internet's hosts: the external CA and each host's certificate, nginx on every
    /// external host, dnsmasq on the DNS host; returns once each accepts connections.
    fn start_external(&mut self) -> Result<(), LabError> {
        let Some(ext) = self.plan.external.clone() else {
            return Ok(());
        };
        let root = self.paths.external_dir();
        let (ca, leaves) = external::make_pki(&ext)?;
        records::write(&self.paths.external_ca(), &ca)?;
        // The pods trust the external CA as a public root, beside the machine's.
        let system = std::fs::read_to_string(crate::process::SYSTEM_ROOTS).unwrap_or_default();
        records::write(&self.paths.external_roots(), &format!("{system}\n{ca}"))?;
        for host in &ext.hosts {
            let files = external::ExternalHostFiles::new(&root, host);
            std::fs::create_dir_all(files.dir.join("tmp"))
                .map_err(LabError::io(format!("creating {}", files.dir.display())))?;
            if let Some((_, cert, key)) = leaves.iter().find(|(name, ..)| *name == host.name) {
                records::write(&files.certificate(), cert)?;
                records::write(&files.key(), key)?;
            }
            records::write(&files.nginx_conf(), &external::nginx_config(host, &files))?;
            let mut command = Command::new("nginx");
            command
                .arg("-p")
                .arg(&files.dir)
                .arg("-e")
                .arg(files.error_log())
                .arg("-c")
                .arg(files.nginx_conf());
            let ports = [80, 443];
            self.start_external_process(command, host, "nginx", &ports)?;
        }
        let hosts_file = root.join("dns-hosts");
        records::write(&hosts_file, &external::dns_hosts_file(&self.plan, &ext))?;
        let mut command = Command::new("dnsmasq");
        command.args(external::dnsmasq_args(&hosts_file));
        self.start_external_process(command, &ext.dns, "dnsmasq", &[53])
    }

    /// Starts `command` on the external host `host` (its own cgroup under the lab's) and
    /// waits until it accepts TCP connections on each of `ports`.
    fn start_external_process(
        &mut self,
        command: Command,
        host: &crate::plan::ExternalHostPlan,
        what: &str,
        ports: &[u16],
    ) -> Result<(), LabError> {
        let cgroup = self.cgroup_root.join("external").join(&host.name);
        cgroup::create(&cgroup)?;
        let placement = Placement {
            cgroup: cgroup.clone(),
            netns: named_netns_path(&host.netns),
            pod_view: None,
            detach: true,
        };
        let log = self.paths.logs().join(format!("{}.log", host.name));
        self.spawn_logged(command, &placement, &log)?;
        let ip = host.ip;
        let ready = || {
            ports.iter().all(|port| {
                let address = SocketAddr::from((ip, *port));
                TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            })
        };
        wait_for_process(
            &host.netns,
            &cgroup,
            &log,
            &format!("{what} on {}", host.name),
            ready,
        )
    }

    fn ca_tokens_file(&self) -> PathBuf {
        self.paths.ca_dir().join("node-tokens.json")
    }

    fn ca_cgroup(&self) -> PathBuf {
        self.cgroup_root.join("control-plane")
    }

    /// A bearer token per node (the lab's stand-in for service-account tokens), the CA,
    /// then the trust bundle agents are given: the CA's root.
    fn set_up_ca(&mut self) -> Result<(), LabError> {
        let mut tokens = BTreeMap::new();
        for node in &self.plan.nodes {
            let token = weft_core::ca::NodeTokenAuthenticator::generate_token()
                .map_err(|e| LabError::Invalid(format!("generating a node token: {e}")))?;
            records::write(&self.paths.ca_token(&node.name), &token)?;
            tokens.insert(node.name.clone(), token);
        }
        records::write(&self.ca_tokens_file(), &records::to_json(&tokens)?)?;
        self.start_ca(None)?;
        let root = std::fs::read_to_string(self.paths.ca_root()).map_err(LabError::io(format!(
            "reading the CA's root {}",
            self.paths.ca_root().display()
        )))?;
        self.set_trust_bundle(&root)
    }

    /// The mesh's CA, in the control-plane namespace as istiod would run on a control-plane
    /// node. Its root is kept in `ca_root_dir` across restarts, unless `signing` gives its
    /// certificate and key files (a root or intermediate of the user's, as a Secret would).
    fn start_ca(&mut self, signing: Option<(&Path, &Path)>) -> Result<(), LabError> {
        let Some(ca) = self.runtime.ca.clone() else {
            return Err(LabError::Invalid(
                "agents need a CA: set Runtime::ca to the weft-ca binary".into(),
            ));
        };
        let tokens_file = self.ca_tokens_file();
        let cgroup = self.ca_cgroup();
        cgroup::create(&cgroup)?;
        let listen = self.plan.ca_address();
        let mut command = Command::new(ca);
        match signing {
            Some((cert, key)) => command.arg("--cert").arg(cert).arg("--key").arg(key),
            None => command.arg("--root-dir").arg(self.paths.ca_root_dir()),
        };
        // Written anew at every start: a root the lab did not make is what the test gave.
        let _ = std::fs::remove_file(self.paths.ca_root());
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--write-root")
            .arg(self.paths.ca_root())
            .arg("--node-tokens")
            .arg(&tokens_file)
            .arg("--config-dir")
            .arg(self.paths.cluster_dir())
            .env(
                "RUST_LOG",
                self.runtime.agent_log.as_deref().unwrap_or("info"),
            )
            .env("RUST_BACKTRACE", "0");
        let placement = Placement {
            cgroup: cgroup.clone(),
            netns: named_netns_path(&self.plan.control_plane.netns),
            pod_view: None,
            detach: true,
        };
        let log = self.paths.logs().join("ca.log");
        self.spawn_logged(command, &placement, &log)?;
        let root = self.paths.ca_root();
        let ready = || {
            root.exists() && TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        };
        wait_for_process(
            &self.plan.control_plane.netns,
            &cgroup,
            &log,
            "weft-ca",
            ready,
        )
    }

    fn start_agents(&mut self) -> Result<(), LabError> {
        // Agents mount bpffs when it is missing; started together on a fresh machine they
        // would each mount one, and the later mount would hide the earlier agent's pins.
        weft_host::mounts::ensure_bpffs(std::path::Path::new(weft_host::mounts::BPFFS_DEFAULT))?;
        self.set_up_ca()?;
        for node in self.plan.nodes.clone() {
            self.start_agent(&node.name)?;
        }
        for node in self.plan.nodes.clone() {
            self.wait_for_agent(&node.name)?;
        }
        Ok(())
    }

    fn agent_log(&self, node: &str) -> PathBuf {
        self.paths.logs().join(format!("agent-{node}.log"))
    }

    fn start_agent(&mut self, node: &str) -> Result<(), LabError> {
        let node = self
            .plan
            .node(node)
            .ok_or_else(|| LabError::Invalid(format!("no node {node}")))?
            .clone();
        let cgroup = self.node_cgroup(&node.name);
        cgroup::create(&cgroup)?;
        let log = self.runtime.agent_log.as_deref().unwrap_or("info");
        let command = match (&self.runtime.agent_image, &self.runtime.agent) {
            (Some(image), _) => {
                // `podman run` stays in the node's cgroup for the container's life (its
                // exit is the agent's), and passes the agent's output to the log.
                crate::container::prepare(&self.paths, &node.name)?;
                let (args, _name) = crate::container::agent_run_args(
                    &self.plan,
                    &self.paths,
                    &node,
                    image,
                    log,
                    &self.runtime.agent_args,
                );
                let mut command = Command::new("podman");
                command.args(args).env(
                    "CONTAINERS_CONF",
                    crate::container::containers_conf(&self.paths),
                );
                command
            }
            (None, Some(agent)) => self.agent_command(agent, &node.name, log),
            (None, None) => return Err(LabError::Invalid("this lab runs without agents".into())),
        };
        let placement = Placement {
            cgroup,
            netns: named_netns_path(&node.netns),
            pod_view: None,
            detach: true,
        };
        self.spawn_logged(command, &placement, &self.agent_log(&node.name))
    }

    /// The agent of `node` as a process of the lab.
    fn agent_command(&self, agent: &Path, node: &str, log: &str) -> Command {
        let mut command = Command::new(agent);
        command
            .arg("--node")
            .arg(node)
            .arg("--config-dir")
            .arg(self.paths.cluster_dir())
            .arg("--pod-locations")
            .arg(self.paths.pod_locations())
            .arg("--bpf-pin-root")
            .arg(self.paths.node_bpf_pins(node))
            .arg("--ca-address")
            .arg(self.plan.ca_address().to_string())
            .arg("--ca-token-file")
            .arg(self.paths.ca_token(node))
            .arg("--trust-bundle")
            .arg(self.paths.trust_bundle())
            .arg("--handoff-socket")
            .arg(self.paths.agent_handoff_socket(node))
            // The node's CNI directories; the agent chains weft-cni into the configuration.
            .arg("--cni-socket")
            .arg(self.paths.agent_cni_socket(node))
            .arg("--cni-conf-dir")
            .arg(self.paths.node_cni(node).conf_dir)
            .arg("--cni-bin-dir")
            .arg(self.paths.node_cni(node).bin_dir);
        if self.plan.external.is_some() {
            // The cluster's resolver, as the agent's resolv.conf would name it
            // (`dnsPolicy: ClusterFirstWithHostNet`): never the machine's own.
            command
                .arg("--dns-upstream")
                .arg(crate::plan::EXTERNAL_DNS_IP.to_string());
        }
        command
            .args(&self.runtime.agent_args)
            .env("RUST_LOG", log)
            // Errors in the log should be read, not buried under a backtrace.
            .env("RUST_BACKTRACE", "0");
        command
    }

    /// An agent is ready when its readiness endpoint (as a DaemonSet probes it) answers 200.
    /// An agent that exits before that fails `up` at once, with the end of its log.
    fn wait_for_agent(&self, node: &str) -> Result<(), LabError> {
        let netns = &self
            .plan
            .node(node)
            .ok_or_else(|| LabError::Invalid(format!("no node {node}")))?
            .netns;
        let what = format!("the weft-agent of {node}");
        wait_for_process(
            netns,
            &self.node_cgroup(node),
            &self.agent_log(node),
            &what,
            agent_ready,
        )
    }

    /// Kills the agent of `node` with SIGKILL, as a crash or an OOM kill would, and waits
    /// until it is gone. Capture stays attached; connections need the agent to be back.
    pub fn kill_agent(&self, node: &str) -> Result<(), LabError> {
        if self.runtime.agent_image.is_some() {
            // The container's process is in the runtime's cgroup, not the node's.
            for name in crate::container::node_containers(&self.plan.lab, node) {
                crate::container::kill(&name)?;
            }
        }
        cgroup::kill(&self.node_cgroup(node))
    }

    /// Starts a new agent of `node` beside the running one, as a DaemonSet with `maxSurge`
    /// does, and waits until the new one serves the node (it took the listeners over).
    /// Returns the old and new agents' process ids; [`Lab::stop_agent_processes`] then
    /// stops the old one.
    pub fn start_successor_agent(&mut self, node: &str) -> Result<(Vec<i32>, i32), LabError> {
        if self.runtime.agent_image.is_some() {
            // The running agent is told apart from its successor by its process id, which
            // in a container is its own PID namespace's.
            return Err(LabError::Invalid(
                "an upgrade is played with agents run as processes, not containers".into(),
            ));
        }
        let cgroup = self.node_cgroup(node);
        let old = cgroup::members(&cgroup);
        if old.is_empty() {
            return Err(LabError::Invalid(format!("no agent runs on {node}")));
        }
        self.start_agent(node)?;
        // The admin endpoint is handed over last: when it answers with another process,
        // the new agent serves the node.
        let deadline = Instant::now() + READY_TIMEOUT;
        let new = loop {
            let serving = self
                .agent_get(node, "/status")
                .ok()
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|status| status["pid"].as_i64())
                .and_then(|pid| i32::try_from(pid).ok());
            match serving {
                Some(pid) if !old.contains(&pid) => break pid,
                _ if Instant::now() >= deadline => {
                    return Err(LabError::Invalid(format!(
                        "the new agent of {node} did not take over within {}s; the log ({}) \
                         ends with:\n{}",
                        READY_TIMEOUT.as_secs(),
                        self.agent_log(node).display(),
                        log_tail(&self.agent_log(node), 40)
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(25)),
            }
        };
        Ok((old, new))
    }

    /// SIGTERM to the agent processes `old` of `node`, then waits (up to `drain`) until they
    /// have exited (an old agent does once its connections have drained).
    pub fn stop_agent_processes(
        &self,
        node: &str,
        old: &[i32],
        drain: Duration,
    ) -> Result<(), LabError> {
        let cgroup = self.node_cgroup(node);
        for pid in old {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + drain;
        while cgroup::members(&cgroup).iter().any(|pid| old.contains(pid)) {
            if Instant::now() >= deadline {
                return Err(LabError::Invalid(format!(
                    "the old agent of {node} ({old:?}) did not exit within {}s of SIGTERM; \
                     the log ({}) ends with:\n{}",
                    drain.as_secs(),
                    self.agent_log(node).display(),
                    log_tail(&self.agent_log(node), 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Publishes `pem` as the mesh's trust bundle (one or several roots), as an update of
    /// its ConfigMap reaches the pods that mount it: atomically, by a symlink swap
    /// (`records::write_config_map_volume`). Running agents and waypoints pick it up.
    pub fn set_trust_bundle(&self, pem: &str) -> Result<(), LabError> {
        records::write_config_map_volume(&self.paths.trust_dir(), records::TRUST_BUNDLE_KEY, pem)
    }

    /// The CA's process ids.
    pub fn ca_processes(&self) -> Vec<i32> {
        cgroup::members(&self.ca_cgroup())
    }

    /// Stops the CA (SIGTERM, as a Deployment's rollout does) and starts it again: with the
    /// root it kept (`signing` None), or with the certificate and key files given (a new
    /// root, or an intermediate under one, as a changed Secret would give it). Waits until
    /// it serves. Agents, waypoints and the trust bundle are left alone.
    pub fn restart_ca(&mut self, signing: Option<(&Path, &Path)>) -> Result<(), LabError> {
        let cgroup = self.ca_cgroup();
        let old = cgroup::members(&cgroup);
        for pid in &old {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !cgroup::members(&cgroup).is_empty() {
            if Instant::now() >= deadline {
                return Err(LabError::Invalid(format!(
                    "the CA ({old:?}) did not exit within {}s of SIGTERM",
                    READY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.start_ca(signing)
    }

    /// Kills the CA with SIGKILL, as a crash or the loss of its node would, and waits until
    /// it is gone. Nothing starts it again until [`Lab::start_ca_again`]: the lab plays an
    /// outage of the control plane for as long as the caller wants.
    pub fn kill_ca(&self) -> Result<(), LabError> {
        cgroup::kill(&self.ca_cgroup())
    }

    /// Starts the CA again after [`Lab::kill_ca`], with the root it kept, and waits until
    /// it serves.
    pub fn start_ca_again(&mut self) -> Result<(), LabError> {
        self.start_ca(None)
    }

    /// Starts the agent of `node` again (after [`Lab::kill_agent`]) and waits until it is ready.
    pub fn start_agent_again(&mut self, node: &str) -> Result<(), LabError> {
        self.start_agent(node)?;
        self.wait_for_agent(node)
    }

    /// Changes a pod's labels in the cluster view, as `kubectl label` would; agents pick the
    /// change up from there.
    pub fn set_pod_labels(
        &mut self,
        pod: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), LabError> {
        let namespaces = self.plan.namespaces.clone();
        let planned = self
            .plan
            .pods
            .iter_mut()
            .find(|p| p.key() == pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))?;
        planned.ambient = weft_core::mesh::enrollment::ambient_enrolled(
            &labels,
            namespaces.get(&planned.namespace),
        );
        planned.labels = labels;
        self.write_records()
    }

    /// Whether `pod` is Ready: its kubelet's probes, or (a pod without probes) started.
    pub fn pod_ready(&self, pod: &str) -> Result<bool, LabError> {
        Ok(self.pod_state(pod)?.ready())
    }

    /// `pod` as its kubelet sees it: each container's readiness, restarts and probe counts.
    pub fn pod_state(&self, pod: &str) -> Result<PodState, LabError> {
        self.shared
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pod)
            .cloned()
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))
    }

    /// What the kubelet did about `pod` (probe failures, readiness changes, restarts), in
    /// order, as `kubectl describe pod` lists events.
    pub fn pod_events(&self, pod: &str) -> Vec<String> {
        self.shared.events(pod)
    }

    /// Adds (or replaces) a file of objects in the cluster view, as `kubectl apply -f`
    /// would: the agents and the CA pick it up from there.
    pub fn apply_yaml(&self, name: &str, yaml: &str) -> Result<(), LabError> {
        records::write(&self.paths.cluster_dir().join(format!("{name}.yaml")), yaml)
    }

    /// Applies objects to the running lab as `kubectl apply` would: each (by API group,
    /// kind, namespace and name) is created or replaces the cluster's, and the agents,
    /// gateways and the CA see it in the cluster view. The lab builds pods, Services and
    /// their addresses when it comes up, so a Pod, Deployment or Service (or a waypoint
    /// Gateway, which makes them) that is not already there unchanged is refused, naming
    /// it; a Namespace's labels may change (ambient enrollment follows).
    pub fn apply_objects(&mut self, manifests: &Manifests) -> Result<Vec<Applied>, LabError> {
        let mut done = Vec::new();
        self.check_built(manifests)?;
        for namespace in &manifests.namespaces {
            let name = &namespace.metadata.name;
            let labels = namespace.metadata.labels.clone();
            let outcome = match self.plan.namespaces.get(name) {
                Some(old) if *old == labels => "unchanged",
                Some(_) => "configured",
                None => "created",
            };
            self.plan.namespaces.insert(name.clone(), labels);
            done.push(Applied::new(format!("namespace/{name}"), outcome));
        }
        // A Node's labels may change (`kubectl label node`); the lab's nodes stay.
        for declared in &manifests.nodes {
            let name = &declared.metadata.name;
            let node = self
                .plan
                .nodes
                .iter_mut()
                .find(|n| &n.name == name)
                .ok_or_else(|| LabError::Invalid(format!("Node {name:?} is not a lab node")))?;
            let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), name.clone())]);
            labels.extend(declared.metadata.labels.clone());
            let outcome = if node.labels == labels {
                "unchanged"
            } else {
                "configured"
            };
            node.labels = labels;
            done.push(Applied::new(format!("node/{name}"), outcome));
        }
        let namespaces = self.plan.namespaces.clone();
        for pod in &mut self.plan.pods {
            pod.ambient = weft_core::mesh::enrollment::ambient_enrolled(
                &pod.labels,
                namespaces.get(&pod.namespace),
            );
        }
        for object in &manifests.others {
            let key = object_key(object);
            let outcome = match self.others.iter_mut().find(|o| object_key(o) == key) {
                Some(old) if old == object => "unchanged",
                Some(old) => {
                    *old = object.clone();
                    "configured"
                }
                None => {
                    self.others.push(object.clone());
                    "created"
                }
            };
            done.push(Applied::new(key.describe(), outcome));
        }
        self.write_records()?;
        Ok(done)
    }

    /// Deletes objects from the running lab as `kubectl delete -f` would. Pods, Services
    /// and Namespaces stay (the lab cannot take them away while it runs) and are named.
    pub fn delete_objects(&mut self, manifests: &Manifests) -> Result<Vec<Applied>, LabError> {
        let lab_made = manifests.pods.len()
            + manifests.deployments.len()
            + manifests.services.len()
            + manifests.namespaces.len()
            + manifests.nodes.len();
        if lab_made > 0 {
            return Err(LabError::Invalid(
                "the lab's Nodes, Namespaces, Pods, Deployments and Services live as long as the lab:                  take it down (`cargo xtask lab down`) to remove them"
                    .into(),
            ));
        }
        let mut done = Vec::new();
        for object in &manifests.others {
            let key = object_key(object);
            let before = self.others.len();
            self.others.retain(|o| object_key(o) != key);
            let outcome = if self.others.len() < before {
                "deleted"
            } else {
                "not found"
            };
            done.push(Applied::new(key.describe(), outcome));
        }
        self.write_records()?;
        Ok(done)
    }

    /// Refuses objects that would need the lab to build what it builds only at `up`.
    fn check_built(&self, manifests: &Manifests) -> Result<(), LabError> {
        let mut refused = Vec::new();
        for pod in &manifests.pods {
            let key = format!(
                "{}/{}",
                pod.metadata.namespace_or_default(),
                pod.metadata.name
            );
            if self.plan.pod(&key).is_none() {
                refused.push(format!("pod/{}", pod.metadata.name));
            }
        }
        for deployment in &manifests.deployments {
            let exists = self.plan.pods.iter().any(|p| {
                p.namespace == deployment.metadata.namespace_or_default()
                    && p.name
                        .starts_with(&format!("{}-", deployment.metadata.name))
            });
            if !exists {
                refused.push(format!("deployment/{}", deployment.metadata.name));
            }
        }
        for service in &manifests.services {
            let exists = self.plan.services.iter().any(|s| {
                s.namespace == service.metadata.namespace_or_default()
                    && s.name == service.metadata.name
            });
            if !exists {
                refused.push(format!("service/{}", service.metadata.name));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(LabError::Invalid(format!(
            "the lab builds pods and Services (and their addresses) when it comes up; these are new: {} — add them to the manifests of `cargo xtask lab up`",
            refused.join(", ")
        )))
    }

    /// `GET path` on the admin endpoint of the agent of `node`; returns the body of a 200.
    pub fn agent_get(&self, node: &str, path: &str) -> Result<String, LabError> {
        let (ip, port) = AGENT_ADMIN;
        let (status, body) = self
            .in_node_netns(node, || http_get(SocketAddr::from((ip, port)), path))?
            .map_err(LabError::io(format!(
                "asking the agent of {node} for {path}"
            )))?;
        if is_ok(&status) {
            Ok(body)
        } else {
            Err(LabError::Invalid(format!(
                "the agent of {node} answered {path} with {status}: {body}"
            )))
        }
    }

    /// A command that will run inside `pod` (its cgroup, network, hosts and hostname).
    pub fn pod_command(
        &self,
        pod: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let pod = self
            .plan
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))?;
        let mut command = Command::new(program);
        self.pod_env(pod, &mut command);
        place(
            &mut command,
            &self.pod_placement(pod, self.pod_cgroup(pod), false),
        )?;
        Ok(command)
    }

    /// Like [`Lab::pod_command`], in the cgroup of the pod's container `container`, made now
    /// if it is not there: what a container runtime does when it starts or restarts a
    /// container, after the pod's sandbox (and its capture) was set up.
    pub fn container_command(
        &self,
        pod: &str,
        container: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let pod = self
            .plan
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))?;
        let cgroup = self.pod_cgroup(pod).join(container);
        cgroup::create(&cgroup)?;
        let mut command = Command::new(program);
        self.pod_env(pod, &mut command);
        place(&mut command, &self.pod_placement(pod, cgroup, false))?;
        Ok(command)
    }

    /// A command that will run in the network namespace of node `node`, where its agent's
    /// admin endpoint listens on loopback (`weftctl status`). It gets a cgroup of its own,
    /// so it is neither counted nor killed as the node's agent.
    pub fn node_command(
        &self,
        node: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let node = self.plan.node(node).ok_or_else(|| {
            let nodes: Vec<&str> = self.plan.nodes.iter().map(|n| n.name.as_str()).collect();
            LabError::Invalid(format!(
                "no node {node} (nodes: {}; pods are NAMESPACE/POD)",
                nodes.join(", ")
            ))
        })?;
        let cgroup = self.cgroup_root.join("exec").join(&node.name);
        cgroup::create(&cgroup)?;
        let mut command = Command::new(program);
        command.env("NODE_NAME", &node.name);
        if let Some(bin) = &self.runtime.bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        place(
            &mut command,
            &Placement {
                cgroup,
                netns: named_netns_path(&node.netns),
                pod_view: None,
                detach: false,
            },
        )?;
        Ok(command)
    }

    /// A command that will run on the `outside` host: beyond the lab's router, where only
    /// LoadBalancer addresses and NodePorts of the cluster are reachable, as from the
    /// internet (`lab exec outside -- curl http://<LoadBalancer address>/`).
    pub fn outside_command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let outside = self.plan.outside.as_ref().ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} was brought up before labs had an outside host",
                self.plan.lab
            ))
        })?;
        let cgroup = self.cgroup_root.join("exec").join("outside");
        cgroup::create(&cgroup)?;
        let mut command = Command::new(program);
        if let Some(bin) = &self.runtime.bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        place(
            &mut command,
            &Placement {
                cgroup,
                netns: named_netns_path(&outside.netns),
                pod_view: None,
                detach: false,
            },
        )?;
        Ok(command)
    }

    /// Runs `work` on a thread inside the `outside` host's network namespace.
    pub fn in_outside_netns<T: Send>(
        &self,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, LabError> {
        let outside = self
            .plan
            .outside
            .as_ref()
            .ok_or_else(|| LabError::Invalid("this lab has no outside host".into()))?;
        Ok(run_in_netns(&named_netns_path(&outside.netns), work)?)
    }

    /// The address the lab's cloud gave LoadBalancer Service `namespace/name`.
    pub fn load_balancer_ip(&self, service: &str) -> Option<Ipv4Addr> {
        self.plan
            .services
            .iter()
            .find(|s| format!("{}/{}", s.namespace, s.name) == service)
            .and_then(|s| s.load_balancer_ip)
    }

    /// Runs `work` on a thread inside the network namespace of `pod` (not in its cgroup).
    pub fn in_pod_netns<T: Send>(
        &self,
        pod: &str,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, LabError> {
        let pod = self
            .plan
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))?;
        Ok(run_in_netns(&named_netns_path(&pod.netns), work)?)
    }

    /// Runs `work` on a thread inside the network namespace of node `node`.
    pub fn in_node_netns<T: Send>(
        &self,
        node: &str,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, LabError> {
        let node = self
            .plan
            .node(node)
            .ok_or_else(|| LabError::Invalid(format!("no node {node}")))?;
        Ok(run_in_netns(&named_netns_path(&node.netns), work)?)
    }

    /// The cgroup the agent of `node` runs in (for CPU and memory accounting).
    pub fn agent_cgroup_dir(&self, node: &str) -> PathBuf {
        self.node_cgroup(node)
    }

    pub fn pod_cgroup_dir(&self, pod: &str) -> Result<PathBuf, LabError> {
        let pod = self
            .plan
            .pod(pod)
            .ok_or_else(|| LabError::NoSuchPod(pod.to_string()))?;
        Ok(self.pod_cgroup(pod))
    }

    /// The processes running in `pod` (members of its cgroup and its containers').
    pub fn pod_processes(&self, pod: &str) -> Result<Vec<i32>, LabError> {
        Ok(cgroup::members_below(&self.pod_cgroup_dir(pod)?))
    }

    pub fn summary(&self) -> LabSummary {
        LabSummary {
            lab: self.plan.lab.clone(),
            nodes: self
                .plan
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        n.ip.to_string(),
                        cgroup::members(&self.node_cgroup(&n.name)).len(),
                    )
                })
                .collect(),
            pods: self
                .plan
                .pods
                .iter()
                .map(|p| PodSummary {
                    pod: p.key(),
                    node: p.node.clone(),
                    ip: p.ip.to_string(),
                    ips: p.ips().iter().map(ToString::to_string).collect(),
                    ambient: p.ambient,
                    processes: cgroup::members_below(&self.pod_cgroup(p)).len(),
                })
                .collect(),
            services: self
                .plan
                .services
                .iter()
                .map(|s| ServiceSummary {
                    service: format!("{}/{}", s.namespace, s.name),
                    type_: s.type_.clone(),
                    cluster_ip: s.vip.to_string(),
                    cluster_ips: s.cluster_ips.iter().map(ToString::to_string).collect(),
                    load_balancer_ip: s.load_balancer_ip.map(|ip| ip.to_string()),
                    ports: s.ports.iter().map(|p| p.port).collect(),
                    node_ports: s.ports.iter().filter_map(|p| p.node_port).collect(),
                    endpoints: s.endpoints.iter().map(|e| e.pod.clone()).collect(),
                })
                .collect(),
            outside: self.plan.outside.as_ref().map(|o| o.ip.to_string()),
            external: self
                .plan
                .external
                .iter()
                .flat_map(external::hosts)
                .map(|h| (h.name.clone(), h.ip.to_string()))
                .collect(),
            external_ca: self
                .plan
                .external
                .as_ref()
                .map(|_| self.paths.external_ca().display().to_string()),
        }
    }

    /// Takes the lab down now, reporting errors (Drop does the same, silently).
    pub fn down(mut self) -> Result<(), LabError> {
        self.keep = true;
        // No kubelet may restart a container while the lab is taken down.
        if let Some(mut kubelets) = self.kubelets.take() {
            kubelets.stop();
        }
        let result = down(&self.plan.lab);
        self.reap();
        result
    }

    /// Collects the exit status of the processes this handle started, which `down` killed,
    /// so none is left as a zombie of a long-running caller (a test binary).
    fn reap(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        self.shared.stop_and_reap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut kubelets) = self.kubelets.take() {
            kubelets.stop();
        }
        if self.keep {
            // The processes outlive this handle (they are in their own sessions).
            self.children.clear();
            return;
        }
        if let Err(e) = down(&self.plan.lab) {
            tracing::error!(lab = %self.plan.lab, error = %e, "taking the lab down failed");
        }
        self.reap();
    }
}

/// What `apply_objects` or `delete_objects` did to one object (`kubectl`'s words).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `kind.group/name`, as kubectl names it.
    pub object: String,
    pub outcome: &'static str,
}

impl Applied {
    fn new(object: String, outcome: &'static str) -> Self {
        Self { object, outcome }
    }
}

/// Which object a document is, as the API server tells them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ObjectKey {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn describe(&self) -> String {
        let kind = self.kind.to_ascii_lowercase();
        if self.group.is_empty() {
            format!("{kind}/{}", self.name)
        } else {
            format!("{kind}.{}/{}", self.group, self.name)
        }
    }
}

fn object_key(object: &serde_yaml::Value) -> ObjectKey {
    let text = |path: &[&str]| {
        let mut value = object;
        for key in path {
            value = &value[*key];
        }
        value.as_str().unwrap_or_default().to_string()
    };
    let api_version = text(&["apiVersion"]);
    let group = api_version
        .rsplit_once('/')
        .map(|(group, _)| group.to_string())
        .unwrap_or_default();
    let namespace = text(&["metadata", "namespace"]);
    ObjectKey {
        group,
        kind: text(&["kind"]),
        namespace: if namespace.is_empty() {
            "default".into()
        } else {
            namespace
        },
        name: text(&["metadata", "name"]),
    }
}

#[derive(Debug, Serialize)]
pub struct LabSummary {
    pub lab: String,
    /// (name, IP, agent processes)
    pub nodes: Vec<(String, String, usize)>,
    pub pods: Vec<PodSummary>,
    pub services: Vec<ServiceSummary>,
    /// The `outside` host's address.
    pub outside: Option<String>,
    /// The internet's hosts: (DNS name, address), the DNS server first.
    #[serde(default)]
    pub external: Vec<(String, String)>,
    /// Where the external hosts' CA certificate is (clients trust it as a public root).
    pub external_ca: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PodSummary {
    pub pod: String,
    pub node: String,
    pub ip: String,
    /// Every address (`status.podIPs`).
    pub ips: Vec<String>,
    pub ambient: bool,
    pub processes: usize,
}

#[derive(Debug, Serialize)]
pub struct ServiceSummary {
    pub service: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub cluster_ip: String,
    pub cluster_ips: Vec<String>,
    /// A LoadBalancer's external address, reachable from `outside`.
    pub load_balancer_ip: Option<String>,
    pub ports: Vec<u16>,
    /// NodePorts, in the order of `ports` (NodePort and LoadBalancer Services).
    pub node_ports: Vec<u16>,
    pub endpoints: Vec<String>,
}

/// Waits until `ready` holds inside network namespace `netns`, failing at once when the
/// process in `cgroup` has exited, or after [`READY_TIMEOUT`], with the end of its log.
fn wait_for_process(
    netns: &str,
    cgroup: &Path,
    log: &Path,
    what: &str,
    ready: impl Fn() -> bool + Send + Sync,
) -> Result<(), LabError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let outcome = run_in_netns(&named_netns_path(netns), || {
        loop {
            if ready() {
                return Ok(());
            }
            if cgroup::members(cgroup).is_empty() {
                return Err("exited");
            }
            if Instant::now() >= deadline {
                return Err("was not ready in time");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    })?;
    outcome.map_err(|failure| {
        let tail = log_tail(log, 12);
        LabError::Invalid(format!(
            "{what} {failure} (limit {}s); its log ({}) ends with:\n{tail}",
            READY_TIMEOUT.as_secs(),
            log.display()
        ))
    })
}

/// The last `lines` lines of a log file.
fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The agent's admin endpoint inside its node (loopback only, as in a cluster).
const AGENT_ADMIN: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 15000);

/// The agent's readiness port and path (Istio's ztunnel uses the same).
const AGENT_READINESS: (Ipv4Addr, u16, &str) = (Ipv4Addr::LOCALHOST, 15021, "/healthz/ready");

/// `GET path` over HTTP/1.0 on `addr` from the calling thread's network namespace; returns
/// the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

fn is_ok(status: &str) -> bool {
    status.split_whitespace().nth(1) == Some("200")
}

fn agent_ready() -> bool {
    let (ip, port, path) = AGENT_READINESS;
    http_get(SocketAddr::from((ip, port)), path).is_ok_and(|(status, _)| is_ok(&status))
}

fn ns_batch(netns: &str, commands: &[String]) -> Result<(), LabError> {
    let mut input = commands.join("\n");
    input.push('\n');
    run_with_input("ip", &["-n", netns, "-batch", "-"], Some(&input)).map(drop)
}

/// Labs with records on this machine.
pub fn list_labs() -> Vec<String> {
    let mut labs: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    labs.sort();
    labs
}

/// Removes every trace of lab `lab`: processes, cgroups, network namespaces (and with them
/// every veth and nftables rule), pinned eBPF objects, records. Works from names alone, so it
/// also cleans what a crashed `up` left, and does nothing when there is nothing.
pub fn down(lab: &str) -> Result<(), LabError> {
    let paths = LabPaths::new(lab);
    let mut first_error = None;
    let mut note = |r: Result<(), LabError>| {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    };
    // The agents' containers first: their processes are in the runtime's cgroups.
    note(crate::container::remove_lab_containers(lab));
    note(cgroup::lab_root(lab).and_then(|root| cgroup::destroy(&root)));
    // What runc made for the application containers in the cgroup v1 controllers.
    note(crate::container::remove_v1_cgroups(lab));
    let prefix = netns_prefix(lab);
    let names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for name in names.iter().filter(|n| n.starts_with(&prefix)) {
        note(run("ip", &["netns", "del", name]).map(drop));
    }
    for dir in [paths.bpf_pins(), paths.root.clone()] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => note(Err(LabError::Io {
                what: format!("removing {}", dir.display()),
                source: e,
            })),
        }
    }
    // The shared parents (/run/weft-lab, <cgroup2>/weft-lab, /sys/fs/bpf/weft-lab) stay:
    // removing them could race with another lab being built beside this one.
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a lab left on this machine: used by tests to prove `down` removed everything.
pub fn leftovers(lab: &str) -> Vec<String> {
    let mut found: Vec<String> = crate::container::lab_containers(lab)
        .into_iter()
        .chain(crate::container::pod_containers(lab))
        .map(|name| format!("container {name}"))
        .collect();
    let prefix = netns_prefix(lab);
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("netns {name}"));
            }
        }
    }
    for dir in crate::container::v1_cgroups(lab) {
        found.push(format!("cgroup {}", dir.display()));
    }
    if let Ok(root) = cgroup::lab_root(lab)
        && root.exists()
    {
        found.push(format!("cgroup {}", root.display()));
    }
    let paths = LabPaths::new(lab);
    for dir in [paths.bpf_pins(), paths.root] {
        if dir.exists() {
            found.push(format!("directory {}", dir.display()));
        }
    }
    found
}

/// Each node's address, for the downward API's `status.hostIP`.
fn node_ips(plan: &Plan) -> BTreeMap<String, String> {
    plan.nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.to_string()))
        .collect()
}
