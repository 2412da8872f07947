//! The few system tools the lab drives (iproute2, nftables), with their errors kept.
use std::io::Write;
use std::process::{Command, Stdio};

use crate::LabError;

/// Runs `program args…` and returns its stdout; a failure carries the command and stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    run_with_input(program, args, None)
}

/// Like [`run`], feeding `input` on stdin (for `nft -f -`, `ip -batch -`).
pub fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, LabError> {
    let command_line = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Command {
            command: command_line(),
            stderr: format!("{e} (is {program} installed? `cargo xtask setup` installs it)"),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(LabError::io(format!("writing to {program}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(LabError::io(format!("waiting for {program}")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: command_line(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a batch of `ip` commands in one process, which is much faster than one each.
pub fn ip_batch(commands: &[String]) -> Result<(), LabError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut input = commands.join("\n");
    input.push('\n');
    run_with_input("ip", &["-batch", "-"], Some(&input)).map(drop)
}
