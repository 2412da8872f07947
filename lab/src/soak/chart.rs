//! The soak's chart: one panel per metric (RSS, open fds, threads), a line per component
//! over time, the upgrade marked; hand-written SVG, as `weftctl graph` draws its own.
use std::fmt::Write as _;

use super::bounds::Metric;
use super::sample::Series;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unit(metric: Metric, value: f64) -> String {
    match metric {
        Metric::RssKib => format!("{:.0} MiB", value / 1024.0),
        _ => format!("{value:.0}"),
    }
}

/// The chart of `series` over `duration` seconds, with a marker at each of `marks`
/// (seconds, label), and `title` above.
pub fn svg(title: &str, series: &[Series], duration: f64, marks: &[(f64, String)]) -> String {
    let height = TOP + (PANEL_HEIGHT + GAP) * Metric::ALL.len() as f64;
    let plot_width = WIDTH - LEFT - RIGHT;
    let duration = duration.max(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (index, metric) in Metric::ALL.iter().enumerate() {
        let top = TOP + (PANEL_HEIGHT + GAP) * index as f64;
        let max = series
            .iter()
            .flat_map(|s| s.points(*metric))
            .map(|(_, v)| v)
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.1;
        let x = |t: f64| LEFT + t / duration * plot_width;
        let y = |v: f64| top + PANEL_HEIGHT - v / max * PANEL_HEIGHT;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/><text x="{LEFT}" y="{}" font-weight="bold">{}</text>"##,
            top - 6.0,
            escape(metric.name())
        );
        for step in 0..=4 {
            let value = max * f64::from(step) / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                LEFT + plot_width,
                LEFT - 6.0,
                y(value) + 4.0,
                unit(*metric, value),
                y = y(value),
            );
        }
        for step in 0..=6 {
            let t = duration * f64::from(step) / 6.0;
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0} s</text>"##,
                x(t),
                top + PANEL_HEIGHT + 15.0,
                t
            );
        }
        for (t, label) in marks {
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="#666" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#666">{}</text>"##,
                top + PANEL_HEIGHT,
                x(*t) + 3.0,
                top + 12.0,
                escape(label),
                x = x(*t),
            );
        }
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = s
                .points(*metric)
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
            let _ = writeln!(
                out,
                r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{}" y="{:.1}">{}</text>"#,
                LEFT + plot_width + 12.0,
                top + 10.0 + 18.0 * i as f64,
                LEFT + plot_width + 30.0,
                top + 15.0 + 18.0 * i as f64,
                escape(&s.component)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::sample::Sample;

    #[test]
    fn every_component_is_drawn_in_each_panel() {
        let samples = (0..10)
            .map(|t| Sample {
                t: f64::from(t),
                rss_kib: 40_960,
                fds: 30,
                threads: 5,
                processes: 1,
            })
            .collect();
        let series = [Series {
            component: "agent <node-1>".into(),
            samples,
        }];
        let svg = svg("soak", &series, 10.0, &[(5.0, "upgrade".into())]);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("agent &lt;node-1&gt;"), "names are escaped");
        assert!(svg.contains(" MiB</text>"), "RSS in MiB: {svg}");
        assert_eq!(svg.matches("upgrade").count(), 3);
    }
}
