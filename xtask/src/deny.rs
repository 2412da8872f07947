//! `cargo deny` in `cargo xtask test`: what the dependency tree may contain (`deny.toml`).
//!
//! Licenses, bans (duplicates, wildcards) and sources need nothing but crates.io, so they
//! always run. Advisories need the RustSec database, a git repository on GitHub, which this
//! project's machines and CI cannot reach and which no package registry carries. So they run
//! against a database already on the machine, where `cargo deny fetch` puts it
//! (`$CARGO_HOME/advisory-dbs/`[`RUSTSEC_DIR`]), offline, so
//! that the result depends on nothing but what is on disk; without one, the output says
//! plainly that advisories were not checked.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::build::cargo;

/// The directory cargo-deny (0.20) keeps the default database in under its db-path: the
/// last segment of `https://github.com/rustsec/advisory-db` and a hash of that URL.
const RUSTSEC_DIR: &str = "advisory-db-3157b0e258782691";

pub fn run() -> anyhow::Result<()> {
    eprintln!("xtask test: cargo deny check licenses bans sources (deny.toml)");
    cargo(&[
        "deny",
        "check",
        "--hide-inclusion-graph",
        "licenses",
        "bans",
        "sources",
    ])
    .context("cargo deny: the dependency tree breaks deny.toml (see above)")?;
    let dbs = crate::setup::cargo_home().join("advisory-dbs");
    match rustsec_database(&dbs) {
        Some(db) => {
            eprintln!(
                "xtask test: cargo deny check advisories, offline, against the RustSec database at {} (last change {})",
                db.display(),
                last_change(&db).unwrap_or_else(|| "unknown".into())
            );
            cargo(&[
                "deny",
                "--offline",
                "check",
                "--hide-inclusion-graph",
                "advisories",
            ])
            .context(
                "cargo deny advisories: a crate in Cargo.lock has an advisory, or the database \
                 is older than 90 days (then refresh it with `cargo deny fetch` where GitHub is \
                 reachable, or remove it)",
            )
        }
        None => {
            eprintln!(
                "xtask test: advisories NOT checked: no RustSec database in {} and none can be \
                 fetched here (it lives on GitHub). Where GitHub is reachable, `cargo deny fetch` \
                 puts one there and the next `cargo xtask test` checks against it.",
                dbs.display()
            );
            Ok(())
        }
    }
}

/// The RustSec database cargo-deny keeps under `root`, if there is one (a git checkout).
fn rustsec_database(root: &Path) -> Option<PathBuf> {
    let db = root.join(RUSTSEC_DIR);
    db.join(".git").exists().then_some(db)
}

fn last_change(db: &Path) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(db)
        .args(["log", "-1", "--format=%cs"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_database_only_as_a_git_checkout() {
        let root = tempfile_dir("deny-db");
        assert_eq!(rustsec_database(&root.join("absent")), None);
        std::fs::create_dir_all(root.join("advisory-db-0123456789abcdef/.git")).expect("mkdir");
        std::fs::create_dir_all(root.join(RUSTSEC_DIR)).expect("mkdir");
        assert_eq!(
            rustsec_database(&root),
            None,
            "another URL's, and not a checkout"
        );
        std::fs::create_dir_all(root.join(RUSTSEC_DIR).join(".git")).expect("mkdir");
        assert_eq!(rustsec_database(&root), Some(root.join(RUSTSEC_DIR)));
        let _ = std::fs::remove_dir_all(&root);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        dir
    }
}
