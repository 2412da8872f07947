//! `cargo xtask test`: the one command that runs every check, locally and in CI: fmt,
//! clippy, cargo deny (`deny.rs`), docs-check (`docs_check.rs`) and layers (`layers.rs`:
//! no import cycles between modules), then every fuzz target for a few seconds
//! (`fuzz.rs`), the binaries, deploy-check, and every test.
use anyhow::bail;

use crate::build::{bin_dir, binaries, cargo};

pub fn run(lint: bool, fuzz: bool, cargo_args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the end-to-end tests create network namespaces, cgroups and eBPF programs: run as root"
        );
    }
    if lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"])?;
        crate::deny::run()?;
        crate::docs_check::run(&crate::workspace_root())?;
        crate::layers::run(&crate::workspace_root())?;
    }
    if fuzz {
        crate::fuzz::run(&crate::fuzz::Options {
            seconds: crate::fuzz::TEST_SECONDS,
            target: None,
        })?;
    }
    // The e2e tests start these binaries inside lab pods and nodes.
    binaries()?;
    crate::deploy_check::run()?;
    // SAFETY: xtask is single-threaded here.
    unsafe { std::env::set_var("WEFT_BIN_DIR", bin_dir()) };
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(cargo_args.iter().map(String::as_str));
    cargo(&args)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
