//! `weftctl workloads`.
use serde_json::Value;

use super::table::{Table, items, namespaced, text, yes_no};

pub fn render(workloads: &Value) -> String {
    let mut table = Table::new(&[
        "NAMESPACE",
        "NAME",
        "IPS",
        "NODE",
        "IDENTITY",
        "WAYPOINT",
        "MESH",
        "CAPTURED",
    ]);
    for w in items(workloads) {
        table.row(vec![
            text(&w["namespace"]),
            text(&w["name"]),
            text(&w["ips"]),
            text(&w["node"]),
            text(&w["identity"]),
            namespaced(&w["waypoint"]),
            yes_no(w["in_mesh"].as_bool().unwrap_or_default()).into(),
            yes_no(w["captured"].as_bool().unwrap_or_default()).into(),
        ]);
    }
    if table.is_empty() {
        return "no workloads\n".into();
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_row_per_workload() {
        let workloads = json!([
            {"uid": "u1", "name": "client", "namespace": "mesh", "node": "node-1",
             "ips": ["10.244.1.2"], "identity": "spiffe://cluster.local/ns/mesh/sa/client",
             "in_mesh": true, "captured": true, "waypoint": null},
            {"uid": "u2", "name": "server", "namespace": "mesh", "node": "node-2",
             "ips": ["10.244.2.2"], "identity": "spiffe://cluster.local/ns/mesh/sa/server",
             "in_mesh": true, "captured": false, "waypoint": {"namespace": "mesh", "name": "wp"}},
            {"uid": "u3", "name": "pending", "namespace": "plain", "node": null, "ips": [],
             "identity": "spiffe://cluster.local/ns/plain/sa/default", "in_mesh": false,
             "captured": false, "waypoint": null}
        ]);
        assert_eq!(
            render(&workloads),
            "\
NAMESPACE   NAME      IPS          NODE     IDENTITY                                     WAYPOINT   MESH   CAPTURED
mesh        client    10.244.1.2   node-1   spiffe://cluster.local/ns/mesh/sa/client     -          yes    yes
mesh        server    10.244.2.2   node-2   spiffe://cluster.local/ns/mesh/sa/server     mesh/wp    yes    no
plain       pending   -            -        spiffe://cluster.local/ns/plain/sa/default   -          no     no
"
        );
        assert_eq!(render(&json!([])), "no workloads\n");
    }
}
