//! `cargo xtask …`: everything from a fresh clone to a running mesh.
mod bench;
mod build;
mod chaos;
mod demo;
mod deny;
mod deploy_check;
mod docs_check;
mod fuzz;
mod images;
mod lab_cmd;
mod layers;
mod paths;
mod setup;
mod soak;
mod test_cmd;

use clap::{Parser, Subcommand};
use setup::For;

pub use self::paths::workspace_root;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "weft's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what this machine lacks: the pinned nightly with rust-src and bpf-linker, the
    /// Debian packages the lab and the tests drive, deploy-check's validator, cargo-deny. A
    /// no-op when everything is there. Every other command first installs what it needs.
    Setup {
        /// Only what one command needs (default: everything).
        #[arg(long = "for", value_enum)]
        command: Option<setup::For>,
    },
    /// Build every binary, the eBPF programs included.
    Build,
    /// Run every test: formatting, clippy, cargo deny (deny.toml), docs-check, unit tests
    /// and the privileged end-to-end tests.
    Test {
        /// Skip `cargo fmt --check`, clippy, cargo deny and docs-check.
        #[arg(long)]
        no_lint: bool,
        /// Skip the fuzz step (each fuzz target for a few seconds). It also does not run
        /// when cargo arguments narrow the run.
        #[arg(long)]
        no_fuzz: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// The main job: a two-node lab running a Bookinfo-like application in the mesh, with a
    /// waypoint for reviews, and a guided tour of Istio rules applied from
    /// examples/bookinfo/steps/ (routing, canary, faults, retries, authorization, metrics).
    Demo {
        /// Leave the lab running afterwards (take it down with `cargo xtask lab down demo`).
        #[arg(long)]
        keep: bool,
        /// The lab's name.
        #[arg(long, default_value = "demo")]
        name: String,
        /// Use the binaries already built (the e2e test of the demo runs inside cargo test).
        #[arg(long)]
        no_build: bool,
    },
    /// Build the container images of deploy/images/ with buildah, from scratch (no base
    /// image, no registry): the release binaries and the shared libraries they load, as
    /// `localhost/<image>:<tag>` in the local containers storage.
    Images {
        /// Which images (weft-agent, weft-ca, weft-waypoint, weftctl; default: all).
        names: Vec<String>,
        /// The images' tag.
        #[arg(long, default_value = "dev")]
        tag: String,
        /// From the debug binaries (`cargo xtask build`) instead of release builds.
        #[arg(long)]
        debug: bool,
    },
    /// Measure weft against baselines on the lab (tables, JSON and a chart in target/bench/).
    Bench {
        /// A shorter run (3 repetitions of 1.5 s) that finishes in a few minutes.
        #[arg(long)]
        quick: bool,
    },
    /// Kill the agent, the waypoint and the CA (SIGKILL) under load on the lab, and keep the
    /// CA away longer than a certificate lives: asserts what must hold, prints what was lost
    /// and how long until serving again (the README's chaos table).
    Chaos,
    /// Check deploy/ offline: CRDs up to date, every overlay and generated waypoint valid
    /// against Kubernetes' schemas. Part of `test`.
    DeployCheck,
    /// Run the fuzz targets of fuzz/ (cargo-fuzz, the pinned nightly): every parser reachable
    /// from the network or from configuration, each for a bounded time; reports executions
    /// per target and fails on a crash, naming its reproducer. `test` runs each briefly.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Only this target (default: all; `cargo fuzz list` in fuzz/ lists them).
        #[arg(long)]
        target: Option<String>,
    },
    /// The soak (`weft_lab::soak`): a lab under mixed traffic, route and pod churn,
    /// rotating certificates and an agent upgrade; the agents' and waypoint's RSS, fds and
    /// threads sampled and bounded. JSON report and SVG chart in target/soak/.
    Soak {
        /// How long (`30m`, `90s`, `1h`).
        #[arg(long, default_value = "30m", value_parser = soak::parse_duration)]
        duration: std::time::Duration,
        /// Where the report and chart go.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The lab's name.
        #[arg(long, default_value = "soak")]
        name: String,
    },
    /// Check that no module imports from a module that imports it (part of `test`).
    Layers,
    /// Check that every repository path named in docs/ARCHITECTURE.md and README.md exists
    /// (part of `test`).
    DocsCheck,
    /// The local cluster of network namespaces.
    Lab {
        #[command(subcommand)]
        command: lab_cmd::LabCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { command } => setup::run(command),
        Command::Build => {
            setup::run(Some(For::Build))?;
            build::binaries()
        }
        Command::Test {
            no_lint,
            no_fuzz,
            cargo_args,
        } => {
            setup::run(Some(For::Test))?;
            test_cmd::run(!no_lint, !no_fuzz && cargo_args.is_empty(), &cargo_args)
        }
        Command::Demo {
            keep,
            name,
            no_build,
        } => {
            if !no_build {
                setup::run(Some(For::Demo))?;
                build::binaries()?;
            }
            demo::run(demo::Options {
                keep,
                name,
                progress: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            })
        }
        Command::Images { names, tag, debug } => {
            setup::run(Some(For::Images))?;
            images::run(&images::Options { names, tag, debug })
        }
        Command::Bench { quick } => {
            setup::run(Some(For::Bench))?;
            bench::run(quick)
        }
        Command::Chaos => {
            setup::run(Some(For::Test))?;
            chaos::run()
        }
        // Needs neither root nor the eBPF toolchain.
        Command::DeployCheck => {
            setup::run(Some(For::DeployCheck))?;
            deploy_check::run()
        }
        Command::Fuzz { seconds, target } => {
            setup::run(Some(For::Fuzz))?;
            fuzz::run(&fuzz::Options { seconds, target })
        }
        Command::Soak {
            duration,
            out,
            name,
        } => {
            setup::run(Some(For::Lab))?;
            build::binaries()?;
            soak::run_soak(&soak::Options {
                duration,
                out,
                name,
            })
        }
        Command::Layers => layers::run(&workspace_root()),
        Command::DocsCheck => docs_check::run(&workspace_root()),
        Command::Lab { command } => {
            if command.needs_binaries() {
                setup::run(Some(For::Lab))?;
                build::binaries()?;
            }
            lab_cmd::run(command)
        }
    }
}
