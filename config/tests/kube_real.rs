//! Opt-in: the kube source against the cluster `KUBECONFIG` points at. Skipped (saying so)
//! when it is not set, as on the machines weft is developed on, which have no cluster.
use std::io::Write;
use std::time::Duration;

use weft_config::registry::Registry;
use weft_config::source::{self, KubeSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_cluster_kubeconfig_points_at() {
    if std::env::var_os("KUBECONFIG").is_none() {
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "kube_real: skipped, KUBECONFIG is not set (set it to run the kube source against a real cluster)"
        );
        return;
    }
    let registry = Registry::default();
    let source = KubeSource::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let task = source::spawn(&registry, source);
    tokio::time::timeout(Duration::from_secs(120), task.ready())
        .await
        .expect("initial lists within two minutes")
        .expect("source running");
    let snapshot = registry.snapshot();
    assert!(
        snapshot.service("default", "kubernetes").is_some(),
        "every cluster has the kubernetes Service"
    );
    assert!(snapshot.workload_count() > 0, "a cluster runs pods");
    let _ = writeln!(
        std::io::stderr(),
        "kube_real: {} workloads, {} services, {} refused objects",
        snapshot.workload_count(),
        snapshot.service_count(),
        snapshot.refused().count()
    );
}
