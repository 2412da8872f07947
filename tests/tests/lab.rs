//! The lab itself: a two-node cluster whose pods reach each other by IP and by Service
//! name, and that leaves nothing behind however it ends.
use std::collections::BTreeSet;

use weft_e2e::{lab_up, testapp_json, unique_lab_name};
use weft_lab::{Lab, LabOptions, Runtime, leftovers};

fn host_interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pods_reach_pods_and_services_across_nodes() {
    let interfaces_before = host_interfaces();
    let lab = lab_up("lab", "basic", 2, false);
    let name = lab.plan.lab.clone();
    assert_eq!(
        host_interfaces(),
        interfaces_before,
        "the lab added an interface to the host's network namespace"
    );

    let web_b_ip = lab.plan.pod("shop/web-b").expect("web-b is planned").ip;
    assert_ne!(
        lab.plan.pod("default/client").expect("client").node,
        lab.plan.pod("shop/web-b").expect("web-b").node,
        "the test needs the client and web-b on different nodes"
    );

    // Pod IP across nodes: web-b answers, and sees the client's own address.
    let by_ip = testapp_json(
        &lab,
        "default/client",
        &["get", &format!("http://{web_b_ip}:8080/direct")],
    );
    assert_eq!(by_ip[0]["status"], 200);
    assert_eq!(by_ip[0]["body"]["pod"], "web-b");
    assert_eq!(by_ip[0]["body"]["node"], "node-2");
    let client_ip = lab
        .plan
        .pod("default/client")
        .expect("client")
        .ip
        .to_string();
    assert!(
        by_ip[0]["body"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{client_ip}:"))),
        "the server saw {} instead of the client's address {client_ip}",
        by_ip[0]["body"]["peer"]
    );

    // The Service by its names from another namespace. kube-proxy balances connections, not
    // requests, so each request goes on a connection of its own; 24 of them all landing on
    // one of two endpoints would happen once in 8 million runs.
    let vip = lab.plan.services[0].vip.to_string();
    let mut served_by = BTreeSet::new();
    for round in 0..24 {
        let host = if round % 2 == 0 {
            "web.shop"
        } else {
            "web.shop.svc.cluster.local"
        };
        let reply = &testapp_json(&lab, "default/client", &["get", &format!("http://{host}/")])[0];
        assert_eq!(reply["status"], 200);
        assert_eq!(
            reply["peer"],
            format!("{vip}:80"),
            "the client dialed the ClusterIP"
        );
        served_by.insert(
            reply["body"]["pod"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(
        served_by,
        BTreeSet::from(["web-a".to_string(), "web-b".to_string()]),
        "connections to the ClusterIP should reach both endpoints"
    );

    // The short name resolves inside the Service's own namespace, and TCP works too. Eight
    // fresh connections from web-a to its own Service reach web-a itself (a hairpin, which
    // needs the lab's kube-proxy to masquerade) all but once in 256 runs.
    let echoes = testapp_json(
        &lab,
        "shop/web-a",
        &[
            "tcp",
            "web:9000",
            "--send",
            "across the fabric",
            "--repeat",
            "8",
        ],
    );
    let echoed: Vec<_> = echoes
        .iter()
        .filter_map(|line| line.get("echoed"))
        .collect();
    assert_eq!(echoed.len(), 8);
    assert!(
        echoed.iter().all(|e| *e == "across the fabric"),
        "{echoes:?}"
    );

    lab.down().expect("down succeeds");
    assert_eq!(leftovers(&name), Vec::<String>::new());
    weft_lab::down(&name).expect("down is idempotent");
}

#[test]
fn a_test_that_panics_midway_leaves_nothing() {
    let name = unique_lab_name("pan");
    let lab_name = name.clone();
    let outcome = std::thread::spawn(move || {
        let bins = weft_e2e::bin_dir();
        let runtime = Runtime {
            bin_dir: Some(bins),
            ..Runtime::default()
        };
        let _lab = Lab::up_from_dir(
            &LabOptions::new(&lab_name),
            &weft_e2e::manifests("basic"),
            &runtime,
        )
        .expect("lab comes up");
        panic!("a test failing halfway through");
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

#[test]
fn down_cleans_what_a_crashed_up_left() {
    let lab = lab_up("crash", "basic", 2, false);
    let name = lab.plan.lab.clone();
    let cgroup = lab.pod_cgroup_dir("shop/web-a").expect("pod exists");
    // As if the process that brought the lab up had been killed: its threads (the lab's
    // kubelet, which would restart the containers `down` kills) are gone and nothing takes
    // the lab down — what a handle told to keep the lab running leaves when dropped.
    lab.keep_running();
    assert!(!leftovers(&name).is_empty());
    assert!(cgroup.join("cgroup.procs").exists());
    weft_lab::down(&name).expect("down succeeds from names alone");
    assert_eq!(leftovers(&name), Vec::<String>::new());
    assert!(
        !cgroup.exists(),
        "pod processes were killed and their cgroup removed"
    );
}
