//! weftctl as a user runs it.
use std::path::{Path, PathBuf};
use std::process::Command;

fn weftctl(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .output()
        .expect("weftctl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn bookinfo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/bookinfo")
}

#[test]
fn valid_manifests_pass() {
    let dir = bookinfo();
    let (code, out) = weftctl(&["validate", "-f", dir.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("objects checked: 0 refused, 0 warnings"),
        "{out}"
    );
}

#[test]
fn refusals_name_file_document_object_field_and_reason_and_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 40}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bad, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: [300.1.2.3/8]}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts: [ghost]
  http: [{route: [{destination: {host: nowhere}}]}]
"#,
    )
    .expect("write");
    let (code, out) = weftctl(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let f = file.display();
    assert!(
        out.contains(&format!("{f}:2: VirtualService default/reviews: spec.http[0].route[1].weight: the weights of the 2 destinations sum to 90, not 100")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{f}:3: AuthorizationPolicy shop/deny-bad: spec.rules[0].from[0].source.ipBlocks[0]: \"300.1.2.3/8\" is not an IP address or CIDR block")),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {f}:4: VirtualService default/ghost: spec.http[0].route[0].destination.host: \"nowhere\" names no known Service")),
        "{out}"
    );
    assert!(
        out.contains("4 objects checked: 2 refused, 1 warnings"),
        "{out}"
    );
}

#[test]
fn gateway_api_routes_are_refused_and_resolved_against_the_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: other}
spec: {ports: [{port: 9080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs:
    - {name: reviews, port: 9080, weight: 90}
    - {name: ratings, namespace: other, port: 9080, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: "no-slash"}}]
    backendRefs: [{name: reviews}]
"#,
    )
    .expect("write");
    let (code, out) = weftctl(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let f = file.display();
    assert!(
        out.contains(&format!("{f}:4: HTTPRoute shop/broken: spec.rules[0].matches[0].path.value: value must be an absolute path")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{f}:4: HTTPRoute shop/broken: spec.rules[0].backendRefs[0]: Must have port for Service reference")),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {f}:3: HTTPRoute shop/reviews: spec.rules[0].backendRefs[1]: backendRef other/ratings not accessible to a HTTPRoute in namespace \"shop\" (missing a ReferenceGrant in \"other\"?) (RefNotPermitted); requests it would take are answered 500")),
        "{out}"
    );
    assert!(
        out.contains("4 objects checked: 2 refused, 1 warnings"),
        "{out}"
    );
}

#[test]
fn tls_and_tcp_routes_are_refused_and_resolved_against_the_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {ports: [{port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tcp, port: 5432, protocol: TCP}
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  rules: [{backendRefs: [{name: db, port: 5432}, {name: gone, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db}]}]
"#,
    )
    .expect("write");
    let (code, out) = weftctl(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let f = file.display();
    assert!(
        out.contains(&format!("{f}:4: TLSRoute shop/broken: spec.rules[0].backendRefs[0]: Must have port for Service reference")),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {f}:3: TCPRoute shop/db: spec.parentRefs[0]: not accepted (NotAllowedByListeners): listener \"tls\" does not allow kind TCPRoute")),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {f}:3: TCPRoute shop/db: spec.rules[0].backendRefs[1]: backend(gone.shop.svc.cluster.local) not found (BackendNotFound); connections it would take are refused")),
        "{out}"
    );
}

/// Two TCPRoutes on one TCP listener, two TLSRoutes with one hostname on one TLS listener:
/// the newer ones get no connections, and `weftctl validate` names what takes them.
#[test]
fn routes_an_older_route_shadows_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {ports: [{port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tcp, port: 5432, protocol: TCP}
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: a-newer, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: web, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a-web, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
"#,
    )
    .expect("write");
    let (code, out) = weftctl(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "warnings only: {out}");
    let f = file.display();
    assert!(
        out.contains(&format!("warning: {f}:4: TCPRoute shop/a-newer: spec.parentRefs[0]: listener \"tcp\" of Gateway shop/edge gives all its connections to TCPRoute shop/db, the oldest route attached to it: this route takes none")),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {f}:6: TLSRoute shop/a-web: spec.parentRefs[0]: on listener \"tls\" of Gateway shop/edge, db.example.com goes to TLSRoute shop/web")),
        "{out}"
    );
    assert!(!out.contains("TCPRoute shop/db: spec.parentRefs"), "{out}");
    assert!(!out.contains("TLSRoute shop/web: spec.parentRefs"), "{out}");
}

/// What is accepted and ignored is shown, each with its file, object and field: a misspelt
/// field, a kind weft does not read, L7 rules on a Service no waypoint serves, a field weft
/// does not act on. Warnings do not fail the check.
#[test]
fn what_is_accepted_and_ignored_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shop.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - rout: [{destination: {host: reviews}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {egress: [{hosts: ["./*"]}]}
"#,
    )
    .expect("write");
    let (code, out) = weftctl(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "warnings do not fail the check: {out}");
    let f = file.display();
    for line in [
        format!(
            "warning: {f}:4: Sidecar shop/default: networking.istio.io/Sidecar is not supported by weft: ignored"
        ),
        format!(
            "warning: {f}:2: VirtualService shop/reviews: spec.http[0].rout: unknown field \"spec.http[0].rout\": not in the VirtualService schema, ignored (misspelt?)"
        ),
        format!(
            "warning: {f}:2: VirtualService shop/reviews: spec.hosts[0]: \"reviews\" has no waypoint: L7 rules apply only through a waypoint: label the Service istio.io/use-waypoint"
        ),
        format!(
            "warning: {f}:3: DestinationRule shop/reviews: spec.host: \"reviews\" has no waypoint: L7 rules apply only through a waypoint: label the Service istio.io/use-waypoint"
        ),
        format!(
            "warning: {f}:3: DestinationRule shop/reviews: spec.workloadSelector: accepted but not supported by weft: ignored (the rule applies whichever workload sends)"
        ),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    assert!(
        out.contains("3 objects checked: 0 refused, 5 warnings"),
        "{out}"
    );
}

#[test]
fn unreadable_yaml_fails_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "kind: [VirtualService\n").expect("write");
    let (code, out) = weftctl(&["validate", "-f", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&file.display().to_string()), "{out}");
}

#[test]
fn crds_writes_what_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = weftctl(&["crds", "--out", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let mut written = 0;
    for entry in std::fs::read_dir(dir.path()).expect("read out dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        assert_eq!(
            std::fs::read_to_string(&path).expect("written"),
            std::fs::read_to_string(committed.join(name)).expect("committed"),
            "{}",
            name.to_string_lossy()
        );
        written += 1;
    }
    assert_eq!(written, 9, "eight CRDs and the kustomization listing them");
}
