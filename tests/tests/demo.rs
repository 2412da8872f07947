//! The README's first command, run as a user would (non-interactively): `xtask demo`
//! brings up Bookinfo with a waypoint and walks through its steps, each checking its own
//! outcome; this test asserts that every step reported success and that the lab is gone
//! afterwards.
use std::process::Command;

use weft_e2e::{bin_dir, unique_lab_name};

const STEPS: [&str; 7] = [
    "── 1. mesh on",
    "── 2. all traffic to reviews v1",
    "── 3. header-based routing",
    "── 4. 50/50 v1/v3",
    "── 5. fault injection and retries",
    "── 6. an AuthorizationPolicy denies a caller",
    "── 7. metrics",
];

#[test]
fn the_demo_tour_passes_every_step() {
    let name = unique_lab_name("demo");
    let xtask = bin_dir().join("xtask");
    let output = Command::new(&xtask)
        .args(["demo", "--no-build", "--name", &name])
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
    assert_eq!(checks, 15, "every step's checks passed:\n{stdout}");
    assert!(
        stdout.contains("1100 sent, 1100 counted"),
        "the waypoint's istio_requests_total matches the requests sent:\n{stdout}"
    );
    assert!(
        weft_lab::leftovers(&name).is_empty(),
        "the demo left {:?}",
        weft_lab::leftovers(&name)
    );
}
