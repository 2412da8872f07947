//! weftctl: weft's command-line tool.
#![forbid(unsafe_code)]
mod analyze;
mod crds;
mod graph;
mod inspect;
mod validate;
mod waypoint;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weftctl", version, about = "weft's command-line tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Inspect(inspect::InspectCommand),
    /// Check Kubernetes and Istio manifests the way weft will before it applies them.
    /// Exits non-zero if any object would be refused.
    Validate {
        /// Files or directories (searched recursively for .yaml, .yml, .json).
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// The cluster's DNS domain, for resolving short hosts in routes.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
        /// Where the ingress gateway runs and reads the Secrets its Gateways' servers name
        /// (`credentialName`): a credential missing among the files' Secrets of that
        /// namespace is warned about.
        #[arg(long, default_value = "istio-system")]
        gateway_namespace: String,
    },
    /// What `istioctl analyze` reports, for weft: the objects weft would refuse, warn about or
    /// that look like mistakes, each with istioctl's code (IST0101, …) or weft's own
    /// (WEFT0001, …), over files and directories or a running agent's configuration. Exits
    /// 79 when a message reaches --failure-threshold (Error by default).
    Analyze(analyze::AnalyzeArgs),
    /// Write the CustomResourceDefinitions of the Istio kinds weft reads.
    Crds {
        /// Directory to write one file per CRD into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
    /// Print (or write) the conformance table: every field of every Istio and Gateway API
    /// kind weft reads, supported, partial or unsupported (warned or refused), as Markdown.
    Conformance {
        /// The file to write (the repository keeps it as docs/CONFORMANCE.md).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Draw the service graph (workloads, services, waypoints; request rate, 5xx rate and
    /// mTLS on the edges, TCP byte rates) from Prometheus or the agents' and waypoints'
    /// metrics, as SVG or DOT.
    Graph(graph::GraphArgs),
    /// Waypoints: L7 proxies for a namespace's services or workloads.
    Waypoint {
        #[command(subcommand)]
        command: WaypointCommand,
    },
}

#[derive(Subcommand)]
enum WaypointCommand {
    /// Print the Gateway that declares a waypoint (as Istio users write it) and the
    /// Deployment, Service, ServiceAccount and ClusterRoleBinding that run weft-waypoint
    /// for it (what weft-ca's controller makes of the Gateway), for `kubectl apply -f -`.
    Generate {
        /// The waypoint's name (also its Service's and ServiceAccount's).
        #[arg(default_value = "waypoint")]
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// What traffic it takes (`istio.io/waypoint-for`).
        #[arg(long = "for", value_enum, default_value_t)]
        traffic: waypoint::TrafficType,
        #[arg(long, default_value_t = waypoint::default_image())]
        image: String,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// The mesh's root certificate (PEM), published in the namespace as the ConfigMap
        /// weft-trust-bundle; without it that ConfigMap must already be there.
        #[arg(long, conflicts_with = "gateway_only")]
        trust_bundle: Option<PathBuf>,
        /// Only the Gateway, as `istioctl waypoint generate` prints it: where weft-ca's
        /// waypoint controller runs (deploy/base), it makes the rest.
        #[arg(long)]
        gateway_only: bool,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Inspect(command) => inspect::run(command),
        Command::Validate {
            paths,
            cluster_domain,
            gateway_namespace,
        } => {
            let settings = weft_config::translate::MeshSettings {
                cluster_domain,
                secrets_namespace: Some(gateway_namespace),
                ..Default::default()
            };
            let report = validate::check(&paths, &settings);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            report.print(&mut out)?;
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Analyze(args) => analyze::run(args),
        Command::Graph(args) => {
            graph::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out } => {
            crds::write(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance { out } => {
            let text = weft_config::conformance::markdown();
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Waypoint {
            command:
                WaypointCommand::Generate {
                    name,
                    namespace,
                    traffic,
                    image,
                    trust_domain,
                    trust_bundle,
                    gateway_only,
                },
        } => {
            let trust_bundle = trust_bundle
                .as_deref()
                .map(waypoint::read_trust_bundle)
                .transpose()?;
            print!(
                "{}",
                waypoint::generate(&waypoint::Waypoint {
                    name,
                    namespace,
                    traffic,
                    image,
                    trust_domain,
                    trust_bundle,
                    gateway_only,
                })?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
