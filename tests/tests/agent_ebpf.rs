//! weft-agent loads its embedded eBPF object, attaches it to the cgroups of the mesh pods of
//! its node, and counts their connections in a map pinned on bpffs.
use std::os::unix::fs::MetadataExt;

use aya::maps::{HashMap, Map, MapData};
use weft_e2e::{lab_up, testapp_json};
use weft_ebpf_common::{PodStats, map_names};

fn pod_stats(lab: &weft_lab::Lab, node: &str) -> HashMap<MapData, u64, PodStats> {
    let pin = lab
        .paths
        .node_bpf_pins(node)
        .join("maps")
        .join(map_names::POD_STATS);
    let data = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("opening {}: {e}", pin.display()));
    HashMap::try_from(Map::HashMap(data)).expect("POD_STATS is a hash map of u64 to PodStats")
}

fn cgroup_id(lab: &weft_lab::Lab, pod: &str) -> u64 {
    let dir = lab.pod_cgroup_dir(pod).expect("pod exists");
    std::fs::metadata(&dir).expect("pod cgroup exists").ino()
}

#[test]
fn agent_counts_connections_of_mesh_pods_only() {
    let lab = lab_up("ebpf", "basic", 2, true);
    let web_b = lab.plan.pod("shop/web-b").expect("web-b").ip;
    let target = format!("{web_b}:9000");
    let stats = pod_stats(&lab, "node-1");

    // shop/web-a is in the mesh (its namespace is labelled ambient) and on node-1.
    let mesh_pod = cgroup_id(&lab, "shop/web-a");
    let before = stats
        .get(&mesh_pod, 0)
        .expect("node-1's agent enrolled shop/web-a");
    let result = testapp_json(&lab, "shop/web-a", &["connects", &target, "--count", "25"]);
    assert_eq!(result[0]["ok"], 25);
    let after = stats.get(&mesh_pod, 0).expect("still enrolled");
    assert_eq!(
        after.connects - before.connects,
        25,
        "the program on web-a's cgroup saw every connect()"
    );

    // default/client is on the same node but not in the mesh: not enrolled, not counted.
    let outsider = cgroup_id(&lab, "default/client");
    testapp_json(
        &lab,
        "default/client",
        &["connects", &target, "--count", "5"],
    );
    assert!(
        stats.get(&outsider, 0).is_err(),
        "a pod outside the mesh has no counters"
    );
    assert_eq!(
        stats.get(&mesh_pod, 0).expect("enrolled").connects,
        after.connects,
        "another pod's connections are not counted for web-a"
    );

    // node-2's agent enrolled only its own node's mesh pod.
    let node2 = pod_stats(&lab, "node-2");
    assert!(node2.get(&cgroup_id(&lab, "shop/web-b"), 0).is_ok());
    assert!(node2.get(&mesh_pod, 0).is_err());
}
