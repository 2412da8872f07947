//! Building weft's binaries (node-agent's build script builds the eBPF object with nightly).
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// Where `cargo build` puts the binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}

pub fn binaries() -> anyhow::Result<()> {
    cargo(&["build", "--bins", "--quiet"])
}

/// Runs cargo (the same one that runs xtask) in the workspace root.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
