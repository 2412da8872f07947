//! The benchmark's outputs: markdown tables (one per group of paths, each with its own
//! baseline, and one for the control plane), JSON, and an SVG chart.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::convergence::Convergence;
use super::{Group, Results, Row};

pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").map(|v| {
                    v.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .unwrap_or(0.0)
                })
            })
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    format!(
        "{cpus} × {model}, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const GROUPS: [Group; 6] = [
    Group::L4,
    Group::Capture,
    Group::L7,
    Group::Ingress,
    Group::Resources,
    Group::Scale,
];

pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "weft benchmark — {} — {}{} — {:.0} s including the build\n",
        results.date,
        results.machine,
        if results.quick { " — quick run" } else { "" },
        results.run_seconds,
    );
    for group in GROUPS {
        let rows: Vec<&Row> = results.rows.iter().filter(|r| r.group == group).collect();
        if !rows.is_empty() {
            group_table(&mut out, group, &rows);
        }
        if group == Group::L7
            && let Some(c) = &results.convergence
        {
            convergence_table(&mut out, c);
        }
    }
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

fn group_table(out: &mut String, group: Group, rows: &[&Row]) {
    let _ = writeln!(out, "**{}**\n", group.title());
    let _ = writeln!(
        out,
        "| scenario | metric | path | median | min | max | × {} |",
        group.baseline()
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
    for r in rows {
        let ratio = r
            .ratio_to_baseline
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {} |",
            r.scenario,
            r.metric,
            r.unit,
            r.route,
            number(r.summary.median),
            number(r.summary.min),
            number(r.summary.max),
            ratio
        );
    }
    let _ = writeln!(out);
}

fn convergence_table(out: &mut String, c: &Convergence) {
    let _ = writeln!(
        out,
        "**Control plane: VirtualService change on disk → first request routed by it**\n"
    );
    let _ = writeln!(
        out,
        "| changes | p50 (ms) | p90 (ms) | p99 (ms) | min (ms) | max (ms) | poll interval, the baseline (ms) | p50 × poll interval | p99 × poll interval |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ratio = |v: f64| {
        if c.poll_interval_ms > 0.0 {
            format!("{:.2}", v / c.poll_interval_ms)
        } else {
            "—".into()
        }
    };
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.changes,
        number(c.p50_ms),
        number(c.p90_ms),
        number(c.p99_ms),
        number(c.min_ms),
        number(c.max_ms),
        number(c.poll_interval_ms),
        ratio(c.p50_ms),
        ratio(c.p99_ms),
    );
    let _ = writeln!(
        out,
        "(Polling alone would give a uniform delay in 0–{} ms: p50 ≈ {} ms. The poller sent {} requests/s.)\n",
        number(c.poll_interval_ms),
        number(c.poll_interval_ms / 2.0),
        number(c.poll_requests_per_second),
    );
}

/// One bar of a chart panel: label, height, whisker from min to max.
struct Bar {
    label: String,
    value: f64,
    min: f64,
    max: f64,
}

/// One panel per (group, scenario, metric): a bar per path at its median, a whisker from min
/// to max; and one for the control plane.
pub fn svg(results: &Results) -> String {
    let mut panels: Vec<(String, Vec<Bar>)> = Vec::new();
    for row in results.rows.iter().filter(|r| r.summary.runs > 1) {
        let key = format!("{} — {} ({})", row.scenario, row.metric, row.unit);
        let bar = Bar {
            label: row.route.clone(),
            value: row.summary.median,
            min: row.summary.min,
            max: row.summary.max,
        };
        match panels.iter_mut().find(|(k, _)| *k == key) {
            Some((_, bars)) => bars.push(bar),
            None => panels.push((key, vec![bar])),
        }
    }
    if let Some(c) = &results.convergence {
        let bar = |label: &str, v: f64| Bar {
            label: label.into(),
            value: v,
            min: v,
            max: v,
        };
        panels.push((
            "route change → routed (ms)".into(),
            vec![
                bar("p50", c.p50_ms),
                bar("p90", c.p90_ms),
                bar("p99", c.p99_ms),
                bar("poll interval", c.poll_interval_ms),
            ],
        ));
    }
    let (panel_w, panel_h, cols) = (360.0, 190.0, 3usize);
    let rows_n = panels.len().div_ceil(cols).max(1);
    let (width, height) = (panel_w * cols as f64, panel_h * rows_n as f64);
    let colors = ["#8c8c8c", "#2b7bb9", "#5fb0e0", "#e08a2b"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, (title, bars)) in panels.iter().enumerate() {
        let (x0, y0) = ((i % cols) as f64 * panel_w, (i / cols) as f64 * panel_h);
        let top = bars.iter().map(|b| b.max).fold(0.0f64, f64::max).max(1e-9);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>",
            x0 + 8.0,
            y0 + 14.0,
            xml(title)
        );
        let (chart_top, chart_h) = (y0 + 24.0, panel_h - 64.0);
        let slot = (panel_w - 20.0) / bars.len().max(1) as f64;
        let bar_w = (slot - 24.0).clamp(20.0, 50.0);
        for (j, b) in bars.iter().enumerate() {
            let cx = x0 + 10.0 + slot * (j as f64 + 0.5);
            let x = cx - bar_w / 2.0;
            let h = b.value / top * chart_h;
            let y = chart_top + chart_h - h;
            let color = colors[j % colors.len()];
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{color}\"/>"
            );
            let (ymin, ymax) = (
                chart_top + chart_h - b.min / top * chart_h,
                chart_top + chart_h - b.max / top * chart_h,
            );
            let _ = writeln!(
                out,
                "<line x1=\"{cx:.1}\" y1=\"{ymin:.1}\" x2=\"{cx:.1}\" y2=\"{ymax:.1}\" stroke=\"black\"/>"
            );
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y - 3.0,
                number(b.value)
            );
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"8\">{}</text>",
                chart_top + chart_h + 12.0,
                xml(&b.label)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(dir.join("results.md"), markdown(results))?;
    std::fs::write(dir.join("chart.svg"), svg(results))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::stats::summarize;
    use super::*;

    fn row(group: Group, scenario: &str, metric: &str, route: &str, values: &[f64]) -> Row {
        Row {
            group,
            scenario: scenario.into(),
            metric: metric.into(),
            unit: "µs".into(),
            route: route.into(),
            summary: summarize(values).expect("values"),
            ratio_to_baseline: Some(values[0] / 100.0),
        }
    }

    fn results() -> Results {
        Results {
            date: "2026-01-01 00:00 UTC".into(),
            machine: "2 × test CPU".into(),
            quick: true,
            run_seconds: 321.4,
            rows: vec![
                row(
                    Group::L4,
                    "latency at 1000 req/s",
                    "latency p50",
                    "no mesh",
                    &[100.0, 90.0, 110.0],
                ),
                row(
                    Group::L4,
                    "latency at 1000 req/s",
                    "latency p50",
                    "weft",
                    &[300.0, 280.0, 320.0],
                ),
                row(
                    Group::Capture,
                    "connection set-up, one at a time",
                    "set-up p50",
                    "nft redirect + proxy",
                    &[100.0, 95.0, 105.0],
                ),
                row(
                    Group::Capture,
                    "connection set-up, one at a time",
                    "set-up p50",
                    "eBPF + proxy",
                    &[80.0, 75.0, 85.0],
                ),
                row(
                    Group::L7,
                    "requests at saturation",
                    "CPU per 1000 requests (waypoint)",
                    "waypoint, 10 rules",
                    &[50.0, 40.0, 60.0],
                ),
                Row {
                    ratio_to_baseline: None,
                    ..row(
                        Group::Resources,
                        "after the whole run",
                        "waypoint (mesh/waypoint-0) peak RSS, VmHWM",
                        "waypoint",
                        &[21.5],
                    )
                },
            ],
            convergence: Some(Convergence {
                changes: 3,
                samples_ms: vec![400.0, 900.0, 120.0],
                p50_ms: 400.0,
                p90_ms: 900.0,
                p99_ms: 900.0,
                min_ms: 120.0,
                max_ms: 900.0,
                poll_interval_ms: 1000.0,
                poll_requests_per_second: 480.0,
            }),
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn markdown_has_a_table_per_group_with_its_baseline_and_the_control_plane() {
        let md = markdown(&results());
        assert!(md.starts_with("weft benchmark — 2026-01-01 00:00 UTC — 2 × test CPU — quick run — 321 s including the build"));
        for header in [
            "**L4 paths**",
            "| scenario | metric | path | median | min | max | × no mesh |",
            "**Capture cost: eBPF against an in-pod nftables REDIRECT**",
            "| scenario | metric | path | median | min | max | × nft redirect + proxy |",
            "**L7 through a waypoint**",
            "| scenario | metric | path | median | min | max | × L4 only |",
            "**Control plane: VirtualService change on disk → first request routed by it**",
            "**Resources**",
            "| scenario | metric | path | median | min | max | × 0 pods |",
        ] {
            assert!(md.contains(header), "{header} missing from\n{md}");
        }
        assert!(md.contains(
            "| latency at 1000 req/s | latency p50 (µs) | weft | 300 | 280 | 320 | 3.00 |"
        ));
        assert!(md.contains("| connection set-up, one at a time | set-up p50 (µs) | eBPF + proxy | 80.0 | 75.0 | 85.0 | 0.80 |"));
        assert!(md.contains("| 3 | 400 | 900 | 900 | 120 | 900 | 1000 | 0.40 | 0.90 |"));
        assert!(md.contains("| after the whole run | waypoint (mesh/waypoint-0) peak RSS, VmHWM (µs) | waypoint | 21.5 | 21.5 | 21.5 | — |"));
        assert!(md.contains("- a note"));
        // Groups in order: L4, capture, L7, then the control plane, then resources.
        let at = |s: &str| md.find(s).expect(s);
        assert!(at("**L4 paths**") < at("**Capture cost"));
        assert!(at("**Capture cost") < at("**L7 through"));
        assert!(at("**L7 through") < at("**Control plane"));
        assert!(at("**Control plane") < at("**Resources**"));
    }

    #[test]
    fn chart_has_a_panel_per_repeated_metric_and_one_for_the_control_plane() {
        let svg = svg(&results());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // Three repeated metrics and the control plane; single values are left out.
        assert_eq!(svg.matches("font-weight=\"bold\"").count(), 4);
        assert!(svg.contains("route change → routed (ms)"));
        assert!(!svg.contains("peak RSS"));
        // One bar per path, four for the control plane, plus the background.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 2 + 1 + 4);
    }

    #[test]
    fn written_files_include_json_with_groups_and_samples() {
        let dir = std::env::temp_dir().join(format!("weft-bench-report-{}", std::process::id()));
        write(&results(), &dir).expect("written");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).expect("json"))
                .expect("valid JSON");
        assert_eq!(json["rows"][2]["group"], "capture");
        assert_eq!(json["convergence"]["samples_ms"][1], 900.0);
        assert!(dir.join("results.md").exists() && dir.join("chart.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
