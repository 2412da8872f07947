//! The lab's cgroup v2 directories: one per pod and per agent, all under one lab root, so
//! that a single `cgroup.kill` ends every process of the lab.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_host::mounts::cgroup2_mount;

use crate::LabError;

/// `<cgroup2>/weft-lab`: the parent of every lab's cgroup tree.
pub fn labs_root() -> Result<PathBuf, LabError> {
    Ok(cgroup2_mount()?.join("weft-lab"))
}

pub fn lab_root(lab: &str) -> Result<PathBuf, LabError> {
    Ok(labs_root()?.join(lab))
}

pub fn create(path: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(path)
        .map_err(LabError::io(format!("creating cgroup {}", path.display())))
}

/// Kills every process in the tree at `root` and removes its directories, deepest first.
/// Waits (bounded) for the processes to be gone, since a cgroup with members cannot be removed.
pub fn destroy(root: &Path) -> Result<(), LabError> {
    if !root.exists() {
        return Ok(());
    }
    signal_kill(root)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match remove_tree(root) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// SIGKILLs every process in the tree at `root` (through `cgroup.kill` where the kernel has
/// it).
fn signal_kill(root: &Path) -> Result<(), LabError> {
    let kill = root.join("cgroup.kill");
    if kill.exists() {
        std::fs::write(&kill, "1").map_err(LabError::io(format!("writing {}", kill.display())))
    } else {
        kill_members_recursively(root);
        Ok(())
    }
}

/// Kills every process in the tree at `path` and waits (bounded) until they are gone,
/// keeping the cgroup for processes started again later.
pub fn kill(path: &Path) -> Result<(), LabError> {
    if !path.exists() {
        return Ok(());
    }
    signal_kill(path)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members(path).is_empty() {
        if Instant::now() >= deadline {
            return Err(LabError::Invalid(format!(
                "processes in {} did not die",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Fallback for kernels before 5.14, which have no `cgroup.kill`.
fn kill_members_recursively(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for child in subdirectories(dir) {
        kill_members_recursively(&child);
    }
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_tree(dir: &Path) -> Result<(), LabError> {
    for child in subdirectories(dir) {
        remove_tree(&child)?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::Io {
            what: format!("removing cgroup {}", dir.display()),
            source: e,
        }),
    }
}

/// Process ids in the cgroup at `path` (not its descendants).
pub fn members(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Process ids in the cgroup at `path` and every cgroup below it (a pod's containers).
pub fn members_below(path: &Path) -> Vec<i32> {
    let mut all = members(path);
    for child in subdirectories(path) {
        all.extend(members_below(&child));
    }
    all
}
