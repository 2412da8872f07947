//! weft-ca: weft's control plane. Signs workload certificates for node agents and workloads
//! (waypoints) and, with the Kubernetes API, runs the waypoint controller
//! (`weft_ca::controller`): a Gateway of class `istio-waypoint` gets its ServiceAccount,
//! Deployment and Service, as istiod's controller makes them for Istio.
//!
//! Speaks Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate` over gRPC with
//! TLS, so agents (weft's, or anything that talks to istiod's CA) can use it. A node agent,
//! authenticated by its bearer token, may only obtain the identities (service accounts) of
//! pods scheduled on it, as the cluster's objects say. With TokenReview, any other service
//! account's pod-bound token may obtain that service account's own identity, and no other.
#![forbid(unsafe_code)]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Parser};
use tracing::{error, info, warn};
use weft_ca::controller::ControllerConfig;
use weft_ca::token_review::TokenReviewAuthenticator;
use weft_config::source::{KubeSourceConfig, start};
use weft_config::translate::hosts::MeshSettings;
use weft_core::ca::{
    Authenticator, CaConfig, CaServer, CaService, CertificateAuthority, NodeTokenAuthenticator,
};
use weft_core::identity::Identity;

#[derive(Debug, Parser)]
#[command(name = "weft-ca", version, about)]
struct Args {
    /// Where to serve gRPC (istiod's CA port is 15012).
    #[arg(long, env = "WEFT_CA_LISTEN", default_value = "0.0.0.0:15012")]
    listen: SocketAddr,
    /// The CA's certificate (PEM; may carry intermediates, root last), as a Secret mounts it.
    #[arg(long, env = "WEFT_CA_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The CA's private key (PKCS#8 PEM).
    #[arg(long, env = "WEFT_CA_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Without --cert/--key: keep the generated root here (root-cert.pem, and root-key.pem
    /// with mode 0600), made at the first start and read back at every later one, so a
    /// restart signs under the same root. The directory must be the CA's alone (refused if
    /// other users may write it or read the key). Without it the root lives in memory only.
    #[arg(long, env = "WEFT_CA_ROOT_DIR", conflicts_with = "cert")]
    root_dir: Option<PathBuf>,
    /// Write the root certificate (not the key) here for agents to trust.
    #[arg(long, env = "WEFT_CA_WRITE_ROOT")]
    write_root: Option<PathBuf>,
    /// JSON object of node name → bearer token: the nodes allowed to ask (the lab's
    /// credentials). Without it, callers present their service-account token, checked with
    /// a TokenReview against the Kubernetes API: the agents' (below) for their nodes' pods,
    /// any other for its own identity.
    #[arg(long, env = "WEFT_CA_NODE_TOKENS")]
    node_tokens: Option<PathBuf>,
    /// With TokenReview: the service accounts of node agents, `namespace/name`. Their tokens
    /// obtain the identities of their nodes' pods; other service accounts' tokens only
    /// their own identity.
    #[arg(
        long = "agent-service-account",
        env = "WEFT_CA_AGENT_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = "weft-system/weft-agent"
    )]
    agent_service_accounts: Vec<String>,
    /// With TokenReview: the audiences a caller's token must be made for, one at least
    /// (istiod's, so a token projected for istiod works here). Empty (`""`): the API
    /// server's own audiences, those of the kubelet's default token.
    #[arg(
        long = "token-audience",
        env = "WEFT_CA_TOKEN_AUDIENCES",
        value_delimiter = ',',
        default_value = weft_ca::token_review::DEFAULT_AUDIENCE
    )]
    token_audiences: Vec<String>,
    /// Directory of the cluster's objects (which pod runs on which node). Without it, the
    /// Kubernetes API is watched.
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Names and addresses agents dial the CA by (its serving certificate's SANs).
    #[arg(
        long = "name",
        env = "WEFT_CA_NAMES",
        value_delimiter = ',',
        default_value = "weft-ca.weft-system.svc"
    )]
    names: Vec<String>,
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Run the waypoint controller (with the Kubernetes API only, not with --config-dir):
    /// each Gateway of class istio-waypoint or weft-waypoint gets a ServiceAccount, a
    /// Deployment of weft-waypoint and a Service, owned by the Gateway.
    #[arg(
        long,
        env = "WEFT_WAYPOINT_CONTROLLER",
        default_value_t = true,
        action = ArgAction::Set
    )]
    waypoint_controller: bool,
    /// The weft-waypoint image the controller runs for waypoints.
    #[arg(
        long,
        env = "WEFT_WAYPOINT_IMAGE",
        default_value_t = weft_controller::waypoint::default_image()
    )]
    waypoint_image: String,
    /// Where waypoints ask this CA for their certificate (`host:port`: its Service); they
    /// check its certificate against the first --name.
    #[arg(
        long,
        env = "WEFT_WAYPOINT_CA_ADDRESS",
        default_value = weft_controller::waypoint::CA_ADDRESS
    )]
    waypoint_ca_address: String,
    /// Write the status of HTTPRoutes and GRPCRoutes (with the Kubernetes API only): each
    /// parent weft judges gets Accepted, ResolvedRefs and, for a Service, ResolvedWaypoints.
    /// The CA then also watches Namespaces, Services, Gateways, the routes and
    /// ReferenceGrants.
    #[arg(
        long,
        env = "WEFT_ROUTE_STATUS",
        default_value_t = true,
        action = ArgAction::Set
    )]
    route_status: bool,
}

fn main() -> anyhow::Result<()> {
    weft_core::logging::init();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = CaConfig {
        trust_domain: args.trust_domain.clone(),
        ..CaConfig::default()
    };
    let ca = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => CertificateAuthority::from_pem_files(cert, key, config)
            .with_context(|| {
                format!(
                    "loading the CA from {} and {}",
                    cert.display(),
                    key.display()
                )
            })?,
        _ => match &args.root_dir {
            Some(dir) => {
                let (ca, origin) = weft_core::ca::root_dir::load_or_generate(dir, config)
                    .context("keeping the root in --root-dir")?;
                info!(dir = %dir.display(), ?origin, "root kept in --root-dir");
                ca
            }
            None => {
                let ca = CertificateAuthority::generate(config).context("generating a root")?;
                warn!(
                    "the generated root lives in this process only: after a restart the CA \
                     signs under a new root the mesh does not trust (keep it with --root-dir, \
                     or give --cert/--key)"
                );
                ca
            }
        },
    };
    let root_pem = ca.trust_bundle().to_pem();
    info!(root = %root_fingerprint(&ca), "signing under this root (SHA-256)");
    if let Some(path) = &args.write_root {
        write_atomically(path, &root_pem)
            .with_context(|| format!("writing the root certificate to {}", path.display()))?;
    }

    let settings = MeshSettings {
        trust_domain: args.trust_domain.clone(),
        ..MeshSettings::default()
    };
    // Without --config-dir, the Kubernetes API, pods only (all nodes'): the CA needs a pod's
    // node and service account, nothing else, and its ClusterRole grants no more — plus
    // what resolving routes needs when it writes their status.
    let route_status = args.config_dir.is_none() && args.route_status;
    let mut kinds: std::collections::BTreeSet<_> = weft_config::source::CA_WATCHED.into();
    if route_status {
        kinds.extend(weft_ca::route_status::WATCHED);
    }
    let (registry, source) = start(
        settings,
        args.config_dir.as_deref(),
        KubeSourceConfig {
            kinds,
            ..KubeSourceConfig::default()
        },
    )
    .await
    .context("reading the cluster's objects (from --config-dir, else the Kubernetes API)")?;
    let authenticator: Arc<dyn Authenticator> = match &args.node_tokens {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading node tokens from {}", path.display()))?;
            let tokens: BTreeMap<String, String> =
                serde_json::from_str(&text).with_context(|| {
                    format!("{} must be a JSON object of node → token", path.display())
                })?;
            if tokens.is_empty() {
                bail!(
                    "{} names no node: no agent could obtain a certificate",
                    path.display()
                );
            }
            Arc::new(NodeTokenAuthenticator::new(tokens))
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API for TokenReview")?;
            let agents = args
                .agent_service_accounts
                .iter()
                .map(|sa| format!("system:serviceaccount:{}", sa.replacen('/', ":", 1)))
                .collect();
            Arc::new(TokenReviewAuthenticator::new(
                client,
                agents,
                registry.clone(),
                args.trust_domain.clone(),
                args.token_audiences
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
            ))
        }
    };
    if args.config_dir.is_none() && args.waypoint_controller {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API for the waypoint controller")?;
        let config = ControllerConfig {
            settings: weft_controller::waypoint::Settings {
                image: args.waypoint_image.clone(),
                ca_address: args.waypoint_ca_address.clone(),
                ca_server_name: args
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| weft_controller::waypoint::CA_SERVER_NAME.to_string()),
                trust_domain: args.trust_domain.clone(),
            },
            trust_bundle: Some(root_pem.clone()),
            // The listeners' attachedRoutes, from the routes the status writer resolves.
            routes: route_status.then(|| weft_ca::controller::AttachedRoutes(registry.clone())),
            ..ControllerConfig::default()
        };
        tokio::spawn(async move {
            if let Err(e) = weft_ca::controller::run(client, config).await {
                error!(error = %e, "the waypoint controller stopped");
            }
        });
    }
    if route_status {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API for the routes' status")?;
        tokio::spawn(weft_ca::route_status::run(
            client,
            registry.clone(),
            weft_ca::route_status::RouteStatusConfig::default(),
        ));
    }
    let view = registry.clone();
    // A node may obtain an identity only while a pod with that service account is scheduled
    // on it: a compromised node cannot mint identities of workloads it does not run.
    let may_issue = move |node: &str, identity: &Identity| {
        let wanted = identity.to_string();
        view.load()
            .workloads_on_node(node)
            .any(|workload| *workload.identity == *wanted)
    };
    let service = CaService::new(Arc::new(ca), authenticator, Arc::new(may_issue));
    let server = CaServer::tls(service, args.names.clone(), Duration::from_secs(24 * 3600))
        .context("issuing the CA's serving certificate")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    info!(listen = %args.listen, names = ?args.names, "weft-ca ready");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving gRPC")?;
    drop(source);
    Ok(())
}

fn root_fingerprint(ca: &CertificateAuthority) -> String {
    ca.trust_bundle()
        .roots()
        .iter()
        .map(|r| r.fingerprint_sha256.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Readers (agents starting at the same time) never see a half-written file.
fn write_atomically(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}
