//! stdout is the machine-readable channel: one line per result. Written through here so a
//! closed pipe (`| head -1`) is an error to report, not a panic as with `println!`.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

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

/// Generators print only the first few failures: the first explains the rest, and thousands of
/// lines would flood the lab's logs and cost the generator time.
const MAX_WARNINGS: u32 = 5;
static WARNED: AtomicU32 = AtomicU32::new(0);

pub fn warn_limited(message: fmt::Arguments<'_>) {
    if WARNED.fetch_add(1, Ordering::Relaxed) < MAX_WARNINGS {
        eprintln!("weft-testapp: {message}");
    }
}

/// Says how many `warn_limited` lines were left out, if any.
pub fn warn_summary() {
    let left_out = WARNED.load(Ordering::Relaxed).saturating_sub(MAX_WARNINGS);
    if left_out > 0 {
        eprintln!("weft-testapp: {left_out} more failures not shown");
    }
}
