//! Start-up checks: every kernel facility the agent relies on (BTF, cgroup v2, bpffs, the
//! eBPF program types, helpers and maps of capture), each failure naming the fix.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weft_host::mounts::{BPFFS_DEFAULT, cgroup2_mount, ensure_bpffs};

/// What the checks found, for the log and the admin endpoint.
#[derive(Debug)]
pub struct HostFacts {
    pub cgroup2: PathBuf,
    pub bpffs_mounted_by_us: bool,
}

pub fn check() -> anyhow::Result<HostFacts> {
    // First: without its capabilities every probe below fails, and would be blamed on the
    // kernel.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let missing = missing_capabilities(&status);
        if !missing.is_empty() {
            bail!(
                "weft-agent lacks the capabilities {}: it needs CAP_BPF, CAP_NET_ADMIN and \
                 CAP_SYS_ADMIN (the DaemonSet's securityContext in deploy/base/agent.yaml grants \
                 them; or run it as root)",
                missing.join(", ")
            );
        }
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); weft needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y (5.8 or newer; every major distribution ships one)"
        );
    }
    let cgroup2 = cgroup2_mount()?;
    let bpffs_mounted_by_us = ensure_bpffs(Path::new(BPFFS_DEFAULT))?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel version")?;
    if !kernel_at_least(kernel.trim(), (5, 10)) {
        bail!(
            "kernel {} is too old: weft needs 5.10 or newer (cgroup sock_addr links, sk_lookup, \
             bpf_get_socket_cookie in cgroup programs)",
            kernel.trim()
        );
    }
    check_bpf_features()?;
    Ok(HostFacts {
        cgroup2,
        bpffs_mounted_by_us,
    })
}

/// Probes the kernel for every program type, helper and map type capture uses, so that a
/// missing one is named at start-up instead of surfacing as a verifier error.
fn check_bpf_features() -> anyhow::Result<()> {
    use aya::maps::MapType;
    use aya::programs::ProgramType;
    use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};

    let programs = [
        (
            ProgramType::CgroupSockAddr,
            "cgroup sock_addr (connect4/6, getpeername4/6; 5.8+)",
        ),
        (ProgramType::SockOps, "sock_ops"),
        (ProgramType::SkLookup, "sk_lookup (5.9+)"),
    ];
    let mut missing = Vec::new();
    for (program, what) in programs {
        if !is_program_supported(program).unwrap_or(false) {
            missing.push(format!("program type {what}"));
        }
    }
    let helpers = [
        (
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_get_socket_cookie,
            "bpf_get_socket_cookie in cgroup sock_addr programs (5.7+)",
        ),
        (
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id,
            "bpf_get_current_ancestor_cgroup_id in cgroup sock_addr programs (5.7+)",
        ),
        (
            ProgramType::SockOps,
            BpfHelper::BPF_FUNC_get_socket_cookie,
            "bpf_get_socket_cookie in sock_ops programs (5.7+)",
        ),
        (
            ProgramType::SkLookup,
            BpfHelper::BPF_FUNC_sk_assign,
            "bpf_sk_assign in sk_lookup programs (5.9+)",
        ),
    ];
    for (program, helper, what) in helpers {
        if !is_helper_supported(program, helper).unwrap_or(false) {
            missing.push(format!("helper {what}"));
        }
    }
    for (map, what) in [
        (MapType::LruHash, "LRU hash maps"),
        (MapType::SockHash, "sockhash maps"),
    ] {
        if !is_map_supported(map).unwrap_or(false) {
            missing.push(format!("map type {what}"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the kernel lacks eBPF features weft's capture needs: {}. Run on Linux 5.10 or newer \
             with CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF and CONFIG_BPF_STREAM_PARSER enabled, as \
             root (or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The capabilities the agent needs (loading programs and maps, attaching to cgroups and
/// network namespaces, entering pods' namespaces), by name and bit (linux/capability.h).
const NEEDED_CAPABILITIES: [(&str, u32); 3] = [
    ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_BPF", 39),
];

/// The needed capabilities missing from the effective set `CapEff` of a
/// `/proc/<pid>/status` text. Nothing when the line is missing or unreadable (the probes
/// will tell).
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    NEEDED_CAPABILITIES
        .iter()
        .filter(|(_, bit)| effective & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        // An unparsable version is not a reason to refuse; the loader will tell.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{kernel_at_least, missing_capabilities};

    #[test]
    fn names_the_capabilities_missing_from_the_effective_set() {
        // root: every capability.
        assert!(missing_capabilities("Name:\tweft-agent\nCapEff:\t000001ffffffffff\n").is_empty());
        // The DaemonSet's: BPF, NET_ADMIN, SYS_ADMIN and SYS_PTRACE.
        let daemonset = (1u64 << 39) | (1 << 12) | (1 << 21) | (1 << 19);
        assert!(missing_capabilities(&format!("CapEff:\t{daemonset:016x}\n")).is_empty());
        // Without SYS_ADMIN (a common mistake): named, and only it.
        let without = (1u64 << 39) | (1 << 12);
        assert_eq!(
            missing_capabilities(&format!("CapEff:\t{without:016x}\n")),
            ["CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities("CapEff:\t0000000000000000\n"),
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF"]
        );
        assert!(missing_capabilities("no such line").is_empty());
    }

    #[test]
    fn compares_kernel_releases() {
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 10)));
        assert!(kernel_at_least("5.10.0", (5, 10)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 10)));
        assert!(!kernel_at_least("4.19.0", (5, 10)));
    }
}
