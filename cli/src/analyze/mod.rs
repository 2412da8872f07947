//! `weftctl analyze`: what `istioctl analyze` does, for weft. Over files and directories it
//! runs `weftctl validate`'s checks (weft's own validation, the one judge) and names what
//! they find with istioctl's codes (`classify`), adding analyses of istioctl's that judge
//! nothing weft applies (`checks`); against a running agent it names the refusals and
//! warnings of its `/config_dump`.
mod checks;
mod classify;
pub mod message;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;
use weft_config::translate::MeshSettings;

use self::classify::Verdict;
use self::message::{Level, Message, ObjectName};
use crate::inspect::client;
use crate::validate;

/// The exit status when a message reaches `--failure-threshold` (istioctl's
/// `AnalyzerFoundIssues`).
pub const FOUND_ISSUES: u8 = 79;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Log,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    Info,
    Warning,
    Error,
}

impl Threshold {
    fn admits(self, level: Level) -> bool {
        let rank = |level: Level| match level {
            Level::Error => 2,
            Level::Warning => 1,
            Level::Info => 0,
        };
        let least = match self {
            Threshold::Info => Level::Info,
            Threshold::Warning => Level::Warning,
            Threshold::Error => Level::Error,
        };
        rank(level) >= rank(least)
    }
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories (searched recursively for .yaml, .yml, .json). Without them,
    /// what a running agent holds (`--admin`) or, with `--kube`, the Kubernetes API.
    #[arg(short = 'f', long = "filename")]
    pub paths: Vec<PathBuf>,
    /// The agent's admin endpoint, `host:port`, when neither files nor `--kube` are given.
    #[arg(long, env = "WEFT_ADMIN", default_value = crate::inspect::DEFAULT_ADMIN)]
    pub admin: String,
    /// Analyze what the Kubernetes API holds (the cluster of KUBECONFIG, or the one this
    /// runs in): one list of each kind weft reads, judged as the files are.
    #[arg(long, conflicts_with = "paths")]
    pub kube: bool,
    /// `log`: one line per message, as istioctl prints them; `json` and `yaml`: the
    /// messages as a list (level, code, name, object, field, text, origin).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
    /// The least level printed (istioctl's default: Warning).
    #[arg(long, value_enum, default_value = "warning")]
    pub output_threshold: Threshold,
    /// The least level that makes the exit status 79.
    #[arg(long, value_enum, default_value = "error")]
    pub failure_threshold: Threshold,
    /// The cluster's DNS domain, for resolving short hosts in routes.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Print the codes analyze reports, with what each means, and exit (istioctl's
    /// `--list-analyzers`).
    #[arg(long)]
    pub list_codes: bool,
    /// Where the ingress gateway reads the Secrets its Gateways' servers name.
    #[arg(long, default_value = "istio-system")]
    pub gateway_namespace: String,
}

/// Every message about the files, in the files' order, then those of the added analyses.
pub fn analyze_files(paths: &[PathBuf], settings: &MeshSettings) -> (Vec<Message>, usize) {
    judged(&validate::collect(paths, settings), settings)
}

/// Every message about an agent's `/config_dump`: its `refused` and `warnings`.
pub fn analyze_dump(dump: &Value) -> Vec<Message> {
    let mut messages = Vec::new();
    for (section, verdict) in [("refused", Verdict::Refused), ("warnings", Verdict::Warned)] {
        for entry in dump[section].as_array().into_iter().flatten() {
            let text = |key: &str| entry[key].as_str().unwrap_or_default().to_string();
            let object = ObjectName {
                kind: text("kind"),
                namespace: text("namespace"),
                name: text("name"),
            };
            let origin = entry["origin"].as_str().map(str::to_string);
            messages.push(classify::message(
                verdict,
                object,
                &text("field"),
                &text("reason"),
                origin,
            ));
        }
    }
    messages
}

/// Every message about the objects the Kubernetes API holds.
pub async fn analyze_cluster(
    client: &kube::Client,
    settings: &MeshSettings,
) -> anyhow::Result<(Vec<Message>, usize)> {
    let config = weft_config::source::kube::KubeSourceConfig {
        kinds: weft_config::api::Kind::ALL.into_iter().collect(),
        mesh_config_namespace: settings.root_namespace.clone(),
        secrets_namespace: settings.secrets_namespace.clone().unwrap_or_default(),
        ..Default::default()
    };
    let candidates = weft_config::source::kube::list_once(client, &config)
        .await
        .map_err(|e| anyhow::anyhow!(weft_config::source::error_chain(&e)))?;
    let checked = validate::judge(Vec::new(), candidates, settings);
    Ok(judged(&checked, settings))
}

fn judged(checked: &validate::Checked, settings: &MeshSettings) -> (Vec<Message>, usize) {
    let mut messages: Vec<Message> = checked.findings.iter().map(classify::finding).collect();
    messages.extend(checks::run(&checked.accepted, settings));
    (messages, checked.objects)
}

fn cluster(settings: &MeshSettings) -> anyhow::Result<(Vec<Message>, usize)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "Kubernetes client: {}",
                weft_config::source::error_chain(&e)
            )
        })?;
        analyze_cluster(&client, settings).await
    })
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    if args.list_codes {
        for code in message::ALL {
            println!("{}\t{}\t{}", code.code, code.name, code.meaning);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let settings = MeshSettings {
        cluster_domain: args.cluster_domain.clone(),
        secrets_namespace: Some(args.gateway_namespace.clone()),
        ..Default::default()
    };
    let (messages, what) = if args.kube {
        match cluster(&settings) {
            Ok((messages, objects)) => (messages, format!("{objects} objects of the cluster")),
            Err(e) => {
                eprintln!("Error: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else if args.paths.is_empty() {
        match client::get_json(&args.admin, "/config_dump") {
            Ok(dump) => (
                analyze_dump(&dump),
                format!("the configuration of the agent at {}", args.admin),
            ),
            Err(e) => {
                eprintln!("Error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        let (messages, objects) = analyze_files(&args.paths, &settings);
        (messages, format!("{objects} objects"))
    };
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| args.output_threshold.admits(m.level))
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print(&mut out, &shown, args.output, &what)?;
    let failed = messages
        .iter()
        .any(|m| args.failure_threshold.admits(m.level));
    Ok(if failed {
        ExitCode::from(FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    })
}

fn print(
    out: &mut impl Write,
    messages: &[&Message],
    format: Format,
    what: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(messages)?)?,
        Format::Yaml => write!(out, "{}", serde_yaml::to_string(messages)?)?,
        Format::Log if messages.is_empty() => writeln!(
            out,
            "\u{2714} No validation issues found when analyzing {what}."
        )?,
        Format::Log => {
            for message in messages {
                writeln!(out, "{message}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
