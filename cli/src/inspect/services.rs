//! `weftctl services`.
use serde_json::Value;

use super::table::{Table, items, list, namespaced, text};

/// `80/TCP,9000/TCP`, as kubectl prints a Service's ports.
fn ports(service: &Value) -> String {
    list(items(&service["ports"]).iter().map(|p| {
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        format!("{}/{protocol}", text(&p["port"]))
    }))
}

pub fn render(services: &Value) -> String {
    let mut table = Table::new(&["HOST", "VIPS", "PORTS", "ENDPOINTS", "WAYPOINT"]);
    for s in items(services) {
        table.row(vec![
            text(&s["host"]),
            text(&s["vips"]),
            ports(s),
            // ready/total, as kubectl shows a Deployment's pods.
            format!(
                "{}/{}",
                text(&s["endpoints_ready"]),
                text(&s["endpoints_total"])
            ),
            namespaced(&s["waypoint"]),
        ]);
    }
    if table.is_empty() {
        return "no services\n".into();
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_row_per_service() {
        let services = json!([
            {"name": "server", "namespace": "mesh", "host": "server.mesh.svc.cluster.local",
             "vips": ["10.96.0.10"],
             "ports": [{"name": "http", "port": 80, "target_port": "http", "protocol": "TCP"},
                       {"name": "tcp-echo", "port": 9000, "target_port": 9000, "protocol": "TCP"}],
             "endpoints_total": 2, "endpoints_ready": 1, "waypoint": null},
            {"name": "db", "namespace": "shop", "host": "db.shop.svc.cluster.local",
             "vips": [], "ports": [], "endpoints_total": 0, "endpoints_ready": 0,
             "waypoint": {"namespace": "shop", "name": "waypoint"}}
        ]);
        assert_eq!(
            render(&services),
            "\
HOST                            VIPS         PORTS             ENDPOINTS   WAYPOINT
server.mesh.svc.cluster.local   10.96.0.10   80/TCP,9000/TCP   1/2         -
db.shop.svc.cluster.local       -            -                 0/0         shop/waypoint
"
        );
    }
}
