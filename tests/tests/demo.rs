//! The README's first command, run as a user would (non-interactively): `xtask demo`
//! brings up Bookinfo with a waypoint and the ingress gateway and walks through its steps,
//! each checking its own outcome; this test asserts that every step reported success and
//! that the lab is gone afterwards.
use std::process::Command;

use weft_e2e::{bin_dir, unique_lab_name};

const STEPS: [&str; 13] = [
    "── 1. the ingress gateway: Bookinfo from outside",
    "── 2. HTTPS at the ingress gateway",
    "── 3. mesh on",
    "── 4. all traffic to reviews v1",
    "── 5. header-based routing",
    "── 6. 50/50 v1/v3",
    "── 7. fault injection and retries",
    "── 8. an AuthorizationPolicy denies a caller",
    "── 9. metrics",
    "── 10. upgrading the agents, traffic flowing",
    "── 11. egress: locked down, then opened by a ServiceEntry",
    "── 12. TLS origination at the egress waypoint",
    "── 13. the service graph",
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
    assert_eq!(checks, 24, "every step's checks passed:\n{stdout}");
    let counted = stdout
        .split_once(" counted)")
        .and_then(|(before, _)| before.rsplit_once('('))
        .map(|(_, numbers)| numbers.to_string())
        .unwrap_or_default();
    let numbers: Vec<&str> = counted.split(" sent, ").collect();
    assert!(
        numbers.len() == 2
            && numbers[0] == numbers[1]
            && numbers[0].parse::<u32>().is_ok_and(|n| n > 1100),
        "the waypoint's istio_requests_total matches the requests sent ({counted}):\n{stdout}"
    );
    // The graph it wrote at the end: one SVG document with Bookinfo's workloads.
    let svg_path = stdout
        .lines()
        .find_map(|l| l.split_once("the graph is in ")?.1.split(' ').next())
        .unwrap_or_else(|| panic!("the demo says where the graph is:\n{stdout}"));
    let svg = std::fs::read_to_string(svg_path).unwrap_or_else(|e| panic!("{svg_path}: {e}"));
    weft_e2e::graph::well_formed_svg(&svg).unwrap_or_else(|e| panic!("{svg_path}: {e}"));
    for name in ["productpage-v1", "reviews-v1", "ratings-v1", "waypoint"] {
        assert!(svg.contains(&format!(">{name}")), "{name} in {svg_path}");
    }
    // The tour began as the tutorials do: from outside, through Istio's own sample.
    assert!(
        stdout.contains("examples/bookinfo/ingress/bookinfo-gateway.yaml")
            && stdout.contains("outside$ curl http://"),
        "{stdout}"
    );

    // `--keep` left the lab up to explore, as the demo's last lines say: `weftctl` on a
    // node lists the demo's pods with their identities and nodes, and valid certificates.
    let lab = weft_lab::Lab::attach(&name).unwrap_or_else(|e| panic!("attaching to {name}: {e}"));
    // The ingress gateway still answers the outside host, as the last lines suggest
    // (`lab exec outside -- curl …`).
    let gateway = lab
        .load_balancer_ip("istio-system/istio-ingressgateway")
        .expect("the gateway's address");
    assert!(
        stdout.contains(&format!("outside -- curl -s http://{gateway}/productpage")),
        "{stdout}"
    );
    let page = lab
        .outside_command("curl")
        .expect("outside")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{gateway}/productpage"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "200");
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
