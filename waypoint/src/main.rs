//! weft-waypoint: one per waypoint Gateway. Terminates HBONE on 15008 with the waypoint's
//! own SPIFFE identity, applies the L7 rules of what is bound to it, and forwards over
//! HBONE with the same identity.
//!
//! With `--mode ingress`, an ingress gateway instead (`weft_waypoint::ingress`): it listens
//! where the Istio Gateways selecting its pod say, and sends what their VirtualServices
//! route into the mesh over HBONE with its own identity.
#![forbid(unsafe_code)]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use weft_config::source::{AGENT_WATCHED, INGRESS_WATCHED, KubeSourceConfig, PodScope, start};
use weft_config::tracer::Tracer;
use weft_config::translate::hosts::MeshSettings;
use weft_core::ca::CaClientFiles;
use weft_core::hbone::{HbonePool, HboneServer, HboneServerConfig, PoolConfig};
use weft_core::identity::{Identity, IdentityManager, ManagerConfig};
use weft_core::lifecycle::{Draining, Shutdown, drain};
use weft_waypoint::context::WaypointContext;
use weft_waypoint::forward::endpoints::Reach;
use weft_waypoint::{inbound, ingress, readiness};

/// What the process is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// A waypoint: HBONE in on `--listen`, for what is bound to its Gateway.
    #[default]
    Waypoint,
    /// An ingress gateway: listeners from the Istio Gateways selecting its pod.
    Ingress,
}

#[derive(Debug, Parser)]
#[command(name = "weft-waypoint", version, about)]
struct Args {
    #[arg(long, env = "WEFT_MODE", value_enum, default_value_t)]
    mode: Mode,
    /// The waypoint's Gateway (gateway.networking.k8s.io) name; an ingress gateway's name
    /// (its Deployment's, `istio-ingressgateway`), which Gateway API policies attach to.
    #[arg(long, env = "WEFT_WAYPOINT_NAME")]
    name: String,
    /// The pod (the downward API's `metadata.name`): an ingress gateway's labels are what
    /// Gateways' selectors select; its locality and labels are the proxy's for locality
    /// load balancing.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The node the pod runs on (the downward API's `spec.nodeName`): its topology labels are
    /// the proxy's locality for locality load balancing, unless the pod's own
    /// `istio-locality` label says otherwise.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The service account whose identity the waypoint proves; Istio names it after the
    /// Gateway.
    #[arg(long, env = "POD_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(flatten)]
    ca: CaClientFiles,
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// HBONE's listener. On `0.0.0.0` the waypoint also listens on `[::]` (IPv6 only) when
    /// its pod has IPv6: an agent reaches a dual-stack waypoint in the family of the
    /// connection it carries.
    #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:15008")]
    listen: SocketAddr,
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Prometheus scrapes Istio's standard metrics here (`/metrics`, `/stats/prometheus`).
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// OTLP/gRPC collector taking the spans of sampled requests (e.g.
    /// http://otel-collector:4317) instead of the mesh config's tracing provider.
    #[arg(long, env = "WEFT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// After SIGTERM, seconds to go on serving new connections as usual (readiness answers
    /// 503) while the endpoint's removal reaches the agents.
    #[arg(long, env = "WEFT_DRAIN_DELAY", default_value_t = 5)]
    drain_delay: u64,
    /// Then, seconds at most for open connections to end (after a GOAWAY on each) before
    /// the waypoint exits; delay and drain fit in terminationGracePeriodSeconds.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value_t = 20)]
    drain_timeout: u64,
    /// Whether an ingress gateway reads the `kubernetes.io/tls` Secrets of its namespace (for
    /// TLS servers). The controller's ingress gateways read none this way
    /// (`--tls-secrets false`): only those `--tls-secret` names.
    #[arg(long, env = "WEFT_TLS_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    tls_secrets: bool,
    /// A Secret an ingress gateway reads by name, `namespace/name` (repeat or separate by
    /// commas), with a GET every 10 s and never a list, so a Role naming it is all the RBAC
    /// needed: what the controller gives the gateway of a Gateway API Gateway with HTTPS
    /// listeners (the Secrets of their `tls.certificateRefs`). When given, these are the
    /// only Secrets read, whatever `--tls-secrets` says.
    #[arg(long = "tls-secret", env = "WEFT_TLS_SECRET", value_delimiter = ',', value_parser = parse_secret_name)]
    tls_secret: Vec<(String, String)>,
    /// How often the keys of a RequestAuthentication's `jwksUri` are fetched again (Go
    /// duration; Istio's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, 20m by default).
    #[arg(long, env = "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL", default_value = "20m",
          value_parser = weft_waypoint::http::authn::parse_interval)]
    jwks_refresh_interval: Duration,
    /// The resolvers ServiceEntry hosts of resolution DNS are looked up with (IP addresses,
    /// port 53; repeat or separate by commas), as the agent's flag. Default: the
    /// nameservers of the waypoint's /etc/resolv.conf.
    #[arg(
        long = "dns-upstream",
        env = "WEFT_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    dns_upstream: Vec<std::net::IpAddr>,
}

/// `namespace/name` of a Secret.
fn parse_secret_name(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_string(), name.to_string()))
        }
        _ => Err(format!("{text:?}: expected namespace/name of a Secret")),
    }
}

fn main() -> anyhow::Result<()> {
    weft_core::logging::init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-waypoint")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::listen().context("installing the SIGTERM and SIGINT handlers")?;
    let ingress = args.mode == Mode::Ingress;
    let settings = MeshSettings {
        trust_domain: args.trust_domain.clone(),
        // An ingress gateway reads the TLS Secrets of its namespace, and so can tell a
        // missing credential.
        secrets_namespace: (ingress && args.tls_secrets && args.tls_secret.is_empty())
            .then(|| args.namespace.clone()),
        // It applies the VirtualServices and DestinationRules exported to its namespace.
        proxy_namespace: Some(args.namespace.clone()),
        ..MeshSettings::default()
    };
    // Without --config-dir, the Kubernetes API: every pod of the cluster (endpoints
    // anywhere); an ingress gateway also its namespace's TLS Secrets.
    let kinds = if ingress {
        INGRESS_WATCHED
            .into_iter()
            .filter(|k| {
                args.tls_secrets
                    || !args.tls_secret.is_empty()
                    || *k != weft_config::api::Kind::Secret
            })
            .collect()
    } else {
        AGENT_WATCHED.into()
    };
    let (registry, _source) = start(
        settings,
        args.config_dir.as_deref(),
        KubeSourceConfig {
            kinds,
            pods: PodScope::Cluster,
            secrets_namespace: args.namespace.clone(),
            secret_names: args.tls_secret.clone(),
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
    let identities =
        IdentityManager::with_trust(Arc::new(issuer), ManagerConfig::default(), trust.clone());
    let service_account = args.service_account.clone().unwrap_or(args.name.clone());
    let identity = Identity::new(&args.trust_domain, &args.namespace, &service_account)
        .context("the waypoint's identity")?;
    // The first certificate before listening: a waypoint that cannot prove who it is
    // should not look ready.
    tokio::time::timeout(Duration::from_secs(60), identities.fetch(&identity))
        .await
        .context("timed out asking the CA for the waypoint's certificate")?
        .with_context(|| format!("obtaining a certificate for {identity}"))?;
    info!(%identity, "certificate obtained");

    let pool = HbonePool::new(identities.clone(), trust.clone(), PoolConfig::default());
    let metrics = weft_core::metrics::Metrics::new();
    // Istio's waypoints and gateways are its `proxy` component.
    metrics.set_build("proxy", env!("CARGO_PKG_VERSION"));
    // Spans go where the mesh config's tracing provider says; `--otlp-endpoint` overrides.
    let tracer = Arc::new(Tracer::new(
        format!("{}.{}", args.name, args.namespace),
        vec![(
            "k8s.gateway.name".to_string(),
            format!("{}/{}", args.namespace, args.name),
        )],
        args.otlp_endpoint.clone(),
    ));
    let mut context = WaypointContext::new(
        args.name.clone(),
        args.namespace.clone(),
        identity.clone(),
        registry,
        pool,
        metrics.clone(),
        tracer,
    );
    context.jwks = weft_waypoint::jwks::JwksCache::new(args.jwks_refresh_interval);
    // OTLP access log records say who sent them, as the spans do.
    let mut resource = vec![
        ("service.name".to_string(), "weft-waypoint".to_string()),
        (
            "k8s.gateway.name".to_string(),
            format!("{}/{}", args.namespace, args.name),
        ),
    ];
    if let Some(node) = &args.node_name {
        resource.push(("k8s.node.name".to_string(), node.clone()));
    }
    context.access_log.set_resource(resource);
    context.whereabouts.pod = args.pod_name.clone();
    context.whereabouts.node = args.node_name.clone();
    context.dns = Arc::new(weft_core::dns::Upstream::configured(&args.dns_upstream));
    if ingress {
        context.reach = Reach::ThroughWaypoint;
        let context = Arc::new(context);
        return run_ingress(args, context, metrics, shutdown).await;
    }
    let context = Arc::new(context);
    let draining = context.draining.clone();
    let served = identity.clone();
    let handler_context = context.clone();
    let server = HboneServer::new(
        identities,
        trust,
        move |_local: SocketAddr, _sni: Option<&str>| Some(served.clone()),
        move |request| inbound::admit(request, handler_context.clone()),
        HboneServerConfig::default(),
    );
    let listeners = hbone_listeners(args.listen)?;
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    info!(listen = %addrs.join(","), waypoint = %format!("{}/{}", args.namespace, args.name), "serving HBONE");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(readiness::serve(args.readiness_addr, draining.clone()));
    let metrics_addr = args.metrics_addr;
    tasks.spawn(async move {
        weft_core::metrics::serve_metrics(metrics_addr, metrics)
            .await
            .with_context(|| format!("serving metrics on {metrics_addr}"))
    });
    let serving = server.clone();
    let accepting = tokio::spawn(async move {
        let mut each = tokio::task::JoinSet::new();
        for listener in listeners {
            let serving = serving.clone();
            each.spawn(async move { serving.serve(listener).await });
        }
        while each.join_next().await.is_some() {}
    });
    tokio::select! {
        () = shutdown.requested() => {}
        Some(ended) = tasks.join_next() => {
            return ended.context("a task panicked")?.context("a listener stopped");
        }
    }
    stop_gracefully(&server, accepting, &draining, &args).await;
    Ok(())
}

/// The ingress gateway: listeners from the Gateways selecting the pod, readiness and
/// metrics, and the same graceful stop as a waypoint's.
async fn run_ingress(
    args: Args,
    context: Arc<WaypointContext>,
    metrics: Arc<weft_core::metrics::Metrics>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pod = args.pod_name.clone().context(
        "an ingress gateway needs its pod's name (--pod-name, or POD_NAME from the downward API)",
    )?;
    let me = ingress::config::Identity {
        namespace: args.namespace.clone(),
        pod,
    };
    let draining = context.draining.clone();
    let gateway = ingress::Ingress::start(context, me).await;
    info!(gateway = %format!("{}/{}", args.namespace, args.name), "serving as an ingress gateway");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(readiness::serve(args.readiness_addr, draining.clone()));
    let metrics_addr = args.metrics_addr;
    tasks.spawn(async move {
        weft_core::metrics::serve_metrics(metrics_addr, metrics)
            .await
            .with_context(|| format!("serving metrics on {metrics_addr}"))
    });
    tokio::select! {
        () = shutdown.requested() => {}
        Some(ended) = tasks.join_next() => {
            return ended.context("a task panicked")?.context("a listener stopped");
        }
    }
    draining.start();
    info!(delay_s = args.drain_delay, "draining: readiness now 503");
    tokio::time::sleep(Duration::from_secs(args.drain_delay)).await;
    gateway.stop_accepting();
    drain(
        || gateway.open_connections(),
        Duration::from_secs(args.drain_timeout),
    )
    .await;
    Ok(())
}

/// Stops without cutting what is in flight: readiness goes 503 at once so the endpoint is
/// withdrawn, and the HTTP connections inside tunnels ask their clients to reconnect
/// (`Connection: close` on HTTP/1.1 responses, GOAWAY on HTTP/2) so idle keep-alive
/// connections do not hold the waypoint until the drain time is up; new connections are
/// still served for the drain delay (agents that have not heard yet), then accepting stops,
/// every HBONE connection gets a GOAWAY (its open streams run on), and the waypoint exits
/// when they have ended or the drain time is up.
async fn stop_gracefully(
    server: &HboneServer,
    accepting: tokio::task::JoinHandle<()>,
    draining: &Draining,
    args: &Args,
) {
    draining.start();
    info!(delay_s = args.drain_delay, "draining: readiness now 503");
    tokio::time::sleep(Duration::from_secs(args.drain_delay)).await;
    accepting.abort();
    server.retire();
    drain(
        || server.open_connections(),
        Duration::from_secs(args.drain_timeout),
    )
    .await;
}

/// HBONE's listeners: `listen`, and beside an unspecified IPv4 address the same port on
/// `[::]` (IPv6 only) when the pod has IPv6 — a pod without it keeps the IPv4 listener
/// alone.
fn hbone_listeners(listen: SocketAddr) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let bind = |addr: SocketAddr| -> anyhow::Result<tokio::net::TcpListener> {
        let std_listener = weft_host::netns_sockets::tcp_listener(addr)
            .with_context(|| format!("listening on {addr}"))?;
        tokio::net::TcpListener::from_std(std_listener)
            .with_context(|| format!("registering the listener on {addr}"))
    };
    let mut listeners = vec![bind(listen)?];
    if listen.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
        let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, listen.port()));
        match bind(any6) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                info!(error = %format!("{error:#}"), "no IPv6 listener: the pod has no IPv6")
            }
        }
    }
    Ok(listeners)
}
