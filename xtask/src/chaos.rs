//! `cargo xtask chaos`: the chaos measurements of the README — the agent, the waypoint and
//! the CA killed with SIGKILL under load, the CA away longer than a certificate lives — by
//! running their end-to-end test (`tests/tests/chaos.rs`, scenarios and figures in
//! `tests/src/chaos.rs`), which asserts what must hold, and printing its table of figures.
use anyhow::Context;

/// Where the table is written, under the workspace's target directory.
const REPORT: &str = "target/chaos/chaos.md";

pub fn run() -> anyhow::Result<()> {
    let report = crate::workspace_root().join(REPORT);
    let _ = std::fs::remove_file(&report);
    // SAFETY: xtask is single-threaded here.
    unsafe { std::env::set_var("WEFT_CHAOS_REPORT", &report) };
    crate::test_cmd::run(
        false,
        false,
        &[
            "-p".into(),
            "weft-e2e".into(),
            "--test".into(),
            "chaos".into(),
        ],
    )?;
    let table = std::fs::read_to_string(&report)
        .with_context(|| format!("the test wrote no table at {}", report.display()))?;
    println!("\n{table}\n(written to {})", report.display());
    Ok(())
}
