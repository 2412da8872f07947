//! deploy/'s RBAC grants each component exactly what its configuration source lists and
//! watches: the agent and waypoints the source's default kinds (`KubeSourceConfig::default()`,
//! which their binaries keep: `AGENT_WATCHED`), the CA `CA_WATCHED` and what its route
//! status writer resolves routes with (`weft_ca::route_status::WATCHED`; what
//! `ca/src/main.rs` selects), and what its waypoint controller and route status writer ask
//! (`weft_ca::controller::GRANTS`, `weft_ca::route_status::GRANTS`), the ingress gateway
//! the waypoints' ClusterRole and, in its own namespace only, the Secrets that
//! `INGRESS_WATCHED` adds. A kind
//! watched without a rule would be a source that never becomes ready on a real cluster, a
//! rule without a watch a needless grant. Grants by name are compared with their names.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_yaml::Value;
use weft_config::api::Kind;
use weft_config::api::mesh::MESH_CONFIG_MAP;
use weft_config::source::{AGENT_WATCHED, CA_WATCHED, INGRESS_WATCHED, KubeSourceConfig};

/// (API group, resource, verb, resource names joined by ',' — empty for any name)
type Grant = (String, String, String, String);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read deploy/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

/// Every document of every YAML file under deploy/`under` (overlays' patches included).
fn documents(under: &str) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy().join(under), &mut files);
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).expect("YAML");
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

fn object<'a>(documents: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = documents
        .iter()
        .filter(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name} in deploy/base: {found:?}");
    &found[0].1
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The rules as single grants, refusing wildcards and non-resource URLs.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "nonResourceURLs in {rule:?}"
        );
        let (groups, resources, verbs) = (
            strings(&rule["apiGroups"]),
            strings(&rule["resources"]),
            strings(&rule["verbs"]),
        );
        let mut names = strings(&rule["resourceNames"]);
        names.sort();
        let names = names.join(",");
        for group in &groups {
            for resource in &resources {
                for verb in &verbs {
                    for part in [group, resource, verb, &names] {
                        assert!(!part.contains('*'), "a wildcard in {rule:?}");
                    }
                    let grant = (group.clone(), resource.clone(), verb.clone(), names.clone());
                    assert!(grants.insert(grant), "granted twice: {rule:?}");
                }
            }
        }
    }
    grants
}

/// `list` and `watch` of each of `kinds`; Istio's mesh config by its name only.
fn watched(kinds: impl IntoIterator<Item = Kind>) -> BTreeSet<Grant> {
    kinds
        .into_iter()
        .flat_map(|kind| {
            let names = if kind == Kind::MeshConfig {
                MESH_CONFIG_MAP
            } else {
                ""
            };
            ["list", "watch"].map(|verb| {
                (
                    kind.group().to_string(),
                    kind.plural().to_string(),
                    verb.to_string(),
                    names.to_string(),
                )
            })
        })
        .collect()
}

/// Names what is missing and what is extra, rather than two long sets.
fn assert_grants(role: &Value, expected: &BTreeSet<Grant>) {
    let granted = grants(role);
    let missing: Vec<_> = expected.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ClusterRole {}: missing {missing:?}, not needed {extra:?}",
        role["metadata"]["name"].as_str().unwrap_or("?")
    );
}

/// What the agent and waypoints watch: they leave the source's kinds at their default.
fn agent_watched() -> BTreeSet<Grant> {
    let kinds = KubeSourceConfig::default().kinds;
    assert_eq!(
        kinds,
        BTreeSet::from(AGENT_WATCHED),
        "the source's default kinds are AGENT_WATCHED"
    );
    watched(kinds)
}

#[test]
fn the_agent_may_list_and_watch_exactly_what_the_kube_source_watches() {
    let documents = documents("base");
    assert_grants(
        object(&documents, "ClusterRole", "weft-agent"),
        &agent_watched(),
    );
}

#[test]
fn the_ca_may_do_what_it_and_its_waypoint_controller_do_and_nothing_else() {
    let documents = documents("base");
    // Its source watches CA_WATCHED, and with the route status writer (on by default with
    // the Kubernetes API) what resolving routes needs; the controller's watches and the
    // writer's may overlap (Services, Gateways): one grant serves both.
    let mut expected = watched(CA_WATCHED);
    expected.extend(watched(weft_ca::route_status::WATCHED));
    expected.insert((
        "authentication.k8s.io".into(),
        "tokenreviews".into(),
        "create".into(),
        String::new(),
    ));
    for grants in [weft_ca::controller::GRANTS, weft_ca::route_status::GRANTS] {
        let mut own = BTreeSet::new();
        for (group, resource, verbs, names) in grants {
            let mut names = names.to_vec();
            names.sort_unstable();
            for verb in *verbs {
                let grant = (
                    group.to_string(),
                    resource.to_string(),
                    verb.to_string(),
                    names.join(","),
                );
                assert!(own.insert(grant.clone()), "grants repeat {resource} {verb}");
                expected.insert(grant);
            }
        }
    }
    assert_grants(object(&documents, "ClusterRole", "weft-ca"), &expected);
}

#[test]
fn waypoints_may_list_and_watch_exactly_what_the_kube_source_watches() {
    let documents = documents("base");
    assert_grants(
        object(&documents, "ClusterRole", "weft-waypoint"),
        &agent_watched(),
    );
}

#[test]
fn no_role_in_deploy_grants_a_wildcard() {
    let documents = documents("");
    let roles: Vec<_> = documents
        .iter()
        .filter(|(_, d)| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        .collect();
    assert_eq!(
        roles.len(),
        4,
        "only the three ClusterRoles and the ingress gateway's Role: {roles:?}"
    );
    for (_, role) in roles {
        grants(role);
    }
    let mut bindings: Vec<&str> = documents
        .iter()
        .filter(|(_, d)| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
        .filter_map(|(_, d)| d["metadata"]["name"].as_str())
        .collect();
    bindings.sort_unstable();
    assert_eq!(
        bindings,
        [
            "istio-ingressgateway-sds",
            "weft-agent",
            "weft-ca",
            "weft-ingressgateway",
            "weft-waypoints"
        ],
        "the agent's and the CA's ClusterRoleBindings, the waypoints' one, and the ingress gateway's two"
    );
}

/// The waypoints' binding starts without subjects: the controller adds each waypoint's
/// ServiceAccount, and a `kubectl apply` of deploy/ leaves what it added alone.
#[test]
fn the_waypoints_binding_is_the_controllers_to_fill() {
    let documents = documents("base");
    let binding = object(&documents, "ClusterRoleBinding", "weft-waypoints");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "weft-waypoint");
    assert!(binding.get("subjects").is_none(), "{binding:?}");
    object(&documents, "ClusterRole", "weft-waypoint");
}

#[test]
fn each_role_is_bound_to_the_service_account_its_workload_runs_as() {
    let documents = documents("base");
    for (workload_kind, name) in [("DaemonSet", "weft-agent"), ("Deployment", "weft-ca")] {
        let binding = object(&documents, "ClusterRoleBinding", name);
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], name);
        let subjects = binding["subjects"].as_sequence().expect("subjects");
        assert_eq!(subjects.len(), 1, "{subjects:?}");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], name);
        assert_eq!(subjects[0]["namespace"], "weft-system");
        object(&documents, "ServiceAccount", name);
        let workload = object(&documents, workload_kind, name);
        assert_eq!(
            workload["spec"]["template"]["spec"]["serviceAccountName"],
            name
        );
    }
}

/// The ingress gateway reads what waypoints read (their ClusterRole, bound to its
/// ServiceAccount) and, through a Role of its own namespace, the Secrets `INGRESS_WATCHED`
/// adds to `AGENT_WATCHED`: nothing else, and nowhere else.
#[test]
fn the_ingress_gateway_reads_what_waypoints_read_and_the_secrets_of_its_namespace() {
    let documents = documents("ingress");
    let deployment = object(&documents, "Deployment", "istio-ingressgateway");
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    object(&documents, "ServiceAccount", account);
    let subject_is_the_gateway = |binding: &Value| {
        let subjects = binding["subjects"].as_sequence().expect("subjects");
        subjects.len() == 1
            && subjects[0]["kind"] == "ServiceAccount"
            && subjects[0]["name"] == account
            && subjects[0]["namespace"] == namespace
    };
    let cluster = object(&documents, "ClusterRoleBinding", "weft-ingressgateway");
    assert_eq!(cluster["roleRef"]["name"], "weft-waypoint");
    assert!(subject_is_the_gateway(cluster), "{cluster:?}");
    let extra: BTreeSet<Kind> = INGRESS_WATCHED
        .into_iter()
        .filter(|k| !AGENT_WATCHED.contains(k))
        .collect();
    assert_eq!(extra, BTreeSet::from([Kind::Secret]));
    let role = object(&documents, "Role", "istio-ingressgateway-sds");
    assert_eq!(role["metadata"]["namespace"], namespace);
    assert_grants(role, &watched(extra));
    let binding = object(&documents, "RoleBinding", "istio-ingressgateway-sds");
    assert_eq!(binding["metadata"]["namespace"], namespace);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert!(subject_is_the_gateway(binding), "{binding:?}");
}
