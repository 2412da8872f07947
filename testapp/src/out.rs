//! stdout is the machine-readable channel: one line per result. Written through here so a
//! closed pipe (`| head -1`) is an error to report, not a panic as with `println!`.

use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;

pub fn line(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("write to stdout")
}

pub fn json(value: &impl Serialize) -> Result<()> {
    line(&serde_json::to_string(value).context("serialize output line")?)
}
