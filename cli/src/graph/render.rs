//! The graph as DOT (for Graphviz and other tools) and as SVG drawn here, on the layered
//! layout: boxes for workloads, rounded for services, hexagons for waypoints; arrows
//! labelled with their rates; plaintext drawn dashed, errors in red.
use std::fmt::Write as _;

use super::layout::{Layout, MARGIN, NODE_HEIGHT, NODE_WIDTH, layout};
use super::model::{Edge, Graph, Kind, Node, Traffic, Unit};

/// `1.5 req/s`, `12 kB/s`, or totals.
fn amount(value: f64, what: &str, unit: Unit) -> String {
    let (scaled, prefix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 && what == "B" => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let number = if scaled >= 100.0 || (scaled.fract() == 0.0 && unit == Unit::Total) {
        format!("{scaled:.0}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    match unit {
        Unit::PerSecond => format!("{number} {prefix}{what}/s"),
        Unit::Total => format!("{number} {prefix}{what}"),
    }
}

fn security(traffic: &Traffic) -> &'static str {
    match traffic.mtls_share() {
        s if s >= 0.999 => "mTLS",
        s if s > 0.0 => "partly mTLS",
        _ => "plaintext",
    }
}

/// An edge's label: its rate, errors and security.
pub fn edge_label(traffic: &Traffic, unit: Unit) -> String {
    let mut parts = Vec::new();
    if traffic.is_http() {
        parts.push(amount(traffic.requests, "req", unit));
        parts.push(format!("{:.1}% 5xx", traffic.error_rate() * 100.0));
    }
    if traffic.bytes > 0.0 {
        parts.push(amount(traffic.bytes, "B", unit));
    }
    parts.push(security(traffic).to_string());
    parts.join(" · ")
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Workload => "workload",
        Kind::Service => "service",
        Kind::Waypoint => "waypoint",
        Kind::Unknown => "outside the mesh",
    }
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot_edge(out: &mut String, from: &Node, to: &Node, label: &str, edge: &Edge) {
    let style = if edge.traffic.mtls_share() > 0.0 {
        "solid"
    } else {
        "dashed"
    };
    let color = if edge.traffic.error_rate() > 0.0 {
        "red"
    } else if edge.traffic.is_http() {
        "darkgreen"
    } else {
        "blue"
    };
    let _ = writeln!(
        out,
        "  {} -> {} [label={}, style={style}, color={color}];",
        dot_quote(&from.id()),
        dot_quote(&to.id()),
        dot_quote(label)
    );
}

/// The graph in Graphviz's DOT language. An edge through a waypoint is two edges, client →
/// waypoint and waypoint → service, each with the requests' numbers.
pub fn dot(graph: &Graph) -> String {
    let mut out = String::from(
        "digraph mesh {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];\n",
    );
    for node in &graph.nodes {
        let shape = match node.kind {
            Kind::Workload => "box",
            Kind::Service => "ellipse",
            Kind::Waypoint => "hexagon",
            Kind::Unknown => "diamond",
        };
        let label = if node.namespace.is_empty() {
            node.name.clone()
        } else {
            format!(
                "{}\n{} · {}",
                node.name,
                node.namespace,
                kind_name(node.kind)
            )
        };
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            dot_quote(&node.id()),
            dot_quote(&label)
        );
    }
    for edge in &graph.edges {
        let label = edge_label(&edge.traffic, graph.unit);
        match &edge.via {
            Some(waypoint) => {
                let to_waypoint = format!("{label} (to {})", edge.to.name);
                dot_edge(&mut out, &edge.from, waypoint, &to_waypoint, edge);
                dot_edge(&mut out, waypoint, &edge.to, &label, edge);
            }
            None => dot_edge(&mut out, &edge.from, &edge.to, &label, edge),
        }
    }
    out.push_str("}\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Workload => ("#e8f0fe", "#1a56db"),
        Kind::Service => ("#e6f4ea", "#137333"),
        Kind::Waypoint => ("#fef7e0", "#b06000"),
        Kind::Unknown => ("#f1f3f4", "#5f6368"),
    }
}

fn svg_node(out: &mut String, node: &Node, x: f64, y: f64) {
    let (fill, stroke) = colour(node.kind);
    let (w, h) = (NODE_WIDTH, NODE_HEIGHT);
    match node.kind {
        Kind::Waypoint => {
            let d = 14.0;
            let _ = writeln!(
                out,
                r#"<polygon points="{},{} {},{} {},{} {},{} {},{} {},{}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>"#,
                x + d,
                y,
                x + w - d,
                y,
                x + w,
                y + h / 2.0,
                x + w - d,
                y + h,
                x + d,
                y + h,
                x,
                y + h / 2.0
            );
        }
        _ => {
            let radius = if node.kind == Kind::Service {
                23.0
            } else {
                4.0
            };
            let _ = writeln!(
                out,
                r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{radius}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>"#
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        x + w / 2.0,
        y + 19.0,
        xml(&node.name)
    );
    let subtitle = if node.namespace.is_empty() {
        kind_name(node.kind).to_string()
    } else {
        format!("{} · {}", node.namespace, kind_name(node.kind))
    };
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#5f6368">{}</text>"##,
        x + w / 2.0,
        y + 35.0,
        xml(&subtitle)
    );
}

/// A curve from one box's right side to another's left side, and its midpoint. Backwards
/// (to a column on the left, as a call back through a waypoint) it loops below both boxes.
fn curve(from: (f64, f64), to: (f64, f64)) -> (String, (f64, f64)) {
    let (c1, c2) = if to.0 > from.0 {
        let bend = ((to.0 - from.0) / 2.0).max(60.0);
        ((from.0 + bend, from.1), (to.0 - bend, to.1))
    } else {
        let below = from.1.max(to.1) + NODE_HEIGHT * 1.6;
        ((from.0 + 90.0, below), (to.0 - 90.0, below))
    };
    let mid = (
        (from.0 + 3.0 * c1.0 + 3.0 * c2.0 + to.0) / 8.0,
        (from.1 + 3.0 * c1.1 + 3.0 * c2.1 + to.1) / 8.0,
    );
    (
        format!(
            "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
            from.0, from.1, c1.0, c1.1, c2.0, c2.1, to.0, to.1
        ),
        mid,
    )
}

/// An edge's label in two lines (its numbers, then its security), at `at`.
fn svg_label(out: &mut String, at: (f64, f64), colour: &str, label: &str) {
    let (numbers, security) = label.rsplit_once(" · ").unwrap_or((label, ""));
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{colour}" stroke="white" stroke-width="3" paint-order="stroke"><tspan x="{x:.1}">{}</tspan><tspan x="{x:.1}" dy="13">{}</tspan></text>"#,
        at.1 - 8.0,
        xml(numbers),
        xml(security),
        x = at.0,
    );
}

/// Draws `edge`; its label goes into `labels`, drawn over the nodes.
fn svg_edge(out: &mut String, labels: &mut String, layout: &Layout, edge: &Edge, unit: Unit) {
    let Some(from) = layout.positions.get(&edge.from) else {
        return;
    };
    let Some(to) = layout.positions.get(&edge.to) else {
        return;
    };
    let colour = if edge.traffic.error_rate() > 0.05 {
        "#d93025"
    } else if edge.traffic.error_rate() > 0.0 {
        "#e37400"
    } else if edge.traffic.is_http() {
        "#188038"
    } else {
        "#1a73e8"
    };
    let dash = if edge.traffic.mtls_share() > 0.0 {
        ""
    } else {
        r#" stroke-dasharray="6,4""#
    };
    let mut segments = Vec::new();
    match edge.via.as_ref().and_then(|w| layout.positions.get(w)) {
        Some(waypoint) => {
            segments.push((from.right(), waypoint.left(), false));
            segments.push((waypoint.right(), to.left(), true));
        }
        None => segments.push((from.right(), to.left(), true)),
    }
    let label = edge_label(&edge.traffic, unit);
    let _ = writeln!(
        out,
        r#"<g class="edge" data-from="{}" data-to="{}"{}>"#,
        xml(&edge.from.id()),
        xml(&edge.to.id()),
        edge.via
            .as_ref()
            .map(|w| format!(r#" data-via="{}""#, xml(&w.id())))
            .unwrap_or_default()
    );
    for (start, end, labelled) in segments {
        let (path, mid) = curve(start, end);
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#arrow)"/>"#
        );
        if labelled {
            svg_label(labels, mid, colour, &label);
        }
    }
    out.push_str("</g>\n");
}

/// The graph as a standalone SVG document.
pub fn svg(graph: &Graph) -> String {
    let layout = layout(graph);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif">"#,
        w = layout.width,
        h = layout.height
    );
    out.push_str(concat!(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" ",
        "markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">",
        "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"context-stroke\"/></marker></defs>\n",
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    ));
    let mut labels = String::new();
    for edge in &graph.edges {
        svg_edge(&mut out, &mut labels, &layout, edge, graph.unit);
    }
    for (node, placed) in &layout.positions {
        svg_node(&mut out, node, placed.x, placed.y);
    }
    out.push_str(&labels);
    let legend = match graph.unit {
        Unit::PerSecond => "rates per second",
        Unit::Total => "totals since the counters started",
    };
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN}" y="{:.0}" font-size="11" fill="#5f6368">weftctl graph · {legend} · green: HTTP, blue: TCP, red: 5xx · dashed: plaintext</text>"##,
        layout.height - 12.0
    );
    if graph.edges.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{MARGIN}" y="{:.0}" font-size="13">no traffic in the metrics read</text>"#,
            MARGIN + 20.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::{build, tests::bookinfo};
    use super::*;

    #[test]
    fn dot_names_every_node_and_draws_the_waypoint_hop_with_its_rates() {
        let text = dot(&build(&bookinfo(), Unit::PerSecond));
        assert!(text.starts_with("digraph mesh {"), "{text}");
        assert!(
            text.contains("\"workload/bookinfo/productpage-v1\" [label="),
            "{text}"
        );
        assert!(text.contains("shape=hexagon"), "{text}");
        assert!(
            text.contains(
                "\"workload/bookinfo/productpage-v1\" -> \"waypoint/bookinfo/waypoint\" [label=\"4.00 req/s · 25.0% 5xx · mTLS (to reviews)\""
            ),
            "{text}"
        );
        assert!(
            text.contains("\"waypoint/bookinfo/waypoint\" -> \"service/bookinfo/reviews\""),
            "{text}"
        );
        assert!(
            text.contains("\"workload/bookinfo/reviews-v2\" -> \"service/bookinfo/ratings\" [label=\"250 B/s · mTLS\""),
            "{text}"
        );
        assert_eq!(text.matches(" -> ").count(), 6, "{text}");
    }

    #[test]
    fn svg_is_one_document_with_a_box_per_node_and_labelled_arrows() {
        let graph = build(&bookinfo(), Unit::PerSecond);
        let text = svg(&graph);
        assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(text.trim_end().ends_with("</svg>"));
        assert_eq!(
            text.matches("<rect x=").count() + text.matches("<polygon").count(),
            graph.nodes.len()
        );
        assert_eq!(text.matches("<g class=\"edge\"").count(), graph.edges.len());
        assert!(
            text.contains("data-via=\"waypoint/bookinfo/waypoint\""),
            "{text}"
        );
        assert!(
            text.contains(">4.00 req/s · 25.0% 5xx</tspan>")
                && text.contains("dy=\"13\">mTLS</tspan>"),
            "{text}"
        );
        assert!(text.contains(">productpage-v1</text>"));
        assert!(text.contains("marker-end=\"url(#arrow)\""));
        // Every opened element is closed or self-closed.
        let opened = text.matches("<g ").count() + text.matches("<svg ").count();
        let closed = text.matches("</g>").count() + text.matches("</svg>").count();
        assert_eq!(opened, closed);
    }

    #[test]
    fn names_are_escaped() {
        let mut graph = build(&bookinfo(), Unit::Total);
        let odd = Node {
            kind: Kind::Workload,
            namespace: "n".into(),
            name: "a<b>&\"c".into(),
        };
        graph.nodes.insert(odd);
        let text = svg(&graph);
        assert!(text.contains(">a&lt;b&gt;&amp;&quot;c</text>"), "{text}");
        assert!(dot(&graph).contains("a<b>&\\\"c"));
    }

    #[test]
    fn amounts_read_as_a_person_would_write_them() {
        assert_eq!(amount(0.5, "req", Unit::PerSecond), "0.50 req/s");
        assert_eq!(amount(12_345.0, "B", Unit::PerSecond), "12.3 kB/s");
        assert_eq!(amount(42.0, "req", Unit::Total), "42 req");
        assert_eq!(amount(2_500_000.0, "B", Unit::Total), "2.50 MB");
    }
}
