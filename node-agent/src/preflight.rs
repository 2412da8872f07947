//! Start-up checks: every kernel facility the agent relies on, each failure naming the fix.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weft_core::host::mounts::{BPFFS_DEFAULT, cgroup2_mount, ensure_bpffs};

/// What the checks found, for the log and the admin endpoint.
#[derive(Debug)]
pub struct HostFacts {
    pub cgroup2: PathBuf,
    pub bpffs_mounted_by_us: bool,
}

pub fn check() -> anyhow::Result<HostFacts> {
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
    Ok(HostFacts {
        cgroup2,
        bpffs_mounted_by_us,
    })
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
    use super::kernel_at_least;

    #[test]
    fn compares_kernel_releases() {
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 10)));
        assert!(kernel_at_least("5.10.0", (5, 10)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 10)));
        assert!(!kernel_at_least("4.19.0", (5, 10)));
    }
}
