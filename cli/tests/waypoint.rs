//! `weftctl waypoint generate` as a user runs it. Its output is also validated against
//! Kubernetes' schemas by `cargo xtask deploy-check`.
use std::path::Path;
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml::Value;

fn generate(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(["waypoint", "generate"])
        .args(args)
        .output()
        .expect("weftctl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(documents: &[Value]) -> Vec<&str> {
    documents
        .iter()
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_gateway_is_what_istio_users_write() {
    let (code, out, err) = generate(&["-n", "shop"]);
    assert_eq!(code, 0, "{err}");
    let documents = parse(&out);
    assert_eq!(
        kinds(&documents),
        [
            "ServiceAccount",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "Gateway"
        ]
    );
    let expected: Value = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
",
    )
    .expect("expected YAML");
    assert_eq!(find(&documents, "Gateway"), &expected);
}

#[test]
fn the_objects_run_weft_waypoint_as_the_waypoints_own_identity() {
    let (code, out, err) = generate(&["reviews-wp", "-n", "bookinfo", "--for", "workload"]);
    assert_eq!(code, 0, "{err}");
    let documents = parse(&out);
    for document in &documents {
        assert!(document["metadata"]["name"].as_str().is_some());
        if document["kind"] != "ClusterRoleBinding" {
            assert_eq!(
                document["metadata"]["namespace"], "bookinfo",
                "{document:?}"
            );
        }
    }
    assert_eq!(
        find(&documents, "Gateway")["metadata"]["labels"]["istio.io/waypoint-for"],
        "workload"
    );
    let deployment = find(&documents, "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], "reviews-wp");
    assert_eq!(
        find(&documents, "ServiceAccount")["metadata"]["name"],
        "reviews-wp"
    );
    // The agent must not capture the waypoint's own traffic.
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    // The Deployment and the Service pick the pods the template makes.
    for selector in [
        &deployment["spec"]["selector"]["matchLabels"],
        &find(&documents, "Service")["spec"]["selector"],
    ] {
        for (key, value) in selector.as_mapping().expect("selector") {
            assert_eq!(&pod["metadata"]["labels"][key], value, "{key:?}");
        }
    }
    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    for pair in [
        ["--name", "reviews-wp"],
        ["--namespace", "bookinfo"],
        ["--service-account", "reviews-wp"],
        ["--ca-address", "weft-ca.weft-system.svc:15012"],
        ["--trust-domain", "cluster.local"],
        ["--listen", "0.0.0.0:15008"],
        ["--readiness-addr", "0.0.0.0:15021"],
        ["--ca-token-file", "/var/run/secrets/tokens/istio-token"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    // The token the waypoint shows the CA is one made for the CA (audience istio-ca), in
    // the volume mounted where --ca-token-file points.
    let volumes = pod["spec"]["volumes"].as_sequence().expect("volumes");
    let token = volumes
        .iter()
        .find(|v| v["name"] == "istio-token")
        .expect("a token volume");
    let projected = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projected["audience"], "istio-ca");
    assert_eq!(projected["path"], "istio-token");
    let mounts = pod["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "istio-token" && m["mountPath"] == "/var/run/secrets/tokens"),
        "{mounts:?}"
    );
    let binding = find(&documents, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "reviews-wp");
    assert_eq!(binding["subjects"][0]["namespace"], "bookinfo");
    // The role it binds is the one deploy/ installs.
    let rbac = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac.yaml"),
    )
    .expect("rbac.yaml");
    let role = binding["roleRef"]["name"].as_str().expect("role name");
    assert!(
        parse(&rbac)
            .iter()
            .any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == role),
        "{role}"
    );
}

/// The same objects weft-ca's controller makes of the same Gateway (without the owner
/// reference only a Gateway in a cluster has), so that controller adopts them.
#[test]
fn the_objects_are_what_the_controller_makes_of_the_gateway() {
    let (code, out, err) = generate(&["wp", "-n", "shop", "--for", "all"]);
    assert_eq!(code, 0, "{err}");
    let documents: Vec<serde_json::Value> = parse(&out)
        .into_iter()
        .map(|d| serde_json::to_value(d).expect("JSON"))
        .collect();
    let declaration = documents
        .iter()
        .find(|d| d["kind"] == "Gateway")
        .expect("a Gateway");
    let gateway =
        weft_controller::gateway::Gateway::from_json(declaration).expect("the Gateway reads");
    let (verdict, objects) = weft_controller::reconcile::desired(
        &gateway,
        &weft_controller::waypoint::Settings::default(),
    );
    assert!(verdict.is_accepted(), "{verdict:?}");
    assert_eq!(objects.len(), 3);
    for (kind, body) in objects {
        let printed = documents
            .iter()
            .find(|d| d["kind"] == kind.name())
            .unwrap_or_else(|| panic!("no {kind:?} printed"));
        assert_eq!(printed, &body, "{kind:?}");
        assert_eq!(
            printed["metadata"]["labels"]["gateway.istio.io/managed"],
            "weft.io-waypoint-controller"
        );
    }
}

#[test]
fn gateway_only_prints_what_istioctl_prints() {
    let (code, out, err) = generate(&["wp", "-n", "shop", "--gateway-only"]);
    assert_eq!(code, 0, "{err}");
    let documents = parse(&out);
    assert_eq!(kinds(&documents), ["Gateway"]);
    let (_, all, _) = generate(&["wp", "-n", "shop"]);
    assert_eq!(documents[0], *find(&parse(&all), "Gateway"));
}

#[test]
fn a_trust_bundle_is_published_in_the_waypoints_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let path = dir.path().join("root-cert.pem");
    std::fs::write(&path, pem).expect("write");
    let (code, out, err) = generate(&[
        "-n",
        "shop",
        "--trust-bundle",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let docs = parse(&out);
    let config_map = find(&docs, "ConfigMap");
    assert_eq!(config_map["metadata"]["name"], "weft-trust-bundle");
    assert_eq!(config_map["metadata"]["namespace"], "shop");
    assert_eq!(config_map["data"]["root-cert.pem"], pem);
    let volumes = &find(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["configMap"]["name"], "weft-trust-bundle");

    let (_, without, _) = generate(&["-n", "shop"]);
    assert!(!kinds(&parse(&without)).contains(&"ConfigMap"));
    assert!(
        without.contains("kubectl -n shop create configmap weft-trust-bundle"),
        "says how to provide it: {without}"
    );
}

#[test]
fn what_kubernetes_would_refuse_is_refused_here() {
    for args in [
        &["Reviews"][..],
        &["9lives"][..],
        &["wp", "--namespace=-shop"][..],
        &["wp", "-n", &"x".repeat(64)][..],
    ] {
        let (code, out, err) = generate(args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains("is not a valid name"), "{err}");
    }
    let (code, _, err) = generate(&["--for", "everything"]);
    assert_ne!(code, 0);
    assert!(err.contains("service"), "names the allowed values: {err}");
}

#[test]
fn weft_accepts_the_waypoint_it_generates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = generate(&["-n", "shop", "--for", "all"]);
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("waypoint.yaml");
    std::fs::write(&file, out).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(["validate", "-f", file.to_str().expect("utf-8")])
        .output()
        .expect("weftctl validate runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("0 refused, 0 warnings"), "{text}");
}
