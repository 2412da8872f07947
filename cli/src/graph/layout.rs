//! A layered layout of the graph, left to right: clients first, then the services they
//! call (a waypoint one column before the services it serves), then the workloads behind
//! them, and so on down the call chain.
use std::collections::BTreeMap;

use super::model::{Graph, Kind, Node};

/// A node's box: its top-left corner and size, in SVG user units.
pub const NODE_WIDTH: f64 = 190.0;
pub const NODE_HEIGHT: f64 = 46.0;
const COLUMN: f64 = 340.0;
const ROW: f64 = 110.0;
pub const MARGIN: f64 = 30.0;

#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Each node's column and the top-left corner of its box.
    pub positions: BTreeMap<Node, Placed>,
    pub width: f64,
    pub height: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub column: usize,
    pub x: f64,
    pub y: f64,
}

impl Placed {
    pub fn left(&self) -> (f64, f64) {
        (self.x, self.y + NODE_HEIGHT / 2.0)
    }
    pub fn right(&self) -> (f64, f64) {
        (self.x + NODE_WIDTH, self.y + NODE_HEIGHT / 2.0)
    }
}

/// Each node's column: the longest call chain leading to it (an edge through a waypoint
/// counts two), bounded where calls go round in a cycle.
fn columns(graph: &Graph) -> BTreeMap<Node, usize> {
    let mut column: BTreeMap<Node, usize> = graph
        .nodes
        .iter()
        .filter(|n| n.kind != Kind::Waypoint)
        .map(|n| (n.clone(), 0))
        .collect();
    let limit = graph.nodes.len();
    // At most one pass per node: in a cycle the chain stops growing there.
    for _ in 0..limit {
        let mut changed = false;
        for edge in &graph.edges {
            let step = if edge.via.is_some() { 2 } else { 1 };
            let from = column.get(&edge.from).copied().unwrap_or(0);
            let want = (from + step).min(2 * limit);
            let to = column.entry(edge.to.clone()).or_insert(0);
            if *to < want {
                *to = want;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A waypoint: the column before the first of its services.
    for node in graph.nodes.iter().filter(|n| n.kind == Kind::Waypoint) {
        let first = graph
            .edges
            .iter()
            .filter(|e| e.via.as_ref() == Some(node))
            .filter_map(|e| column.get(&e.to))
            .min()
            .copied()
            .unwrap_or(1);
        column.insert(node.clone(), first.saturating_sub(1));
    }
    column
}

pub fn layout(graph: &Graph) -> Layout {
    let columns = columns(graph);
    let count = columns.values().max().map_or(0, |c| c + 1);
    let mut by_column: Vec<Vec<Node>> = vec![Vec::new(); count];
    for (node, column) in &columns {
        by_column[*column].push(node.clone());
    }
    // Rows: each column ordered by where its callers sit (their mean row), so edges cross
    // less; the first column by name.
    let mut row: BTreeMap<Node, f64> = BTreeMap::new();
    for nodes in &mut by_column {
        let callers_row = |node: &Node| {
            let rows: Vec<f64> = graph
                .edges
                .iter()
                .filter(|e| &e.to == node)
                .filter_map(|e| row.get(e.via.as_ref().unwrap_or(&e.from)))
                .copied()
                .collect();
            if rows.is_empty() {
                f64::MAX
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        let mut keyed: Vec<(f64, Node)> =
            nodes.iter().map(|n| (callers_row(n), n.clone())).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        *nodes = keyed.into_iter().map(|(_, n)| n).collect();
        for (i, node) in nodes.iter().enumerate() {
            row.insert(node.clone(), i as f64);
        }
    }
    let rows = by_column.iter().map(Vec::len).max().unwrap_or(0);
    let height_of = |n: usize| n as f64 * ROW;
    let mut positions = BTreeMap::new();
    for (column, nodes) in by_column.iter().enumerate() {
        // Shorter columns are centred.
        let offset = (height_of(rows) - height_of(nodes.len())) / 2.0;
        for (i, node) in nodes.iter().enumerate() {
            positions.insert(
                node.clone(),
                Placed {
                    column,
                    x: MARGIN + column as f64 * COLUMN,
                    y: MARGIN + offset + i as f64 * ROW,
                },
            );
        }
    }
    Layout {
        positions,
        width: 2.0 * MARGIN + count.saturating_sub(1) as f64 * COLUMN + NODE_WIDTH,
        height: 2.0 * MARGIN + height_of(rows.max(1)) - (ROW - NODE_HEIGHT)
            + NODE_HEIGHT * 1.6
            + 30.0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Unit, build, tests::bookinfo};
    use super::*;

    fn column_of(layout: &Layout, name: &str) -> usize {
        layout
            .positions
            .iter()
            .find(|(n, _)| n.name == name)
            .map(|(_, p)| p.column)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn clients_left_waypoints_and_services_middle_backends_right() {
        let layout = layout(&build(&bookinfo(), Unit::PerSecond));
        let order: Vec<usize> = [
            "productpage-v1",
            "waypoint",
            "reviews",
            "reviews-v2",
            "ratings",
            "ratings-v1",
        ]
        .iter()
        .map(|n| column_of(&layout, n))
        .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
        assert_eq!(column_of(&layout, "reviews-v1"), 3);
        // Nodes of one column do not overlap.
        let v1 = layout
            .positions
            .iter()
            .find(|(n, _)| n.name == "reviews-v1")
            .expect("placed")
            .1;
        let v2 = layout
            .positions
            .iter()
            .find(|(n, _)| n.name == "reviews-v2")
            .expect("placed")
            .1;
        assert!((v1.y - v2.y).abs() >= NODE_HEIGHT, "{v1:?} {v2:?}");
        assert!(layout.width >= v1.x + NODE_WIDTH);
    }

    #[test]
    fn a_cycle_of_calls_is_laid_out_in_bounded_columns() {
        use super::super::model::tests::sample;
        use super::super::sample::Metric;
        let call = |from: &str, to: &str| {
            sample(
                Metric::TcpSent,
                1.0,
                &[
                    ("reporter", "source"),
                    ("source_workload", from),
                    ("source_workload_namespace", "ns"),
                    ("destination_workload", to),
                    ("destination_workload_namespace", "ns"),
                ],
            )
        };
        let graph = build(&[call("a", "b"), call("b", "a")], Unit::Total);
        let layout = layout(&graph);
        assert_eq!(layout.positions.len(), 2);
        assert!(layout.positions.values().all(|p| p.column <= 4));
    }
}
