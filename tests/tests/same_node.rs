//! The same-node fast path: a connection between two pods of one agent skips HBONE, yet is
//! admitted, counted and recorded exactly as an HBONE connection would be at both ends; a
//! waypoint in the way is still gone through; `--same-node-fast-path=false` turns it off.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{
    agent_admin, agent_connections, agent_connections_when, eventually, lab_up, lab_up_with,
    pod_ip, testapp_in, testapp_json,
};
use weft_lab::Lab;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/server";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/waypoint";
const NODE: &str = "node-1";
const WAIT: Duration = Duration::from_secs(15);

fn pod_status(lab: &Lab, pod: &str) -> Value {
    agent_admin(lab, NODE, "/pods")
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["pod"] == pod).cloned())
        .unwrap_or_else(|| panic!("{pod} is not enrolled"))
}

fn counter(status: &Value, name: &str) -> u64 {
    status[name].as_u64().unwrap_or_default()
}

/// `GET /metrics` on the node's agent.
fn scrape(lab: &Lab) -> String {
    let fetched = lab.in_node_netns(NODE, || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", 15020))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    match fetched {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("scraping the agent: {e}"),
        Err(e) => panic!("entering the node's network namespace: {e}"),
    }
}

/// The sum of the samples of `name` whose labels include every `key="value"` of `want`.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            want.iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum()
}

/// A short echo from `pod` to `target`: whether it came back.
fn echoes(lab: &Lab, pod: &str, target: &str) -> bool {
    testapp_in(
        lab,
        pod,
        &["tcp", target, "--send", "policy", "--timeout-ms", "3000"],
    )
    .status
    .success()
}

#[test]
fn a_same_node_connection_skips_hbone_and_is_counted_exactly_at_both_ends() {
    let lab = lab_up("fastpath", "same_node", 1, true);
    let client_ip = pod_ip(&lab, "mesh/client");
    let server_ip = pod_ip(&lab, "mesh/server");
    let vip = lab
        .plan
        .services
        .iter()
        .find(|s| s.name == "server")
        .map(|s| s.vip.to_string())
        .expect("the server's Service");

    // The application sees the client pod's address, as over HBONE.
    let reply = &testapp_json(&lab, "mesh/client", &["get", "http://server.mesh/"])[0];
    assert_eq!(reply["status"], 200, "{reply}");
    assert!(
        reply["body"]["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with(&format!("{client_ip}:"))),
        "{reply}"
    );

    // The request's connection is counted once it has ended at both ends (its metrics
    // just before its pods' counters): only then is a baseline taken.
    assert!(
        eventually(WAIT, || {
            counter(&pod_status(&lab, "mesh/client"), "outbound_connections") == 1
                && counter(&pod_status(&lab, "mesh/server"), "inbound_connections") == 1
        }),
        "the request was accounted at both ends"
    );
    let client_before = pod_status(&lab, "mesh/client");
    let server_before = pod_status(&lab, "mesh/server");
    let metrics_before = scrape(&lab);
    let payload = "f".repeat(1000);
    let connections = 3u64;
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &[
            "tcp",
            &format!("{vip}:9000"),
            "--send",
            &payload,
            "--repeat",
            &connections.to_string(),
        ],
    );
    assert_eq!(echo.len() as u64, 2 * connections, "{echo:?}");
    assert!(echo.iter().skip(1).step_by(2).all(|e| e["bytes"] == 1000));
    let bytes = connections * payload.len() as u64;

    // Each pod's counters, once each connection has ended at both ends: exactly what went
    // each way.
    let (mut client, mut server) = (Value::Null, Value::Null);
    let settled = eventually(WAIT, || {
        client = pod_status(&lab, "mesh/client");
        server = pod_status(&lab, "mesh/server");
        counter(&client, "outbound_connections")
            == counter(&client_before, "outbound_connections") + connections
            && counter(&server, "inbound_connections")
                == counter(&server_before, "inbound_connections") + connections
    });
    assert!(settled, "{client}\n{server}");
    for (status, before, name) in [
        (&client, &client_before, "bytes_sent"),
        (&client, &client_before, "bytes_received"),
        (&server, &server_before, "bytes_sent"),
        (&server, &server_before, "bytes_received"),
    ] {
        assert_eq!(
            counter(status, name) - counter(before, name),
            bytes,
            "{name}: {status}"
        );
    }

    // The records say it went the fast way, with both identities; no HBONE at all.
    let dialed = format!("{vip}:9000");
    let outbound: Vec<Value> = agent_connections(&lab, NODE)
        .into_iter()
        .filter(|r| r["pod"] == "mesh/client" && r["original_destination"] == dialed.as_str())
        .collect();
    assert_eq!(outbound.len() as u64, connections, "{outbound:?}");
    for record in &outbound {
        assert_eq!(record["protocol"], "same-node", "{record}");
        assert_eq!(record["peer_identity"], SERVER_ID, "{record}");
        assert_eq!(record["upstream"], format!("{server_ip}:9000"), "{record}");
        assert_eq!(record["error"], Value::Null, "{record}");
    }
    let to_server = |r: &Value| {
        r["pod"] == "mesh/server"
            && r["direction"] == "inbound"
            && r["original_destination"] == format!("{server_ip}:9000")
    };
    let inbound: Vec<Value> = agent_connections(&lab, NODE)
        .into_iter()
        .filter(to_server)
        .collect();
    assert_eq!(inbound.len() as u64, connections, "{inbound:?}");
    for record in &inbound {
        assert_eq!(record["protocol"], "same-node", "{record}");
        assert_eq!(record["peer_identity"], CLIENT_ID, "{record}");
        assert_eq!(record["source"], format!("{client_ip}:0"), "{record}");
        assert_eq!(record["listener"], format!("{client_ip}:15001"), "{record}");
        assert_eq!(record["error"], Value::Null, "{record}");
    }
    assert!(
        agent_connections(&lab, NODE)
            .iter()
            .filter(|r| r["pod"] == "mesh/server" || r["pod"] == "mesh/client")
            .all(|r| r["protocol"] != "hbone"),
        "no HBONE between two pods of the node"
    );

    // Istio's metrics from both reporters, as over HBONE: mutual TLS, the client's
    // principal, the same bytes.
    let metrics = scrape(&lab);
    for reporter in ["source", "destination"] {
        let want = [
            ("reporter", reporter),
            ("source_principal", CLIENT_ID),
            ("destination_principal", SERVER_ID),
            ("destination_service", "server.mesh.svc.cluster.local"),
            ("connection_security_policy", "mutual_tls"),
            ("response_flags", "-"),
        ];
        for name in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        ] {
            assert_eq!(
                metric(&metrics, name, &want) - metric(&metrics_before, name, &want),
                connections,
                "{reporter} {name}:\n{metrics}"
            );
        }
        for name in [
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
        ] {
            assert_eq!(
                metric(&metrics, name, &want) - metric(&metrics_before, name, &want),
                bytes,
                "{reporter} {name}:\n{metrics}"
            );
        }
    }

    // A Service behind a waypoint (on this node too) is still reached through it: HBONE to
    // the waypoint, which tunnels on to the pod.
    let db = format!("{}:5000", pod_ip(&lab, "mesh/db"));
    assert!(echoes(&lab, "mesh/client", "db.mesh:5000"));
    let via_waypoint = |r: &Value| {
        r["pod"] == "mesh/db" && r["direction"] == "inbound" && r["original_destination"] == db
    };
    let inbound: Vec<Value> =
        agent_connections_when(&lab, NODE, |records| records.iter().any(via_waypoint))
            .into_iter()
            .filter(via_waypoint)
            .collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["protocol"], "hbone", "{}", inbound[0]);
    assert_eq!(inbound[0]["peer_identity"], WAYPOINT_ID, "{}", inbound[0]);
    assert_eq!(inbound[0]["error"], Value::Null, "{}", inbound[0]);
    let outbound: Vec<Value> = agent_connections(&lab, NODE)
        .into_iter()
        .filter(|r| r["pod"] == "mesh/client" && r["peer_identity"] == WAYPOINT_ID)
        .collect();
    assert_eq!(outbound.len(), 1, "{outbound:?}");
    assert_eq!(outbound[0]["protocol"], "hbone", "{}", outbound[0]);
    // Straight to the pod, past its waypoint, is refused on the fast path as over HBONE.
    assert!(!echoes(&lab, "mesh/client", &db));
    let refused = agent_connections_when(&lab, NODE, |records| {
        records
            .iter()
            .any(|r| via_waypoint(r) && r["error"] != Value::Null)
    });
    assert!(
        refused.iter().any(|r| via_waypoint(r)
            && r["protocol"] == "same-node"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("must come through waypoint"))),
        "{refused:?}"
    );
}

#[test]
fn policy_at_the_destination_holds_on_the_same_node_path() {
    let lab = lab_up("fastpath", "same_node", 1, true);
    let target = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(echoes(&lab, "mesh/client", &target), "no policy yet");
    assert!(echoes(&lab, "mesh/intruder", &target), "no policy yet");

    lab.apply_yaml(
        "server-policy",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/client"]}}]
"#,
    )
    .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "mesh/client", &target)),
        "a DENY naming the client's principal refuses it on the same node"
    );
    assert!(echoes(&lab, "mesh/intruder", &target), "others still pass");
    let denied = |r: &Value| {
        r["pod"] == "mesh/server"
            && r["direction"] == "inbound"
            && r["peer_identity"] == CLIENT_ID
            && r["protocol"] == "same-node"
            && r["error"] != Value::Null
    };
    let records = agent_connections_when(&lab, NODE, |records| records.iter().any(denied));
    assert!(records.iter().any(denied), "{records:?}");

    lab.apply_yaml(
        "server-policy",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/client"]}}]
"#,
    )
    .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "mesh/intruder", &target)),
        "an ALLOW by principal refuses every other identity"
    );
    assert!(
        echoes(&lab, "mesh/client", &target),
        "the ALLOW names the client's SPIFFE identity: it passes"
    );
}

#[test]
fn switched_off_same_node_connections_go_over_hbone() {
    let lab = lab_up_with(
        "fastpath",
        "same_node",
        1,
        true,
        &["--same-node-fast-path=false"],
    );
    let target = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(echoes(&lab, "mesh/client", &target));
    let to_server = |r: &Value| {
        r["pod"] == "mesh/server"
            && r["direction"] == "inbound"
            && r["original_destination"] == target.as_str()
    };
    let records = agent_connections_when(&lab, NODE, |records| records.iter().any(to_server));
    let inbound: Vec<&Value> = records.iter().filter(|r| to_server(r)).collect();
    assert_eq!(inbound.len(), 1, "{records:?}");
    assert_eq!(inbound[0]["protocol"], "hbone", "{}", inbound[0]);
    assert_eq!(inbound[0]["peer_identity"], CLIENT_ID, "{}", inbound[0]);
    assert_eq!(
        inbound[0]["listener"],
        target.replace(":9000", ":15008"),
        "{}",
        inbound[0]
    );
}
