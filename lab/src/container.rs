//! The node agent in a container: `podman run` with runc, as the DaemonSet's pod template
//! (`deploy/base/agent.yaml`) runs it — host network (the node's namespace), the template's
//! capabilities and security options, a read-only root, its environment and its host
//! mounts at its paths — with the lab's files where a cluster has its own (the node's CNI
//! directories, the trust bundle ConfigMap, the CA token) and two additions a cluster does
//! not need: the lab's cluster view and pod locations (read-only, at their host paths:
//! there is no API server) and `/run/netns` (the lab's pods are named network namespaces).
//!
//! Application pods' containers ([`AppRun`], `Runtime::app_image`) run under runc as a
//! container runtime starts them in a pod's sandbox.
use std::path::{Path, PathBuf};

use crate::LabError;
use crate::cmd::run;
use crate::plan::{NodePlan, Plan, netns_prefix};
use crate::records::{LabPaths, TRUST_BUNDLE_KEY};

/// The OCI runtime: crun refuses a hybrid cgroup hierarchy, runc does not.
pub const OCI_RUNTIME: &str = "runc";

/// Where the template mounts what the agent reads and writes (`volumeMounts`).
const TRUST_DIR: &str = "/etc/weft/trust";
const TOKEN_FILE: &str = "/var/run/secrets/tokens/istio-token";
const PROC_ROOT: &str = "/host/proc";
const CNI_CONF_DIR: &str = "/host/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/host/opt/cni/bin";

/// The names of the lab's agent containers start with this (`down` removes them by it).
pub fn agent_container_prefix(lab: &str) -> String {
    format!("{}agent-", netns_prefix(lab))
}

/// A container name no other start of this node's agent uses (a successor runs beside its
/// predecessor during an upgrade).
fn agent_container_name(lab: &str, node: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{node}-{}-{}",
        agent_container_prefix(lab),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The template's environment, with the lab's addresses and paths: (name, value).
pub fn agent_environment(
    plan: &Plan,
    paths: &LabPaths,
    node: &NodePlan,
    log: &str,
) -> Vec<(String, String)> {
    let path = |p: PathBuf| p.display().to_string();
    [
        ("NODE_NAME", node.name.clone()),
        ("WEFT_PROC_ROOT", PROC_ROOT.into()),
        ("WEFT_CA_ADDRESS", plan.ca_address().to_string()),
        ("WEFT_CA_SERVER_NAME", "weft-ca.weft-system.svc".into()),
        ("WEFT_CA_TOKEN_FILE", TOKEN_FILE.into()),
        (
            "WEFT_TRUST_BUNDLE",
            format!("{TRUST_DIR}/{TRUST_BUNDLE_KEY}"),
        ),
        ("WEFT_TRUST_DOMAIN", "cluster.local".into()),
        ("WEFT_READINESS_ADDR", "0.0.0.0:15021".into()),
        ("WEFT_ADMIN_ADDR", "127.0.0.1:15000".into()),
        ("WEFT_METRICS_ADDR", "0.0.0.0:15020".into()),
        ("WEFT_BPF_PIN_ROOT", path(paths.node_bpf_pins(&node.name))),
        (
            "WEFT_HANDOFF_SOCKET",
            path(paths.agent_handoff_socket(&node.name)),
        ),
        ("WEFT_DRAIN_TIMEOUT", "25".into()),
        ("WEFT_CNI_SOCKET", path(paths.agent_cni_socket(&node.name))),
        ("WEFT_CNI_CONF_DIR", CNI_CONF_DIR.into()),
        ("WEFT_CNI_BIN_DIR", CNI_BIN_DIR.into()),
        ("WEFT_CNI_UNINSTALL", "false".into()),
        ("RUST_LOG", log.into()),
        // The lab's own: the API server's view, and where its pods are.
        ("WEFT_CONFIG_DIR", path(paths.cluster_dir())),
        ("WEFT_POD_LOCATIONS", path(paths.pod_locations())),
        // The cluster's resolver (in a cluster, the agent's resolv.conf under
        // `dnsPolicy: ClusterFirstWithHostNet` names it); never the machine's own.
        (
            "WEFT_DNS_UPSTREAM",
            crate::plan::EXTERNAL_DNS_IP.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The environment variables the lab adds to the template's (it has no API server).
pub const LAB_ONLY_ENVIRONMENT: &[&str] =
    &["WEFT_CONFIG_DIR", "WEFT_POD_LOCATIONS", "WEFT_DNS_UPSTREAM"];

/// A bind mount: host path, container path, options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub options: &'static str,
}

/// The template's volumes (`hostPath`s at the host's paths, the ConfigMap and the token
/// from the lab), then the lab's own.
pub fn agent_mounts(paths: &LabPaths, node: &str) -> Vec<Mount> {
    let mount = |host: &Path, container: &Path, options| Mount {
        host: host.to_path_buf(),
        container: container.to_path_buf(),
        options,
    };
    let handoff = parent(&paths.agent_handoff_socket(node));
    let cni_socket = parent(&paths.agent_cni_socket(node));
    let cni = paths.node_cni(node);
    vec![
        mount(Path::new("/sys/fs/bpf"), Path::new("/sys/fs/bpf"), "rw"),
        mount(
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup"),
            "ro",
        ),
        mount(Path::new("/proc"), Path::new(PROC_ROOT), "ro"),
        mount(&paths.trust_dir(), Path::new(TRUST_DIR), "ro"),
        mount(&paths.ca_token(node), Path::new(TOKEN_FILE), "ro"),
        // /var/run/weft of the template: at the host's paths, where weft-cni (run on the
        // host) and a successor agent find the sockets.
        mount(&handoff, &handoff, "rw"),
        mount(&cni_socket, &cni_socket, "rw"),
        mount(&cni.conf_dir, Path::new(CNI_CONF_DIR), "rw"),
        mount(&cni.bin_dir, Path::new(CNI_BIN_DIR), "rw"),
        // The lab's: the cluster view and pod locations (renamed into place, so the
        // directory), and the pods' named network namespaces, made after the agent starts.
        mount(&paths.root, &paths.root, "ro"),
        mount(
            Path::new("/run/netns"),
            Path::new("/run/netns"),
            "ro,rslave",
        ),
    ]
}

/// podman's configuration for the lab's containers (`CONTAINERS_CONF`): no default sysctls.
/// podman sets `net.ipv4.ping_group_range` in every container, which runc refuses in a
/// network namespace the container joins rather than owns (the node's); a kubelet sets no
/// sysctl in a `hostNetwork` pod either.
const CONTAINERS_CONF: &str = "[containers]\ndefault_sysctls = []\n";

/// Where the lab keeps podman's configuration for its containers.
pub fn containers_conf(paths: &LabPaths) -> PathBuf {
    paths.root.join("containers.conf")
}

/// Creates the directories the agent's socket mounts bind (`hostPath` of type
/// `DirectoryOrCreate`: a process agent makes them itself, a container's must exist first)
/// and podman's configuration.
pub fn prepare(paths: &LabPaths, node: &str) -> Result<(), LabError> {
    write_containers_conf(paths)?;
    for socket in [
        paths.agent_handoff_socket(node),
        paths.agent_cni_socket(node),
    ] {
        let dir = parent(&socket);
        std::fs::create_dir_all(&dir)
            .map_err(LabError::io(format!("creating {}", dir.display())))?;
    }
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The hard limit of `name` (`Max open files`) in `/proc/self/limits`; `None` if
/// unlimited or unreadable.
pub fn hard_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    fields.get(1)?.parse().ok()
}

/// `--ulimit` for `resource`: the lab's own hard limit (at most `ceiling`), soft and hard.
/// podman's defaults (1048576) are refused where the lab runs without CAP_SYS_RESOURCE:
/// runc cannot raise a limit above the one it inherits, and a container runtime passes its
/// own limits on the same way (the DaemonSet sets none).
fn ulimit(limits: &str, name: &str, resource: &str, ceiling: u64) -> String {
    let limit = hard_limit(limits, name).unwrap_or(ceiling).min(ceiling);
    format!("{resource}={limit}:{limit}")
}

/// conmon, which runs runc, holds at most 32768 processes (podman 4.3 starts it so), so
/// runc can give the container no more. The agent, root with CAP_SYS_ADMIN, is not held
/// to RLIMIT_NPROC anyway.
const NPROC_CEILING: u64 = 32_768;
const NOFILE_CEILING: u64 = 1_048_576;

/// `podman run …` for the agent of `node` from `image`: returns the arguments and the
/// container's name.
pub fn agent_run_args(
    plan: &Plan,
    paths: &LabPaths,
    node: &NodePlan,
    image: &str,
    log: &str,
    agent_args: &[String],
) -> (Vec<String>, String) {
    let name = agent_container_name(&plan.lab, &node.name);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let netns = weft_host::netns::named_netns_path(&node.netns);
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--replace",
        "--name",
        &name,
        "--runtime",
        OCI_RUNTIME,
        // The agent writes to the lab's log file directly (stdout and stderr passed on).
        "--log-driver",
        "passthrough",
        // hostNetwork: the node's network namespace.
        &format!("--network=ns:{}", netns.display()),
        // securityContext: root, a read-only root filesystem (and no tmpfs podman would
        // add: Kubernetes adds none), the capabilities listed, the runtime's default
        // seccomp profile, no AppArmor confinement, SELinux spc_t (ignored without SELinux).
        "--user",
        "0:0",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "BPF,NET_ADMIN,SYS_ADMIN,SYS_PTRACE",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "label=type:spc_t",
        // resources.limits.memory; terminationGracePeriodSeconds.
        "--memory",
        "1g",
        "--stop-timeout",
        "30",
        "--ulimit",
        &ulimit(&limits, "Max open files", "nofile", NOFILE_CEILING),
        "--ulimit",
        &ulimit(&limits, "Max processes", "nproc", NPROC_CEILING),
        "--label",
        &format!("weft-lab={}", plan.lab),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for (key, value) in agent_environment(plan, paths, node, log) {
        args.push("--env".into());
        args.push(format!("{key}={value}"));
    }
    for mount in agent_mounts(paths, &node.name) {
        args.push("--volume".into());
        args.push(format!(
            "{}:{}:{}",
            mount.host.display(),
            mount.container.display(),
            mount.options
        ));
    }
    args.push(image.to_string());
    args.extend(agent_args.iter().cloned());
    (args, name)
}

/// The names of the lab's application pods' containers start with this.
pub fn pod_container_prefix(lab: &str) -> String {
    format!("{}pod-", netns_prefix(lab))
}

/// One application container of a pod, as a runtime starts it after the pod's sandbox
/// (its network namespace, CNI ADD done): `podman run` with runc.
#[derive(Clone, Debug)]
pub struct AppRun {
    pub lab: String,
    /// `<namespace>-<pod>-<container>`: the container's name after the lab's prefix.
    pub stem: String,
    pub image: String,
    /// The container's cgroup below the pod's, in the cgroup v2 hierarchy: runc puts the
    /// process in a `libpod-<id>` cgroup below it, where the pod's capture applies.
    pub cgroup: PathBuf,
    /// The pod's network namespace.
    pub netns: PathBuf,
    pub hostname: String,
    /// The pod's `/etc/hosts` and `/etc/resolv.conf`, as the lab writes them.
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The manifest's command (or the image's entrypoint) and arguments.
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directories and files mounted read-only at their own paths (the pod's volumes,
    /// which the arguments name by their host paths).
    pub volumes: Vec<PathBuf>,
}

impl AppRun {
    /// The cgroup `--cgroup-parent` names: the container's, relative to the cgroup v2
    /// mount. runc (cgroupfs) makes the same path in the v2 hierarchy and, on a hybrid
    /// machine, in each v1 controller's ([`remove_v1_cgroups`] removes those).
    pub fn cgroup_parent(&self) -> Result<String, LabError> {
        let mount = weft_host::mounts::cgroup2_mount()?;
        let relative = self.cgroup.strip_prefix(&mount).map_err(|_| {
            LabError::Invalid(format!(
                "{} is not below the cgroup v2 mount {}",
                self.cgroup.display(),
                mount.display()
            ))
        })?;
        Ok(format!("/{}", relative.display()))
    }

    /// `podman run …`: the arguments and the container's name.
    pub fn args(&self) -> Result<(Vec<String>, String), LabError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}{}-{}-{}",
            pod_container_prefix(&self.lab),
            self.stem,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--replace",
            "--name",
            &name,
            "--runtime",
            OCI_RUNTIME,
            "--log-driver",
            "passthrough",
            "--network",
            &format!("ns:{}", self.netns.display()),
            "--hostname",
            &self.hostname,
            // The pod's cgroup subtree, where the agent's capture is attached.
            "--cgroup-manager",
            "cgroupfs",
            "--cgroup-parent",
            &self.cgroup_parent()?,
            "--ulimit",
            &ulimit(&limits, "Max open files", "nofile", NOFILE_CEILING),
            "--ulimit",
            &ulimit(&limits, "Max processes", "nproc", NPROC_CEILING),
            "--volume",
            &format!("{}:/etc/hosts:ro", self.hosts.display()),
            "--volume",
            &format!("{}:/etc/resolv.conf:ro", self.resolv_conf.display()),
            "--env",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "--label",
            &format!("weft-lab={}", self.lab),
            "--entrypoint",
            &self.program,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        for (key, value) in &self.env {
            args.push("--env".into());
            args.push(format!("{key}={value}"));
        }
        for volume in &self.volumes {
            args.push("--volume".into());
            args.push(format!("{}:{}:ro", volume.display(), volume.display()));
        }
        args.push(self.image.clone());
        args.extend(self.args.iter().cloned());
        Ok((args, name))
    }
}

/// Removes the directories runc made for lab `lab` in the cgroup v1 controllers' hierarchies
/// (`<controller>/weft-lab/<lab>`), deepest first; those stay when runc's containers are gone.
/// Tries again for a while: a killed process leaves its cgroups a moment after it died.
pub fn remove_v1_cgroups(lab: &str) -> Result<(), LabError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match remove_v1_cgroups_once(lab) {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn remove_v1_cgroups_once(lab: &str) -> Result<(), LabError> {
    for dir in v1_cgroups(lab) {
        remove_dirs(&dir)?;
    }
    Ok(())
}

/// The directories of lab `lab` in the cgroup v1 controllers' hierarchies, on a hybrid
/// machine (cgroup v2 at `/sys/fs/cgroup/unified`).
pub fn v1_cgroups(lab: &str) -> Vec<PathBuf> {
    let (Ok(v2), Ok(labs)) = (
        weft_host::mounts::cgroup2_mount(),
        crate::cgroup::labs_root(),
    ) else {
        return Vec::new();
    };
    let Ok(relative) = labs.join(lab).strip_prefix(&v2).map(Path::to_path_buf) else {
        return Vec::new();
    };
    let Some(base) = v2.parent().filter(|_| v2.ends_with("unified")) else {
        return Vec::new(); // cgroup v2 only: no v1 controllers.
    };
    let Ok(controllers) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    controllers
        .filter_map(Result::ok)
        .map(|c| c.path())
        .filter(|c| *c != v2)
        .map(|c| c.join(&relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

fn remove_dirs(dir: &Path) -> Result<(), LabError> {
    let entries =
        std::fs::read_dir(dir).map_err(LabError::io(format!("reading {}", dir.display())))?;
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dirs(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).map_err(LabError::io(format!("removing cgroup {}", dir.display())))
}

/// Waits (at most 60 s) until the container `name`, which `podman run` (`child`) is
/// starting, runs; an error if `podman run` ends first.
pub fn wait_running(name: &str, child: &mut std::process::Child) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let running = run(
            "podman",
            &[
                "container",
                "inspect",
                "--format",
                "{{.State.Running}}",
                name,
            ],
        )
        .is_ok_and(|out| out.trim() == "true");
        if running {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("podman run {name} ended ({status}) before it ran"));
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            return Err(format!("container {name} not running after 60 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The lab's application containers, running or not, by name.
pub fn pod_containers(lab: &str) -> Vec<String> {
    containers_named(&pod_container_prefix(lab))
}

/// Whether podman is installed (labs without containers do not need it).
fn podman_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("podman").is_file()))
}

/// The lab's agent containers, running or not, by name.
pub fn lab_containers(lab: &str) -> Vec<String> {
    containers_named(&agent_container_prefix(lab))
}

/// The containers whose names start with `prefix`, running or not.
fn containers_named(prefix: &str) -> Vec<String> {
    if !podman_installed() {
        return Vec::new();
    }
    let filter = format!("name=^{prefix}");
    run(
        "podman",
        &["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"],
    )
    .map(|out| {
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    })
    .map(|mut names| {
        names.sort();
        names
    })
    .unwrap_or_default()
}

/// The containers of the agent of `node`, running or not.
pub fn node_containers(lab: &str, node: &str) -> Vec<String> {
    let prefix = format!("{}{node}-", agent_container_prefix(lab));
    lab_containers(lab)
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Removes the lab's agent and application containers (killed at once: the lab is going
/// away). The cgroup v1 directories runc made for them go once their last process (conmon,
/// in the pod's cgroup v2 tree) is gone: [`remove_v1_cgroups`].
pub fn remove_lab_containers(lab: &str) -> Result<(), LabError> {
    let mut names = lab_containers(lab);
    names.extend(pod_containers(lab));
    if names.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "--force", "--time", "0"];
    args.extend(names.iter().map(String::as_str));
    run("podman", &args).map(drop)
}

/// Writes podman's configuration for the lab's containers ([`containers_conf`]).
pub fn write_containers_conf(paths: &LabPaths) -> Result<(), LabError> {
    crate::records::write(&containers_conf(paths), CONTAINERS_CONF)
}

/// Sends SIGKILL to the container `name`, as a crash would.
pub fn kill(name: &str) -> Result<(), LabError> {
    run("podman", &["kill", "--signal", "KILL", name]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_limits_come_from_proc_self_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             96367                96367                processes \n\
                      Max open files            20000                20000                files     \n\
                      Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(hard_limit(limits, "Max open files"), Some(20000));
        assert_eq!(hard_limit(limits, "Max processes"), Some(96367));
        assert_eq!(hard_limit(limits, "Max locked memory"), None);
        assert_eq!(
            ulimit(limits, "Max open files", "nofile", NOFILE_CEILING),
            "nofile=20000:20000"
        );
        assert_eq!(
            ulimit(limits, "Max processes", "nproc", NPROC_CEILING),
            "nproc=32768:32768"
        );
        assert_eq!(
            ulimit("", "Max open files", "nofile", NOFILE_CEILING),
            "nofile=1048576:1048576"
        );
    }

    fn two_node_plan() -> Plan {
        let options = crate::plan::LabOptions::new("ctr").nodes(2);
        Plan::build(&options, &crate::manifest::Manifests::default()).expect("plan")
    }

    /// The DaemonSet's container in `deploy/base/agent.yaml`.
    fn daemonset_container() -> serde_yaml::Value {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/agent.yaml");
        let text = std::fs::read_to_string(&file).expect("deploy/base/agent.yaml");
        let daemonset: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        daemonset["spec"]["template"]["spec"]["containers"][0].clone()
    }

    #[test]
    fn the_lab_gives_the_agent_the_daemonsets_environment_and_mounts() {
        let container = daemonset_container();
        let template: Vec<(String, Option<String>)> = container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().expect("name").to_string(),
                    e["value"].as_str().map(String::from),
                )
            })
            .collect();
        let plan = two_node_plan();
        let paths = LabPaths::new(&plan.lab);
        let node = &plan.nodes[0];
        let lab = agent_environment(&plan, &paths, node, "info");
        let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let mut expected: Vec<String> = template.iter().map(|(k, _)| k.clone()).collect();
        expected.extend(LAB_ONLY_ENVIRONMENT.iter().map(|s| s.to_string()));
        assert_eq!(
            names(&lab),
            expected,
            "the same variables, in the same order"
        );
        // Where the template gives a path or a fixed value, the lab gives the same one,
        // except the node's own paths (pins, sockets), which the lab keeps per node.
        let per_node = [
            "WEFT_CA_ADDRESS",
            "WEFT_BPF_PIN_ROOT",
            "WEFT_HANDOFF_SOCKET",
            "WEFT_CNI_SOCKET",
        ];
        for (key, value) in &template {
            let Some(value) = value else { continue };
            if per_node.contains(&key.as_str()) || key == "RUST_LOG" {
                continue;
            }
            let ours = lab.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            assert_eq!(ours, Some(value), "{key}");
        }
        let mount_paths: Vec<PathBuf> = container["volumeMounts"]
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .map(|m| PathBuf::from(m["mountPath"].as_str().expect("mountPath")))
            .collect();
        let ours: Vec<PathBuf> = agent_mounts(&paths, &node.name)
            .into_iter()
            .map(|m| m.container)
            .collect();
        for path in &mount_paths {
            // /var/run/weft holds the sockets, which the lab keeps per node at its paths.
            if path == Path::new("/var/run/weft") {
                continue;
            }
            let covered = ours.iter().any(|o| o == path)
                || (path == Path::new("/var/run/secrets/tokens")
                    && ours.contains(&PathBuf::from(TOKEN_FILE)));
            assert!(covered, "the template mounts {}", path.display());
        }
    }

    #[test]
    fn an_application_container_runs_in_the_pods_namespace_and_cgroup() {
        let Ok(mount) = weft_host::mounts::cgroup2_mount() else {
            return; // No cgroup v2 here: nothing to place a container in.
        };
        let run = AppRun {
            lab: "ctr".into(),
            stem: "mesh-server-app".into(),
            image: "localhost/weft-testapp:dev".into(),
            cgroup: mount.join("weft-lab/ctr/pods/mesh-server/app"),
            netns: PathBuf::from("/run/netns/wl-ctr-mesh-server"),
            hostname: "server".into(),
            hosts: PathBuf::from("/run/weft-lab/ctr/pods/mesh-server/hosts"),
            resolv_conf: PathBuf::from("/run/weft-lab/ctr/pods/mesh-server/resolv.conf"),
            program: "weft-testapp".into(),
            args: vec!["serve".into(), "--http-port".into(), "8080".into()],
            env: vec![("POD_NAME".into(), "server".into())],
            volumes: Vec::new(),
        };
        let (args, name) = run.args().expect("args");
        assert!(name.starts_with("wl-ctr-pod-mesh-server-app-"), "{name}");
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(after("--runtime").as_deref(), Some("runc"));
        assert_eq!(
            after("--network").as_deref(),
            Some("ns:/run/netns/wl-ctr-mesh-server")
        );
        assert_eq!(after("--cgroup-manager").as_deref(), Some("cgroupfs"));
        assert_eq!(
            after("--cgroup-parent").as_deref(),
            Some("/weft-lab/ctr/pods/mesh-server/app")
        );
        assert_eq!(after("--entrypoint").as_deref(), Some("weft-testapp"));
        assert!(args.iter().any(|a| a.starts_with("nofile=")));
        assert!(args.iter().any(|a| a.starts_with("nproc=")));
        assert!(args.contains(&"/run/weft-lab/ctr/pods/mesh-server/hosts:/etc/hosts:ro".into()));
        assert!(args.contains(&"POD_NAME=server".into()));
        let image = args.iter().position(|a| a == "localhost/weft-testapp:dev");
        assert_eq!(
            image.map(|i| &args[i + 1..]),
            Some(&["serve".to_string(), "--http-port".into(), "8080".into()][..])
        );
    }

    #[test]
    fn the_run_has_the_templates_security_context() {
        let container = daemonset_container();
        let added: Vec<&str> = container["securityContext"]["capabilities"]["add"]
            .as_sequence()
            .expect("capabilities")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        let plan = two_node_plan();
        let paths = LabPaths::new(&plan.lab);
        let (args, name) = agent_run_args(
            &plan,
            &paths,
            &plan.nodes[0],
            "localhost/weft-agent:dev",
            "info",
            &[],
        );
        assert!(name.starts_with("wl-ctr-agent-node-1-"), "{name}");
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(after("--cap-add"), Some(added.join(",")));
        assert_eq!(after("--cap-drop").as_deref(), Some("ALL"));
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert!(args.iter().any(|a| a == "--read-only"));
        assert_eq!(after("--runtime").as_deref(), Some("runc"));
        assert_eq!(after("--memory").as_deref(), Some("1g"));
        assert_eq!(
            container["resources"]["limits"]["memory"].as_str(),
            Some("1Gi")
        );
        assert!(args.contains(&"--network=ns:/run/netns/wl-ctr-node-1".to_string()));
        assert_eq!(
            args.last().map(String::as_str),
            Some("localhost/weft-agent:dev")
        );
    }
}
