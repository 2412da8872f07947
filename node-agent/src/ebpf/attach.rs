//! Attaching the per-pod programs, each through a bpf_link pinned under
//! `<pin root>/pods/<pod uid>/`: the programs stay attached while the agent restarts, and a
//! restarted agent that finds a pod's pins complete adopts them instead of attaching twice,
//! pointing them at its own programs (an upgrade may bring new ones).
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aya::Ebpf;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, SkLookup, SockOps, TcAttachType,
};
use weft_ebpf_common::program_names;

use super::loader::program;

/// Where each program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    CgroupSockAddr,
    SockOps,
    NetnsLookup,
}

impl Hook {
    /// The kernel's name of the program type (as `bpftool prog` shows it).
    pub fn program_type(self) -> &'static str {
        match self {
            Hook::CgroupSockAddr => "cgroup_sock_addr",
            Hook::SockOps => "sock_ops",
            Hook::NetnsLookup => "sk_lookup",
        }
    }

    pub fn attaches_to_netns(self) -> bool {
        self == Hook::NetnsLookup
    }
}

pub const POD_PROGRAMS: [(&str, Hook); 6] = [
    (program_names::CONNECT4, Hook::CgroupSockAddr),
    (program_names::CONNECT6, Hook::CgroupSockAddr),
    (program_names::GETPEERNAME4, Hook::CgroupSockAddr),
    (program_names::GETPEERNAME6, Hook::CgroupSockAddr),
    (program_names::SOCK_OPS, Hook::SockOps),
    (program_names::INBOUND_LOOKUP, Hook::NetnsLookup),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attachment {
    /// Attached by this run of the agent.
    Fresh,
    /// Found complete from an earlier run and kept, now running this run's programs.
    Adopted,
}

pub fn pod_pin_dir(pin_root: &Path, uid: &str) -> PathBuf {
    pin_root.join("pods").join(uid)
}

/// UIDs of the pods that have pinned attachments (from this run or an earlier one).
pub fn pinned_pods(pin_root: &Path) -> Vec<String> {
    std::fs::read_dir(pin_root.join("pods"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Attaches every per-pod program to the pod's cgroup and network namespace, or adopts the
/// attachments an earlier run pinned.
pub fn attach_pod(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    cgroup: &Path,
    netns: &Path,
) -> anyhow::Result<Attachment> {
    let complete = POD_PROGRAMS
        .iter()
        .all(|(name, _)| PinnedLink::from_pin(pin_dir.join(name)).is_ok());
    if complete {
        adopt_pod(ebpf, pin_dir)?;
        return Ok(Attachment::Adopted);
    }
    // A partial set (a crash halfway through attaching) is removed and redone whole.
    detach_pod(pin_dir)?;
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    let cgroup_dir = File::open(cgroup)
        .with_context(|| format!("opening the pod's cgroup {}", cgroup.display()))?;
    let netns_file = File::open(netns)
        .with_context(|| format!("opening the pod's network namespace {}", netns.display()))?;
    for (name, hook) in POD_PROGRAMS {
        let link: FdLink = match hook {
            Hook::CgroupSockAddr => {
                let p: &mut CgroupSockAddr = program(ebpf, name)?.try_into()?;
                // bpf_links coexist with other programs on the cgroup (a CNI's, say); the
                // kernel refuses attach flags on links, hence `Single`.
                let id = p
                    .attach(&cgroup_dir, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
                p.take_link(id)?.try_into()?
            }
            Hook::SockOps => {
                let p: &mut SockOps = program(ebpf, name)?.try_into()?;
                let id = p
                    .attach(&cgroup_dir, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
                p.take_link(id)?.try_into()?
            }
            Hook::NetnsLookup => {
                let p: &mut SkLookup = program(ebpf, name)?.try_into()?;
                let id = p
                    .attach(&netns_file)
                    .with_context(|| format!("attaching {name} to {}", netns.display()))?;
                p.take_link(id)?.into()
            }
        };
        let pin = pin_dir.join(name);
        link.pin(&pin)
            .with_context(|| format!("pinning the {name} link at {}", pin.display()))?;
    }
    Ok(Attachment::Fresh)
}

/// Swaps this run's programs into a pod's pinned links, atomically per link: the earlier
/// run's programs may be an older release's (or use maps since replaced), and keeping them
/// would leave the pod captured by code this agent does not know.
fn adopt_pod(ebpf: &mut Ebpf, pin_dir: &Path) -> anyhow::Result<()> {
    for (name, _) in POD_PROGRAMS {
        let pin = pin_dir.join(name);
        let link = weft_host::bpf_link::open_pinned(&pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let program = program(ebpf, name)?
            .fd()
            .with_context(|| format!("{name} is not loaded"))?;
        weft_host::bpf_link::update_link_program(link.as_fd(), program.as_fd())
            .with_context(|| {
                format!(
                    "pointing the link {} at this agent's {name} (BPF_LINK_UPDATE needs Linux 5.7+)",
                    pin.display()
                )
            })?;
    }
    Ok(())
}

/// Attaches `weft_node_probe` to the tc ingress (tcx) of each of the pod's `interfaces`
/// (inside its network namespace `netns`), or adopts the links an earlier run pinned, as
/// `<pin dir>/weft_node_probe@<interface>` (bpffs refuses dots in names: an interface's dots
/// become `_`). Unlike the six capture programs it is attached
/// only to pods with probes, and apart from them: an agent of a release without it adopts
/// the others and adds this one, with no moment where the pod is not captured.
pub fn attach_node_probe(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    netns: &Path,
    interfaces: &[String],
) -> anyhow::Result<Attachment> {
    let name = program_names::NODE_PROBE;
    let pins: Vec<(String, PathBuf)> = interfaces
        .iter()
        .map(|interface| {
            let pin = format!("{name}@{}", interface.replace('.', "_"));
            (interface.clone(), pin_dir.join(pin))
        })
        .collect();
    let program_fd = program(ebpf, name)?
        .fd()
        .with_context(|| format!("{name} is not loaded"))?
        .try_clone()
        .context("duplicating the program's descriptor")?;
    let mut attachment = Attachment::Adopted;
    for (interface, pin) in pins {
        if let Ok(link) = weft_host::bpf_link::open_pinned(&pin) {
            weft_host::bpf_link::update_link_program(link.as_fd(), program_fd.as_fd())
                .with_context(|| {
                    format!("pointing the link {} at this agent's {name}", pin.display())
                })?;
            continue;
        }
        attachment = Attachment::Fresh;
        let p: &mut SchedClassifier = program(ebpf, name)?.try_into()?;
        // The interface is named in the pod's namespace, and tcx resolves it in the namespace
        // of the thread that attaches.
        let link: FdLink = weft_host::netns::run_in_netns(netns, || -> anyhow::Result<FdLink> {
            let id = p
                .attach_with_options(
                    &interface,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .with_context(|| {
                    format!("attaching {name} to the ingress of {interface} (tcx, Linux 6.6+)")
                })?;
            Ok(p.take_link(id)?.try_into()?)
        })??;
        link.pin(&pin)
            .with_context(|| format!("pinning the {name} link at {}", pin.display()))?;
    }
    Ok(attachment)
}

/// Detaches a pod's programs by removing their pins (nothing else holds the links).
pub fn detach_pod(pin_dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", pin_dir.display())),
    }
}
