//! weft-waypoint: one per waypoint Gateway. Terminates HBONE on 15008 with the waypoint's
//! own SPIFFE identity, applies the L7 rules of what is bound to it, and forwards over
//! HBONE with the same identity.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use weft_config::registry::Registry;
use weft_config::source::{DirSource, KubeSource, KubeSourceConfig, PodScope, spawn};
use weft_config::translate::hosts::MeshSettings;
use weft_core::ca::{CaClientTls, GrpcIssuer, GrpcIssuerConfig};
use weft_core::hbone::{HbonePool, HboneServer, HboneServerConfig, PoolConfig};
use weft_core::identity::{Identity, IdentityManager, ManagerConfig, TrustBundle};
use weft_waypoint::context::WaypointContext;
use weft_waypoint::{inbound, readiness};

#[derive(Debug, Parser)]
#[command(name = "weft-waypoint", version, about)]
struct Args {
    /// The waypoint's Gateway (gateway.networking.k8s.io) name.
    #[arg(long, env = "WEFT_WAYPOINT_NAME")]
    name: String,
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The service account whose identity the waypoint proves; Istio names it after the
    /// Gateway.
    #[arg(long, env = "POD_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[arg(long, env = "WEFT_CA_ADDRESS")]
    ca_address: String,
    #[arg(
        long,
        env = "WEFT_CA_SERVER_NAME",
        default_value = "weft-ca.weft-system.svc"
    )]
    ca_server_name: String,
    #[arg(long, env = "WEFT_CA_TOKEN_FILE")]
    ca_token_file: PathBuf,
    #[arg(long, env = "WEFT_TRUST_BUNDLE")]
    trust_bundle: PathBuf,
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:15008")]
    listen: SocketAddr,
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Prometheus scrapes Istio's standard metrics here (`/metrics`, `/stats/prometheus`).
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-waypoint")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let registry = Registry::new(MeshSettings {
        trust_domain: args.trust_domain.clone(),
        ..MeshSettings::default()
    });
    let source = match &args.config_dir {
        Some(dir) => spawn(&registry, DirSource::new(dir)),
        None => {
            let kube = KubeSource::try_default()
                .await
                .context("connecting to the Kubernetes API (no --config-dir given)")?
                .with_config(KubeSourceConfig {
                    pods: PodScope::Cluster,
                    ..KubeSourceConfig::default()
                });
            spawn(&registry, kube)
        }
    };
    source
        .ready()
        .await
        .context("reading the cluster's objects")?;

    let trust_pem = std::fs::read_to_string(&args.trust_bundle)
        .with_context(|| format!("reading the trust bundle {}", args.trust_bundle.display()))?;
    let trust = TrustBundle::from_pem(&trust_pem)
        .with_context(|| format!("parsing the trust bundle {}", args.trust_bundle.display()))?;
    let token = std::fs::read_to_string(&args.ca_token_file)
        .with_context(|| format!("reading the CA token {}", args.ca_token_file.display()))?;
    let issuer = GrpcIssuer::new(GrpcIssuerConfig {
        tls: Some(CaClientTls {
            trust: trust.clone(),
            server_name: args.ca_server_name.clone(),
        }),
        token: Some(token.trim().to_string()),
        ..GrpcIssuerConfig::new(args.ca_address.clone())
    })
    .context("setting up the CA client")?;
    let identities = IdentityManager::new(Arc::new(issuer), ManagerConfig::default());
    let service_account = args.service_account.clone().unwrap_or(args.name.clone());
    let identity: Identity = format!(
        "spiffe://{}/ns/{}/sa/{}",
        args.trust_domain, args.namespace, service_account
    )
    .parse()
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
    let context = Arc::new(WaypointContext::new(
        args.name.clone(),
        args.namespace.clone(),
        identity.clone(),
        registry,
        pool,
        metrics.clone(),
    ));
    let served = identity.clone();
    let handler_context = context.clone();
    let server = HboneServer::new(
        identities,
        trust,
        move |_local: SocketAddr, _sni: Option<&str>| Some(served.clone()),
        move |request| inbound::admit(request, handler_context.clone()),
        HboneServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    info!(listen = %args.listen, waypoint = %format!("{}/{}", args.namespace, args.name), "serving HBONE");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(readiness::serve(args.readiness_addr));
    let metrics_addr = args.metrics_addr;
    tasks.spawn(async move {
        weft_core::metrics::serve_metrics(metrics_addr, metrics)
            .await
            .with_context(|| format!("serving metrics on {metrics_addr}"))
    });
    tasks.spawn(async move {
        server.serve(listener).await;
        Ok(())
    });
    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.context("waiting for a signal")?;
            info!("shutting down");
            Ok(())
        }
        Some(ended) = tasks.join_next() => {
            ended.context("a task panicked")?.context("a listener stopped")
        }
    }
}
