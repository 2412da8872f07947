//! `weftctl config-dump`: a summary as a table; the whole dump with `-o json|yaml`.
use serde_json::Value;

use super::table::{Table, items, text};

fn refusals(title: &str, list: &[Value]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut table = Table::new(&["KIND", "NAMESPACE", "NAME", "FIELD", "REASON", "ORIGIN"]);
    for r in list {
        table.row(vec![
            text(&r["kind"]),
            text(&r["namespace"]),
            text(&r["name"]),
            text(&r["field"]),
            text(&r["reason"]),
            text(&r["origin"]),
        ]);
    }
    format!("\n{title}:\n{}", table.render())
}

pub fn render(dump: &Value) -> String {
    let mut out = format!(
        "node {}, registry version {}\n\n",
        text(&dump["node"]),
        text(&dump["registry_version"])
    );
    let mut counts = Table::new(&["SECTION", "OBJECTS"]);
    for (section, title) in [
        ("workloads", "workloads"),
        ("services", "services"),
        ("service_entries", "service entries"),
        ("routes", "hosts with routes"),
        ("waypoints", "waypoints"),
        ("gateways", "gateways"),
        ("authorization_policies", "authorization policies"),
        ("peer_authentications", "peer authentications"),
        ("refused", "refused"),
        ("warnings", "warnings"),
    ] {
        counts.row(vec![title.into(), items(&dump[section]).len().to_string()]);
    }
    out.push_str(&counts.render());
    out.push_str(&refusals(
        "refused (the previous version, if any, is still in force)",
        items(&dump["refused"]),
    ));
    out.push_str(&refusals(
        "accepted with warnings",
        items(&dump["warnings"]),
    ));
    out.push_str("\n-o json or -o yaml prints the whole configuration\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn summary_counts_sections_and_lists_refusals() {
        let dump = json!({
            "node": "node-1", "registry_version": 7,
            "workloads": [{}, {}, {}], "services": [{}],
            "routes": [], "refused": [
                {"kind": "VirtualService", "namespace": "mesh", "name": "bad",
                 "field": "spec.http[0].route[1].weight",
                 "reason": "the weights of the 2 destinations sum to 90, not 100",
                 "origin": "/run/weft-lab/x/cluster/bad.yaml:1"}
            ],
            "warnings": []
        });
        assert_eq!(
            render(&dump),
            "\
node node-1, registry version 7

SECTION                  OBJECTS
workloads                3
services                 1
service entries          0
hosts with routes        0
waypoints                0
gateways                 0
authorization policies   0
peer authentications     0
refused                  1
warnings                 0

refused (the previous version, if any, is still in force):
KIND             NAMESPACE   NAME   FIELD                          REASON                                                 ORIGIN
VirtualService   mesh        bad    spec.http[0].route[1].weight   the weights of the 2 destinations sum to 90, not 100   /run/weft-lab/x/cluster/bad.yaml:1

-o json or -o yaml prints the whole configuration
"
        );
    }
}
