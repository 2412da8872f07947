//! `cargo xtask soak`: the mesh under mixed traffic, config churn, certificate rotation and
//! an agent upgrade for a long time (`weft_lab::soak`), its components' RSS, open fds and
//! threads held to the bounds stated in `weft_lab::soak::bounds`. Writes `report.json` and
//! `resources.svg` into the output directory; fails when the soak found a problem.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use weft_lab::soak::{Settings, run};

use crate::build::bin_dir;

pub struct Options {
    pub duration: Duration,
    pub out: Option<PathBuf>,
    pub name: String,
}

/// `90s`, `30m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number then s, m or h (e.g. 30m)"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    if !(60..=24 * 3600).contains(&seconds) {
        return Err(format!(
            "{text:?}: a soak runs between 1 minute (the upgrade and the bounds need time) and 24 hours"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

pub fn run_soak(options: &Options) -> anyhow::Result<()> {
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| crate::workspace_root().join("target").join("soak"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let settings = Settings {
        lab: options.name.clone(),
        duration: options.duration,
        bin_dir: bin_dir(),
        keep_logs: Some(out.join("logs")),
    };
    println!(
        "soak: {} s on lab {} (its certificates live {} s); results in {}",
        options.duration.as_secs(),
        options.name,
        settings.cert_lifetime().as_secs(),
        out.display()
    );
    let report = run(&settings).with_context(|| format!("the soak's lab {}", options.name))?;
    let json = serde_json::to_string_pretty(&report).context("the report as JSON")?;
    let json_path = out.join("report.json");
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = out.join("resources.svg");
    std::fs::write(&svg_path, report.svg())
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!("{}", report.summary());
    println!("{} and {}", json_path.display(), svg_path.display());
    if !report.passed() {
        bail!("the soak failed: {} problems", report.problems().len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
