//! The mesh's root changes under running agents: the trust bundle file is rewritten (the
//! kubelet's atomic symlink swap of a ConfigMap volume) to the old and the new root, the CA
//! is restarted with the new root, the agents' certificates move to it at their rotation,
//! and the old root leaves the bundle; no agent restarts and no request fails. And a CA
//! restarted without a new root keeps the one it had.
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_core::ca::GeneratedRoot;
use weft_core::identity::TrustBundle;
use weft_e2e::{
    agent_admin, eventually, lab_up_with, pod_ip, spawn_testapp_in, testapp_json, testapp_report,
};
use weft_lab::Lab;

const NODES: [&str; 2] = ["node-1", "node-2"];

/// What the agents and the CA warned about, to explain a failure.
fn warnings(lab: &Lab) -> String {
    ["agent-node-1.log", "agent-node-2.log", "ca.log"]
        .iter()
        .flat_map(|name| {
            let text = std::fs::read_to_string(lab.paths.logs().join(name)).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(|l| format!("{name}: {l}"))
                .collect::<Vec<_>>()
        })
        .take(60)
        .collect::<Vec<_>>()
        .join("\n")
}

fn pid(lab: &Lab, node: &str) -> Value {
    agent_admin(lab, node, "/status")["pid"].clone()
}

/// The fingerprints of the roots `node`'s agent trusts now.
fn trusted_roots(lab: &Lab, node: &str) -> Vec<String> {
    agent_admin(lab, node, "/certs")["trust_bundle"]["roots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["fingerprint_sha256"].as_str().map(str::to_owned))
        .collect()
}

/// Every certificate `node`'s agent holds, as (identity, root fingerprint, chains to the
/// bundle, not before).
fn held(lab: &Lab, node: &str) -> Vec<(String, String, bool, i64)> {
    agent_admin(lab, node, "/certs")["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["identity"].as_str().unwrap_or_default().to_owned(),
                c["root_fingerprint_sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                c["chains_to_bundle"].as_bool().unwrap_or(false),
                c["not_before_unix"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

fn fingerprint(pem: &str) -> String {
    TrustBundle::from_pem(pem).expect("a root").roots()[0]
        .fingerprint_sha256
        .clone()
}

/// A new root of the user's, in files as a Secret would mount them (the key 0600).
fn new_root(lab: &Lab) -> (String, PathBuf, PathBuf) {
    let root = GeneratedRoot::generate("cluster.local", Duration::from_secs(365 * 24 * 3600))
        .expect("a new root");
    let dir = lab.paths.root.join("new-root");
    std::fs::create_dir_all(&dir).expect("new root dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &root.certificate_pem).expect("write cert");
    std::fs::write(&key, root.key_pem()).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (root.certificate_pem.clone(), cert, key)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_root_rotated_in_the_trust_bundle_reaches_running_agents_and_no_request_fails() {
    // 16-second certificates rotate about every 8 s.
    let mut lab = lab_up_with("rotroot", "tunnel", 2, true, &["--cert-lifetime", "16"]);
    let server = pod_ip(&lab, "mesh/server");
    let echo = format!("{server}:9000");
    let url = format!("http://{server}:8080/");
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "before"])[1]["echoed"],
        "before"
    );
    let pids: Vec<Value> = NODES.iter().map(|n| pid(&lab, n)).collect();
    let old_pem = std::fs::read_to_string(lab.paths.ca_root()).expect("the CA's root");
    let old = fingerprint(&old_pem);
    let (new_pem, new_cert, new_key) = new_root(&lab);
    let new = fingerprint(&new_pem);
    for node in NODES {
        assert_eq!(trusted_roots(&lab, node), vec![old.clone()], "{node}");
    }

    // Requests at 50/s on two keep-alive connections opened before the rotation, and new
    // connections one after another, for the whole rotation.
    let started = Instant::now();
    let load_time = Duration::from_secs(30);
    let requests = spawn_testapp_in(
        &lab,
        "mesh/client",
        &[
            "load",
            &url,
            "--rate",
            "50",
            "--duration-ms",
            &load_time.as_millis().to_string(),
            "--connections",
            "2",
        ],
    );
    let connections = spawn_testapp_in(
        &lab,
        "mesh/client",
        &[
            "connrate",
            &echo,
            "--duration-ms",
            &(load_time - Duration::from_secs(1)).as_millis().to_string(),
            "--concurrency",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));

    // A broken bundle (a writer caught half-way) is refused; the old root stays in force.
    lab.set_trust_bundle(&old_pem[..old_pem.len() / 2])
        .expect("write a broken bundle");
    for node in NODES {
        assert!(
            eventually(Duration::from_secs(5), || {
                agent_admin(&lab, node, "/certs")["trust_bundle"]["refused"].is_string()
            }),
            "{node} reports the refused file"
        );
        assert_eq!(trusted_roots(&lab, node), vec![old.clone()], "{node}");
    }

    // 1. The bundle carries the old and the new root.
    lab.set_trust_bundle(&format!("{old_pem}{new_pem}"))
        .expect("write old+new");
    for node in NODES {
        assert!(
            eventually(Duration::from_secs(5), || sorted(trusted_roots(&lab, node))
                == sorted(vec![old.clone(), new.clone()])),
            "{node} trusts both roots without a restart: {:?}",
            trusted_roots(&lab, node)
        );
    }
    // 2. The CA restarts with the new root.
    lab.restart_ca(Some((&new_cert, &new_key)))
        .expect("the CA restarts with the new root");
    // 3. At their next rotation, every certificate is issued under the new root.
    for node in NODES {
        assert!(
            eventually(Duration::from_secs(15), || {
                let certs = held(&lab, node);
                !certs.is_empty() && certs.iter().all(|(_, root, ok, _)| *root == new && *ok)
            }),
            "{node} re-issued its certificates under the new root: {:?}\n{}",
            held(&lab, node),
            warnings(&lab)
        );
    }
    // 4. The old root leaves the bundle.
    lab.set_trust_bundle(&new_pem).expect("write new");
    for node in NODES {
        assert!(
            eventually(Duration::from_secs(5), || trusted_roots(&lab, node)
                == vec![new.clone()]),
            "{node} dropped the old root: {:?}",
            trusted_roots(&lab, node)
        );
    }
    assert!(
        started.elapsed() + Duration::from_secs(3) < load_time,
        "the rotation took {:?}: longer than the load, which must outlast it",
        started.elapsed()
    );

    let load = testapp_report(requests, "the keep-alive requests");
    assert_eq!(
        load["errors"],
        0,
        "every request was answered: {load}\n{}",
        warnings(&lab)
    );
    assert!(
        load["ok"].as_u64() >= Some(1400),
        "the requests kept their pace: {load}"
    );
    let churn = testapp_report(connections, "the new connections");
    assert_eq!(
        churn["errors"],
        0,
        "no new connection failed: {churn}\n{}",
        warnings(&lab)
    );
    assert!(
        churn["connections"].as_u64() > Some(100),
        "connections were made throughout: {churn}"
    );
    // Nothing restarted but the CA.
    let after: Vec<Value> = NODES.iter().map(|n| pid(&lab, n)).collect();
    assert_eq!(after, pids, "the agents kept running");
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "after"])[1]["echoed"],
        "after"
    );
}

#[test]
fn a_restarted_ca_keeps_its_root_and_agents_keep_working() {
    // 6-second certificates rotate about every 3 s: soon after the restart, every
    // certificate held comes from the restarted CA.
    let mut lab = lab_up_with("carestart", "tunnel", 2, true, &["--cert-lifetime", "6"]);
    let echo = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    let url = format!("http://{}:8080/", pod_ip(&lab, "mesh/server"));
    let root_pem = std::fs::read_to_string(lab.paths.ca_root()).expect("the CA's root");
    let root = fingerprint(&root_pem);
    let ca_before = lab.ca_processes();
    assert!(!ca_before.is_empty());

    let requests = spawn_testapp_in(
        &lab,
        "mesh/client",
        &[
            "load",
            &url,
            "--rate",
            "50",
            "--duration-ms",
            "12000",
            "--connections",
            "2",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let restarted = i64::try_from(restarted).expect("seconds");
    lab.restart_ca(None).expect("the CA restarts");
    let ca_after = lab.ca_processes();
    assert!(
        !ca_after.is_empty() && ca_after.iter().all(|p| !ca_before.contains(p)),
        "a new CA process: {ca_before:?} → {ca_after:?}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.paths.ca_root()).expect("the root, written again"),
        root_pem,
        "the restarted CA publishes the same root"
    );
    // Every certificate held was issued by the restarted CA, under the same root, and
    // chains to the agents' bundle.
    for node in NODES {
        assert!(
            eventually(Duration::from_secs(10), || {
                let certs = held(&lab, node);
                !certs.is_empty()
                    && certs
                        .iter()
                        .all(|(_, r, ok, not_before)| *r == root && *ok && *not_before >= restarted)
            }),
            "{node} holds certificates from the restarted CA under the same root: {:?}\n{}",
            held(&lab, node),
            warnings(&lab)
        );
    }
    let load = testapp_report(requests, "the requests across the CA restart");
    assert_eq!(
        load["errors"],
        0,
        "every request was answered: {load}\n{}",
        warnings(&lab)
    );
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "after"])[1]["echoed"],
        "after"
    );
}
