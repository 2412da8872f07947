//! The fixture API server's writes behave as the API server's, through kube-rs: these are the
//! semantics the waypoint controller's tests (`ca/tests/waypoint_controller.rs`) rely on.
mod fixture;

use std::time::Duration;

use fixture::ApiServer;
use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::{Value, json};

fn deployments(api: &ApiServer) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
    };
    Api::namespaced_with(api.client(), "shop", &resource)
}

fn config_maps(api: &ApiServer) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
    Api::namespaced_with(api.client(), "shop", &resource)
}

async fn start() -> ApiServer {
    let api = ApiServer::start().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    api
}

fn deployment(image: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}},
    })
}

fn code(error: kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_owns_fields_conflicts_and_removes_what_is_no_longer_applied() {
    let api = start().await;
    let deployments = deployments(&api);
    let apply = |manager: &str| PatchParams::apply(manager);
    let body = deployment("web:1", json!({"team": "a", "tier": "front"}));
    deployments
        .patch("web", &apply("ci"), &Patch::Apply(&body))
        .await
        .expect("an apply creates");

    // Another manager changing a field ci owns conflicts, naming both; forced, it wins.
    let other = deployment("web:2", json!({"team": "a"}));
    let refused = deployments
        .patch("web", &apply("ops"), &Patch::Apply(&other))
        .await
        .expect_err("a conflict");
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert!(
                status.message.contains("\"ci\"") && status.message.contains("image"),
                "{}",
                status.message
            );
        }
        other => panic!("{other}"),
    }
    deployments
        .patch("web", &apply("ops").force(), &Patch::Apply(&other))
        .await
        .expect("forced");

    // ci stops applying `tier`, which only it set: gone. `team`, which ops applies too,
    // stays; the image is ops' now, so ci's old value does not come back.
    let fewer = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "a"}},
    });
    deployments
        .patch("web", &apply("ci"), &Patch::Apply(&fewer))
        .await
        .expect("apply");
    let live = serde_json::to_value(deployments.get("web").await.expect("get")).expect("json");
    assert_eq!(live["metadata"]["labels"], json!({"team": "a"}));
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(live["spec"]["replicas"], 1, "defaulted");
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["ci", "ops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_writes_and_invalid_objects_are_refused() {
    let api = start().await;
    let deployments = deployments(&api);
    let created = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment("web:1", json!({}))).expect("object"),
        )
        .await
        .expect("created");
    let again = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment("web:1", json!({}))).expect("object"),
        )
        .await
        .expect_err("exists");
    assert_eq!(code(again), 409);

    // A write carrying an old resourceVersion.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .expect("merge patch");
    let mut stale = deployment("web:3", json!({}));
    stale["metadata"]["resourceVersion"] = created
        .metadata
        .resource_version
        .clone()
        .expect("rv")
        .into();
    let refused = deployments
        .patch("web", &PatchParams::apply("ci"), &Patch::Apply(&stale))
        .await
        .expect_err("stale");
    assert_eq!(code(refused), 409);

    // The selector is immutable; a name must be a DNS subdomain.
    let mut moved = deployment("web:1", json!({}));
    moved["spec"]["selector"]["matchLabels"] = json!({"app": "other"});
    moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let refused = deployments
        .patch(
            "web",
            &PatchParams::apply("ci").force(),
            &Patch::Apply(&moved),
        )
        .await
        .expect_err("immutable");
    assert_eq!(code(refused), 422);
    let mut bad = deployment("web:1", json!({}));
    bad["metadata"]["name"] = "Web_1".into();
    let refused = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(bad).expect("object"),
        )
        .await
        .expect_err("bad name");
    assert_eq!(code(refused), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_follows_owner_references_and_propagation() {
    let api = start().await;
    let deployments = deployments(&api);
    let config_maps = config_maps(&api);
    let owner = deployments
        .patch(
            "web",
            &PatchParams::apply("ci"),
            &Patch::Apply(&deployment("web:1", json!({}))),
        )
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    for name in ["owned", "owned-too"] {
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "shop", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid}]}});
        config_maps
            .patch(name, &PatchParams::apply("ci"), &Patch::Apply(&config_map))
            .await
            .expect("dependent");
    }
    // An owner of the same name but another uid is not the owner: the dependent goes.
    let stranger = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "stranger", "namespace": "shop", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "not-its-uid"}]}});
    config_maps
        .patch(
            "stranger",
            &PatchParams::apply("ci"),
            &Patch::Apply(&stranger),
        )
        .await
        .expect("dependent of nothing");
    wait(&api, "the stranger collected", |a| {
        !a.names("ConfigMap").iter().any(|(_, n)| n == "stranger")
    })
    .await;

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete");
    wait(&api, "the owned ConfigMap collected", |a| {
        !a.names("ConfigMap").iter().any(|(_, n)| n == "owned")
    })
    .await;
    assert!(
        !api.names("ConfigMap").iter().any(|(_, n)| n == "owned-too"),
        "background deletion collects every dependent"
    );

    // Orphan: the dependent stays, without its reference.
    let owner = deployments
        .patch(
            "web",
            &PatchParams::apply("ci"),
            &Patch::Apply(&deployment("web:1", json!({}))),
        )
        .await
        .expect("owner again");
    let uid = owner.metadata.uid.clone().expect("uid");
    let kept = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kept", "namespace": "shop", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid}]}});
    config_maps
        .patch("kept", &PatchParams::apply("ci"), &Patch::Apply(&kept))
        .await
        .expect("dependent");
    deployments
        .delete("web", &DeleteParams::orphan())
        .await
        .expect("orphan");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kept = api
        .get("v1", "ConfigMap", "shop", "kept")
        .expect("orphaned, kept");
    assert_eq!(kept["metadata"]["ownerReferences"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selected_watch_sees_objects_enter_and_leave_its_selection() {
    let api = start().await;
    let deployments = deployments(&api);
    let params = WatchParams::default().labels("managed=yes");
    let mut events = deployments
        .watch(&params, "0")
        .await
        .expect("watch")
        .boxed();
    let apply = |labels: Value| deployment("web:1", labels);
    for labels in [
        json!({}),
        json!({"managed": "yes"}),
        json!({"managed": "no"}),
    ] {
        deployments
            .patch(
                "web",
                &PatchParams::apply("ci"),
                &Patch::Apply(&apply(labels)),
            )
            .await
            .expect("apply");
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event in time")
            .expect("a stream")
            .expect("an event");
        match event {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED", "DELETED"]);
}

async fn wait(api: &ApiServer, what: &str, check: impl Fn(&ApiServer) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check(api) {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
