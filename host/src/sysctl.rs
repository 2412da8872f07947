//! Writing sysctls under /proc/sys, including from inside a container.
//!
//! Container runtimes bind-mount /proc/sys read-only over itself (runc and containerd apply
//! the OCI default `readonlyPaths` to every container that is not privileged), so writing a
//! sysctl fails with EROFS even for a process holding CAP_NET_ADMIN over the network
//! namespace the sysctl belongs to. The procfs beneath that bind mount is writable. With
//! CAP_SYS_ADMIN, [`write`] reaches it from a short-lived thread with a private mount
//! namespace of its own, so the agent's view of the file system never changes.
//!
//! Files under /proc/sys/net are resolved against the network namespace of the thread that
//! opens them, not against the procfs instance or the mount namespace they are reached
//! through. A thread that has joined a pod's network namespace therefore reaches the pod's
//! values through any procfs mount.
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

const PROC_SYS: &str = "/proc/sys";

/// Runtimes might stack more than one read-only mount on /proc/sys (a runtime nested inside
/// a container applies `readonlyPaths` again); each lift removes one.
const MAX_LIFTS: usize = 4;

/// Writes `value` to `path` (a file under /proc/sys) for the calling thread's namespaces.
///
/// When /proc/sys is a read-only mount (a container's), the write is made from a short-lived
/// thread that unshares its mount namespace, makes every mount in it private so that nothing
/// propagates back, detaches the read-only mount from /proc/sys to uncover the writable
/// procfs beneath, and writes there. The thread's mount namespace, and the lifted mount with
/// it, end when the thread does; the process's mount namespace is never touched. The thread
/// starts in the calling thread's network namespace (new threads inherit the namespaces of
/// the thread that creates them), so a caller that has joined a pod's network namespace
/// writes the pod's value. Lifting the mount needs CAP_SYS_ADMIN.
pub fn write(path: &Path, value: &str) -> io::Result<()> {
    let read_only = match write_plain(path, value) {
        Ok(()) => return Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EROFS) && path.starts_with(PROC_SYS) => err,
        Err(err) => return Err(with_context(err, &what(path, value))),
    };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("sysctl-write".into())
            .spawn_scoped(scope, || lift_and_write(path, value, read_only))
            .map_err(|err| {
                with_context(
                    err,
                    &format!(
                        "{}: /proc/sys is read-only, and starting a thread to lift it failed",
                        what(path, value)
                    ),
                )
            })?;
        helper.join().map_err(|_| {
            io::Error::other(format!(
                "{}: the thread lifting the read-only /proc/sys panicked",
                what(path, value)
            ))
        })?
    })
}

fn write_plain(path: &Path, value: &str) -> io::Result<()> {
    // Neither create nor truncate: sysctl files always exist, and a missing one must come
    // back as ENOENT rather than as an attempt to create it.
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Runs on a thread of its own: the unshared mount namespace is this thread's alone and dies
/// with it.
fn lift_and_write(path: &Path, value: &str, read_only: io::Error) -> io::Result<()> {
    // No setns into the caller's network namespace is needed: clone() gives a new thread the
    // namespaces of the thread that calls it, so this thread is already where the caller
    // is (`threads_inherit_the_namespaces_of_the_thread_that_spawns_them` checks it).

    // CLONE_NEWNS implies CLONE_FS, which a thread of a multi-threaded process may unshare:
    // this thread gets its own root and working directory, rebased onto the new namespace,
    // and every other thread keeps the process's.
    // SAFETY: unshare takes no pointers and changes only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(step_failed(
            path,
            value,
            "unsharing a mount namespace to lift it",
            io::Error::last_os_error(),
        ));
    }
    // The new namespace's mounts stay in the peer groups of the ones they were copied from;
    // with shared propagation, the unmount below would also unmount /proc/sys in the
    // container itself.
    // SAFETY: the target is a NUL-terminated string literal; the other pointers are NULL,
    // which a propagation change allows.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(step_failed(
            path,
            value,
            "making the mounts of that namespace private",
            io::Error::last_os_error(),
        ));
    }
    for _ in 0..MAX_LIFTS {
        // Lazily, so that a reference into the copy (a working directory under /proc/sys)
        // cannot make it EBUSY.
        // SAFETY: the target is a NUL-terminated string literal.
        if unsafe { libc::umount2(c"/proc/sys".as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                return Err(io::Error::new(
                    read_only.kind(),
                    format!(
                        "{}: {read_only}, but not because of a mount on /proc/sys (none is \
                         left to lift; procfs itself may be mounted read-only). Fix: give the \
                         agent container a writable /proc (securityContext.procMount: \
                         Unmasked, or privileged: true)",
                        what(path, value)
                    ),
                ));
            }
            return Err(step_failed(
                path,
                value,
                "unmounting it in that namespace",
                err,
            ));
        }
        match write_plain(path, value) {
            Ok(()) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EROFS) => continue,
            Err(err) => return Err(step_failed(path, value, "writing beneath it", err)),
        }
    }
    Err(with_context(
        read_only,
        &format!(
            "{}: still read-only after lifting {MAX_LIFTS} mounts from /proc/sys",
            what(path, value)
        ),
    ))
}

fn what(path: &Path, value: &str) -> String {
    format!("writing {value:?} to {}", path.display())
}

/// Keeps the error's kind, so callers can still match on it, and puts `context` first.
fn with_context(err: io::Error, context: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {err}"))
}

fn step_failed(path: &Path, value: &str, step: &str, err: io::Error) -> io::Error {
    let fix = if err.raw_os_error() == Some(libc::EACCES) {
        // The default AppArmor profile of containerd and Docker denies mount and writes
        // under /proc/sys/net, even with the capabilities.
        "Fix: a security module refused; run the agent container under an AppArmor (or \
         SELinux) profile that allows mounts and writes under /proc/sys, e.g. \
         securityContext.appArmorProfile.type: Unconfined"
    } else {
        "Fix: grant the agent container CAP_SYS_ADMIN so it can lift the read-only /proc/sys, \
         or give it a writable one (securityContext.procMount: Unmasked, or privileged: true)"
    };
    io::Error::new(
        err.kind(),
        format!(
            "{}: /proc/sys is read-only; {step} failed: {err}. {fix}",
            what(path, value)
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const FWMARK_ACCEPT: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs `work` on a new thread that first unshares `flags`. The namespaces are that
    /// thread's alone and end with it, so tests running in parallel cannot see each other's
    /// and nothing is left behind.
    fn in_unshared_thread<T: Send>(flags: libc::c_int, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                // SAFETY: unshare takes no pointers and changes only the calling thread.
                let rc = unsafe { libc::unshare(flags) };
                assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
                work()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The inode of a namespace, which identifies it.
    fn namespace_of(link: &str) -> u64 {
        std::fs::metadata(link)
            .unwrap_or_else(|err| panic!("{link}: {err}"))
            .ino()
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("reading {path}: {err}"))
            .trim()
            .to_string()
    }

    fn mount(source: Option<&str>, target: &str, flags: libc::c_ulong) {
        let source = source.map(|s| CString::new(s).expect("no NUL"));
        let target = CString::new(target).expect("no NUL");
        // SAFETY: the strings are NUL-terminated and outlive the call; NULL pointers are
        // allowed for bind mounts, remounts and propagation changes.
        let rc = unsafe {
            libc::mount(
                source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mount {target:?}: {}", io::Error::last_os_error());
    }

    fn is_read_only_mount(path: &Path) -> bool {
        let path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: an all-zero statvfs is a valid value for the kernel to overwrite.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `stat` is writable, both for the call.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {path:?}: {}", io::Error::last_os_error());
        stat.f_flag & libc::ST_RDONLY != 0
    }

    /// Why [`lift_and_write`] needs no setns: a thread created by a thread that has left the
    /// process's namespaces starts in the creator's namespaces, not the process's.
    #[test]
    fn threads_inherit_the_namespaces_of_the_thread_that_spawns_them() {
        if !is_root() {
            eprintln!("skipped: needs root to unshare namespaces");
            return;
        }
        let process = (
            namespace_of("/proc/self/ns/net"),
            namespace_of("/proc/self/ns/mnt"),
        );
        let (creator, created) = in_unshared_thread(libc::CLONE_NEWNET | libc::CLONE_NEWNS, || {
            let own = || {
                (
                    namespace_of("/proc/thread-self/ns/net"),
                    namespace_of("/proc/thread-self/ns/mnt"),
                )
            };
            let creator = own();
            let created = std::thread::scope(|scope| scope.spawn(own).join())
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (creator, created)
        });
        assert_ne!(
            creator.0, process.0,
            "unshare gave the thread a network namespace"
        );
        assert_ne!(
            creator.1, process.1,
            "unshare gave the thread a mount namespace"
        );
        assert_eq!(created, creator);
    }

    #[test]
    fn writes_the_calling_threads_network_namespace() {
        if !is_root() {
            eprintln!("skipped: needs root to unshare a network namespace");
            return;
        }
        in_unshared_thread(libc::CLONE_NEWNET, || {
            assert_eq!(
                read(FWMARK_ACCEPT),
                "0",
                "a new namespace starts with the default"
            );
            write(Path::new(FWMARK_ACCEPT), "1").expect("writing the sysctl");
            assert_eq!(read(FWMARK_ACCEPT), "1");
        });
    }

    #[test]
    fn lifts_a_read_only_proc_sys_only_for_the_write() {
        if !is_root() {
            eprintln!("skipped: needs root to unshare namespaces and mount");
            return;
        }
        in_unshared_thread(libc::CLONE_NEWNET | libc::CLONE_NEWNS, || {
            // Private first, so that the mounts below stay in this thread's namespace.
            mount(None, "/", libc::MS_REC | libc::MS_PRIVATE);
            // What runc does for `readonlyPaths`.
            mount(Some(PROC_SYS), PROC_SYS, libc::MS_BIND);
            mount(
                None,
                PROC_SYS,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            );
            // Shared, as in a container whose mounts are (mountPropagation: Bidirectional):
            // had the helper not made its copies private, its unmount would propagate back
            // here through this peer group. Only this namespace's mounts are in it.
            mount(None, "/proc", libc::MS_SHARED);
            let plain = std::fs::write(FWMARK_ACCEPT, "1").expect_err("/proc/sys is read-only");
            assert_eq!(plain.raw_os_error(), Some(libc::EROFS), "{plain}");
            assert_eq!(read(FWMARK_ACCEPT), "0");

            write(Path::new(FWMARK_ACCEPT), "1").expect("writing beneath the read-only mount");

            assert_eq!(
                read(FWMARK_ACCEPT),
                "1",
                "the write reached this network namespace"
            );
            assert!(
                is_read_only_mount(Path::new(PROC_SYS)),
                "the lift stayed in the helper thread's mount namespace"
            );
            let after = std::fs::write(FWMARK_ACCEPT, "0").expect_err("still read-only");
            assert_eq!(after.raw_os_error(), Some(libc::EROFS), "{after}");
        });
    }

    #[test]
    fn a_read_only_procfs_is_reported_not_lifted() {
        if !is_root() {
            eprintln!("skipped: needs root to unshare namespaces and mount");
            return;
        }
        in_unshared_thread(libc::CLONE_NEWNET | libc::CLONE_NEWNS, || {
            mount(None, "/", libc::MS_REC | libc::MS_PRIVATE);
            // Read-only above /proc/sys, so there is no mount on /proc/sys to lift.
            mount(Some("/proc"), "/proc", libc::MS_BIND);
            mount(
                None,
                "/proc",
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            );

            let err = write(Path::new(FWMARK_ACCEPT), "1").expect_err("/proc is read-only");

            assert_eq!(err.kind(), io::ErrorKind::ReadOnlyFilesystem, "{err}");
            let message = err.to_string();
            assert!(message.contains(FWMARK_ACCEPT), "{message}");
            assert!(
                message.contains("not because of a mount on /proc/sys"),
                "{message}"
            );
            assert_eq!(read(FWMARK_ACCEPT), "0");
        });
    }

    #[test]
    fn a_missing_sysctl_is_an_error_that_names_it() {
        let path = Path::new("/proc/sys/net/ipv4/weft_no_such_sysctl");
        let err = write(path, "1").expect_err("no such sysctl");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
