//! `weftctl` against real agents, run in a node's network namespace as an operator on the
//! node would run it: what the agent knows (workloads and their identities), holds
//! (certificates), refused (an invalid VirtualService, with its field and reason) and put in
//! the kernel.
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{agent_admin, bin_dir, eventually, lab_up};
use weft_lab::Lab;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/server";
const OUTSIDER_ID: &str = "spiffe://cluster.local/ns/plain/sa/default";

/// Weights summing to 90: refused by the registry, and by `weftctl validate`.
const BROKEN_ROUTE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken-split, namespace: mesh}
spec:
  hosts: [server]
  http:
  - route:
    - {destination: {host: server}, weight: 50}
    - {destination: {host: server}, weight: 40}
"#;
const BROKEN_FIELD: &str = "spec.http[0].route[1].weight";

fn weftctl() -> PathBuf {
    let path = bin_dir().join("weftctl");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

fn weftctl_on(lab: &Lab, node: &str, args: &[&str]) -> Output {
    let mut command = lab
        .node_command(node, weftctl())
        .unwrap_or_else(|e| panic!("preparing weftctl on {node}: {e}"));
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running weftctl {args:?} on {node}: {e}"))
}

fn text_on(lab: &Lab, node: &str, args: &[&str]) -> String {
    let output = weftctl_on(lab, node, args);
    assert!(
        output.status.success(),
        "weftctl {args:?} on {node} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_on(lab: &Lab, node: &str, args: &[&str]) -> Value {
    let text = text_on(lab, node, args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("weftctl {args:?} printed no JSON ({e}): {text}"))
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list:#}"))
}

fn certificate<'a>(certs: &'a Value, identity: &str) -> Option<&'a Value> {
    certs["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["identity"] == identity)
}

#[test]
fn weftctl_shows_what_the_agent_of_its_node_knows_holds_and_refused() {
    let lab = lab_up("inspct", "tunnel", 2, true);

    // Workloads, cluster-wide, with identities and nodes; captured only by their node's agent.
    let workloads = json_on(&lab, "node-1", &["workloads", "-o", "json"]);
    let client = by_name(&workloads, "client");
    assert_eq!(client["identity"], CLIENT_ID);
    assert_eq!(client["node"], "node-1");
    assert_eq!(client["in_mesh"], true);
    assert_eq!(client["captured"], true, "{client}");
    let server = by_name(&workloads, "server");
    assert_eq!(server["identity"], SERVER_ID);
    assert_eq!(server["node"], "node-2");
    assert_eq!(server["captured"], false, "node-2's agent captures it");
    let outsider = by_name(&workloads, "outsider");
    assert_eq!(outsider["identity"], OUTSIDER_ID);
    assert_eq!(outsider["in_mesh"], false);
    assert_eq!(outsider["captured"], false);
    let on_node_2 = json_on(&lab, "node-2", &["workloads", "-o", "json"]);
    assert_eq!(by_name(&on_node_2, "server")["captured"], true);
    let table = text_on(&lab, "node-1", &["workloads"]);
    assert!(table.starts_with("NAMESPACE   NAME"), "{table}");
    assert!(table.contains(CLIENT_ID), "{table}");

    // Certificates of this node's mesh pods, unexpired; never another node's.
    let certs_issued = || {
        let certs = json_on(&lab, "node-1", &["certs", "-o", "json"]);
        certificate(&certs, CLIENT_ID).is_some()
    };
    assert!(
        eventually(Duration::from_secs(10), certs_issued),
        "the client's certificate is issued"
    );
    let certs = json_on(&lab, "node-1", &["certs", "-o", "json"]);
    let cert = certificate(&certs, CLIENT_ID).expect("client's certificate");
    assert!(cert["expires_in_seconds"].as_i64() > Some(0), "{cert}");
    assert_eq!(cert["pods"], serde_json::json!(["mesh/client"]));
    assert!(
        cert["chain_length"].as_u64() >= Some(2),
        "leaf and root: {cert}"
    );
    assert_eq!(
        cert["root_fingerprint_sha256"].as_str().map(str::len),
        Some(32 * 3 - 1),
        "{cert}"
    );
    assert!(cert["not_after"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The trust bundle in force: the CA's one root, which the certificate chains to.
    let roots = certs["trust_bundle"]["roots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(roots.len(), 1, "{certs:#}");
    assert_eq!(
        roots[0]["fingerprint_sha256"], cert["root_fingerprint_sha256"],
        "{certs:#}"
    );
    assert_eq!(cert["chains_to_bundle"], true, "{cert}");
    assert!(
        certificate(&certs, SERVER_ID).is_none(),
        "node-1 holds no certificate for node-2's pod: {certs:#}"
    );
    let table = text_on(&lab, "node-1", &["certs"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(CLIENT_ID))
        .unwrap_or_else(|| panic!("no row for the client:\n{table}"));
    assert!(row.contains(" valid "), "{table}");

    // An invalid VirtualService is refused, and the dump says which field and why.
    lab.apply_yaml("broken-split", BROKEN_ROUTE)
        .expect("write the VirtualService into the cluster view");
    let refusal = || -> Option<Value> {
        let dump = json_on(&lab, "node-1", &["config-dump", "-o", "json"]);
        dump["refused"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == "broken-split")
            .cloned()
    };
    assert!(
        eventually(Duration::from_secs(10), || refusal().is_some()),
        "the agent refuses the VirtualService"
    );
    let refused = refusal().expect("refused");
    assert_eq!(refused["kind"], "VirtualService");
    assert_eq!(refused["namespace"], "mesh");
    assert_eq!(refused["field"], BROKEN_FIELD);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sum to 90")),
        "{refused}"
    );
    let summary = text_on(&lab, "node-1", &["config-dump"]);
    assert!(
        summary.contains("broken-split") && summary.contains(BROKEN_FIELD),
        "{summary}"
    );

    let status = json_on(&lab, "node-1", &["status", "-o", "json"]);
    assert_eq!(status["reachable"], true);
    assert_eq!(status["ready"], true);
    assert_eq!(status["node"], "node-1");
    assert_eq!(status["enrolled_pods"], 1, "{status}");
    assert_eq!(status["certificates_expired"], 0, "{status}");
    assert!(status["refused_objects"].as_u64() >= Some(1), "{status}");

    // The same file, checked offline, fails naming the field.
    let file = lab.paths.root.join("broken-split.yaml");
    std::fs::write(&file, BROKEN_ROUTE).expect("write the manifest");
    let output = std::process::Command::new(weftctl())
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("weftctl validate runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&format!("VirtualService mesh/broken-split: {BROKEN_FIELD}")),
        "{printed}"
    );

    // What the agent put in the kernel: the client's six links, the maps it fills.
    let ebpf = agent_admin(&lab, "node-1", "/ebpf");
    let pod = &ebpf["pods"][0];
    assert_eq!(pod["pod"], "mesh/client", "{ebpf:#}");
    let programs = pod["programs"].as_array().expect("programs");
    assert_eq!(programs.len(), 6, "{pod:#}");
    assert!(
        programs.iter().all(|p| p["link_id"].as_u64().is_some()),
        "every link is pinned and readable: {pod:#}"
    );
    let map = |name: &str| {
        ebpf["maps"]
            .as_array()
            .and_then(|maps| maps.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no map {name}: {ebpf:#}"))
    };
    assert_eq!(map("POD_STATS")["entries"], 1, "{ebpf:#}");
    assert_eq!(map("OUTBOUND_LISTENERS")["entries"], 1, "{ebpf:#}");
    assert!(map("POD_CAPTURE")["entries"].as_u64() >= Some(1));
    assert!(map("ORIG_DST_BY_COOKIE")["max_entries"].as_u64() > Some(0));
    // Entries live only while the agent connects to an application: none at rest.
    assert_eq!(map("TRANSPARENT_CONNECTS")["entries"], 0, "{ebpf:#}");

    // Nothing listening: one line that says where and what to check.
    let output = weftctl_on(&lab, "node-1", &["status", "--admin", "127.0.0.1:15999"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "cannot reach agent admin at 127.0.0.1:15999: connection refused (is weft-agent running on this node?"
        ),
        "{stderr}"
    );
}
