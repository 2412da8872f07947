//! `weftctl graph` run on a lab node, and what the tests read of its output: the DOT
//! edges and whether the SVG is one well-formed document.
use weft_lab::Lab;

/// `weftctl graph ARGS…` in `node`'s network namespace; its standard output.
pub fn weftctl_graph(lab: &Lab, node: &str, args: &[&str]) -> String {
    let weftctl = crate::bin_dir().join("weftctl");
    assert!(
        weftctl.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        weftctl.display()
    );
    let output = lab
        .node_command(node, weftctl)
        .unwrap_or_else(|e| panic!("preparing weftctl on {node}: {e}"))
        .arg("graph")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running weftctl graph {args:?} on {node}: {e}"));
    assert!(
        output.status.success(),
        "weftctl graph {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One `"from" -> "to" [label="…", …];` line of DOT.
#[derive(Debug, Clone, PartialEq)]
pub struct DotEdge {
    pub from: String,
    pub to: String,
    pub label: String,
}

impl DotEdge {
    /// The first number of the label (the request or byte rate).
    pub fn rate(&self) -> f64 {
        self.label
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    }
}

fn quoted(text: &str) -> Option<(String, &str)> {
    let rest = text.trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            '"' => return Some((value, &rest[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

pub fn dot_edges(dot: &str) -> Vec<DotEdge> {
    dot.lines()
        .filter_map(|line| {
            let (from, rest) = quoted(line)?;
            let rest = rest.trim_start().strip_prefix("->")?;
            let (to, rest) = quoted(rest)?;
            let (label, _) = quoted(rest.split_once("label=")?.1)?;
            Some(DotEdge { from, to, label })
        })
        .collect()
}

/// Whether `svg` is one `<svg>` element whose tags all open and close in order.
pub fn well_formed_svg(svg: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg.trim();
    if !rest.starts_with("<svg ") {
        return Err("it does not start with <svg".into());
    }
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("a tag is not closed")? + start;
        let tag = &rest[start + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            if open.is_empty() {
                roots += 1;
            }
            open.push(name);
        } else if open.is_empty() {
            return Err(format!("<{tag}> outside the document"));
        }
        if tag.matches('"').count() % 2 == 1 {
            return Err(format!("unbalanced quotes in <{tag}>"));
        }
        rest = &rest[end + 1..];
        if open.is_empty() && !rest.trim().is_empty() {
            return Err(format!("text after the document: {}", rest.trim()));
        }
    }
    match (open.is_empty(), roots) {
        (true, 1) => Ok(()),
        _ => Err(format!("unclosed {open:?}, {roots} roots")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dot_edges_and_checks_svg() {
        let dot = "digraph mesh {\n  \"a\" [label=\"a\"];\n  \"workload/b/p\" -> \"waypoint/b/w\" [label=\"1.50 req/s · 0.0% 5xx · mTLS (to r)\", style=solid];\n}\n";
        let edges = dot_edges(dot);
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].to, "waypoint/b/w");
        assert_eq!(edges[0].rate(), 1.5);
        assert!(
            well_formed_svg("<svg a=\"1\"><g><path d=\"x\"/></g><text>t</text></svg>\n").is_ok()
        );
        assert!(well_formed_svg("<svg><g></svg>").is_err());
        assert!(well_formed_svg("<svg></svg><svg></svg>").is_err());
    }
}
