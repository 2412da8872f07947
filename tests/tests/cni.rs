//! weft-cni: a pod's start waits for its capture. The lab runs each node's CNI
//! configuration for every pod it starts, before the pod's processes, as a container
//! runtime does; each agent chains the real weft-cni binary into its node's configuration
//! and keeps it there. Pods' processes run in cgroups of their own below the pod's, made
//! after the sandbox, as a runtime makes containers'.
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use serde_json::Value;
use weft_e2e::{
    agent_admin, agent_connections, agent_connections_when, eventually, lab_up, pod_ip, testapp,
};
use weft_ebpf_common::{PodCapture, map_names};
use weft_lab::{CniRetry, Lab, LabError};

/// Where every new pod connects as soon as it starts: a TCP echo of the mesh.
fn echo(lab: &Lab) -> String {
    format!("{}:9000", pod_ip(lab, "mesh/server-remote"))
}

/// Pods of the mesh whose one process connects to `dst` at once and exits.
fn connecting_pods(names: &[String], dst: &str, node: Option<&str>) -> String {
    names
        .iter()
        .map(|name| {
            let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: mesh\nspec:\n{node}  restartPolicy: Never\n  \
                 containers:\n    - name: app\n      command: [weft-testapp, tcp, \"{dst}\", --send, {name}]\n---\n"
            )
        })
        .collect()
}

/// The agent's records of `pod`'s outbound connections to `dst`.
fn captured(records: &[Value], pod: &str, dst: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            r["pod"] == pod && r["direction"] == "outbound" && r["original_destination"] == dst
        })
        .count()
}

/// The node's CNI configuration, as the runtime reads it.
fn conflist(lab: &Lab, node: &str) -> Value {
    let dir = lab.paths.node_cni(node).conf_dir;
    let file = weft_lab::cni::config_file(&dir)
        .expect("listed")
        .expect("a configuration");
    serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("JSON")
}

fn chains_weft(list: &Value) -> bool {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    plugins.len() == 2 && plugins[0]["type"] == "lab-veth" && plugins[1]["type"] == "weft-cni"
}

#[test]
fn a_hundred_pods_connecting_as_they_start_are_each_captured() {
    let mut lab = lab_up("cnih", "capture", 2, true);
    for node in ["node-1", "node-2"] {
        assert!(
            chains_weft(&conflist(&lab, node)),
            "the agent of {node} chained weft-cni after the lab's plugin: {}",
            conflist(&lab, node)
        );
    }
    let dst = echo(&lab);
    let names: Vec<String> = (0..100).map(|i| format!("burst-{i}")).collect();
    let keys = lab
        .create_pods(&connecting_pods(&names, &dst, None))
        .expect("the pods are created");
    let started = Instant::now();
    lab.start_pods(&keys, CniRetry::default())
        .expect("every pod starts");
    eprintln!("100 pods started in {:?}", started.elapsed());

    // Every first connection went through its node's agent.
    let mut missing = Vec::new();
    for node in ["node-1", "node-2"] {
        let here: Vec<&String> = keys
            .iter()
            .filter(|k| lab.plan.pod(k).is_some_and(|p| p.node == node))
            .collect();
        assert!(!here.is_empty(), "pods were spread over both nodes");
        let mut records = Vec::new();
        eventually(Duration::from_secs(30), || {
            records = agent_connections(&lab, node);
            here.iter().all(|k| captured(&records, k, &dst) == 1)
        });
        missing.extend(
            here.iter()
                .filter(|k| captured(&records, k, &dst) != 1)
                .map(|k| k.to_string()),
        );
    }
    assert!(
        missing.is_empty(),
        "{} of the 100 pods' first connections were not captured: {missing:?}",
        missing.len()
    );
    // The lab ran weft-cni for each pod, and each ADD succeeded the first time.
    let log = format!("{}{}", lab.cni_log("node-1"), lab.cni_log("node-2"));
    let slowest = log
        .lines()
        .filter(|line| line.contains("mesh/burst-"))
        .filter_map(|line| {
            line.rsplit_once("ok in ")?
                .1
                .strip_suffix(" ms")?
                .parse::<u64>()
                .ok()
        })
        .max();
    eprintln!("the slowest ADD took {slowest:?} ms");
    for key in &keys {
        assert!(
            log.contains(&format!("ADD {key} attempt 1: ok")),
            "{key}'s ADD: {log}"
        );
    }
}

#[test]
fn with_its_agent_stopped_a_node_starts_no_pod_until_the_agent_is_back() {
    let mut lab = lab_up("cnistop", "capture", 2, true);
    let dst = echo(&lab);
    lab.kill_agent("node-1").expect("SIGKILL");
    let keys = lab
        .create_pods(&connecting_pods(&["late".into()], &dst, Some("node-1")))
        .expect("created");
    let retry = CniRetry {
        attempts: 3,
        interval: Duration::from_millis(200),
    };
    match lab.start_pods(&keys, retry) {
        Err(LabError::PodNotStarted {
            pod,
            attempts,
            last,
        }) => {
            assert_eq!((pod.as_str(), attempts), ("mesh/late", 3));
            // weft-cni's error, as the kubelet would show it in the pod's events: try again
            // later (11), waiting for the agent.
            assert!(
                last.contains("weft-cni") && last.contains("code 11"),
                "{last}"
            );
            assert!(last.contains("waits for the weft agent"), "{last}");
        }
        other => panic!("the pod must not start without its agent: {other:?}"),
    }
    assert!(
        lab.pod_processes("mesh/late").expect("pod").is_empty(),
        "no process of the pod ran"
    );
    assert_eq!(
        lab.cni_log("node-1")
            .matches("ADD mesh/late attempt")
            .count(),
        3,
        "the lab tried three times: {}",
        lab.cni_log("node-1")
    );

    lab.start_agent_again("node-1").expect("the agent is back");
    lab.start_pods(&keys, CniRetry::default())
        .expect("the pod starts once its agent is back");
    let records = agent_connections_when(&lab, "node-1", |records| {
        captured(records, "mesh/late", &dst) == 1
    });
    assert_eq!(
        captured(&records, "mesh/late", &dst),
        1,
        "its first connection was captured"
    );
}

#[test]
fn weft_cni_is_back_in_a_configuration_rewritten_without_it() {
    let mut lab = lab_up("cnirw", "capture", 2, true);
    let dir = lab.paths.node_cni("node-1").conf_dir;
    let file = dir.join(weft_lab::cni::CONFLIST_NAME);
    assert!(chains_weft(&conflist(&lab, "node-1")));
    // Another CNI's installer writes its configuration again (write and rename, as they do).
    let temporary = dir.join(".rewrite.tmp");
    std::fs::write(&temporary, weft_lab::cni::initial_conflist()).expect("write");
    std::fs::rename(&temporary, &file).expect("rename");
    let rewritten = Instant::now();
    assert!(!chains_weft(&conflist(&lab, "node-1")));
    assert!(
        eventually(Duration::from_secs(3), || chains_weft(&conflist(
            &lab, "node-1"
        ))),
        "weft-cni is back within 3 s: {}",
        conflist(&lab, "node-1")
    );
    eprintln!("weft-cni was back after {:?}", rewritten.elapsed());

    let dst = echo(&lab);
    let keys = lab
        .create_pods(&connecting_pods(&["after".into()], &dst, Some("node-1")))
        .expect("created");
    lab.start_pods(&keys, CniRetry::default()).expect("started");
    let records = agent_connections_when(&lab, "node-1", |records| {
        captured(records, "mesh/after", &dst) == 1
    });
    assert_eq!(
        captured(&records, "mesh/after", &dst),
        1,
        "the new pod's first connection was captured"
    );
}

/// The pod's entry in the agent's pinned POD_CAPTURE map.
fn pod_capture_map(lab: &Lab, node: &str) -> HashMap<MapData, u64, PodCapture> {
    let pin = lab
        .paths
        .node_bpf_pins(node)
        .join("maps")
        .join(map_names::POD_CAPTURE);
    let map = MapData::from_pin(&pin).expect("POD_CAPTURE is pinned");
    HashMap::try_from(Map::HashMap(map)).expect("a hash map")
}

#[test]
fn a_process_in_a_cgroup_made_below_an_enrolled_pod_later_is_captured() {
    let lab = lab_up("cnicg", "capture", 2, true);
    let dst = echo(&lab);
    let pods = agent_admin(&lab, "node-1", "/pods");
    let client = pods
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["pod"] == "mesh/client"))
        .cloned()
        .expect("mesh/client is enrolled");
    let pod_id = client["pod_id"].as_u64().expect("a pod id");

    // A container started (or restarted) after the pod was enrolled: a new cgroup below the
    // pod's, which no map entry names.
    let cgroup = lab
        .pod_cgroup_dir("mesh/client")
        .expect("client")
        .join("restarted");
    assert!(!cgroup.exists());
    let run = |send: &str| {
        lab.container_command("mesh/client", "restarted", testapp())
            .expect("a command in a new container cgroup")
            .args(["tcp", &dst, "--send", send, "--timeout-ms", "3000"])
            .output()
            .expect("runs")
    };
    let output = run("from a new cgroup");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = agent_connections_when(&lab, "node-1", |records| {
        captured(records, "mesh/client", &dst) == 1
    });
    assert_eq!(
        captured(&records, "mesh/client", &dst),
        1,
        "the connection from the new cgroup went through the agent"
    );

    // Capture fails closed: with the pod's entry gone while its programs are attached, a
    // connect() is refused rather than sent around the agent.
    let mut map = pod_capture_map(&lab, "node-1");
    let entry = map.get(&pod_id, 0).expect("the pod's entry");
    map.remove(&pod_id).expect("removed");
    let refused = run("without an entry");
    map.insert(pod_id, entry, 0).expect("restored");
    assert!(!refused.status.success(), "the connection must not go out");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Operation not permitted") || stderr.contains("permission"),
        "{stderr}"
    );
    assert_eq!(
        captured(&agent_connections(&lab, "node-1"), "mesh/client", &dst),
        1,
        "nothing more reached the agent"
    );
}
