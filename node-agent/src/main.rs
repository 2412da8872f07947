//! weft-agent: one per node. Finds the node's mesh pods, captures their traffic with eBPF
//! programs attached to each pod, and carries it between nodes through HBONE (mutual TLS
//! with each pod's SPIFFE identity).
#![forbid(unsafe_code)]
mod admin;
mod capture;
mod cni;
mod dns;
mod ebpf;
mod ext_authz;
mod handoff;
mod mesh;
mod pods;
mod preflight;
mod proxy;
mod telemetry;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
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
use weft_core::lifecycle::Shutdown;
use weft_host::handoff::Inherited;

use crate::capture::enrollment::Enrollment;
use crate::cni::install::Installer;
use crate::cni::server::{CniContext, CniServer};
use crate::mesh::Mesh;
use crate::pods::locator::{KubeletLocator, Locators};
use crate::pods::sandboxes::Sandboxes;
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
    /// Unix socket where a new agent of this node takes the listening sockets over from
    /// the running one, so an upgrade loses no connection (root only; one per node).
    #[arg(long, env = "WEFT_HANDOFF_SOCKET", default_value = handoff::DEFAULT_SOCKET)]
    handoff_socket: PathBuf,
    /// After SIGTERM, how long open connections may run to their end before the agent
    /// exits (keep it under the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", value_parser = humantime_secs, default_value = "25")]
    drain_timeout: Duration,
    /// Unix socket where weft-cni, the chained CNI plugin, asks this agent to capture a pod
    /// before the pod starts (root only; the plugin is told this path in its entry).
    #[arg(long, env = "WEFT_CNI_SOCKET", default_value = weft_cni::protocol::DEFAULT_SOCKET)]
    cni_socket: PathBuf,
    /// The node's CNI configuration directory (/etc/cni/net.d, mounted): weft-cni is
    /// chained into the configuration the runtime uses, and put back when another
    /// installer rewrites it. Without it, weft-cni is not installed and pods are enrolled
    /// once running (their first connections may leave uncaptured).
    #[arg(long, env = "WEFT_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// The node's CNI binary directory (/opt/cni/bin, mounted), where weft-cni is copied.
    #[arg(long, env = "WEFT_CNI_BIN_DIR", requires = "cni_conf_dir")]
    cni_bin_dir: Option<PathBuf>,
    /// The weft-cni binary to install (default: `weft-cni` beside this agent's binary).
    #[arg(long, env = "WEFT_CNI_PLUGIN")]
    cni_plugin: Option<PathBuf>,
    /// On exit without a successor, take weft-cni out of the node's CNI configuration and
    /// remove its binary: set it before removing weft from the cluster. Without it the entry
    /// stays, and the node's new pods wait for an agent (none starts uncaptured).
    #[arg(long, env = "WEFT_CNI_UNINSTALL")]
    cni_uninstall: bool,
    /// Answer the enrolled pods' DNS (Istio's `ambient.dnsCapture`, on by default): their
    /// queries go to the agent's proxy in the pod, which answers Services and ServiceEntry
    /// hosts and forwards the rest. A pod's annotation `ambient.istio.io/dns-capture`
    /// ("true"/"false") overrides it.
    #[arg(long, env = "WEFT_DNS_CAPTURE", default_value_t = true, action = clap::ArgAction::Set)]
    dns_capture: bool,
    /// The resolvers the DNS proxy forwards to and ServiceEntry hosts of resolution DNS are
    /// looked up with (IP addresses, port 53; repeat for several). Default: the nameservers
    /// of the agent's /etc/resolv.conf (the cluster's DNS under `dnsPolicy:
    /// ClusterFirstWithHostNet`).
    #[arg(
        long = "dns-upstream",
        env = "WEFT_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    dns_upstream: Vec<std::net::IpAddr>,
    /// Connections between two pods this agent holds skip HBONE, TLS and HTTP/2: the agent
    /// knows both identities, applies the destination's policy, metrics and access log as
    /// an HBONE CONNECT would, and copies the bytes between the two sockets itself. On by
    /// default; `--same-node-fast-path=false` sends them over HBONE like any other.
    #[arg(long, env = "WEFT_SAME_NODE_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    same_node_fast_path: bool,
}

/// Seconds, as a plain number (`--cert-lifetime 3600`).
fn humantime_secs(text: &str) -> Result<Duration, String> {
    let seconds: u64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds == 0 {
        return Err("0 s is too short".into());
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
    let mut shutdown = Shutdown::listen().context("installing the SIGTERM and SIGINT handlers")?;
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

    // The trust bundle is watched (`_trust_watcher`): a rotated root reaches every new
    // handshake, and the CA client, without a restart.
    let weft_core::ca::CaClient {
        trust,
        issuer,
        watcher: _trust_watcher,
    } = args.ca.load()?;
    let identities = IdentityManager::with_trust(
        Arc::new(issuer),
        ManagerConfig {
            requested_validity: args.cert_lifetime,
            ..ManagerConfig::default()
        },
        trust.clone(),
    );
    let pool = HbonePool::new(identities.clone(), trust.clone(), PoolConfig::default());
    let dns = dns::upstream::Upstream::configured(&args.dns_upstream);
    info!(upstream = ?dns.servers(), capture = args.dns_capture, "DNS proxy");
    info!(on = args.same_node_fast_path, "same-node fast path");
    let mesh = Arc::new(Mesh {
        dns: Arc::new(dns),
        dns_capture: args.dns_capture,
        same_node_fast_path: args.same_node_fast_path,
        registry: registry.clone(),
        identities,
        trust,
        ext_authz: ext_authz::Providers::new(registry.clone(), pool.clone()),
        pool,
        log: ConnectionLog::new(CONNECTION_LOG),
        open: proxy::OpenConnections::default(),
        telemetry: {
            // The node agent plays Istio's `ztunnel` component.
            let metrics = weft_core::metrics::Metrics::new();
            metrics.set_build("ztunnel", env!("CARGO_PKG_VERSION"));
            let access_log = weft_core::access_log::AccessLog::new(metrics.access_log_dropped());
            // OTLP access log records say who sent them, as the spans do.
            access_log.set_resource(vec![
                ("service.name".to_string(), "weft-agent".to_string()),
                ("k8s.node.name".to_string(), args.node.clone()),
            ]);
            telemetry::Telemetry {
                access_log,
                metrics,
                // Spans go where the mesh config's tracing provider says;
                // `--otlp-endpoint` overrides.
                tracer: Arc::new(weft_config::tracer::Tracer::new(
                    "weft-agent",
                    vec![("k8s.node.name".to_string(), args.node.clone())],
                    args.otlp_endpoint.clone(),
                )),
                cluster: args.cluster_id.clone(),
            }
        },
    });

    let loaded = ebpf::loader::load(&args.bpf_pin_root)?;
    info!(pins = %args.bpf_pin_root.display(), "eBPF programs loaded");

    // A running agent of this node hands its listening sockets over; without one, fresh
    // listeners.
    let (mut inherited, acknowledge) = match weft_host::handoff::request(
        &args.handoff_socket,
        handoff::REQUEST_TIMEOUT,
    )
    .await
    {
        Ok(Some((inherited, acknowledge))) => {
            info!(
                sockets = inherited.len(),
                "taking over from the running agent"
            );
            (inherited, Some(acknowledge))
        }
        Ok(None) => (Inherited::empty(), None),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "no handoff from a running agent; starting afresh");
            (Inherited::empty(), None)
        }
    };
    let inherited_sockets = inherited.len();
    let (metrics_listener, metrics_held) =
        handoff::node_listener(&mut inherited, handoff::METRICS, args.metrics_addr)?;
    let (readiness_listener, readiness_held) =
        handoff::node_listener(&mut inherited, handoff::READINESS, args.readiness_addr)?;
    let (admin_listener, admin_held) =
        handoff::node_listener(&mut inherited, handoff::ADMIN, args.admin_addr)?;
    let node_held = [metrics_held, readiness_held, admin_held];

    let enrollment = Arc::new(Mutex::new(Enrollment::new(loaded, mesh.clone(), inherited)));
    let locators = Arc::new(match &args.pod_locations {
        Some(path) => Locators::File(path.clone()),
        None => Locators::Kubelet(KubeletLocator::new(cgroup2, args.proc_root.clone())),
    });
    let sandboxes = Arc::new(Sandboxes::default());
    let pods = NodePods {
        node: args.node.clone(),
        registry: registry.clone(),
        locators: locators.clone(),
        sandboxes: sandboxes.clone(),
    };
    pods.resync(&enrollment);

    let readiness = admin::readiness::Readiness::default();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(telemetry::serve(
        metrics_listener,
        mesh.telemetry.metrics.clone(),
    ));
    servers.spawn(admin::readiness::serve(
        readiness_listener,
        readiness.clone(),
    ));
    servers.spawn(admin::server::serve(
        admin_listener,
        admin::server::Admin {
            node: args.node.clone(),
            enrollment: enrollment.clone(),
            mesh: mesh.clone(),
            readiness: readiness.clone(),
            started: std::time::Instant::now(),
            inherited_sockets,
        },
    ));
    if let Some(acknowledge) = acknowledge {
        // The previous agent accepts until this acknowledgement; the first connections
        // here should not wait for the CA.
        let identities = lock(&enrollment).identities();
        certificates_of(&mesh, identities).await;
        match acknowledge.ack().await {
            Ok(()) => info!(
                sockets = inherited_sockets,
                "took over from the previous agent"
            ),
            Err(e) => warn!(error = %format!("{e:#}"), "acknowledging the handoff failed"),
        }
    }
    let unused = lock(&enrollment).release_unused_inherited();
    if unused > 0 {
        info!(
            sockets = unused,
            "closed inherited listeners of pods no longer enrolled"
        );
    }
    let successors =
        weft_host::handoff::HandoffListener::bind(&args.handoff_socket).with_context(|| {
            format!(
                "listening for a successor on {}",
                args.handoff_socket.display()
            )
        })?;
    // weft-cni: answered once this agent serves the node (a predecessor answers until the
    // handoff), then installed, so that a pod created from now on waits for its capture.
    let cni_server = CniServer::bind(&args.cni_socket)
        .with_context(|| format!("listening for weft-cni on {}", args.cni_socket.display()))?;
    servers.spawn(cni::server::serve(
        cni_server,
        Arc::new(CniContext {
            node: args.node.clone(),
            registry: registry.clone(),
            locators: locators.clone(),
            enrollment: enrollment.clone(),
            sandboxes: sandboxes.clone(),
        }),
    ));
    let installer = cni_installer(&args)?;
    if let Some(installer) = &installer {
        let first = installer.clone();
        match tokio::task::spawn_blocking(move || first.ensure()).await {
            Ok(Ok(pass)) => {
                info!(conf_dir = %installer.conf_dir.display(), ?pass, "weft-cni is chained into the node's CNI configuration")
            }
            Ok(Err(error)) => {
                warn!(error = %format!("{error:#}"), "installing weft-cni failed; trying again")
            }
            Err(error) => warn!(%error, "installing weft-cni panicked; trying again"),
        }
        servers.spawn(cni::install::keep(installer.clone()));
    }
    readiness.set_ready();

    let mut changes = registry.subscribe();
    let mut ticker = tokio::time::interval(RESYNC);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.requested() => {
                info!("shutting down: no longer accepting; capture stays attached for the next agent");
                // Closed, so a new agent starting meanwhile binds afresh at once.
                drop(successors);
                drop(node_held);
                servers.abort_all();
                lock(&enrollment).retire();
                if args.cni_uninstall
                    && let Some(installer) = &installer
                    && let Err(error) = installer.uninstall()
                {
                    warn!(error = %format!("{error:#}"), "uninstalling weft-cni failed");
                }
                drain_connections(&mesh, &enrollment, args.drain_timeout).await;
                return Ok(());
            }
            Some(ended) = servers.join_next() => {
                let result = ended.context("an endpoint task panicked")?;
                return result.context("an endpoint stopped");
            }
            pending = successors.next() => {
                let pending = match pending {
                    Ok(pending) => pending,
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "a handoff request failed");
                        continue;
                    }
                };
                // Second handles, so the enrollment is not locked while the successor
                // takes its time; the loop is paused meanwhile, so nothing changes.
                let mut held: Vec<(String, OwnedFd)> = Vec::new();
                {
                    let enrolled = lock(&enrollment);
                    let listeners = node_held
                        .iter()
                        .map(|(name, fd)| (name.as_str(), fd.as_fd()))
                        .chain(enrolled.listeners());
                    for (name, fd) in listeners {
                        match fd.try_clone_to_owned() {
                            Ok(owned) => held.push((name.to_string(), owned)),
                            Err(e) => warn!(name, error = %e, "cannot offer a listener"),
                        }
                    }
                }
                info!(sockets = held.len(), "a new agent asks for this node's listeners");
                match pending.offer(&handoff::offer_of(&held), handoff::OFFER_TIMEOUT).await {
                    Ok(true) => {
                        info!("the new agent serves this node; no longer accepting, draining");
                        drop(held);
                        readiness.set_not_ready();
                        servers.abort_all();
                        lock(&enrollment).retire();
                        drop(successors);
                        return retired(&mut shutdown, &mesh, &enrollment, args.drain_timeout).await;
                    }
                    Ok(false) => warn!("the new agent did not take over; serving on"),
                    Err(e) => warn!(error = %format!("{e:#}"), "handing over failed; serving on"),
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    bail!("the configuration registry stopped");
                }
                pods.resync(&enrollment);
            }
            _ = ticker.tick() => pods.resync(&enrollment),
        }
    }
}

fn lock(enrollment: &Mutex<Enrollment>) -> std::sync::MutexGuard<'_, Enrollment> {
    weft_core::sync::lock(enrollment)
}

/// After handing the node to a successor: open connections run on until SIGTERM (the
/// DaemonSet deletes this pod once the successor is ready; exiting earlier would only
/// get this container restarted), then for at most the drain time.
async fn retired(
    shutdown: &mut Shutdown,
    mesh: &Mesh,
    enrollment: &Mutex<Enrollment>,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    shutdown.requested().await;
    info!("shutting down after the handoff");
    drain_connections(mesh, enrollment, drain_timeout).await;
    Ok(())
}

async fn drain_connections(mesh: &Mesh, enrollment: &Mutex<Enrollment>, limit: Duration) {
    weft_core::lifecycle::drain(
        || mesh.open.count() + lock(enrollment).open_hbone_connections(),
        limit,
    )
    .await;
}

/// Waits (10 s at most) for the certificates of `identities`.
async fn certificates_of(mesh: &Mesh, identities: std::collections::BTreeSet<Identity>) {
    let mut fetches = tokio::task::JoinSet::new();
    for identity in identities {
        let manager = mesh.identities.clone();
        fetches.spawn(async move { manager.fetch(&identity).await.map(drop) });
    }
    let all = async { while fetches.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        warn!("some certificates are still on their way; taking over anyway");
    }
}

/// The agent's installer of weft-cni, when `--cni-conf-dir` is given.
fn cni_installer(args: &Args) -> anyhow::Result<Option<Arc<Installer>>> {
    let Some(conf_dir) = &args.cni_conf_dir else {
        if args.cni_uninstall {
            warn!(
                "--cni-uninstall has no effect without --cni-conf-dir: this agent installs no weft-cni"
            );
        }
        return Ok(None);
    };
    let plugin = match &args.cni_plugin {
        Some(plugin) => plugin.clone(),
        None => std::env::current_exe()
            .context("finding this agent's binary, beside which weft-cni is")?
            .with_file_name(weft_cni::spec::PLUGIN_TYPE),
    };
    if args.cni_bin_dir.is_some() && !plugin.is_file() {
        bail!(
            "the weft-cni binary to install, {}, is missing (--cni-plugin)",
            plugin.display()
        );
    }
    Ok(Some(Arc::new(Installer::new(
        conf_dir.clone(),
        args.cni_bin_dir.clone(),
        plugin,
        &args.cni_socket,
    ))))
}

/// Where the desired enrollment comes from.
struct NodePods {
    node: String,
    registry: Registry,
    locators: Arc<Locators>,
    sandboxes: Arc<Sandboxes>,
}

impl NodePods {
    /// Reads which pods should be captured and makes it so. The snapshot is read under the
    /// enrollment's lock: weft-cni enrolls under it too, after reading the registry, and a
    /// reconcile from an older snapshot would take that pod out again.
    fn resync(&self, enrollment: &Mutex<Enrollment>) {
        let mut enrollment = lock(enrollment);
        let snapshot = self.registry.load();
        let desired = self.locators.with(|locator| {
            capture::desired::desired(&snapshot, &self.node, locator, &self.sandboxes)
        });
        match desired {
            Ok(desired) => enrollment.reconcile(&desired),
            // The last good state keeps serving.
            Err(e) => {
                error!(error = %format!("{e:#}"), "reading the pods' locations failed; keeping the current enrollment")
            }
        }
    }
}
