//! `weftctl status|workloads|services|policies|certs|config-dump`: what the agent of a node
//! knows, holds and enforces, read from its admin endpoint (the questions
//! `istioctl ztunnel-config` answers for ztunnel).
mod args;
mod certs;
pub(crate) mod client;
mod config_dump;
mod policies;
mod services;
mod status;
mod table;
mod workloads;

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

pub use self::args::DEFAULT_ADMIN;
use self::args::{AdminArgs, Output, serialized};

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Whether the node's agent answers and is ready; its version, node, enrolled pods,
    /// certificates expiring soon and refused objects. Exits non-zero when it cannot be
    /// reached.
    Status(AdminArgs),
    /// The workloads the agent knows (cluster-wide), their identities, and whether this
    /// agent captures them.
    Workloads {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this namespace's.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only those scheduled on this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Services with their VIPs, ports, ready endpoints and waypoint.
    Services {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// AuthorizationPolicies and PeerAuthentications, and what is in force on each mesh pod
    /// of the node.
    Policies(AdminArgs),
    /// The workload certificates the agent holds: identity, serial, expiry, chain (never
    /// keys).
    Certs(AdminArgs),
    /// The agent's whole configuration: workloads, services, routes, waypoints, policies,
    /// and the objects it refused with the field and the reason. The table is a summary;
    /// `-o json` or `-o yaml` prints everything.
    ConfigDump(AdminArgs),
}

/// Errors are printed here rather than returned from `main`, where RUST_BACKTRACE would
/// bury the one line that says what to check under a backtrace.
pub fn run(command: InspectCommand) -> anyhow::Result<ExitCode> {
    match text(command) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn text(command: InspectCommand) -> anyhow::Result<String> {
    Ok(match command {
        InspectCommand::Status(args) => status::run(&args)?,
        InspectCommand::Workloads {
            admin,
            namespace,
            node,
        } => {
            let mut value = client::get_json(&admin.admin, "/workloads")?;
            retain(&mut value, |w| {
                matches(w, "namespace", &namespace) && matches(w, "node", &node)
            });
            emit(admin.output, &value, workloads::render)?
        }
        InspectCommand::Services { admin, namespace } => {
            let mut value = client::get_json(&admin.admin, "/services")?;
            retain(&mut value, |s| matches(s, "namespace", &namespace));
            emit(admin.output, &value, services::render)?
        }
        InspectCommand::Policies(args) => {
            let value = client::get_json(&args.admin, "/policies")?;
            emit(args.output, &value, policies::render)?
        }
        InspectCommand::Certs(args) => {
            let value = client::get_json(&args.admin, "/certs")?;
            emit(args.output, &value, certs::render)?
        }
        InspectCommand::ConfigDump(args) => {
            let value = client::get_json(&args.admin, "/config_dump")?;
            emit(args.output, &value, config_dump::render)?
        }
    })
}

fn matches(item: &Value, field: &str, wanted: &Option<String>) -> bool {
    wanted
        .as_deref()
        .is_none_or(|wanted| item[field].as_str() == Some(wanted))
}

fn retain(value: &mut Value, keep: impl Fn(&Value) -> bool) {
    if let Value::Array(items) = value {
        items.retain(keep);
    }
}

/// The agent's JSON as it is for `-o json|yaml`, or the command's table.
fn emit(output: Output, value: &Value, table: fn(&Value) -> String) -> anyhow::Result<String> {
    match output {
        Output::Table => Ok(table(value)),
        _ => serialized(output, value),
    }
}
