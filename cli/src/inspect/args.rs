//! What every inspection command takes (the admin endpoint, the output format) and how
//! the agent's answer is printed whole.
use clap::{Args, ValueEnum};
use serde_json::Value;

/// Where the agent's admin listens: loopback of the node, so weftctl runs on the node (or
/// in its network namespace, or through a port-forward).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The agent's admin endpoint, `host:port`.
    #[arg(long, env = "WEFT_ADMIN", default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// `json` and `yaml` print the agent's answer whole.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub fn serialized(output: Output, value: &Value) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => serde_yaml::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}
