//! Starting processes inside a pod (or node): its cgroup, its network namespace, and for
//! pods a mount and UTS namespace of their own carrying the pod's `/etc/hosts` and hostname.
//!
//! The process joins its cgroup before anything else and never goes through `ip netns exec`,
//! which remounts /sys and would hide the host's cgroup tree.
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::LabError;

/// Where a process is placed.
#[derive(Clone, Debug)]
pub struct Placement {
    pub cgroup: PathBuf,
    pub netns: PathBuf,
    /// For pods: files bind-mounted over /etc/hosts and /etc/resolv.conf, and the hostname.
    pub pod_view: Option<PodView>,
    /// Start a new session so the process outlives the command that started it.
    pub detach: bool,
}

#[derive(Clone, Debug)]
pub struct PodView {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: String,
    /// The trust roots the pod's TLS clients read (bound over [`SYSTEM_ROOTS`] when both
    /// exist): the machine's public roots and the lab's external CA, which plays a public
    /// CA for the lab's internet.
    pub trust_roots: Option<PathBuf>,
}

/// Debian's bundle of trusted roots, which OpenSSL (curl) and rustls-native-certs read.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn c_path(path: &Path) -> Result<CString, LabError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| LabError::Invalid(format!("path {} contains a NUL byte", path.display())))
}

/// Everything the child needs, prepared before `fork` because after it only
/// async-signal-safe calls are allowed: no allocation, no locks.
struct Prepared {
    cgroup_procs: CString,
    netns: OwnedFd,
    view: Option<(CString, CString, CString, Vec<u8>)>,
    /// (source, target) of the trust roots' bind mount.
    roots: Option<(CString, CString)>,
    detach: bool,
}

/// Configures `command` to start inside `placement`.
pub fn place(command: &mut Command, placement: &Placement) -> Result<(), LabError> {
    let netns = File::open(&placement.netns).map_err(LabError::io(format!(
        "opening {}",
        placement.netns.display()
    )))?;
    let prepared = Prepared {
        cgroup_procs: c_path(&placement.cgroup.join("cgroup.procs"))?,
        netns: OwnedFd::from(netns),
        view: match &placement.pod_view {
            None => None,
            Some(view) => Some((
                c_path(&view.hosts)?,
                c_path(&view.resolv_conf)?,
                c_path(Path::new("/etc/resolv.conf"))?,
                view.hostname.clone().into_bytes(),
            )),
        },
        roots: match placement
            .pod_view
            .as_ref()
            .and_then(|v| v.trust_roots.as_ref())
        {
            Some(roots) if roots.exists() && Path::new(SYSTEM_ROOTS).exists() => {
                Some((c_path(roots)?, c_path(Path::new(SYSTEM_ROOTS))?))
            }
            _ => None,
        },
        detach: placement.detach,
    };
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared above.
    unsafe {
        command.pre_exec(move || enter(&prepared));
    }
    Ok(())
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn enter(p: &Prepared) -> std::io::Result<()> {
    // SAFETY: raw system calls on valid, NUL-terminated buffers and open fds, in the
    // child between fork and exec (pre_exec), where only async-signal-safe calls are made.
    unsafe {
        let fd = libc::open(p.cgroup_procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
        check(libc::setns(p.netns.as_raw_fd(), libc::CLONE_NEWNET))?;
        if let Some((hosts, resolv_src, resolv_dst, hostname)) = &p.view {
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            // Keep the pod's bind mounts from propagating back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                hosts.as_ptr(),
                c"/etc/hosts".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            // Best effort: a host without /etc/resolv.conf still resolves from /etc/hosts.
            libc::mount(
                resolv_src.as_ptr(),
                resolv_dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            );
            check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
            if let Some((source, target)) = &p.roots {
                // Best effort too: without it only the external hosts' TLS goes unverified.
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
            }
        }
        if p.detach {
            check(libc::setsid())?;
        }
    }
    Ok(())
}
