//! `weftctl analyze --kube` against the fixture API server (`config/tests/fixture`): the
//! objects are listed over the real HTTP exchange and judged as files are.
#[path = "../../config/tests/fixture/mod.rs"]
mod fixture;

use fixture::ApiServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_cluster_holds_is_analyzed() {
    let server = ApiServer::start().await;
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop",
                     "annotations": {"networking.istio.io/exportTo": "."}},
        "spec": {"selector": {"app": "reviews"},
                 "ports": [{"name": "http", "port": 9080}]}
    }));
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews.example.com"], "gateways": ["edge"],
                 "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }));
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "ratings", "namespace": "shop"},
        "spec": {"host": "ratings"}
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fixture, cluster: {{server: \"http://{}\"}}}}]\nusers: [{{name: admin, user: {{}}}}]\ncontexts: [{{name: fixture, context: {{cluster: fixture, user: admin}}}}]\ncurrent-context: fixture\n",
            server.addr
        ),
    )
    .expect("kubeconfig");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
            .args(["analyze", "--kube"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("weftctl runs")
    })
    .await
    .expect("joined");
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(79), "{out}");
    for line in [
        "Error [IST0101] (VirtualService shop/reviews) spec.gateways[0]: Gateway shop/edge does not exist",
        "Warning [IST0174] (DestinationRule shop/ratings) spec.host: \"ratings\" names no known",
        "Warning [IST0108] (Service shop/reviews) metadata.annotations[\"networking.istio.io/exportTo\"]",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    let requests = server.requests();
    for listed in [
        "LIST virtualservices",
        "LIST httproutes",
        "LIST secrets fields=type=kubernetes.io/tls,metadata.namespace=istio-system",
    ] {
        assert!(requests.iter().any(|r| r == listed), "{requests:?}");
    }
}
