//! The directory source: edits apply without a restart, deleted files take their objects
//! with them, a broken edit is refused while the last good version serves.
mod common;

use std::path::Path;
use std::time::Duration;

use common::{ip, wait_for};
use weft_config::api::{Kind, ObjectRef};
use weft_config::registry::Registry;
use weft_config::source::{self, DirSource, SourceTask};

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "web.shop.svc.cluster.local";

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn route(subset: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {{host: web, subset: {subset}}}
"#
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    // Write then rename, as editors and ConfigMap updates do: the source never sees half
    // a file.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn start(dir: &Path, registry: &Registry) -> SourceTask {
    common::init_tracing();
    let task = source::spawn(
        registry,
        DirSource::new(dir).poll_interval(Duration::from_millis(50)),
    );
    tokio::time::timeout(WAIT, task.ready())
        .await
        .expect("ready in time")
        .expect("running");
    task
}

fn subset(snapshot: &weft_config::registry::Snapshot) -> Option<String> {
    snapshot
        .routes_for_host(HOST)?
        .virtual_services
        .first()?
        .spec
        .http[0]
        .route[0]
        .destination
        .subset
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_without_restart_and_deleted_files_take_their_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("cluster.yaml"), CLUSTER);
    write(&dir.path().join("routes/web.yaml"), &route("v1"));
    let registry = Registry::default();
    let _task = start(dir.path(), &registry).await;
    assert_eq!(subset(&registry.snapshot()).as_deref(), Some("v1"));
    assert!(
        registry
            .snapshot()
            .service_by_vip(ip("10.96.0.30"))
            .is_some()
    );

    let mut versions = registry.subscribe();
    write(&dir.path().join("routes/web.yaml"), &route("v2"));
    tokio::time::timeout(WAIT, versions.changed())
        .await
        .expect("subscribers notified")
        .expect("registry alive");
    wait_for(&registry, "the edited route", WAIT, |s| {
        subset(s).as_deref() == Some("v2")
    })
    .await;

    std::fs::remove_file(dir.path().join("routes/web.yaml")).expect("remove");
    wait_for(&registry, "the route gone with its file", WAIT, |s| {
        s.routes_for_host(HOST).is_none()
    })
    .await;
    std::fs::remove_file(dir.path().join("cluster.yaml")).expect("remove");
    wait_for(&registry, "the service gone with its file", WAIT, |s| {
        s.service_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_refused_with_its_file_and_the_last_good_version_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("cluster.yaml"), CLUSTER);
    let file = dir.path().join("web.yaml");
    write(&file, &route("v1"));
    let registry = Registry::default();
    let _task = start(dir.path(), &registry).await;

    write(&file, &route("v1").replace("hosts: [web]", "hosts: ['*']"));
    let web = ObjectRef::new(Kind::VirtualService, "shop", "web");
    let snapshot = wait_for(&registry, "the refusal", WAIT, |s| {
        !s.refusals_of(&web).is_empty()
    })
    .await;
    let refusal = &snapshot.refusals_of(&web)[0];
    assert_eq!(
        refusal.to_string(),
        format!(
            "{}:1: VirtualService shop/web: spec.hosts[0]: the wildcard host \"*\" is not allowed for routes bound to the mesh",
            file.display()
        )
    );
    assert_eq!(
        subset(&snapshot).as_deref(),
        Some("v1"),
        "the last good version serves"
    );

    // A YAML syntax error: the file's last good objects stay.
    write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: [VirtualService\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subset(&registry.snapshot()).as_deref(), Some("v1"));

    write(&file, &route("v3"));
    wait_for(&registry, "the fixed route", WAIT, |s| {
        subset(s).as_deref() == Some("v3") && s.refused().count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_folders_lists_and_json_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("a/b/c/cluster.yaml"), CLUSTER);
    write(
        &dir.path().join("a/pods.json"),
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
             "spec": {"nodeName": "node-1"}, "status": {"phase": "Running", "podIP": "10.244.1.3"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2", "namespace": "shop"},
             "spec": {"nodeName": "node-2"}, "status": {"phase": "Running", "podIP": "10.244.2.3"}}]}"#,
    );
    // Hidden files (editor swap files) and other extensions are not configuration.
    write(&dir.path().join(".web.yaml.swp"), &route("v9"));
    write(&dir.path().join("notes.txt"), &route("v9"));
    let registry = Registry::default();
    let _task = start(dir.path(), &registry).await;
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.workload_count(), 2);
    assert!(
        snapshot
            .workload_by_ip(ip("10.244.2.3"))
            .is_some_and(|w| w.in_mesh)
    );
    assert!(snapshot.routes_for_host(HOST).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_ready_and_empty_then_read_once_it_appears() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("config");
    let registry = Registry::default();
    let _task = start(&dir, &registry).await;
    assert_eq!(registry.snapshot().service_count(), 0);
    write(&dir.join("cluster.yaml"), CLUSTER);
    wait_for(&registry, "the directory's objects", WAIT, |s| {
        s.service_count() == 1
    })
    .await;
    // The directory going away is not an order to delete everything.
    std::fs::remove_dir_all(&dir).expect("remove dir");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(registry.snapshot().service_count(), 1);
}

/// The YAML directory reads Istio's mesh config where a cluster holds it: the ConfigMap
/// `istio` of `istio-system`, key `mesh`; other ConfigMaps are the applications' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_config_comes_from_the_istio_config_map() {
    use weft_config::api::mesh::PathNormalization;
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = |normalization: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: {normalization}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-settings, namespace: istio-system}}\ndata: {{mesh: \"not: [yaml\"}}\n"
        )
    };
    write(&dir.path().join("mesh.yaml"), &mesh("NONE"));
    let registry = Registry::default();
    let _task = start(dir.path(), &registry).await;
    assert_eq!(
        registry.snapshot().mesh_config().path_normalization(),
        PathNormalization::None
    );
    assert_eq!(
        registry.snapshot().refused().count(),
        0,
        "app-settings is not read"
    );
    write(&dir.path().join("mesh.yaml"), &mesh("MERGE_SLASHES"));
    wait_for(&registry, "the edited mesh config", WAIT, |s| {
        s.mesh_config().path_normalization() == PathNormalization::MergeSlashes
    })
    .await;
    std::fs::remove_file(dir.path().join("mesh.yaml")).expect("remove");
    wait_for(&registry, "Istio's defaults", WAIT, |s| {
        s.mesh_config().path_normalization() == PathNormalization::Base
    })
    .await;
}
