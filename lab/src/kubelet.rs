//! The kubelet's part the lab plays beyond starting processes: container probes.
//!
//! For every container with a `readinessProbe`, `livenessProbe` or `startupProbe`, one
//! kubelet per node (a thread inside the node's network namespace, so the probes leave from
//! the node as a kubelet's do, with the address the node picks towards the pod) runs the
//! probe's handler — `httpGet` (HTTP/1.1 with hyper: path, port by number or name,
//! `httpHeaders`, `host`; 200-399 is success), `tcpSocket` (a connection), `grpc` (a real
//! `grpc.health.v1.Health/Check` with tonic; SERVING is success), `exec` (the command inside
//! the pod; exit 0 is success) — with Kubernetes' timing: `initialDelaySeconds` after the
//! container starts, then every `periodSeconds`, each run bounded by `timeoutSeconds`,
//! `successThreshold` consecutive successes and `failureThreshold` consecutive failures to
//! change a result (defaults 0, 10, 1, 1, 3). As in the kubelet:
//! - a startup probe gates the other two: they run once it has succeeded; `failureThreshold`
//!   failures of it restart the container;
//! - readiness starts false and follows the probe; a pod is Ready when all its containers
//!   are (a container without a readiness probe is ready once started). The Pod's `Ready`
//!   condition and `containerStatuses`, its EndpointSlice endpoints' `conditions.ready`
//!   (what weft's registry, agents and waypoints read) and the lab's kube-proxy rules
//!   follow it;
//! - `failureThreshold` liveness failures restart the container: SIGTERM to its process
//!   group, SIGKILL after the grace period (the probe's `terminationGracePeriodSeconds`, at
//!   most 10 s in the lab), a new process, `restartCount` + 1, probes from the start. A
//!   container restarted again within 10 s of its last restart waits, 10 s doubling up to
//!   5 min (CrashLoopBackOff).
//!
//!
//! A container that exits on its own (it crashed, or was killed with SIGKILL as an OOM kill
//! or a chaos test does) is started again as its pod's `restartPolicy` says (Always unless
//! said; OnFailure after a non-zero status or a signal; never with Never): not ready from
//! its exit, the same CrashLoopBackOff as above — the first restart at once, then 10 s,
//! doubling up to 5 min, forgotten once a container has run for 10 min — one more
//! `restartCount`, probes from the start. One more thread of the lab, `kubelet-exits`,
//! watches the container processes for that, every node's.
//!
//! Not played: HTTPS probes (refused when the lab is built), redirects (a 3xx is a success,
//! as it is when the kubelet does not follow it), the kubelet's own delay in noticing an
//! exit (its PLEG relists every second; the lab looks every 100 ms). Pods without probes
//! keep the lab's own notion of readiness: their declared container ports accept
//! connections before `Lab::up` returns, and they are Ready (again once restarted).
//!
//! The kubelet runs for the life of the `Lab` handle that built the lab; a lab left
//! running by `cargo xtask lab up` keeps the readiness last published.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_host::netns::{named_netns_path, run_in_netns};

use crate::manifest::{Container, Probe};
use crate::plan::{Plan, PodPlan};
use crate::process::{Placement, PodView, place};
use crate::records::{self, LabPaths, PodRuntime};
use crate::volumes::{self, Backing};
use crate::{LabError, cgroup};

/// How often a node's kubelet looks for probes that are due.
const TICK: Duration = Duration::from_millis(100);
/// The lab's cap on a container's termination grace period.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// CrashLoopBackOff: the first delay, the cap, and how long a container must run for its
/// back-off to be forgotten.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// What the kubelet says it is.
const USER_AGENT: &str = "kube-probe/1.37";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe's timing with Kubernetes' defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    pub grace: Duration,
}

impl Timing {
    pub fn of(probe: &Probe) -> Self {
        let seconds = |value: Option<u32>, default: u32| {
            Duration::from_secs(u64::from(value.unwrap_or(default)))
        };
        Self {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10),
            timeout: seconds(probe.timeout_seconds, 1),
            success_threshold: probe.success_threshold.unwrap_or(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3),
            grace: seconds(probe.termination_grace_period_seconds, 30).min(MAX_GRACE),
        }
    }
}

/// What one more probe result changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// The readiness result flipped (readiness probes).
    Ready(bool),
    /// The startup probe succeeded.
    Started,
    /// Liveness or startup failed `failureThreshold` times in a row.
    Restart,
}

/// Consecutive results of one probe and its current result, as the kubelet's prober
/// worker keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeTrack {
    pub successes: u64,
    pub failures: u64,
    #[serde(skip)]
    consecutive_successes: u32,
    #[serde(skip)]
    consecutive_failures: u32,
    /// The last failure's reason, as an event would say it.
    pub last_failure: Option<String>,
}

impl ProbeTrack {
    /// Counts one result and says what it changes. `ready` is the readiness result so far.
    pub fn record(&mut self, kind: ProbeKind, timing: &Timing, ok: bool, ready: bool) -> Outcome {
        if ok {
            self.successes += 1;
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
        } else {
            self.failures += 1;
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
        }
        match kind {
            ProbeKind::Readiness => {
                if ok && !ready && self.consecutive_successes >= timing.success_threshold {
                    Outcome::Ready(true)
                } else if !ok && ready && self.consecutive_failures >= timing.failure_threshold {
                    Outcome::Ready(false)
                } else {
                    Outcome::Nothing
                }
            }
            ProbeKind::Startup if ok => Outcome::Started,
            ProbeKind::Liveness | ProbeKind::Startup => {
                if !ok && self.consecutive_failures >= timing.failure_threshold {
                    Outcome::Restart
                } else {
                    Outcome::Nothing
                }
            }
        }
    }
}

/// A container as the lab's kubelet and the cluster view see it.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerState {
    pub name: String,
    pub ready: bool,
    /// Its startup probe has succeeded (or it has none).
    pub started: bool,
    pub restart_count: u32,
    pub probes: BTreeMap<ProbeKind, ProbeTrack>,
    #[serde(skip)]
    started_at: Instant,
    #[serde(skip)]
    next_due: BTreeMap<ProbeKind, Instant>,
    #[serde(skip)]
    in_flight: BTreeMap<ProbeKind, bool>,
    #[serde(skip)]
    restarting: bool,
    #[serde(skip)]
    backoff: Duration,
}

impl ContainerState {
    fn new(container: &Container, now: Instant) -> Self {
        Self {
            name: container.name.clone(),
            ready: container.readiness_probe.is_none() && container.startup_probe.is_none(),
            started: container.startup_probe.is_none(),
            restart_count: 0,
            probes: BTreeMap::new(),
            started_at: now,
            next_due: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            restarting: false,
            backoff: Duration::ZERO,
        }
    }

    /// The container as after a (re)start: not ready if it has a readiness or startup probe,
    /// probes from the beginning.
    fn restarted(&mut self, container: &Container, now: Instant) {
        let restart_count = self.restart_count + 1;
        let probes = std::mem::take(&mut self.probes);
        let backoff = self.backoff;
        *self = Self::new(container, now);
        self.restart_count = restart_count;
        self.probes = probes;
        self.backoff = backoff;
    }
}

/// A pod's containers, by name.
#[derive(Clone, Debug, Serialize)]
pub struct PodState {
    pub containers: BTreeMap<String, ContainerState>,
}

impl PodState {
    pub fn ready(&self) -> bool {
        self.containers.values().all(|c| c.ready)
    }
}

/// Whether some container of `pod` has a readiness or startup probe: then its kubelet, not
/// its ports, says when it is Ready.
pub fn probes_gate_readiness(pod: &PodPlan) -> bool {
    pod.containers
        .iter()
        .any(|c| c.readiness_probe.is_some() || c.startup_probe.is_some())
}

/// Whether any container of `pod` has a probe.
pub fn has_probes(pod: &PodPlan) -> bool {
    pod.containers.iter().any(|c| {
        c.readiness_probe.is_some() || c.liveness_probe.is_some() || c.startup_probe.is_some()
    })
}

/// Everything needed to start a pod's processes, shared by the lab and its kubelet.
#[derive(Clone, Debug)]
pub(crate) struct Launcher {
    pub paths: LabPaths,
    /// Prepended to PATH (`Runtime::bin_dir`).
    pub bin_dir: Option<PathBuf>,
    /// RUST_LOG of waypoints (`Runtime::agent_log`).
    pub agent_log: Option<String>,
    /// Application pods' containers run from this image (`Runtime::app_image`).
    pub app_image: Option<String>,
    pub cgroup_root: PathBuf,
    /// Each node's address (the downward API's `status.hostIP`).
    pub node_ips: BTreeMap<String, String>,
}

impl Launcher {
    pub fn pod_cgroup(&self, pod: &PodPlan) -> PathBuf {
        self.cgroup_root
            .join("pods")
            .join(format!("{}-{}", pod.namespace, pod.name))
    }

    /// A process of `pod` in `cgroup` (the pod's, or one of its containers' below it).
    pub fn placement(&self, pod: &PodPlan, cgroup: PathBuf, detach: bool) -> Placement {
        let dir = self.paths.pod_dir(pod);
        Placement {
            cgroup,
            netns: named_netns_path(&pod.netns),
            pod_view: Some(PodView {
                hosts: dir.join("hosts"),
                resolv_conf: dir.join("resolv.conf"),
                hostname: pod.name.clone(),
                trust_roots: Some(self.paths.external_roots()),
            }),
            detach,
        }
    }

    pub fn env(&self, pod: &PodPlan, command: &mut Command) {
        let version = pod.labels.get("version").cloned().unwrap_or_default();
        command
            .env("POD_NAME", &pod.name)
            .env("POD_NAMESPACE", &pod.namespace)
            .env("POD_IP", pod.ip.to_string())
            // The downward API's `status.podIPs`: every address, comma-separated.
            .env(
                "POD_IPS",
                pod.ips()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env("POD_VERSION", version)
            .env("POD_SERVICE_ACCOUNT", &pod.service_account)
            .env("NODE_NAME", &pod.node);
        if let Some(bin) = &self.bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        if pod.is_mesh_proxy() {
            // A waypoint or gateway reads the cluster where the agents do (the lab's stand-in for the
            // API server); the CA's address, its root and the token come from the
            // controller's Deployment (its arguments and volumes, `crate::volumes`).
            command.env("WEFT_CONFIG_DIR", self.paths.cluster_dir());
        }
    }

    pub fn container_log(&self, pod: &PodPlan, container: &str) -> PathBuf {
        self.paths
            .logs()
            .join(format!("{}-{}-{container}.log", pod.namespace, pod.name))
    }

    /// Starts `container` of `pod` in its own cgroup below the pod's and its own session
    /// (process group), with its volumes (`crate::volumes`), its image's entrypoint when it
    /// has no command, its output appended to its log; `None` for a container without a
    /// command.
    pub fn spawn_container(
        &self,
        pod: &PodPlan,
        container: &Container,
    ) -> Result<Option<Child>, LabError> {
        let backing = Backing {
            // The bundle the lab rotates as a kubelet would, as agents read it.
            trust_bundle: self.paths.trust_bundle(),
            token: self.paths.ca_token(&pod.node),
        };
        let volumes_dir = self.paths.pod_dir(pod).join("volumes");
        let mounts = volumes::mounts(&pod.volumes, container, &backing, &volumes_dir);
        for mount in &mounts {
            std::fs::create_dir_all(&mount.dir)
                .map_err(LabError::io(format!("creating {}", mount.dir.display())))?;
            for (file, target) in &mount.links {
                let link = mount.dir.join(file);
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(target, &link).map_err(LabError::io(format!(
                    "linking {} to {}",
                    link.display(),
                    target.display()
                )))?;
            }
        }
        // A container without a command runs its image's entrypoint.
        let entrypoint = container
            .image
            .as_deref()
            .filter(|_| container.command.is_empty())
            .and_then(volumes::entrypoint);
        let mut argv = entrypoint
            .iter()
            .chain(&container.command)
            .chain(&container.args)
            .map(|a| volumes::substitute(a, &mounts));
        let Some(program) = argv.next() else {
            return Ok(None);
        };
        let mut command = Command::new(&program);
        command.args(argv);
        self.env(pod, &mut command);
        for env in &container.env {
            let value = match env
                .value_from
                .as_ref()
                .and_then(|from| from.field_ref.as_ref())
            {
                Some(field) => downward_api(pod, self.node_ips.get(&pod.node), &field.field_path),
                None => volumes::substitute(&env.value, &mounts),
            };
            command.env(&env.name, value);
        }
        if pod.is_mesh_proxy() {
            // The lab's log level for weft's own processes, over what the manifest says.
            command.env("RUST_LOG", self.agent_log.as_deref().unwrap_or("info"));
        }
        let cgroup = self.pod_cgroup(pod).join(&container.name);
        cgroup::create(&cgroup)?;
        let mut container_name = None;
        let mut command = match self.app_image.as_deref().filter(|_| !pod.is_mesh_proxy()) {
            None => command,
            Some(image) => {
                // The container runs what the process would have: the same program,
                // arguments and environment (less the lab's PATH), the volumes at the
                // paths the arguments name.
                let dir = self.paths.pod_dir(pod);
                let mut volumes = Vec::new();
                for mount in &mounts {
                    volumes.push(mount.dir.clone());
                    volumes.extend(mount.links.iter().map(|(_, target)| target.clone()));
                }
                let run = crate::container::AppRun {
                    lab: self.paths.lab.clone(),
                    stem: format!("{}-{}-{}", pod.namespace, pod.name, container.name),
                    image: image.to_string(),
                    cgroup: cgroup.clone(),
                    netns: named_netns_path(&pod.netns),
                    hostname: pod.name.clone(),
                    hosts: dir.join("hosts"),
                    resolv_conf: dir.join("resolv.conf"),
                    program: command.get_program().to_string_lossy().into_owned(),
                    args: command
                        .get_args()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                    env: command
                        .get_envs()
                        .filter(|(k, _)| *k != "PATH")
                        .filter_map(|(k, v)| {
                            Some((
                                k.to_string_lossy().into_owned(),
                                v?.to_string_lossy().into_owned(),
                            ))
                        })
                        .collect(),
                    volumes,
                };
                crate::container::write_containers_conf(&self.paths)?;
                let (args, name) = run.args()?;
                container_name = Some(name);
                let mut podman = Command::new("podman");
                podman.args(args).env(
                    "CONTAINERS_CONF",
                    crate::container::containers_conf(&self.paths),
                );
                podman
            }
        };
        let log = self.container_log(pod, &container.name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(LabError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(LabError::io("duplicating a log file handle"))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut placement = self.placement(pod, cgroup, true);
        if self.app_image.is_some() && !pod.is_mesh_proxy() {
            // `podman run` itself needs the host's view (its storage, /run); the container
            // gets the pod's from runc.
            placement.pod_view = None;
        }
        place(&mut command, &placement)?;
        let mut child = command.spawn().map_err(|e| {
            LabError::Invalid(format!(
                "starting {} container {}: spawning {program:?}: {e}",
                pod.key(),
                container.name
            ))
        })?;
        if let Some(name) = container_name {
            // Started when runc has started it, as a runtime reports it.
            crate::container::wait_running(&name, &mut child).map_err(|e| {
                LabError::Invalid(format!(
                    "starting {} container {}: {e}",
                    pod.key(),
                    container.name
                ))
            })?;
        }
        Ok(Some(child))
    }
}

/// The cluster view's inputs: the lab's plan and the objects it does not act on, kept here
/// so that the kubelet can publish a readiness change as the lab publishes its own changes.
#[derive(Debug)]
pub(crate) struct View {
    pub plan: Plan,
    pub others: Vec<serde_yaml::Value>,
}

/// What the lab and its kubelets share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub launcher: Launcher,
    pub view: Mutex<View>,
    pub pods: Mutex<BTreeMap<String, PodState>>,
    /// The running container processes, by (pod, container).
    pub containers: Mutex<BTreeMap<(String, String), Child>>,
    stop: AtomicBool,
    events: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    weft_core::sync::lock(mutex)
}

impl Shared {
    pub fn new(launcher: Launcher, plan: Plan, others: Vec<serde_yaml::Value>) -> Self {
        let now = Instant::now();
        let pods = plan
            .pods
            .iter()
            .map(|p| {
                let containers = p
                    .containers
                    .iter()
                    .map(|c| (c.name.clone(), ContainerState::new(c, now)))
                    .collect();
                (p.key(), PodState { containers })
            })
            .collect();
        Self {
            launcher,
            view: Mutex::new(View { plan, others }),
            pods: Mutex::new(pods),
            containers: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Pod readiness and container statuses for the cluster view.
    pub fn runtime(&self) -> BTreeMap<String, PodRuntime> {
        lock(&self.pods)
            .iter()
            .map(|(key, pod)| {
                (
                    key.clone(),
                    PodRuntime {
                        ready: pod.ready(),
                        containers: pod
                            .containers
                            .values()
                            .map(|c| (c.name.clone(), c.ready, c.started, c.restart_count))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    /// Writes the cluster view (and, when `kube_proxy`, every node's kube-proxy rules) from
    /// the current plan and readiness.
    pub fn publish(&self, kube_proxy: bool) -> Result<(), LabError> {
        let runtime = self.runtime();
        let view = lock(&self.view);
        records::write(
            &self.launcher.paths.cluster_dir().join("cluster.yaml"),
            &records::cluster_view(&view.plan, &view.others, &runtime)?,
        )?;
        if kube_proxy {
            let ready = |pod: &str| runtime.get(pod).is_none_or(|r| r.ready);
            let rules = view.plan.kube_proxy_reload(&ready);
            for node in &view.plan.nodes {
                let rules = rules.clone();
                run_in_netns(&named_netns_path(&node.netns), move || {
                    crate::cmd::run_with_input("nft", &["-f", "-"], Some(&rules))
                })??;
            }
        }
        Ok(())
    }

    fn event(&self, pod: &str, container: &str, message: String) {
        let line = format!("{pod} {container}: {message}");
        tracing::info!("{line}");
        let log = self.launcher.paths.logs().join("kubelet.log");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
        lock(&self.events).push(line);
    }

    pub fn events(&self, pod: &str) -> Vec<String> {
        let prefix = format!("{pod} ");
        lock(&self.events)
            .iter()
            .filter(|e| e.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// Stops the kubelets (they notice within a tick) and every container process it knows,
    /// waiting for them to exit.
    pub fn stop_and_reap(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, mut child) in std::mem::take(&mut *lock(&self.containers)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CrashLoopBackOff as the kubelet computes it: how long a container that stopped after
/// running for `ran_for` waits before it starts again, given the back-off its previous
/// restart left (`backoff`, zero before any), and the back-off its next stop will wait.
pub fn crash_loop_backoff(backoff: Duration, ran_for: Duration) -> (Duration, Duration) {
    let wait = if ran_for >= BACKOFF_RESET {
        Duration::ZERO
    } else {
        backoff
    };
    let next = if wait.is_zero() {
        BACKOFF_INITIAL
    } else {
        (wait * 2).min(BACKOFF_MAX)
    };
    (wait, next)
}

/// The running kubelets: one per node with probed pods, and the watcher of containers
/// that exit on their own.
#[derive(Debug)]
pub(crate) struct Kubelets {
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Kubelets {
    /// Starts a kubelet for every node that runs a pod with probes.
    pub fn start(shared: Arc<Shared>) -> Result<Self, LabError> {
        let nodes: Vec<(String, String)> = {
            let view = lock(&shared.view);
            view.plan
                .nodes
                .iter()
                .filter(|n| {
                    view.plan
                        .pods
                        .iter()
                        .any(|p| p.node == n.name && has_probes(p))
                })
                .map(|n| (n.name.clone(), n.netns.clone()))
                .collect()
        };
        let mut threads = Vec::new();
        for (node, netns) in nodes {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("kubelet-{node}"))
                .spawn(move || {
                    let netns = named_netns_path(&netns);
                    let outcome = run_in_netns(&netns, || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build();
                        match runtime {
                            Ok(runtime) => runtime.block_on(node_loop(&shared, &node)),
                            Err(e) => tracing::error!(%node, error = %e, "the kubelet's runtime did not start"),
                        }
                    });
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, "the kubelet did not enter its node");
                    }
                })
                .map_err(LabError::io("starting a kubelet thread"))?;
            threads.push(thread);
        }
        let watcher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kubelet-exits".into())
            .spawn(move || watch_exits(&watcher))
            .map_err(LabError::io("starting the kubelet's exit watcher"))?;
        threads.push(thread);
        Ok(Self { threads, shared })
    }

    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Kubelets {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A probe to run: everything it needs, owned.
#[derive(Clone, Debug)]
struct Run {
    pod: PodPlan,
    container: Container,
    kind: ProbeKind,
    probe: Probe,
}

/// A probe's result, back on the node's loop.
struct Done {
    pod: String,
    container: String,
    kind: ProbeKind,
    result: Result<(), String>,
}

async fn node_loop(shared: &Arc<Shared>, node: &str) {
    let pods: Vec<PodPlan> = lock(&shared.view)
        .plan
        .pods
        .iter()
        .filter(|p| p.node == node && has_probes(p))
        .cloned()
        .collect();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut tick = tokio::time::interval(TICK);
    while !shared.stop.load(Ordering::SeqCst) {
        tokio::select! {
            _ = tick.tick() => {
                for run in due(shared, &pods, Instant::now()) {
                    let done = done_tx.clone();
                    let launcher = shared.launcher.clone();
                    tokio::spawn(async move {
                        let result = run_probe(&launcher, &run).await;
                        let _ = done.send(Done {
                            pod: run.pod.key(),
                            container: run.container.name.clone(),
                            kind: run.kind,
                            result,
                        });
                    });
                }
            }
            Some(done) = done_rx.recv() => {
                record(shared, &pods, done).await;
            }
        }
    }
}

/// The probes of `pods` due at `now`, marked in flight.
fn due(shared: &Shared, pods: &[PodPlan], now: Instant) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut states = lock(&shared.pods);
    for pod in pods {
        let Some(state) = states.get_mut(&pod.key()) else {
            continue;
        };
        for container in &pod.containers {
            let Some(c) = state.containers.get_mut(&container.name) else {
                continue;
            };
            if c.restarting {
                continue;
            }
            let probes: Vec<(ProbeKind, &Probe)> = if c.started {
                [
                    (ProbeKind::Liveness, &container.liveness_probe),
                    (ProbeKind::Readiness, &container.readiness_probe),
                ]
                .into_iter()
                .filter_map(|(k, p)| p.as_ref().map(|p| (k, p)))
                .collect()
            } else {
                container
                    .startup_probe
                    .as_ref()
                    .map(|p| vec![(ProbeKind::Startup, p)])
                    .unwrap_or_default()
            };
            for (kind, probe) in probes {
                let timing = Timing::of(probe);
                let first = c.started_at + timing.initial_delay;
                let next = *c.next_due.get(&kind).unwrap_or(&first);
                if now < next || c.in_flight.get(&kind).copied().unwrap_or(false) {
                    continue;
                }
                c.next_due.insert(kind, now + timing.period);
                c.in_flight.insert(kind, true);
                runs.push(Run {
                    pod: pod.clone(),
                    container: container.clone(),
                    kind,
                    probe: probe.clone(),
                });
            }
        }
    }
    runs
}

/// Counts a result; publishes a readiness change; restarts a container that failed.
async fn record(shared: &Arc<Shared>, pods: &[PodPlan], done: Done) {
    let Some(pod) = pods.iter().find(|p| p.key() == done.pod) else {
        return;
    };
    let Some(container) = pod.containers.iter().find(|c| c.name == done.container) else {
        return;
    };
    let probe = match done.kind {
        ProbeKind::Startup => &container.startup_probe,
        ProbeKind::Liveness => &container.liveness_probe,
        ProbeKind::Readiness => &container.readiness_probe,
    };
    let Some(probe) = probe else { return };
    let timing = Timing::of(probe);
    let (outcome, was_ready, now_ready) = {
        let mut states = lock(&shared.pods);
        let Some(state) = states.get_mut(&done.pod) else {
            return;
        };
        let was_ready = state.ready();
        let Some(c) = state.containers.get_mut(&done.container) else {
            return;
        };
        c.in_flight.insert(done.kind, false);
        if c.restarting {
            return;
        }
        let ready = c.ready;
        let track = c.probes.entry(done.kind).or_default();
        let outcome = track.record(done.kind, &timing, done.result.is_ok(), ready);
        if let Err(reason) = &done.result {
            track.last_failure = Some(reason.clone());
        }
        match outcome {
            Outcome::Ready(ready) => c.ready = ready,
            Outcome::Started => {
                c.started = true;
                c.ready = container.readiness_probe.is_none();
            }
            Outcome::Restart => {
                c.restarting = true;
                c.ready = false;
            }
            Outcome::Nothing => {}
        }
        (outcome, was_ready, state.ready())
    };
    if let Err(reason) = &done.result {
        shared.event(
            &done.pod,
            &done.container,
            format!("{} probe failed: {reason}", done.kind.name()),
        );
    }
    if was_ready != now_ready {
        shared.event(
            &done.pod,
            &done.container,
            format!("pod Ready is now {now_ready}"),
        );
        if let Err(e) = shared.publish(true) {
            tracing::error!(error = %e, "publishing a readiness change failed");
        }
    }
    if outcome == Outcome::Restart {
        let shared = shared.clone();
        let pod = pod.clone();
        let container = container.clone();
        let _ =
            tokio::task::spawn_blocking(move || restart(&shared, &pod, &container, timing.grace))
                .await;
    }
}

/// Kills the container's processes (SIGTERM, then SIGKILL after `grace`), waits out the
/// back-off, starts it again and resets its probes.
fn restart(shared: &Shared, pod: &PodPlan, container: &Container, grace: Duration) {
    let key = (pod.key(), container.name.clone());
    shared.event(
        &key.0,
        &key.1,
        "failed its probe: killing and restarting the container".into(),
    );
    let old = lock(&shared.containers).remove(&key);
    if let Some(mut child) = old {
        let group = child.id() as i32;
        // SAFETY: kill(2) on the container's process group (its own session, started with
        // setsid), which no other process of the lab shares.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = child.wait();
    }
    start_again(shared, pod, container);
}

/// Starts a stopped container again after its CrashLoopBackOff wait (none for the first
/// restart), counts the restart and publishes the pod's readiness.
fn start_again(shared: &Shared, pod: &PodPlan, container: &Container) {
    let key = (pod.key(), container.name.clone());
    // CrashLoopBackOff: a container restarted again soon waits longer each time.
    let (backoff, ran_for) = {
        let states = lock(&shared.pods);
        let c = states.get(&key.0).and_then(|p| p.containers.get(&key.1));
        (
            c.map(|c| c.backoff).unwrap_or_default(),
            c.map(|c| c.started_at.elapsed()).unwrap_or_default(),
        )
    };
    let (wait, next) = crash_loop_backoff(backoff, ran_for);
    if !wait.is_zero() {
        shared.event(
            &key.0,
            &key.1,
            format!("back-off {}s restarting the container", wait.as_secs()),
        );
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
    }
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    match shared.launcher.spawn_container(pod, container) {
        Ok(Some(child)) => {
            lock(&shared.containers).insert(key.clone(), child);
            if shared.stop.load(Ordering::SeqCst) {
                // The lab is being taken down and may have reaped the containers already.
                if let Some(mut child) = lock(&shared.containers).remove(&key) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return;
            }
        }
        Ok(None) => {}
        Err(e) => shared.event(&key.0, &key.1, format!("restart failed: {e}")),
    }
    // The pods' lock is released before the event and the publish (which takes it again),
    // whether or not the pod has a state here.
    let restarted = {
        let mut states = lock(&shared.pods);
        states
            .get_mut(&key.0)
            .and_then(|p| p.containers.get_mut(&key.1))
            .map(|c| {
                c.restarted(container, Instant::now());
                c.backoff = next;
                c.restart_count
            })
    };
    if let Some(count) = restarted {
        shared.event(&key.0, &key.1, format!("restarted (restartCount {count})"));
    }
    if let Err(e) = shared.publish(true) {
        tracing::error!(error = %e, "publishing a restart failed");
    }
}

/// The containers whose process has exited, taken out of the running set, with how they
/// exited.
fn reap_exited(shared: &Shared) -> Vec<((String, String), ExitStatus)> {
    let mut exited = Vec::new();
    lock(&shared.containers).retain(|key, child| match child.try_wait() {
        Ok(Some(status)) => {
            exited.push((key.clone(), status));
            false
        }
        _ => true,
    });
    exited
}

/// The kubelet's answer to containers exiting on their own, until the lab stops: each is
/// marked not ready at once and, as its pod's `restartPolicy` says, started again on a
/// thread of its own (its back-off may be minutes; others' restarts do not wait for it).
fn watch_exits(shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        for (key, status) in reap_exited(shared) {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let found = lock(&shared.view).plan.pod(&key.0).and_then(|pod| {
                pod.containers
                    .iter()
                    .find(|c| c.name == key.1)
                    .map(|c| (pod.clone(), c.clone()))
            });
            let Some((pod, container)) = found else {
                continue;
            };
            let restart = pod.restart_policy.restarts(status.success());
            {
                let mut states = lock(&shared.pods);
                if let Some(c) = states
                    .get_mut(&key.0)
                    .and_then(|p| p.containers.get_mut(&key.1))
                {
                    c.ready = false;
                    c.restarting = restart;
                }
            }
            let what = if restart {
                "restarting it".to_string()
            } else {
                format!("restartPolicy {:?}: not restarted", pod.restart_policy)
            };
            shared.event(
                &key.0,
                &key.1,
                format!("the container exited ({status}): {what}"),
            );
            if let Err(e) = shared.publish(true) {
                tracing::error!(error = %e, "publishing a container's exit failed");
            }
            if restart {
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("kubelet-restart".into())
                    .spawn(move || start_again(&shared, &pod, &container));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "starting a restart thread failed");
                }
            }
        }
        std::thread::sleep(TICK);
    }
}

/// Runs one probe from the calling thread's network namespace (the node's).
async fn run_probe(launcher: &Launcher, run: &Run) -> Result<(), String> {
    let timing = Timing::of(&run.probe);
    let pod_ip = IpAddr::V4(run.pod.ip);
    let target = |host: &Option<String>, port: u16| -> Result<SocketAddr, String> {
        let ip = match host.as_deref() {
            None | Some("") => pod_ip,
            Some(host) => host.parse().map_err(|_| {
                format!("host {host:?} is not an IP address (the lab has no DNS for the node)")
            })?,
        };
        Ok(SocketAddr::new(ip, port))
    };
    if let Some(http) = &run.probe.http_get {
        let port = crate::manifest::probe_port(&run.container, &http.port)?;
        let addr = target(&http.host, port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return bounded(timing.timeout, http_probe(addr, &path, &http.http_headers)).await;
    }
    if let Some(tcp) = &run.probe.tcp_socket {
        let port = crate::manifest::probe_port(&run.container, &tcp.port)?;
        let addr = target(&tcp.host, port)?;
        return bounded(timing.timeout, async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"))
        })
        .await;
    }
    if let Some(grpc) = &run.probe.grpc {
        let addr = SocketAddr::new(pod_ip, grpc.port);
        let service = grpc.service.clone().unwrap_or_default();
        return bounded(timing.timeout, grpc_probe(addr, service, timing.timeout)).await;
    }
    if let Some(exec) = &run.probe.exec {
        let launcher = launcher.clone();
        let pod = run.pod.clone();
        let command = exec.command.clone();
        return tokio::task::spawn_blocking(move || {
            exec_probe(&launcher, &pod, &command, timing.timeout)
        })
        .await
        .map_err(|e| format!("the exec probe's task failed: {e}"))?;
    }
    Err("the probe has no handler".into())
}

async fn bounded(
    timeout: Duration,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout: no result within {}s", timeout.as_secs())),
    }
}

async fn http_probe(
    addr: SocketAddr,
    path: &str,
    headers: &[crate::manifest::HttpHeader],
) -> Result<(), String> {
    use http_body_util::{BodyExt, Empty};
    let url = format!("http://{addr}{path}");
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp {addr}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path);
    // The kubelet's defaults, which the probe's own headers replace.
    let mut defaults = vec![
        ("host", addr.to_string()),
        ("user-agent", USER_AGENT.to_string()),
        ("accept", "*/*".to_string()),
    ];
    defaults.retain(|(name, _)| !headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)));
    for (name, value) in defaults {
        request = request.header(name, value);
    }
    for header in headers {
        request = request.header(header.name.as_str(), header.value.as_str());
    }
    let request = request
        .header("connection", "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let status = response.status().as_u16();
    // Read (and drop) the body as the kubelet does, so the server sees a complete exchange.
    let _ = response.into_body().collect().await;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

async fn grpc_probe(addr: SocketAddr, service: String, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("gRPC target {addr}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| {
            format!(
                "failed to connect service {addr:?} within {}s: {e}",
                timeout.as_secs()
            )
        })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|status| format!("health rpc probe failed: {status}"))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("service unhealthy (responded with {other:?})")),
    }
}

/// Runs `command` inside `pod` (its namespaces and cgroup, as `kubectl exec` does) and waits
/// at most `timeout` for it to exit 0.
fn exec_probe(
    launcher: &Launcher,
    pod: &PodPlan,
    command: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec.command is empty".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    launcher.env(pod, &mut cmd);
    place(
        &mut cmd,
        &launcher.placement(pod, launcher.pod_cgroup(pod), false),
    )
    .map_err(|e| e.to_string())?;
    let mut child = cmd.spawn().map_err(|e| format!("exec {program:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("command {command:?} exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "command {command:?} timed out after {}s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {command:?}: {e}")),
        }
    }
}

/// What the downward API (`valueFrom.fieldRef.fieldPath`) gives a container of `pod`.
fn downward_api(pod: &PodPlan, host_ip: Option<&String>, field: &str) -> String {
    let label = |prefix: &str, map: &BTreeMap<String, String>| {
        field
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .and_then(|key| map.get(key).cloned())
    };
    match field {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.node.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        "status.podIP" => pod.ip.to_string(),
        "status.podIPs" => pod
            .ips()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        "status.hostIP" => host_ip.cloned().unwrap_or_default(),
        _ => label("metadata.labels['", &pod.labels)
            .or_else(|| label("metadata.annotations['", &pod.annotations))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn kubernetes_defaults_apply() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(t.grace, MAX_GRACE, "30 s, capped by the lab");
    }

    #[test]
    fn readiness_needs_consecutive_results_to_flip() {
        let t = timing(2, 3);
        let mut track = ProbeTrack::default();
        let kind = ProbeKind::Readiness;
        assert_eq!(track.record(kind, &t, true, false), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, false, false), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, true, false), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, true, false), Outcome::Ready(true));
        assert_eq!(track.record(kind, &t, false, true), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, false, true), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, false, true), Outcome::Ready(false));
        assert_eq!((track.successes, track.failures), (3, 4));
    }

    #[test]
    fn liveness_restarts_after_failure_threshold_in_a_row() {
        let t = timing(1, 2);
        let mut track = ProbeTrack::default();
        let kind = ProbeKind::Liveness;
        assert_eq!(track.record(kind, &t, false, true), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, true, true), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, false, true), Outcome::Nothing);
        assert_eq!(track.record(kind, &t, false, true), Outcome::Restart);
    }

    #[test]
    fn startup_gates_and_restarts() {
        let t = timing(1, 2);
        let mut track = ProbeTrack::default();
        assert_eq!(
            track.record(ProbeKind::Startup, &t, false, false),
            Outcome::Nothing
        );
        assert_eq!(
            track.record(ProbeKind::Startup, &t, true, false),
            Outcome::Started
        );
        let mut failing = ProbeTrack::default();
        assert_eq!(
            failing.record(ProbeKind::Startup, &t, false, false),
            Outcome::Nothing
        );
        assert_eq!(
            failing.record(ProbeKind::Startup, &t, false, false),
            Outcome::Restart
        );
    }

    #[test]
    fn crash_loop_back_off_starts_at_once_then_doubles_to_five_minutes() {
        let mut backoff = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (wait, next) = crash_loop_backoff(backoff, Duration::from_secs(1));
            waits.push(wait.as_secs());
            backoff = next;
        }
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
        // Ten minutes of running forgets it: the next restart is immediate again.
        let (wait, next) = crash_loop_backoff(backoff, Duration::from_secs(600));
        assert_eq!((wait, next), (Duration::ZERO, Duration::from_secs(10)));
    }

    #[test]
    fn restart_policies_decide_which_exits_restart() {
        use crate::manifest::RestartPolicy;
        assert!(RestartPolicy::Always.restarts(true) && RestartPolicy::Always.restarts(false));
        assert!(!RestartPolicy::OnFailure.restarts(true));
        assert!(RestartPolicy::OnFailure.restarts(false));
        assert!(!RestartPolicy::Never.restarts(false));
        let pod: crate::manifest::PodSpec =
            serde_yaml::from_str("{containers: [], restartPolicy: OnFailure}").expect("valid");
        assert_eq!(pod.restart_policy, Some(RestartPolicy::OnFailure));
        assert!(
            serde_yaml::from_str::<crate::manifest::PodSpec>("{restartPolicy: Sometimes}").is_err()
        );
    }
}
