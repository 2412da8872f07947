//! weftctl: weft's command-line tool.
mod crds;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weftctl", version, about = "weft's command-line tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check Kubernetes and Istio manifests the way weft will before it applies them.
    /// Exits non-zero if any object would be refused.
    Validate {
        /// Files or directories (searched recursively for .yaml, .yml, .json).
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// The cluster's DNS domain, for resolving short hosts in routes.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
    /// Write the CustomResourceDefinitions of the Istio kinds weft reads.
    Crds {
        /// Directory to write one file per CRD into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Validate {
            paths,
            cluster_domain,
        } => {
            let settings = weft_config::translate::MeshSettings {
                cluster_domain,
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
        Command::Crds { out } => {
            crds::write(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
