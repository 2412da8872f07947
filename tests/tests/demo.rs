//! The README's first command, run as a user would (non-interactively): `xtask demo`
//! brings up Bookinfo with a waypoint and walks through its steps, each checking its own
//! outcome; this test asserts that every step reported success and that the lab is gone
//! afterwards.
use std::process::Command;

use weft_e2e::{bin_dir, unique_lab_name};

const STEPS: [&str; 8] = [
    "── 1. mesh on",
    "── 2. all traffic to reviews v1",
    "── 3. header-based routing",
    "── 4. 50/50 v1/v3",
    "── 5. fault injection and retries",
    "── 6. an AuthorizationPolicy denies a caller",
    "── 7. metrics",
    "── 8. upgrading the agents, traffic flowing",
];

#[test]
fn the_demo_tour_passes_every_step() {
    let name = unique_lab_name("demo");
    let xtask = bin_dir().join("xtask");
    let output = Command::new(&xtask)
        .args(["demo", "--no-build", "--keep", "--name", &name])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", xtask.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in STEPS {
        assert!(
            stdout.contains(step),
            "step {step:?} did not run:\n{stdout}"
        );
    }
    let checks = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('✓'))
        .count();
    assert_eq!(checks, 17, "every step's checks passed:\n{stdout}");
    assert!(
        stdout.contains("1100 sent, 1100 counted"),
        "the waypoint's istio_requests_total matches the requests sent:\n{stdout}"
    );

    // `--keep` left the lab up to explore, as the demo's last lines say: `weftctl` on a
    // node lists the demo's pods with their identities and nodes, and valid certificates.
    let lab = weft_lab::Lab::attach(&name).unwrap_or_else(|e| panic!("attaching to {name}: {e}"));
    let weftctl = |args: &[&str]| -> serde_json::Value {
        let output = lab
            .node_command("node-1", bin_dir().join("weftctl"))
            .unwrap_or_else(|e| panic!("weftctl on node-1: {e}"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running weftctl {args:?}: {e}"));
        assert!(
            output.status.success(),
            "weftctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("weftctl {args:?} JSON: {e}"))
    };
    let workloads = weftctl(&["workloads", "-n", "bookinfo", "-o", "json"]);
    let workloads = workloads.as_array().cloned().unwrap_or_default();
    for (pod, sa, node) in [
        ("productpage-v1-0", "bookinfo-productpage", "node-1"),
        ("reviews-v1-0", "bookinfo-reviews", "node-2"),
        ("ratings-v1-0", "bookinfo-ratings", "node-1"),
        ("curl", "curl", "node-1"),
    ] {
        assert!(
            workloads.iter().any(|w| w["name"] == pod
                && w["node"] == node
                && w["identity"] == format!("spiffe://cluster.local/ns/bookinfo/sa/{sa}")),
            "weftctl workloads lacks {pod} ({sa} on {node}): {workloads:?}"
        );
    }
    let certs = weftctl(&["certs", "-o", "json"]);
    let certs = certs["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        certs
            .iter()
            .any(|c| c["identity"] == "spiffe://cluster.local/ns/bookinfo/sa/curl"),
        "node-1 holds curl's certificate: {certs:?}"
    );
    assert!(
        certs
            .iter()
            .all(|c| c["expires_in_seconds"].as_i64().unwrap_or(0) > 0),
        "every certificate is unexpired: {certs:?}"
    );
    lab.down()
        .unwrap_or_else(|e| panic!("taking {name} down: {e}"));
    assert!(
        weft_lab::leftovers(&name).is_empty(),
        "the demo left {:?}",
        weft_lab::leftovers(&name)
    );
}
