//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (a workspace of its own, built
//! with the pinned nightly), each run for a bounded time with its seed corpus
//! (`fuzz/corpus/<target>/`) and dictionary (`fuzz/dict/<target>.dict`, when there is one).
//! What libFuzzer finds on the way is kept in `fuzz/target/corpus/<target>/` for the next
//! run; a crash's reproducer is written to `fuzz/artifacts/<target>/` and named in the
//! report. `cargo xtask test` runs every target briefly ([`TEST_SECONDS`]).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long each target runs in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 10;
/// How long each target runs by default in `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 180;
/// libFuzzer's limit on one input's run: a parser taking longer is a finding (a hang).
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// Inputs longer than this are not tried (parsers' inputs are headers, paths, messages and
/// small YAML files; longer ones only slow the search down).
const MAX_LEN: usize = 16 * 1024;

/// The build flags, the same for `build` and `run` so that the run reuses the build: no
/// sanitizer (the parsers are safe Rust; a panic is what is looked for, which libFuzzer
/// catches as a crash), debug assertions on (overflow checks included).
const BUILD_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

pub struct Options {
    pub seconds: u64,
    /// One target (default: all of them).
    pub target: Option<String>,
}

/// What one target's run did.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub target: String,
    pub executions: Option<u64>,
    /// The reproducer libFuzzer wrote, for a crash, a hang or running out of memory.
    pub reproducer: Option<PathBuf>,
    pub elapsed: Duration,
    pub failed: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let toolchain = crate::setup::ebpf_toolchain()?;
    let dir = fuzz_dir();
    let all = targets(&cargo_fuzz(&toolchain, &["list"])?);
    let chosen: Vec<String> = match &options.target {
        Some(target) if all.contains(target) => vec![target.clone()],
        Some(target) => bail!("no fuzz target {target:?} (there are {})", all.join(", ")),
        None => all,
    };
    let started = Instant::now();
    let mut build = vec!["build"];
    build.extend_from_slice(BUILD_FLAGS);
    if let [one] = chosen.as_slice() {
        build.push(one);
    }
    status(&toolchain, &build)?;
    eprintln!(
        "xtask fuzz: built in {:.0?}; {} targets, {} s each",
        started.elapsed(),
        chosen.len(),
        options.seconds
    );
    let mut outcomes = Vec::new();
    for target in &chosen {
        let outcome = run_one(&toolchain, &dir, target, options.seconds)?;
        eprintln!("xtask fuzz: {}", line(&outcome));
        outcomes.push(outcome);
    }
    eprintln!("\nxtask fuzz: {:.0?} in all", started.elapsed());
    for outcome in &outcomes {
        eprintln!("  {}", line(outcome));
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed)
        .map(|o| o.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (reproduce with `cargo +{toolchain} fuzz run {} <target> \
             <reproducer>` in fuzz/)",
            failed.join(", "),
            BUILD_FLAGS.join(" ")
        );
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    crate::workspace_root().join("fuzz")
}

/// One report line.
fn line(outcome: &Outcome) -> String {
    let executions = outcome
        .executions
        .map_or_else(|| "?".to_string(), |n| n.to_string());
    let verdict = match (&outcome.reproducer, outcome.failed) {
        (Some(path), _) => format!("FAILED, reproducer {}", path.display()),
        (None, true) => "FAILED (see its output above)".to_string(),
        (None, false) => "ok".to_string(),
    };
    format!(
        "{:<20} {:>12} executions in {:>4.0?}: {verdict}",
        outcome.target, executions, outcome.elapsed
    )
}

fn run_one(toolchain: &str, dir: &Path, target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    // libFuzzer adds what it finds to the first directory; the seeds stay as committed.
    let found = dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
    let seeds = dir.join("corpus").join(target);
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(BUILD_FLAGS.iter().map(|s| s.to_string()));
    args.push(target.into());
    args.push(found.display().to_string());
    if seeds.is_dir() {
        args.push(seeds.display().to_string());
    }
    args.extend([
        "--".into(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
        format!("-max_len={MAX_LEN}"),
        "-rss_limit_mb=2048".into(),
        "-print_final_stats=1".into(),
    ]);
    let dict = dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        args.push(format!("-dict={}", dict.display()));
    }
    let started = Instant::now();
    let mut child = fuzz_command(toolchain)
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    // libFuzzer reports on stderr; only what says what went wrong is shown.
    let mut output = String::new();
    if let Some(stderr) = child.stderr.take() {
        for text in BufReader::new(stderr).lines().map_while(Result::ok) {
            if is_worth_showing(&text) {
                eprintln!("  {target}: {text}");
            }
            output.push_str(&text);
            output.push('\n');
        }
    }
    let exit = child.wait().context("waiting for cargo fuzz")?;
    Ok(Outcome {
        target: target.to_string(),
        executions: executions(&output),
        reproducer: reproducer(&output),
        elapsed: started.elapsed(),
        failed: !exit.success(),
    })
}

/// The lines of libFuzzer's output that tell about a failure.
fn is_worth_showing(line: &str) -> bool {
    [
        "panicked at",
        "ERROR: libFuzzer",
        "Test unit written to",
        "SUMMARY:",
        "error:",
        "error[",
    ]
    .iter()
    .any(|needle| line.contains(needle))
}

/// The targets `cargo fuzz list` prints, one a line.
pub fn targets(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// How many inputs libFuzzer ran: its final statistics, else its last status line
/// (`#12345\tpulse ...`), printed also when it stops at a crash.
pub fn executions(output: &str) -> Option<u64> {
    let stat = output.lines().rev().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    stat.or_else(|| {
        output.lines().rev().find_map(|l| {
            let count = l.strip_prefix('#')?.split_whitespace().next()?;
            count.parse().ok()
        })
    })
}

/// The reproducer libFuzzer wrote (`Test unit written to <path>`).
pub fn reproducer(output: &str) -> Option<PathBuf> {
    output.lines().find_map(|l| {
        let (_, path) = l.split_once("Test unit written to ")?;
        Some(PathBuf::from(path.trim()))
    })
}

/// `cargo fuzz` under the pinned nightly, in `fuzz/`.
fn fuzz_command(toolchain: &str) -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", toolchain, "cargo", "fuzz"])
        .current_dir(fuzz_dir())
        // xtask runs under stable cargo; the nightly's own cargo and rustc build the targets.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .env_remove("RUSTFLAGS");
    command
}

fn status(toolchain: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = fuzz_command(toolchain)
        .args(args)
        .status()
        .context("running cargo fuzz (`cargo xtask setup --for fuzz` installs it)")?;
    if !status.success() {
        bail!("`cargo fuzz {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo_fuzz(toolchain: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = fuzz_command(toolchain)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz (`cargo xtask setup --for fuzz` installs it)")?;
    if !out.status.success() {
        bail!("`cargo fuzz {}` failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_stats_else_the_last_status_line() {
        let done = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                    #8192\tpulse  cov: 12 ft: 14 corp: 2/3b exec/s: 4096 rss: 31Mb\n\
                    Done 9000 runs in 2 second(s)\nstat::number_of_executed_units: 9001\n\
                    stat::average_exec_per_sec:     4500\n";
        assert_eq!(executions(done), Some(9001));
        let crashed = "#2\tINITED cov: 10\n#4096\tpulse  cov: 12\n#4100\tNEW    cov: 13\n\
                       thread '<unnamed>' panicked at src/lib.rs:1:1:\n\
                       ==12== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(executions(crashed), Some(4100));
        assert_eq!(executions("error: could not compile\n"), None);
    }

    #[test]
    fn the_reproducer_is_the_unit_libfuzzer_wrote() {
        let crashed = "==12== ERROR: libFuzzer: deadly signal\nMS: 1 ChangeByte-; base unit: 0\n\
                       artifact_prefix='/w/fuzz/artifacts/forwarded/'; Test unit written to \
                       /w/fuzz/artifacts/forwarded/crash-da39a3ee\nBase64: AA==\n";
        assert_eq!(
            reproducer(crashed),
            Some(PathBuf::from("/w/fuzz/artifacts/forwarded/crash-da39a3ee"))
        );
        assert_eq!(reproducer("Done 10 runs in 1 second(s)\n"), None);
    }

    #[test]
    fn targets_are_the_lines_of_cargo_fuzz_list() {
        assert_eq!(
            targets("dns_message\nforwarded\n\n"),
            ["dns_message", "forwarded"]
        );
    }

    #[test]
    fn a_failed_run_names_its_reproducer() {
        let outcome = Outcome {
            target: "forwarded".into(),
            executions: Some(12),
            reproducer: Some(PathBuf::from("fuzz/artifacts/forwarded/crash-1")),
            elapsed: Duration::from_secs(3),
            failed: true,
        };
        let text = line(&outcome);
        assert!(text.contains("12 executions"), "{text}");
        assert!(
            text.contains("FAILED, reproducer fuzz/artifacts/forwarded/crash-1"),
            "{text}"
        );
    }
}
