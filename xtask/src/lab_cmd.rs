//! `cargo xtask lab …`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use weft_lab::{Lab, LabOptions, Runtime};

use crate::build::bin_dir;

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
        /// A dual-stack cluster: pods get an IPv6 address too, Services that ask for it an
        /// IPv6 ClusterIP.
        #[arg(long)]
        dual_stack: bool,
        /// Run each node's agent from this image under podman and runc, as the DaemonSet's
        /// pod template does (`cargo xtask images weft-agent` builds
        /// `localhost/weft-agent:dev`), instead of as a process.
        #[arg(long, conflicts_with = "no_agents")]
        agent_image: Option<String>,
    },
    /// Run a command inside a pod (`lab exec NAMESPACE/POD -- CMD…`), in a node's network
    /// namespace, where its agent's admin listens (`lab exec node-1 -- weftctl status`), or
    /// on the host outside the cluster, from which LoadBalancer addresses and NodePorts are
    /// reachable (`lab exec outside -- curl http://ADDRESS/productpage`).
    Exec {
        /// `NAMESPACE/POD`, a node's name, or `outside`.
        pod: String,
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Apply manifests to a running lab, as `kubectl apply -f` does: Istio and Gateway API
    /// resources, Secrets, ConfigMaps, Namespace labels. (Pods, Deployments and Services are
    /// built when the lab comes up.)
    Apply {
        /// A YAML file or a directory of them.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The namespace of the objects that name none (kubectl's `-n`; else `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Delete the objects of manifests from a running lab, as `kubectl delete -f` does.
    Delete {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long, default_value = "lab")]
        name: String,
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
            dual_stack,
            agent_image,
        } => {
            let options = LabOptions::new(&name).nodes(nodes).dual_stack(dual_stack);
            let runtime = Runtime {
                agent_image,
                ..runtime(!no_agents)
            };
            let lab = Lab::up_from_dir(&options, &dir, &runtime)
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
            } else if pod == "outside" {
                lab.outside_command(program)?
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
        LabCommand::Apply {
            files,
            namespace,
            name,
        } => {
            let mut lab = Lab::attach(&name)?;
            let manifests = read(&files, namespace.as_deref())?;
            for applied in lab.apply_objects(&manifests)? {
                println!("{} {}", applied.object, applied.outcome);
            }
            Ok(())
        }
        LabCommand::Delete {
            files,
            namespace,
            name,
        } => {
            let mut lab = Lab::attach(&name)?;
            let manifests = read(&files, namespace.as_deref())?;
            for deleted in lab.delete_objects(&manifests)? {
                println!("{} {}", deleted.object, deleted.outcome);
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

/// The manifests of files and directories, in the order given.
fn read(
    files: &[PathBuf],
    namespace: Option<&str>,
) -> anyhow::Result<weft_lab::manifest::Manifests> {
    let mut manifests = weft_lab::manifest::Manifests::default();
    for file in files {
        if file.is_dir() {
            let more = weft_lab::manifest::Manifests::load_dir(file)
                .with_context(|| format!("reading {}", file.display()))?;
            manifests.extend(more);
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            manifests.add_yaml(&text, file)?;
        }
    }
    Ok(manifests.in_namespace(namespace.unwrap_or("default")))
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
            pod.pod,
            pod.node,
            pod.ips.join(","),
            mesh,
            pod.processes
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
            svc.cluster_ips.join(","),
            ports.join(","),
            svc.endpoints.join(" ")
        );
    }
    let external: Vec<_> = summary
        .services
        .iter()
        .filter(|s| !s.node_ports.is_empty())
        .collect();
    if !external.is_empty() {
        println!(
            "\n{:<32} {:<13} {:<16} PORT:NODEPORT",
            "LOAD BALANCER / NODEPORT", "TYPE", "EXTERNAL-IP"
        );
        for svc in external {
            let ports: Vec<String> = svc
                .ports
                .iter()
                .zip(&svc.node_ports)
                .map(|(p, n)| format!("{p}:{n}"))
                .collect();
            println!(
                "{:<32} {:<13} {:<16} {}",
                svc.service,
                svc.type_,
                svc.load_balancer_ip.as_deref().unwrap_or("-"),
                ports.join(",")
            );
        }
    }
    if let Some(outside) = &summary.outside {
        println!(
            "\nThe host outside the cluster is {outside}: `cargo xtask lab exec --name {} outside -- curl …` reaches the LoadBalancer addresses and the nodes' NodePorts.",
            summary.lab
        );
    }
    if !summary.external.is_empty() {
        let hosts: Vec<String> = summary
            .external
            .iter()
            .map(|(name, ip)| format!("{name} ({ip})"))
            .collect();
        println!(
            "The internet beyond the nodes' NAT: {}; HTTP on 80, HTTPS on 443 under the CA {}.",
            hosts.join(", "),
            summary.external_ca.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
