//! weft-agent: one per node. Finds the node's mesh pods, captures their traffic with eBPF
//! programs attached to each pod, and proxies it.
mod admin;
mod capture;
mod ebpf;
mod pods;
mod preflight;
mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info, warn};

use crate::capture::enrollment::{Enrollment, PodToEnroll};
use crate::capture::exclusions;
use crate::pods::locator::{FileLocator, KubeletLocator, PodLocator};
use crate::pods::selection::mesh_pods_on_node;
use crate::proxy::records::ConnectionLog;

#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about)]
struct Args {
    /// This node's name, as in pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Directory of Kubernetes YAML to read the cluster's objects from (re-read every second).
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: PathBuf,
    /// JSON file mapping pod UIDs to their network namespace and cgroup (written by the lab).
    /// Without it, pods are found the kubelet's way under the cgroup v2 root and `--proc-root`.
    #[arg(long, env = "WEFT_POD_LOCATIONS")]
    pod_locations: Option<PathBuf>,
    /// The host's /proc (a DaemonSet mounts it, e.g. at /host/proc).
    #[arg(long, env = "WEFT_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = admin::readiness::DEFAULT_ADDR)]
    readiness_addr: SocketAddr,
    /// Admin endpoint (`GET /pods`, `GET /connections`).
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = admin::server::DEFAULT_ADDR)]
    admin_addr: SocketAddr,
    /// Where the agent pins its eBPF maps and links (on bpffs).
    #[arg(long, env = "WEFT_BPF_PIN_ROOT", default_value = "/sys/fs/bpf/weft")]
    bpf_pin_root: PathBuf,
}

/// How often the configuration is re-read until the registry's watchers replace polling.
const RESYNC: Duration = Duration::from_secs(1);
/// Connections kept for the admin endpoint.
const CONNECTION_LOG: usize = 4096;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let facts = preflight::check().context("start-up check failed")?;
    info!(cgroup2 = %facts.cgroup2.display(), bpffs_mounted = facts.bpffs_mounted_by_us, "host checks passed");
    // Two workers: the proxy is the hot path, and nodes running weft are rarely idle.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, facts.cgroup2))
}

async fn run(args: Args, cgroup2: PathBuf) -> anyhow::Result<()> {
    let loaded = ebpf::loader::load(&args.bpf_pin_root)?;
    info!(pins = %args.bpf_pin_root.display(), "eBPF programs loaded");
    let log = ConnectionLog::new(CONNECTION_LOG);
    let enrollment = Arc::new(Mutex::new(Enrollment::new(loaded, log.clone())));
    let kubelet = KubeletLocator::new(cgroup2, args.proc_root.clone());
    resync(&args, &kubelet, &enrollment);

    let readiness = admin::readiness::Readiness::default();
    readiness.set_ready();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(admin::readiness::serve(args.readiness_addr, readiness));
    servers.spawn(admin::server::serve(
        args.admin_addr,
        enrollment.clone(),
        log,
    ));

    let mut ticker = tokio::time::interval(RESYNC);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = shutdown_signal() => {
                result?;
                info!("shutting down; capture stays attached for the next agent");
                return Ok(());
            }
            Some(ended) = servers.join_next() => {
                let result = ended.context("an endpoint task panicked")?;
                return result.context("an endpoint stopped");
            }
            _ = ticker.tick() => resync(&args, &kubelet, &enrollment),
        }
    }
}

/// Reads which pods should be captured and makes it so.
fn resync(args: &Args, kubelet: &KubeletLocator, enrollment: &Mutex<Enrollment>) {
    match desired_pods(args, kubelet) {
        Ok(desired) => enrollment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconcile(&desired),
        // The last good state keeps serving.
        Err(e) => {
            error!(error = %format!("{e:#}"), "reading the configuration failed; keeping the current enrollment")
        }
    }
}

fn desired_pods(args: &Args, kubelet: &KubeletLocator) -> anyhow::Result<Vec<PodToEnroll>> {
    let lab_records = match &args.pod_locations {
        Some(path) => Some(FileLocator::load(path)?),
        None => None,
    };
    let locator: &dyn PodLocator = match &lab_records {
        Some(records) => records,
        None => kubelet,
    };
    let mut desired = Vec::new();
    for pod in mesh_pods_on_node(&args.config_dir, &args.node)? {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let Some(ip) = pod.ip else {
            warn!(pod = %key, "mesh pod has no IP yet; not enrolled");
            continue;
        };
        let Some(location) = locator.locate(&pod.uid) else {
            warn!(pod = %key, uid = %pod.uid, "mesh pod has no known location; not enrolled");
            continue;
        };
        let exclusions = exclusions::from_annotations(&pod.annotations).unwrap_or_else(|e| {
            // Capturing more than asked is the safe side: nothing bypasses policy.
            error!(pod = %key, error = %e, "ignoring the pod's exclusions");
            exclusions::Exclusions::default()
        });
        desired.push(PodToEnroll {
            uid: pod.uid,
            key,
            ip,
            location,
            exclusions,
        });
    }
    Ok(desired)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {},
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
    }
    Ok(())
}
