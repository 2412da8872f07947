//! In-pod eBPF capture: outbound and inbound traffic of mesh pods goes through the agent of
//! their node with its original destination; pods outside the mesh are untouched; capture
//! survives the agent being killed; the kernel maps do not grow under churn.
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData};
use serde_json::Value;
use weft_e2e::{
    agent_admin, agent_connections, agent_connections_when, eventually, lab_up, pod_ip, testapp_in,
    testapp_json,
};
use weft_ebpf_common::{ClientKey, OrigDst, map_names, program_names};
use weft_lab::Lab;

/// Records of `pod` in `direction` whose original destination is `dst`.
fn is_to(record: &Value, pod: &str, direction: &str, dst: &str) -> bool {
    record["pod"] == pod
        && record["direction"] == direction
        && record["original_destination"] == dst
}

fn records_to(lab: &Lab, node: &str, pod: &str, direction: &str, dst: &str) -> Vec<Value> {
    agent_connections(lab, node)
        .into_iter()
        .filter(|r| is_to(r, pod, direction, dst))
        .collect()
}

/// The records to `dst` once at least `expected` are there (or after 5 s): a record is
/// written when the proxied connection has closed on both sides, after the client is done.
fn records_to_at_least(
    lab: &Lab,
    node: &str,
    pod: &str,
    direction: &str,
    dst: &str,
    expected: usize,
) -> Vec<Value> {
    agent_connections_when(lab, node, |records| {
        records
            .iter()
            .filter(|r| is_to(r, pod, direction, dst))
            .count()
            >= expected
    })
    .into_iter()
    .filter(|r| is_to(r, pod, direction, dst))
    .collect()
}

fn pod_status(lab: &Lab, node: &str, pod: &str) -> Option<Value> {
    match agent_admin(lab, node, "/pods") {
        Value::Array(pods) => pods.into_iter().find(|p| p["pod"] == pod),
        other => panic!("/pods is not a list: {other}"),
    }
}

#[test]
fn outbound_to_a_pod_ip_and_a_cluster_ip_goes_through_the_agent() {
    let lab = lab_up("out", "capture", 2, true);
    let remote = format!("{}:8080", pod_ip(&lab, "mesh/server-remote"));
    let vip = format!("{}:80", lab.plan.services[0].vip);

    for (url, dialed) in [
        (format!("http://{remote}/by-ip"), &remote),
        ("http://server.mesh/by-name".to_string(), &vip),
    ] {
        let reply = &testapp_json(&lab, "mesh/client", &["get", &url])[0];
        assert_eq!(reply["status"], 200, "{reply}");
        // The server's accept() shows the client pod, not its agent or its own address.
        let client_ip = pod_ip(&lab, "mesh/client");
        assert!(
            reply["body"]["peer"]
                .as_str()
                .is_some_and(|peer| peer.starts_with(&format!("{client_ip}:"))),
            "the server sees the client's address: {reply}"
        );
        // The application's getpeername() shows what it dialed, not the agent's :15001.
        assert_eq!(
            reply["peer"],
            dialed.as_str(),
            "getpeername of a captured socket"
        );
        let records = records_to_at_least(&lab, "node-1", "mesh/client", "outbound", dialed, 1);
        assert_eq!(
            records.len(),
            1,
            "node-1's agent proxied exactly one connection to {dialed}: {records:?}"
        );
        assert_eq!(
            records[0]["listener"],
            format!("{}:15001", pod_ip(&lab, "mesh/client"))
        );
        assert_eq!(records[0]["error"], Value::Null);
    }
    let status = pod_status(&lab, "node-1", "mesh/client").expect("mesh/client is enrolled");
    assert_eq!(status["captured"], 2, "{status}");

    // Bytes are accounted per pod when a connection closes: 1000 bytes echoed each way.
    let counter = |status: &Value, name: &str| status[name].as_u64().unwrap_or_default();
    let payload = "w".repeat(1000);
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &remote.replace(":8080", ":9000"), "--send", &payload],
    );
    assert_eq!(echo[1]["bytes"], 1000);
    let mut after = status.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            after = pod_status(&lab, "node-1", "mesh/client").expect("enrolled");
            counter(&after, "outbound_connections") == counter(&status, "outbound_connections") + 1
        }),
        "the echo connection was accounted: {after}"
    );
    assert_eq!(
        counter(&after, "bytes_sent") - counter(&status, "bytes_sent"),
        1000
    );
    assert_eq!(
        counter(&after, "bytes_received") - counter(&status, "bytes_received"),
        1000
    );
}

#[test]
fn inbound_on_any_port_arrives_through_15006_from_this_and_other_nodes() {
    let lab = lab_up("in", "capture", 2, true);
    let server = pod_ip(&lab, "mesh/server-local");
    for client in ["plain/outsider", "plain/outsider-remote"] {
        let client_ip = pod_ip(&lab, client);
        for port in [8080, 31234] {
            let reply =
                &testapp_json(&lab, client, &["get", &format!("http://{server}:{port}/")])[0];
            assert_eq!(reply["status"], 200);
            assert!(
                reply["body"]["peer"]
                    .as_str()
                    .is_some_and(|peer| peer.starts_with(&format!("{client_ip}:"))),
                "the application sees the client's address, not the agent's: {reply}"
            );
        }
        for port in [9000, 7000] {
            let echo = testapp_json(
                &lab,
                client,
                &["tcp", &format!("{server}:{port}"), "--send", "in"],
            );
            assert_eq!(echo[1]["echoed"], "in");
        }
        let from_client = |r: &Value, dst: &str| {
            is_to(r, "mesh/server-local", "inbound", dst)
                && r["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{client_ip}:")))
        };
        for port in [8080, 31234, 9000, 7000] {
            let dst = format!("{server}:{port}");
            let records: Vec<Value> = agent_connections_when(&lab, "node-1", |records| {
                records.iter().any(|r| from_client(r, &dst))
            })
            .into_iter()
            .filter(|r| from_client(r, &dst))
            .collect();
            assert_eq!(
                records.len(),
                1,
                "one inbound record from {client} to {dst}: {records:?}"
            );
            assert_eq!(records[0]["listener"], "0.0.0.0:15006");
        }
    }
}

#[test]
fn pods_outside_the_mesh_and_excluded_ports_are_not_captured() {
    let lab = lab_up("skip", "capture", 2, true);
    let remote = pod_ip(&lab, "mesh/server-remote");
    let echo_port = format!("{remote}:9000");

    // A pod outside the mesh on the same node: direct, and unknown to the agent.
    testapp_json(&lab, "plain/outsider", &["tcp", &echo_port]);
    assert!(pod_status(&lab, "node-1", "plain/outsider").is_none());
    assert!(records_to(&lab, "node-1", "plain/outsider", "outbound", &echo_port).is_empty());

    // A mesh pod excluding port 9000 by Istio's annotation: 9000 direct, 8080 captured.
    testapp_json(&lab, "mesh/excluder", &["tcp", &echo_port]);
    assert!(records_to(&lab, "node-1", "mesh/excluder", "outbound", &echo_port).is_empty());
    testapp_json(
        &lab,
        "mesh/excluder",
        &["get", &format!("http://{remote}:8080/")],
    );
    assert_eq!(
        records_to_at_least(
            &lab,
            "node-1",
            "mesh/excluder",
            "outbound",
            &format!("{remote}:8080"),
            1
        )
        .len(),
        1
    );
}

#[test]
fn labels_enroll_and_unenroll_pods_at_run_time() {
    let mut lab = lab_up("label", "capture", 2, true);
    let dst = format!("{}:9000", pod_ip(&lab, "mesh/server-remote"));
    let pins = lab.paths.node_bpf_pins("node-1").join("pods");
    let uid = lab.plan.pod("mesh/client").expect("client").uid.clone();
    assert!(
        pins.join(&uid).exists(),
        "the client's programs are pinned while it is enrolled"
    );
    // The policy rule that returns the application's replies to the agent's transparent
    // connections lives in the pod's namespace while the pod is enrolled.
    let netns = lab.plan.pod("mesh/client").expect("client").netns.clone();
    let local_delivery_rules = || {
        let output = Command::new("ip")
            .args(["-n", &netns, "rule", "show"])
            .output()
            .expect("ip rule show");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("lookup 15006"))
            .count()
    };
    assert_eq!(
        local_delivery_rules(),
        1,
        "one local-delivery rule while enrolled"
    );

    // Opting the pod out with Istio's label: the agent detaches and traffic goes direct.
    lab.set_pod_labels(
        "mesh/client",
        BTreeMap::from([("istio.io/dataplane-mode".into(), "none".into())]),
    )
    .expect("relabel");
    assert!(
        eventually(Duration::from_secs(10), || pod_status(
            &lab,
            "node-1",
            "mesh/client"
        )
        .is_none()),
        "the agent unenrolled mesh/client"
    );
    assert!(
        !pins.join(&uid).exists(),
        "unenrolling removed the pinned links"
    );
    assert_eq!(
        local_delivery_rules(),
        0,
        "unenrolling removed the local-delivery rule"
    );
    let echo = testapp_json(&lab, "mesh/client", &["tcp", &dst]);
    assert_eq!(echo[0]["peer"], dst.as_str());
    assert!(
        records_to(&lab, "node-1", "mesh/client", "outbound", &dst).is_empty(),
        "direct, not proxied"
    );

    // Back in the mesh.
    lab.set_pod_labels("mesh/client", BTreeMap::new())
        .expect("relabel");
    assert!(eventually(Duration::from_secs(10), || pod_status(
        &lab,
        "node-1",
        "mesh/client"
    )
    .is_some()));
    testapp_json(&lab, "mesh/client", &["tcp", &dst]);
    assert_eq!(
        records_to_at_least(&lab, "node-1", "mesh/client", "outbound", &dst, 1).len(),
        1
    );
}

#[test]
fn weft_adds_no_iptables_or_nftables_rules() {
    let lab = lab_up("rules", "capture", 2, true);
    testapp_json(&lab, "mesh/client", &["get", "http://server.mesh/"]);
    let list = || -> (String, String) {
        let nft = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft runs");
        assert!(
            nft.status.success(),
            "nft list ruleset: {}",
            String::from_utf8_lossy(&nft.stderr)
        );
        let legacy =
            std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
        (String::from_utf8_lossy(&nft.stdout).into_owned(), legacy)
    };
    for pod in &lab.plan.pods {
        let (nft, legacy) = lab.in_pod_netns(&pod.key(), list).expect("enter pod");
        assert_eq!(nft.trim(), "", "nftables rules in pod {}", pod.key());
        assert_eq!(legacy.trim(), "", "iptables tables in pod {}", pod.key());
    }
    for node in &lab.plan.nodes {
        let (nft, legacy) = lab.in_node_netns(&node.name, list).expect("enter node");
        let tables: Vec<&str> = nft.lines().filter(|l| l.starts_with("table")).collect();
        assert_eq!(
            tables,
            [
                "table ip weft_lab_kube_proxy {",
                "table ip weft_lab_masquerade {"
            ],
            "only the lab's kube-proxy and the nodes' NAT to the internet on {}",
            node.name
        );
        assert_eq!(legacy.trim(), "", "iptables tables on {}", node.name);
    }
}

/// Programs attached to `cgroup`, by name, as the kernel reports them (bpftool).
fn cgroup_programs(cgroup: &std::path::Path) -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool runs (installed by cargo xtask setup)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    let mut names: Vec<String> = listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn capture_survives_an_agent_killed_and_restarted_without_double_attachment() {
    let mut lab = lab_up("restart", "capture", 2, true);
    let cgroup = lab.pod_cgroup_dir("mesh/client").expect("client");
    let attached = cgroup_programs(&cgroup);
    assert_eq!(
        attached.len(),
        7,
        "connect4/6, getpeername4/6, sock_ops, the DNS proxy's sendmsg4/recvmsg4: {attached:?}"
    );
    let dst = format!("{}:9000", pod_ip(&lab, "mesh/server-remote"));

    lab.kill_agent("node-1").expect("SIGKILL");
    assert_eq!(
        cgroup_programs(&cgroup),
        attached,
        "capture stays attached while the agent is away"
    );
    // While the agent is away its listeners are gone and capture fails closed: a mesh pod's
    // outbound connection and a plaintext inbound one are refused, never sent around it.
    let server_local = format!("{}:9000", pod_ip(&lab, "mesh/server-local"));
    for (pod, target) in [
        ("mesh/client", &dst),
        ("plain/outsider-remote", &server_local),
    ] {
        let output = testapp_in(&lab, pod, &["tcp", target, "--timeout-ms", "3000"]);
        assert!(
            !output.status.success(),
            "{pod} → {target} during the gap must not bypass the agent"
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("refused"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    lab.start_agent_again("node-1").expect("agent comes back");

    let status = pod_status(&lab, "node-1", "mesh/client").expect("re-enrolled");
    assert_eq!(status["attachment"], "adopted", "{status}");
    assert_eq!(
        cgroup_programs(&cgroup),
        attached,
        "no duplicate attachments after the restart"
    );
    let result = testapp_json(&lab, "mesh/client", &["connects", &dst, "--count", "50"]);
    assert_eq!(
        result[0]["ok"], 50,
        "every connection after the restart succeeds"
    );
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &dst, "--send", "after restart"],
    );
    assert_eq!(echo[1]["echoed"], "after restart");
    assert_eq!(
        records_to_at_least(&lab, "node-1", "mesh/client", "outbound", &dst, 51).len(),
        51
    );
}

/// The program id in the link of `program` of `pod`, and the link's pin, from `/ebpf`.
fn pod_link(lab: &Lab, node: &str, pod: &str, program: &str) -> (u64, String) {
    let view = agent_admin(lab, node, "/ebpf");
    let pods = view["pods"].as_array().expect("/ebpf lists pods");
    let pod_view = pods
        .iter()
        .find(|p| p["pod"] == pod)
        .unwrap_or_else(|| panic!("{pod} in /ebpf: {view}"));
    let link = pod_view["programs"]
        .as_array()
        .and_then(|programs| programs.iter().find(|p| p["name"] == program))
        .unwrap_or_else(|| panic!("{program} of {pod}: {pod_view}"));
    (
        link["program_id"].as_u64().expect("a program id"),
        link["pin"].as_str().expect("a pin").to_string(),
    )
}

#[test]
fn an_agent_adopting_links_that_run_other_programs_puts_its_own_in() {
    let mut lab = lab_up("relink", "capture", 2, true);
    let dst = format!("{}:9000", pod_ip(&lab, "mesh/server-remote"));
    let connects = |lab: &Lab, count: &str| {
        testapp_json(lab, "mesh/client", &["connects", &dst, "--count", count])
    };
    assert_eq!(connects(&lab, "5")[0]["ok"], 5);
    let captured = records_to_at_least(&lab, "node-1", "mesh/client", "outbound", &dst, 5).len();
    assert_eq!(captured, 5, "captured before");

    // The client's connect4 link now runs a program that captures nothing, as a link left
    // by another release of the agent would run that release's program.
    let (agents_program, pin) = pod_link(&lab, "node-1", "mesh/client", program_names::CONNECT4);
    let other = weft_e2e::load_pass_through_connect4().expect("loading a connect4 program");
    let link =
        weft_host::bpf_link::open_pinned(std::path::Path::new(&pin)).expect("the pinned link");
    weft_host::bpf_link::update_link_program(
        std::os::fd::AsFd::as_fd(&link),
        std::os::fd::AsFd::as_fd(&other),
    )
    .expect("swapping the program");
    drop((link, other));
    let (others_program, _) = pod_link(&lab, "node-1", "mesh/client", program_names::CONNECT4);
    assert_ne!(
        others_program, agents_program,
        "the link runs the other program"
    );
    assert_eq!(connects(&lab, "5")[0]["ok"], 5, "direct connections");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        records_to(&lab, "node-1", "mesh/client", "outbound", &dst).len(),
        captured,
        "the other program captures nothing: the agent saw no new connection"
    );

    // A restarted agent adopts the pins and puts its own programs in.
    lab.kill_agent("node-1").expect("SIGKILL");
    lab.start_agent_again("node-1").expect("agent comes back");
    let status = pod_status(&lab, "node-1", "mesh/client").expect("re-enrolled");
    assert_eq!(status["attachment"], "adopted", "{status}");
    let (program, _) = pod_link(&lab, "node-1", "mesh/client", program_names::CONNECT4);
    assert_ne!(
        program, others_program,
        "the link runs the agent's program again"
    );
    assert_eq!(connects(&lab, "20")[0]["ok"], 20);
    assert_eq!(
        records_to_at_least(&lab, "node-1", "mesh/client", "outbound", &dst, 20).len(),
        20,
        "captured again (the restarted agent counts its own connections)"
    );
}

#[test]
fn an_agent_refuses_maps_pinned_with_another_layout_and_names_them() {
    let mut lab = lab_up("layout", "capture", 2, true);
    lab.kill_agent("node-1").expect("SIGKILL");
    // Another release pinned POD_STATS with 8 more bytes per value.
    let pin = lab
        .paths
        .node_bpf_pins("node-1")
        .join("maps")
        .join(map_names::POD_STATS);
    let ours = MapData::from_pin(&pin).expect("the agent's POD_STATS");
    let ours = ours.info().expect("its layout");
    std::fs::remove_file(&pin).expect("unpinning POD_STATS");
    weft_e2e::pin_hash_map(
        &pin,
        ours.key_size(),
        ours.value_size() + 8,
        ours.max_entries(),
    )
    .expect("pinning a POD_STATS of another layout");

    let error = lab
        .start_agent_again("node-1")
        .expect_err("the agent must not start on a map it would misread")
        .to_string();
    let expected = format!(
        "value size {} bytes here, {} bytes in this release",
        ours.value_size() + 8,
        ours.value_size()
    );
    assert!(
        error.contains("map POD_STATS pinned at") && error.contains(&expected),
        "the error names the map and the difference: {error}"
    );
    // What the programs still attached use is left alone: capture fails closed meanwhile.
    let dst = format!("{}:9000", pod_ip(&lab, "mesh/server-remote"));
    let output = testapp_in(&lab, "mesh/client", &["tcp", &dst, "--timeout-ms", "3000"]);
    assert!(!output.status.success(), "no agent: refused, not bypassed");
}

fn entries(lab: &Lab, node: &str) -> (usize, usize) {
    let dir = lab.paths.node_bpf_pins(node).join("maps");
    let open = |name: &str| {
        MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("opening {name}: {e}"))
    };
    let by_cookie: HashMap<MapData, u64, OrigDst> =
        HashMap::try_from(Map::LruHashMap(open(map_names::ORIG_DST_BY_COOKIE))).expect("typed");
    let by_client: HashMap<MapData, ClientKey, OrigDst> =
        HashMap::try_from(Map::LruHashMap(open(map_names::ORIG_DST_BY_CLIENT))).expect("typed");
    (by_cookie.keys().count(), by_client.keys().count())
}

#[test]
fn two_thousand_short_connections_leave_the_maps_as_they_were() {
    let lab = lab_up("churn", "capture", 2, true);
    let dst = format!("{}:9000", pod_ip(&lab, "mesh/server-remote"));
    let baseline = entries(&lab, "node-1");
    let output = testapp_in(
        &lab,
        "mesh/client",
        &["connects", &dst, "--count", "2000", "--timeout-ms", "5000"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(result["ok"], 2000);
    let status = pod_status(&lab, "node-1", "mesh/client").expect("enrolled");
    assert!(status["captured"].as_u64() >= Some(2000), "{status}");
    assert!(
        eventually(Duration::from_secs(10), || entries(&lab, "node-1")
            == baseline),
        "map entries went from {baseline:?} to {:?}",
        entries(&lab, "node-1")
    );
}
