//! The Gateway API on a waypoint, as Istio's ambient documentation routes L7 traffic:
//! HTTPRoutes and a GRPCRoute attached to the Services they route (parentRefs kind
//! Service), applied by the waypoint to real requests between lab pods over HBONE — a
//! weighted split, a header match, a URL rewrite and header modifiers the backend and the
//! client see, a backendRef to another namespace that only a ReferenceGrant opens, and a
//! gRPC method match with a real gRPC client and server (grpcio).
//!
//! Tolerances: the 90/10 split is asserted within ±5 points over 1,000 requests (a binomial
//! standard deviation of 0.95 point: more than 5σ).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up_manifests, manifests, python, testapp_json};
use weft_lab::Lab;
use weft_lab::manifest::Manifests;

const REVIEWS: &str = "http://reviews.shop.svc.cluster.local:9080";
/// How long a configuration change may take to reach the waypoint (it reads the cluster
/// every second).
const CONVERGE: Duration = Duration::from_secs(15);

fn grpc_echo() -> PathBuf {
    manifests("gateway_api").join("grpc_echo.py")
}

/// The lab of `tests/manifests/gateway_api`, the gRPC servers' command filled in.
fn lab(tag: &str) -> Lab {
    let python = python();
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let mut loaded = Manifests::load_dir(&manifests("gateway_api")).expect("the manifests");
    for container in loaded
        .pods
        .iter_mut()
        .flat_map(|p| p.spec.containers.iter_mut())
    {
        for word in container.command.iter_mut() {
            match word.as_str() {
                "GRPC_PYTHON" => *word = python.display().to_string(),
                "GRPC_ECHO" => *word = grpc_echo().display().to_string(),
                _ => {}
            }
        }
    }
    lab_up_manifests(tag, &loaded, 2, true, &[])
}

fn get(lab: &Lab, url: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["get", url];
    args.extend_from_slice(extra);
    testapp_json(lab, "shop/client", &args)
}

/// How many answers came from each version (by the testapp's `version`), or by status
/// when there is no body.
fn versions(lines: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let version = match line["body"]["version"].as_str() {
            Some(version) => version.to_string(),
            None => format!("status {}", line["status"]),
        };
        *counts.entry(version).or_default() += 1;
    }
    counts
}

#[test]
fn http_routes_on_a_waypoint_split_match_rewrite_and_respect_reference_grants() {
    let lab = lab("gwhttp");

    // Istio's ambient "split traffic" step: 90/10 between two Services.
    let split = get(&lab, REVIEWS, &["--count", "1000"]);
    let counts = versions(&split);
    let share = |v: &str| 100.0 * counts.get(v).copied().unwrap_or(0) as f64 / 1000.0;
    assert!(
        (share("v1") - 90.0).abs() <= 5.0 && (share("v2") - 10.0).abs() <= 5.0,
        "90/10 split: {counts:?}"
    );

    // A header match before the split.
    let jason = get(&lab, REVIEWS, &["-H", "end-user: jason", "--count", "50"]);
    assert_eq!(versions(&jason), BTreeMap::from([("v2".into(), 50)]));

    // URLRewrite and the header modifiers, as the backend and the client see them.
    let rewritten = get(
        &lab,
        &format!("{REVIEWS}/rewrite/books?page=2"),
        &["-H", "x-drop: secret", "-H", "x-keep: yes"],
    );
    let line = &rewritten[0];
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["body"]["version"], "v1", "{line}");
    assert_eq!(line["body"]["path"], "/v2-api/books?page=2", "{line}");
    assert_eq!(line["body"]["headers"]["x-route"][0], "rewrite", "{line}");
    assert!(line["body"]["headers"].get("x-drop").is_none(), "{line}");
    assert_eq!(line["body"]["headers"]["x-keep"][0], "yes", "{line}");
    assert_eq!(line["headers"]["x-served-by"][0], "gateway-api", "{line}");
    // A segment prefix: /rewritten is not /rewrite, and takes the split.
    let other = get(&lab, &format!("{REVIEWS}/rewritten"), &[]);
    assert_eq!(other[0]["body"]["path"], "/rewritten", "{}", other[0]);

    // A backendRef to another namespace answers 500 until a ReferenceGrant there allows it.
    let ratings = format!("{REVIEWS}/ratings");
    let refused = get(&lab, &ratings, &["--count", "5"]);
    assert_eq!(
        versions(&refused),
        BTreeMap::from([("status 500".into(), 5)])
    );
    lab.apply_yaml(
        "grant",
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-routes, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: ratings}]
"#,
    )
    .expect("the ReferenceGrant");
    assert!(
        eventually(CONVERGE, || {
            get(&lab, &ratings, &[])[0]["body"]["version"] == "other"
        }),
        "the grant opened the backend in `other`"
    );
    let allowed = get(&lab, &ratings, &["--count", "5"]);
    assert_eq!(versions(&allowed), BTreeMap::from([("other".into(), 5)]));
}

#[test]
fn a_grpc_route_on_a_waypoint_routes_by_method() {
    let lab = lab("gwgrpc");
    let call = |methods: &[&str]| -> Vec<Value> {
        let mut command = lab
            .pod_command("shop/client", python())
            .expect("a command in the client pod");
        let output = command
            .env("GRPC_DNS_RESOLVER", "native")
            .arg(grpc_echo())
            .arg("call")
            .arg("greeter.shop.svc.cluster.local:50051")
            .args(methods)
            .output()
            .expect("the gRPC client ran");
        assert!(
            output.status.success(),
            "the gRPC client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    };
    let replies = call(&[
        "/helloworld.Greeter/SayHello",
        "/helloworld.Greeter/SayGoodbye",
        "/helloworld.Greeter/SayHello",
    ]);
    let answers: Vec<&str> = replies
        .iter()
        .map(|r| r["reply"].as_str().unwrap_or("no reply"))
        .collect();
    assert_eq!(
        answers,
        [
            "v2 /helloworld.Greeter/SayHello",
            "v1 /helloworld.Greeter/SayGoodbye",
            "v2 /helloworld.Greeter/SayHello"
        ],
        "{replies:?}"
    );
}
