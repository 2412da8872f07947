//! Running code inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the calling thread only. Doing it on a thread shared with
//! other work (a tokio worker) would move that work into the pod, so every entry happens on
//! a dedicated, short-lived thread that dies with the namespace switch.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` puts the namespace's handle.
pub fn named_netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the thread running inside network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// Runs `work` on a new thread that has joined the network namespace at `path`, and returns
/// its result. Sockets created by `work` stay in that namespace after it returns.
pub fn run_in_netns<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: `ns` is an open namespace file for the duration of the call.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(NetnsError::Enter {
                        path: path.to_path_buf(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(work())
            })
            .join()
            .map_err(|_| NetnsError::Panicked {
                path: path.to_path_buf(),
            })?
    })
}
