//! `weftctl status`.
use serde_json::Value;

use super::args::{AdminArgs, Output, serialized};
use super::client;
use super::table::{duration, text, yes_no};

pub fn run(args: &AdminArgs) -> anyhow::Result<String> {
    let mut status = client::get_json(&args.admin, "/status")?;
    if args.output == Output::Table {
        return Ok(render(&status, &args.admin));
    }
    if let Value::Object(fields) = &mut status {
        fields.insert("admin".into(), Value::String(args.admin.clone()));
        fields.insert("reachable".into(), Value::Bool(true));
    }
    serialized(args.output, &status)
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_default()
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn render(s: &Value, admin: &str) -> String {
    let mut lines: Vec<(&str, String)> = vec![("agent", format!("reachable at {admin}"))];
    lines.push((
        "ready",
        yes_no(s["ready"].as_bool().unwrap_or_default()).into(),
    ));
    lines.push(("version", text(&s["version"])));
    lines.push(("node", text(&s["node"])));
    if let Some(uptime) = s["uptime_seconds"].as_i64() {
        lines.push(("uptime", duration(uptime)));
    }
    lines.push((
        "registry",
        format!(
            "version {}: {}, {}",
            text(&s["registry_version"]),
            plural(count(&s["workloads"]), "workload", "workloads"),
            plural(count(&s["services"]), "service", "services"),
        ),
    ));
    lines.push((
        "enrolled",
        format!(
            "{} (of {} on this node)",
            plural(count(&s["enrolled_pods"]), "pod", "pods"),
            plural(
                count(&s["mesh_workloads_on_node"]),
                "mesh workload",
                "mesh workloads"
            ),
        ),
    ));
    let mut certs = format!(
        "{} held, {} expiring soon, {} expired",
        count(&s["certificates"]),
        count(&s["certificates_expiring_soon"]),
        count(&s["certificates_expired"]),
    );
    let waiting = count(&s["identities_without_certificate"]);
    if waiting > 0 {
        certs.push_str(&format!(
            ", {} waiting for the CA",
            plural(waiting, "identity", "identities")
        ));
    }
    lines.push(("certificates", certs));
    let refused = count(&s["refused_objects"]);
    lines.push((
        "refused",
        if refused == 0 {
            "0 objects".into()
        } else {
            format!(
                "{} (weftctl config-dump shows which and why)",
                plural(refused, "object", "objects")
            )
        },
    ));
    lines.push(("warnings", count(&s["warnings"]).to_string()));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or_default();
    lines
        .into_iter()
        .map(|(key, value)| format!("{key:<width$}   {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_line_per_fact() {
        let status = json!({
            "agent": "weft-agent", "version": "0.1.0", "node": "node-1", "ready": true,
            "uptime_seconds": 3725, "registry_version": 12, "workloads": 3,
            "mesh_workloads_on_node": 1, "enrolled_pods": 1, "services": 1,
            "certificates": 1, "identities_without_certificate": 0,
            "certificates_expiring_soon": 0, "certificates_expired": 0,
            "refused_objects": 1, "warnings": 0
        });
        assert_eq!(
            render(&status, "127.0.0.1:15000"),
            "\
agent          reachable at 127.0.0.1:15000
ready          yes
version        0.1.0
node           node-1
uptime         1h2m
registry       version 12: 3 workloads, 1 service
enrolled       1 pod (of 1 mesh workload on this node)
certificates   1 held, 0 expiring soon, 0 expired
refused        1 object (weftctl config-dump shows which and why)
warnings       0
"
        );
    }
}
