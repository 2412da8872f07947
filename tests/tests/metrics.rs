//! Istio's standard TCP metrics from both agents of a connection: the client's agent
//! reports it as `source`, the server's as `destination`, with the same workloads,
//! principals, service and bytes.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use weft_e2e::{eventually, lab_up, testapp_json};
use weft_lab::Lab;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/server";

/// `GET /metrics` on the agent of `node` (port 15020 of the node's network namespace).
fn scrape(lab: &Lab, node: &str) -> String {
    let fetched = lab.in_node_netns(node, || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", 15020))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    let response = match fetched {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("scraping the agent of {node}: {e}"),
        Err(e) => panic!("entering the network namespace of {node}: {e}"),
    };
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// One sample: its metric's name, its label pairs, its value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, u64);

/// A sample line (`name{k="v",…} value`), unescaped enough for our label values.
fn sample(line: &str) -> Option<Sample<'_>> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let pairs = labels
        .split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect();
    Some((name, pairs, value.trim().parse().ok()?))
}

/// The sum of the samples of `name` whose labels include all of `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter_map(sample)
        .filter(|(n, labels, _)| *n == name && want.iter().all(|w| labels.iter().any(|l| l == w)))
        .map(|(_, _, v)| v)
        .sum()
}

/// What both agents must say of the client's connections to the server's Service.
fn expected(reporter: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("reporter", reporter),
        ("source_workload", "client"),
        ("source_workload_namespace", "mesh"),
        ("source_canonical_service", "client"),
        ("source_app", "client"),
        ("source_principal", CLIENT_ID),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "server"),
        ("destination_workload_namespace", "mesh"),
        ("destination_canonical_service", "server"),
        ("destination_canonical_revision", "latest"),
        ("destination_principal", SERVER_ID),
        ("destination_service", "server.mesh.svc.cluster.local"),
        ("destination_service_name", "server"),
        ("destination_service_namespace", "mesh"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ]
}

#[test]
fn both_agents_report_the_same_connections_bytes_and_identities() {
    let lab = lab_up("metric", "tunnel", 2, true);
    let connections = 5u64;
    let payload = "weft-metrics-0123456789\n";
    let echoes = testapp_json(
        &lab,
        "mesh/client",
        &[
            "tcp",
            "server.mesh:9000",
            "--send",
            payload,
            "--repeat",
            &connections.to_string(),
        ],
    );
    assert_eq!(echoes.len() as u64, 2 * connections, "{echoes:?}");

    let bytes = connections * payload.len() as u64;
    let nodes = [("node-1", "source"), ("node-2", "destination")];
    for (node, reporter) in nodes {
        let want = expected(reporter);
        // The close is counted when each side's splice ends, just after the client's.
        let mut text = String::new();
        let closed = eventually(Duration::from_secs(5), || {
            text = scrape(&lab, node);
            value(&text, "istio_tcp_connections_closed_total", &want) == connections
        });
        assert!(
            closed,
            "{node}: {connections} closed connections expected:\n{text}"
        );
        for (name, expected) in [
            ("istio_tcp_connections_opened_total", connections),
            ("istio_tcp_received_bytes_total", bytes),
            ("istio_tcp_sent_bytes_total", bytes),
        ] {
            assert_eq!(
                value(&text, name, &want),
                expected,
                "{node}: {name}\n{text}"
            );
        }
        // Each agent reports only its own side.
        let other = if reporter == "source" {
            "destination"
        } else {
            "source"
        };
        assert_eq!(
            value(
                &text,
                "istio_tcp_connections_opened_total",
                &[("reporter", other)]
            ),
            0,
            "{node}:\n{text}"
        );
    }

    // HTTP on one keep-alive connection: requests are smaller than responses, and both
    // agents count the same bytes in the same direction.
    let before: Vec<String> = nodes.iter().map(|(node, _)| scrape(&lab, node)).collect();
    let responses = testapp_json(
        &lab,
        "mesh/client",
        &["get", "http://server.mesh/metrics-test", "--count", "3"],
    );
    assert!(
        responses.iter().all(|r| r["status"] == 200),
        "{responses:?}"
    );
    let mut deltas = Vec::new();
    for ((node, reporter), before) in nodes.iter().zip(&before) {
        let want = expected(reporter);
        let mut text = String::new();
        let closed = eventually(Duration::from_secs(5), || {
            text = scrape(&lab, node);
            value(&text, "istio_tcp_connections_closed_total", &want) == connections + 1
        });
        assert!(closed, "{node}: the HTTP connection did not close:\n{text}");
        let delta = |name: &str| value(&text, name, &want) - value(before, name, &want);
        let received = delta("istio_tcp_received_bytes_total");
        let sent = delta("istio_tcp_sent_bytes_total");
        assert!(
            received > 0 && sent > received,
            "{node}: received {received}, sent {sent}"
        );
        deltas.push((received, sent));
    }
    assert_eq!(
        deltas[0], deltas[1],
        "source and destination counted different bytes"
    );
}
