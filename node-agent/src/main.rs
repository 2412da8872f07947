//! weft-agent: one per node. Finds the node's mesh pods, captures their traffic with eBPF
//! programs attached to each pod, and carries it between nodes through HBONE (mutual TLS
//! with each pod's SPIFFE identity).
mod admin;
mod capture;
mod ebpf;
mod mesh;
mod pods;
mod preflight;
mod proxy;
mod telemetry;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tracing::{error, info, warn};
use weft_config::registry::Registry;
use weft_config::source::{KubeSourceConfig, PodScope, start};
use weft_config::translate::hosts::MeshSettings;
use weft_core::ca::CaClientFiles;
use weft_core::hbone::{HbonePool, PoolConfig};
use weft_core::identity::{Identity, IdentityManager, ManagerConfig};

use crate::capture::enrollment::{Enrollment, PodToEnroll};
use crate::capture::exclusions;
use crate::mesh::Mesh;
use crate::pods::locator::{FileLocator, KubeletLocator, PodLocator};
use crate::proxy::records::ConnectionLog;

#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about)]
struct Args {
    /// This node's name, as in pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Directory of Kubernetes YAML to read the cluster's objects from (reloaded on change).
    /// Without it, the agent watches the Kubernetes API (in-cluster credentials or
    /// KUBECONFIG).
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// JSON file mapping pod UIDs to their network namespace and cgroup (written by the lab).
    /// Without it, pods are found the kubelet's way under the cgroup v2 root and `--proc-root`.
    #[arg(long, env = "WEFT_POD_LOCATIONS")]
    pod_locations: Option<PathBuf>,
    /// The host's /proc (a DaemonSet mounts it, e.g. at /host/proc).
    #[arg(long, env = "WEFT_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    #[command(flatten)]
    ca: CaClientFiles,
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime asked of the CA for workload certificates (rotated at about half of it).
    #[arg(long, env = "WEFT_CERT_LIFETIME", value_parser = humantime_secs, default_value = "86400")]
    cert_lifetime: Duration,
    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = admin::readiness::DEFAULT_ADDR)]
    readiness_addr: SocketAddr,
    /// Admin endpoint (`GET /` lists its endpoints; `weftctl` reads it).
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = admin::server::DEFAULT_ADDR)]
    admin_addr: SocketAddr,
    /// Where the agent pins its eBPF maps and links (on bpffs).
    #[arg(long, env = "WEFT_BPF_PIN_ROOT", default_value = "/sys/fs/bpf/weft")]
    bpf_pin_root: PathBuf,
    /// Prometheus metrics with Istio's names (`GET /metrics`, `GET /stats/prometheus`).
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// OTLP/gRPC collector (`http://host:4317`) to export a span per proxied connection
    /// to; no tracing without it.
    #[arg(long, env = "WEFT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Istio's cluster id, reported as `source_cluster`/`destination_cluster`.
    #[arg(long, env = "CLUSTER_ID", default_value = weft_core::metrics::DEFAULT_CLUSTER_ID)]
    cluster_id: String,
}

/// Seconds, as a plain number (`--cert-lifetime 3600`).
fn humantime_secs(text: &str) -> Result<Duration, String> {
    let seconds: u64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds == 0 {
        return Err("a certificate lifetime of 0 s cannot be rotated".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// How often enrollment is reconciled with the registry and the pods' locations, besides
/// every registry change.
const RESYNC: Duration = Duration::from_secs(1);
/// Connections kept for the admin endpoint.
const CONNECTION_LOG: usize = 4096;

fn main() -> anyhow::Result<()> {
    weft_core::logging::init();
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
    let settings = MeshSettings {
        trust_domain: args.trust_domain.clone(),
        ..MeshSettings::default()
    };
    // Without --config-dir, the Kubernetes API: addressing needs every pod of the cluster
    // (destinations on other nodes).
    let (registry, _source) = start(
        settings,
        args.config_dir.as_deref(),
        KubeSourceConfig {
            pods: PodScope::Cluster,
            ..KubeSourceConfig::default()
        },
    )
    .await
    .context("reading the cluster's objects (from --config-dir, else the Kubernetes API)")?;

    let (trust, issuer) = args.ca.load()?;
    let identities = IdentityManager::new(
        Arc::new(issuer),
        ManagerConfig {
            requested_validity: args.cert_lifetime,
            ..ManagerConfig::default()
        },
    );
    let pool = HbonePool::new(identities.clone(), trust.clone(), PoolConfig::default());
    let mesh = Arc::new(Mesh {
        registry: registry.clone(),
        identities,
        trust,
        pool,
        log: ConnectionLog::new(CONNECTION_LOG),
        telemetry: telemetry::Telemetry {
            metrics: weft_core::metrics::Metrics::new(),
            spans: span_exporter(&args)?,
            cluster: args.cluster_id.clone(),
        },
    });

    let loaded = ebpf::loader::load(&args.bpf_pin_root)?;
    info!(pins = %args.bpf_pin_root.display(), "eBPF programs loaded");
    let enrollment = Arc::new(Mutex::new(Enrollment::new(loaded, mesh.clone())));
    let kubelet = KubeletLocator::new(cgroup2, args.proc_root.clone());
    resync(&args, &registry, &kubelet, &enrollment);

    let readiness = admin::readiness::Readiness::default();
    readiness.set_ready();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(telemetry::serve(
        args.metrics_addr,
        mesh.telemetry.metrics.clone(),
    ));
    servers.spawn(admin::readiness::serve(
        args.readiness_addr,
        readiness.clone(),
    ));
    servers.spawn(admin::server::serve(
        args.admin_addr,
        admin::server::Admin {
            node: args.node.clone(),
            enrollment: enrollment.clone(),
            mesh: mesh.clone(),
            readiness,
            started: std::time::Instant::now(),
        },
    ));

    let mut changes = registry.subscribe();
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
            changed = changes.changed() => {
                if changed.is_err() {
                    bail!("the configuration registry stopped");
                }
                resync(&args, &registry, &kubelet, &enrollment);
            }
            _ = ticker.tick() => resync(&args, &registry, &kubelet, &enrollment),
        }
    }
}

/// The OTLP exporter when `--otlp-endpoint` is set, else one that discards.
fn span_exporter(args: &Args) -> anyhow::Result<weft_core::telemetry::SpanExporter> {
    let Some(endpoint) = &args.otlp_endpoint else {
        return Ok(weft_core::telemetry::SpanExporter::disabled());
    };
    let mut config = weft_core::telemetry::OtlpConfig::new(endpoint.clone(), "weft-agent");
    config
        .resource
        .push(("k8s.node.name".to_string(), args.node.clone()));
    info!(%endpoint, "exporting spans over OTLP");
    weft_core::telemetry::SpanExporter::start(config).context("setting up the OTLP exporter")
}

/// Reads which pods should be captured and makes it so.
fn resync(
    args: &Args,
    registry: &Registry,
    kubelet: &KubeletLocator,
    enrollment: &Mutex<Enrollment>,
) {
    match desired_pods(args, registry, kubelet) {
        Ok(desired) => enrollment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconcile(&desired),
        // The last good state keeps serving.
        Err(e) => {
            error!(error = %format!("{e:#}"), "reading the pods' locations failed; keeping the current enrollment")
        }
    }
}

fn desired_pods(
    args: &Args,
    registry: &Registry,
    kubelet: &KubeletLocator,
) -> anyhow::Result<Vec<PodToEnroll>> {
    let lab_records = match &args.pod_locations {
        Some(path) => Some(FileLocator::load(path)?),
        None => None,
    };
    let locator: &dyn PodLocator = match &lab_records {
        Some(records) => records,
        None => kubelet,
    };
    let snapshot = registry.load();
    let mut desired = Vec::new();
    for workload in snapshot.workloads_on_node(&args.node).filter(|w| w.in_mesh) {
        let key = format!("{}/{}", workload.namespace, workload.name);
        let Some(ip) = workload.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }) else {
            continue;
        };
        let Some(location) = locator.locate(&workload.uid) else {
            warn!(pod = %key, uid = %workload.uid, "mesh pod has no known location; not enrolled");
            continue;
        };
        let identity: Identity = match workload.identity.parse() {
            Ok(identity) => identity,
            Err(e) => {
                error!(pod = %key, identity = %workload.identity, error = %e, "the pod's identity is not a SPIFFE id; not enrolled");
                continue;
            }
        };
        let exclusions = exclusions::from_annotations(&workload.annotations).unwrap_or_else(|e| {
            // Capturing more than asked is the safe side: nothing bypasses policy.
            error!(pod = %key, error = %e, "ignoring the pod's exclusions");
            exclusions::Exclusions::default()
        });
        desired.push(PodToEnroll {
            uid: workload.uid.to_string(),
            key,
            ip,
            identity,
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
