//! The soak, for 2 minutes (`cargo xtask soak` runs it for longer): mixed traffic directly
//! and through a waypoint, routes and pods churned, certificates of 40 s rotating, both
//! agents upgraded midway; no request, connection or stream may fail, and the agents' and
//! the waypoint's RSS, open fds and threads stay within the bounds of
//! `weft_lab::soak::bounds`. The report and chart go to target/soak/e2e/.
use std::time::Duration;

use weft_e2e::{bin_dir, unique_lab_name};
use weft_lab::soak::{Settings, run};

#[test]
fn two_minutes_of_traffic_and_churn_fail_nothing_and_grow_nothing() {
    let settings = Settings {
        lab: unique_lab_name("soak"),
        duration: Duration::from_secs(120),
        bin_dir: bin_dir(),
        keep_logs: Some(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/soak/e2e/logs"
            ))
            .to_path_buf(),
        ),
    };
    let report = run(&settings).unwrap_or_else(|e| panic!("the soak's lab: {e}"));
    let out = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/soak/e2e"));
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    let _ = std::fs::write(out.join("resources.svg"), report.svg());
    eprintln!("{}", report.summary());

    assert!(report.problems().is_empty(), "{}", report.summary());
    // What the soak is meant to have done, done.
    assert!(report.route_changes >= 15, "{}", report.summary());
    assert!(report.pods_churned >= 2, "{}", report.summary());
    assert!(report.upgrade.is_some(), "{}", report.summary());
    for node in ["node-1", "node-2"] {
        let (serials, identities) = report.certificates.get(node).copied().unwrap_or_default();
        assert!(
            identities > 0 && serials >= 2 * identities,
            "{node}'s certificates rotated: {}",
            report.summary()
        );
    }
    assert!(
        report.verdicts.iter().all(|v| v.judged),
        "every epoch long enough to judge: {}",
        report.summary()
    );
}
