//! `weftctl policies`.
use serde_json::Value;

use super::table::{Table, items, list, text};

/// `app=web,tier=front`, `-` for none.
fn selector(value: &Value) -> String {
    match value.as_object() {
        Some(labels) => list(labels.iter().map(|(k, v)| format!("{k}={}", text(v)))),
        None => "-".into(),
    }
}

fn section(out: &mut String, title: &str, table: Table) {
    out.push_str(title);
    out.push_str(":\n");
    if table.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table.render());
    }
}

pub fn render(policies: &Value) -> String {
    let mut authz = Table::new(&[
        "NAMESPACE",
        "NAME",
        "ACTION",
        "SCOPE",
        "SELECTOR",
        "RULES",
        "SELECTS ON NODE",
    ]);
    for p in items(&policies["authorization_policies"]) {
        authz.row(vec![
            text(&p["namespace"]),
            text(&p["name"]),
            text(&p["action"]),
            text(&p["scope"]),
            selector(&p["selector"]),
            // Absent rules match nothing (ALLOW then allows nothing): not the same as 0.
            if p["rules"].is_null() {
                "none".into()
            } else {
                text(&p["rules"])
            },
            text(&p["selects_on_node"]),
        ]);
    }
    let mut peer = Table::new(&[
        "NAMESPACE",
        "NAME",
        "MODE",
        "PORTS",
        "SCOPE",
        "SELECTOR",
        "SELECTS ON NODE",
    ]);
    for p in items(&policies["peer_authentications"]) {
        let ports = match p["port_level"].as_object() {
            Some(ports) => list(
                ports
                    .iter()
                    .map(|(port, mode)| format!("{port}:{}", text(mode))),
            ),
            None => "-".into(),
        };
        peer.row(vec![
            text(&p["namespace"]),
            text(&p["name"]),
            text(&p["mode"]),
            ports,
            text(&p["scope"]),
            selector(&p["selector"]),
            text(&p["selects_on_node"]),
        ]);
    }
    let mut pods = Table::new(&["POD", "IDENTITY", "MTLS", "AUTHORIZATION POLICIES"]);
    for p in items(&policies["pods_on_node"]) {
        pods.row(vec![
            text(&p["pod"]),
            text(&p["identity"]),
            text(&p["mtls_mode"]),
            text(&p["authorization_policies"]),
        ]);
    }
    let mut out = String::new();
    section(&mut out, "AuthorizationPolicies", authz);
    out.push('\n');
    section(&mut out, "PeerAuthentications", peer);
    out.push('\n');
    section(&mut out, "In force on the mesh pods of this node", pods);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn three_sections() {
        let policies = json!({
            "authorization_policies": [
                {"namespace": "mesh", "name": "allow-client", "action": "ALLOW",
                 "scope": "workload", "selector": {"app": "server"}, "rules": 1,
                 "selects_on_node": ["mesh/server"]},
                {"namespace": "mesh", "name": "nothing", "action": "ALLOW",
                 "scope": "namespace", "selector": null, "rules": null, "selects_on_node": []}
            ],
            "peer_authentications": [],
            "pods_on_node": [
                {"pod": "mesh/server", "identity": "spiffe://cluster.local/ns/mesh/sa/server",
                 "mtls_mode": "PERMISSIVE", "authorization_policies": ["mesh/allow-client", "mesh/nothing"]}
            ]
        });
        assert_eq!(
            render(&policies),
            "\
AuthorizationPolicies:
NAMESPACE   NAME           ACTION   SCOPE       SELECTOR     RULES   SELECTS ON NODE
mesh        allow-client   ALLOW    workload    app=server   1       mesh/server
mesh        nothing        ALLOW    namespace   -            none    -

PeerAuthentications:
  none

In force on the mesh pods of this node:
POD           IDENTITY                                   MTLS         AUTHORIZATION POLICIES
mesh/server   spiffe://cluster.local/ns/mesh/sa/server   PERMISSIVE   mesh/allow-client,mesh/nothing
"
        );
    }
}
