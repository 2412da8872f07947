//! The `scale` group: the registry at a million pods and 66,000 Services, measured by
//! weft-config's `scale` bench (`config/benches/scale/`) in its own process — no lab: what
//! it measures is the registry every agent and waypoint holds, and the watch traffic each
//! agent asks of the API server. Each figure it prints as a JSON line becomes one row.
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use super::plan::{Group, Row};
use super::stats::single;
use crate::workspace_root;

pub const NOTE: &str = "Scale: weft-config's `scale` bench (config/benches/scale/), no lab: 1,000,000 pods on 5,000 nodes and 66,000 Services of 15 pods in 2,000 ambient namespaces, generated as the API server sends them (managedFields, status) and decoded as the Kubernetes source decodes them; memory by a counting allocator (bytes the registry keeps once its input is consumed) and the process RSS; lookups as the agent makes them per connection, over random pods and Services; change propagation from one watch event's JSON to a reader's snapshot; watch traffic per agent calculated from the objects' JSON sizes at 1% of pods replaced per minute.";

/// One row per figure: scenario, metric, unit, a single value (the bench runs once; its
/// timings are means or percentiles over many operations).
pub fn run(quick: bool) -> anyhow::Result<Vec<Row>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["bench", "-p", "weft-config", "--bench", "scale", "--"];
    if quick {
        args.push("--quick");
    }
    let output = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), output.status);
    }
    let rows = rows(&String::from_utf8_lossy(&output.stdout))?;
    if rows.is_empty() {
        bail!("the scale bench printed no figure");
    }
    Ok(rows)
}

fn rows(stdout: &str) -> anyhow::Result<Vec<Row>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("a figure of the scale bench: {line}"))?;
            let text = |key: &str| {
                v[key]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("no {key} in {line}"))
            };
            let value = v["value"]
                .as_f64()
                .with_context(|| format!("no value in {line}"))?;
            Ok(Row {
                group: Group::Scale,
                scenario: text("scenario")?,
                metric: text("metric")?,
                unit: text("unit")?,
                route: "weft".into(),
                summary: single(value),
                ratio_to_baseline: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_json_line_is_a_row_and_other_lines_are_skipped() {
        let out = "scale: 1000 pods\n{\"scenario\":\"memory, 1k pods\",\"metric\":\"registry, allocated\",\"unit\":\"MiB\",\"value\":12.5}\n";
        let read = rows(out).expect("rows");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].metric, "registry, allocated");
        assert_eq!(read[0].summary.median, 12.5);
        assert!(rows("{\"scenario\":\"x\"}").is_err());
    }
}
