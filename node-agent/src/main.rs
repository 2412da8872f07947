//! weft-agent: one per node. Finds the node's mesh pods, attaches weft's kernel programs to
//! them and (with the tunnel) carries their traffic.
mod admin;
mod ebpf;
mod pods;
mod preflight;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing::{info, warn};

use crate::ebpf::loader::Datapath;
use crate::pods::locator::{FileLocator, PodLocator};
use crate::pods::selection::mesh_pods_on_node;

#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about)]
struct Args {
    /// This node's name, as in pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Directory of Kubernetes YAML to read the cluster's objects from.
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: PathBuf,
    /// JSON file mapping pod UIDs to their network namespace and cgroup (written by the lab).
    #[arg(long, env = "WEFT_POD_LOCATIONS")]
    pod_locations: PathBuf,
    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = admin::readiness::DEFAULT_ADDR)]
    readiness_addr: std::net::SocketAddr,
    /// Where the agent pins its eBPF maps (on bpffs).
    #[arg(long, env = "WEFT_BPF_PIN_ROOT", default_value = "/sys/fs/bpf/weft")]
    bpf_pin_root: PathBuf,
}

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

    let mut datapath = Datapath::load(&args.bpf_pin_root)?;
    info!(pins = %datapath.pin_root().display(), "eBPF programs loaded");

    let locator = FileLocator::load(&args.pod_locations)?;
    for pod in mesh_pods_on_node(&args.config_dir, &args.node)? {
        let Some(location) = locator.locate(&pod.uid) else {
            warn!(pod = %format!("{}/{}", pod.namespace, pod.name), uid = %pod.uid, "mesh pod has no known location; not enrolled");
            continue;
        };
        let cgroup_id = datapath
            .enroll(&pod.uid, &location.cgroup)
            .with_context(|| format!("enrolling {}/{}", pod.namespace, pod.name))?;
        info!(pod = %format!("{}/{}", pod.namespace, pod.name), cgroup_id, "enrolled");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let readiness = admin::readiness::Readiness::default();
    readiness.set_ready();
    runtime.block_on(async {
        tokio::select! {
            result = admin::readiness::serve(args.readiness_addr, readiness) => result,
            result = shutdown_signal() => result,
        }
    })?;
    for (uid, stats) in datapath.stats() {
        info!(uid, connects = stats.connects, "pod counters at shutdown");
    }
    info!("shutting down");
    Ok(())
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
