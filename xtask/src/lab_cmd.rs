//! `cargo xtask lab …` and the demo built on it.
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use weft_lab::{Lab, LabOptions, Runtime};

use crate::build::bin_dir;
use crate::workspace_root;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build a lab from a directory of Kubernetes manifests and leave it running.
    Up {
        /// Directory of YAML (Namespaces, Pods, Deployments, Services, Istio resources).
        dir: PathBuf,
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Do not start a weft-agent per node (the cluster without the mesh).
        #[arg(long)]
        no_agents: bool,
    },
    /// Run a command inside a pod (`lab exec NAMESPACE/POD -- CMD…`) or in a node's network
    /// namespace, where its agent's admin listens (`lab exec node-1 -- weftctl status`).
    Exec {
        /// `NAMESPACE/POD`, or a node's name.
        pod: String,
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a lab's nodes, pods and services (all labs' names without one).
    Status {
        name: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything of a lab, also what a crashed `up` left. Idempotent.
    Down {
        #[arg(default_value = "lab")]
        name: String,
        /// Take down every lab on this machine.
        #[arg(long)]
        all: bool,
    },
}

impl LabCommand {
    pub fn needs_binaries(&self) -> bool {
        matches!(self, LabCommand::Up { .. })
    }
}

pub fn runtime(agents: bool) -> Runtime {
    let bins = bin_dir();
    Runtime {
        agent: agents.then(|| bins.join("weft-agent")),
        ca: agents.then(|| bins.join("weft-ca")),
        bin_dir: Some(bins),
        ..Runtime::default()
    }
}

pub fn run(command: LabCommand) -> anyhow::Result<()> {
    match command {
        LabCommand::Up {
            dir,
            name,
            nodes,
            no_agents,
        } => {
            let options = LabOptions::new(&name).nodes(nodes);
            let lab = Lab::up_from_dir(&options, &dir, &runtime(!no_agents))
                .with_context(|| format!("bringing up lab {name} from {}", dir.display()))?;
            print_status(&lab, false)?;
            println!(
                "\nlab {name} is up. Try: cargo xtask lab exec --name {name} NAMESPACE/POD -- weft-testapp get http://SERVICE.NAMESPACE:PORT/"
            );
            println!(
                "What an agent knows: cargo xtask lab exec --name {name} node-1 -- weftctl status"
            );
            println!("Take it down with: cargo xtask lab down {name}");
            lab.keep_running();
            Ok(())
        }
        LabCommand::Exec { pod, name, command } => {
            let lab = Lab::attach(&name)?;
            let (program, args) = command.split_first().context("no command given")?;
            // Pods are `namespace/name`; node names have no slash.
            let mut to_run = if pod.contains('/') {
                lab.pod_command(&pod, program)?
            } else {
                lab.node_command(&pod, program)?
            };
            let status = to_run
                .args(args)
                .status()
                .with_context(|| format!("running {program} in {pod}"))?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        LabCommand::Status { name, json } => match name {
            Some(name) => print_status(&Lab::attach(&name)?, json),
            None => {
                let labs = weft_lab::list_labs();
                if labs.is_empty() {
                    println!("no lab is up");
                }
                for lab in labs {
                    println!("{lab}");
                }
                Ok(())
            }
        },
        LabCommand::Down { name, all } => {
            let names = if all {
                weft_lab::list_labs()
            } else {
                vec![name]
            };
            for name in names {
                weft_lab::down(&name).with_context(|| format!("taking down lab {name}"))?;
                println!("lab {name} is down");
            }
            Ok(())
        }
    }
}

fn print_status(lab: &Lab, json: bool) -> anyhow::Result<()> {
    let summary = lab.summary();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("lab {}", summary.lab);
    println!("\n{:<10} {:<14} AGENT", "NODE", "IP");
    for (node, ip, agents) in &summary.nodes {
        let agent = if *agents > 0 { "running" } else { "-" };
        println!("{node:<10} {ip:<14} {agent}");
    }
    println!(
        "\n{:<32} {:<10} {:<14} {:<8} PROCESSES",
        "POD", "NODE", "IP", "MESH"
    );
    for pod in &summary.pods {
        let mesh = if pod.ambient { "ambient" } else { "-" };
        println!(
            "{:<32} {:<10} {:<14} {:<8} {}",
            pod.pod, pod.node, pod.ip, mesh, pod.processes
        );
    }
    println!(
        "\n{:<32} {:<14} {:<12} ENDPOINTS",
        "SERVICE", "CLUSTER-IP", "PORTS"
    );
    for svc in &summary.services {
        let ports: Vec<String> = svc.ports.iter().map(u16::to_string).collect();
        println!(
            "{:<32} {:<14} {:<12} {}",
            svc.service,
            svc.cluster_ip,
            ports.join(","),
            svc.endpoints.join(" ")
        );
    }
    Ok(())
}

/// The demo on the embedded default: until the tunnel and the waypoint exist it shows the
/// lab, eBPF observing mesh pods, and traffic between pods by IP and by Service name.
pub fn demo(keep: bool) -> anyhow::Result<()> {
    crate::build::binaries()?;
    let dir = workspace_root().join("examples/quickstart");
    weft_lab::down("demo")?;
    let options = LabOptions::new("demo").nodes(2);
    let lab = Lab::up_from_dir(&options, &dir, &runtime(true))
        .with_context(|| format!("bringing up the demo lab from {}", dir.display()))?;
    print_status(&lab, false)?;
    let steps: &[(&str, &str, &[&str])] = &[
        (
            "shop/client",
            "the client calls the web Service by its short name",
            &["get", "http://web/"],
        ),
        (
            "shop/client",
            "… and by its cluster name",
            &["get", "http://web.shop.svc.cluster.local/hello"],
        ),
        (
            "default/outsider",
            "a pod outside the mesh calls across namespaces",
            &["get", "http://web.shop/"],
        ),
    ];
    for (pod, what, args) in steps {
        println!("\n== {what}: {pod} $ weft-testapp {}", args.join(" "));
        let status = lab
            .pod_command(pod, bin_dir().join("weft-testapp"))?
            .args(*args)
            .status()?;
        if !status.success() {
            bail!("demo step failed in {pod}: {status}");
        }
    }
    println!("\n== What the agents captured (GET /connections on each agent's admin endpoint):");
    for node in &lab.plan.nodes {
        let body = lab.agent_get(&node.name, "/connections")?;
        let records: Vec<serde_json::Value> = serde_json::from_str(&body)?;
        for r in records {
            let text = |key: &str| r[key].as_str().unwrap_or_default().to_string();
            let identity = r["peer_identity"]
                .as_str()
                .map(|id| format!(", peer {id}"))
                .unwrap_or_default();
            println!(
                "  {}: {:<8} {:<14} {} → {} ({} via {}{identity})",
                node.name,
                text("direction"),
                text("pod"),
                text("source"),
                text("original_destination"),
                text("protocol"),
                text("listener"),
            );
        }
    }
    println!(
        "\nMesh pods' traffic went through their node's agent and crossed nodes in HBONE (mutual \
         TLS, SPIFFE identities issued by weft-ca); the outsider, not in the mesh, reached web \
         in plaintext through :15006."
    );
    println!("Agents' logs: {}", lab.paths.logs().display());
    if keep {
        println!(
            "\nThe lab stays up: cargo xtask lab status demo; cargo xtask lab exec --name demo shop/client -- weft-testapp get http://web/; cargo xtask lab down demo"
        );
        lab.keep_running();
    } else {
        lab.down()?;
        println!("\nlab demo is down (run with --keep to explore it)");
    }
    Ok(())
}
