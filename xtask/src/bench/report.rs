//! The benchmark's outputs: a markdown table, JSON, and an SVG chart.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{Results, Row};

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

pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "weft benchmark — {} — {}{}\n",
        results.date,
        results.machine,
        if results.quick { " — quick run" } else { "" }
    );
    let _ = writeln!(
        out,
        "| scenario | metric | path | median | min | max | × no mesh |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
    for r in &results.rows {
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
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

/// One panel per metric: a bar per path at its median, a whisker from min to max.
pub fn svg(rows: &[Row]) -> String {
    let mut panels: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in rows.iter().filter(|r| r.summary.runs > 1) {
        let key = format!("{} — {} ({})", row.scenario, row.metric, row.unit);
        match panels.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rs)) => rs.push(row),
            None => panels.push((key, vec![row])),
        }
    }
    let (panel_w, panel_h, cols) = (300.0, 180.0, 3usize);
    let rows_n = panels.len().div_ceil(cols).max(1);
    let (width, height) = (panel_w * cols as f64, panel_h * rows_n as f64);
    let colors = ["#8c8c8c", "#2b7bb9", "#5fb0e0"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, (title, rs)) in panels.iter().enumerate() {
        let (x0, y0) = ((i % cols) as f64 * panel_w, (i / cols) as f64 * panel_h);
        let top = rs
            .iter()
            .map(|r| r.summary.max)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>",
            x0 + 8.0,
            y0 + 14.0,
            xml(title)
        );
        let (chart_top, chart_h, bar_w) = (y0 + 24.0, panel_h - 60.0, 50.0);
        for (j, r) in rs.iter().enumerate() {
            let x = x0 + 20.0 + j as f64 * (bar_w + 30.0);
            let h = r.summary.median / top * chart_h;
            let y = chart_top + chart_h - h;
            let color = colors[j % colors.len()];
            let _ = writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y:.1}\" width=\"{bar_w}\" height=\"{h:.1}\" fill=\"{color}\"/>"
            );
            let (ymin, ymax) = (
                chart_top + chart_h - r.summary.min / top * chart_h,
                chart_top + chart_h - r.summary.max / top * chart_h,
            );
            let cx = x + bar_w / 2.0;
            let _ = writeln!(
                out,
                "<line x1=\"{cx}\" y1=\"{ymin:.1}\" x2=\"{cx}\" y2=\"{ymax:.1}\" stroke=\"black\"/>"
            );
            let _ = writeln!(
                out,
                "<text x=\"{cx}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y - 3.0,
                number(r.summary.median)
            );
            let _ = writeln!(
                out,
                "<text x=\"{cx}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                chart_top + chart_h + 12.0,
                xml(&r.route)
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
    std::fs::write(dir.join("chart.svg"), svg(&results.rows))?;
    Ok(())
}
