//! AuthorizationPolicy CUSTOM (external authorization) and AUDIT on the lab, against a real
//! ext-authz server: Envoy's `envoy.service.auth.v3.Authorization` served by Python grpcio
//! from the generated code grpc publishes (`xds-protos`), and Envoy's raw HTTP check, with
//! the logic of Istio's sample (`tests/manifests/ext_authz/ext_authz_server.py`).
//!
//! - At the waypoint, on HTTP requests: the gRPC and the HTTP provider's denial (403, its
//!   header and body) and allow (200, the header it adds reaches the application); a path
//!   the CUSTOM policy's rules exclude is never sent to the provider; the body within
//!   `maxRequestBytes` reaches the provider, a larger one is answered 413; a provider the mesh
//!   config does not define denies; a provider whose server is down denies with 403, with
//!   `statusOnError`'s status, and lets requests through with `failOpen`; AUDIT records
//!   appear for the requests their rules match only.
//! - On TCP streams through the waypoint and on connections the node agent admits
//!   (`selector` policies): the gRPC provider's network check closes denied connections and
//!   lets allowed ones through; AUDIT records in the waypoint's and the agent's logs.
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up_manifests, manifests, python, testapp_in, testapp_json};
use weft_lab::Lab;
use weft_lab::manifest::Manifests;

const DENIED_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";
const ALLOW: &str = "x-ext-authz: allow";
const RESULT: &str = "x-ext-authz-check-result";
/// How long a configuration change may take to reach the waypoint and the agents (they
/// read the cluster every second).
const CONVERGE: Duration = Duration::from_secs(15);

/// The lab of `tests/manifests/ext_authz`, with the server's command filled in and the
/// mesh config naming the providers.
fn lab(tag: &str) -> Lab {
    let python = python();
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let dir = manifests("ext_authz");
    let server = dir.join("ext_authz_server.py");
    let mut loaded = Manifests::load_dir(&dir).expect("the ext_authz manifests");
    let containers = loaded
        .pods
        .iter_mut()
        .flat_map(|p| p.spec.containers.iter_mut())
        .chain(
            loaded
                .deployments
                .iter_mut()
                .flat_map(|d| d.spec.template.spec.containers.iter_mut()),
        );
    for container in containers {
        for word in container.command.iter_mut() {
            match word.as_str() {
                "EXT_AUTHZ_PYTHON" => *word = python.display().to_string(),
                "EXT_AUTHZ_SERVER" => *word = server.display().to_string(),
                _ => {}
            }
        }
    }
    let lab = lab_up_manifests(tag, &loaded, 2, true, &[]);
    apply_mesh_config(&lab, "");
    lab
}

/// The `istio` ConfigMap, `down`'s extra fields given.
fn apply_mesh_config(lab: &Lab, down: &str) {
    let yaml = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: sample-ext-authz-grpc
      envoyExtAuthzGrpc: {{service: ext-authz.authz.svc.cluster.local, port: 9000}}
    - name: sample-ext-authz-http
      envoyExtAuthzHttp:
        service: ext-authz.authz.svc.cluster.local
        port: 8000
        includeRequestHeadersInCheck: [x-ext-authz]
        headersToUpstreamOnAllow: [x-ext-authz-check-result]
        headersToDownstreamOnDeny: [x-ext-authz-check-result]
    - name: down
      envoyExtAuthzGrpc: {{service: ext-authz-down.authz.svc.cluster.local, port: 9000, timeout: 2s{down}}}
    - name: grpc-with-body
      envoyExtAuthzGrpc:
        service: ext-authz.authz.svc.cluster.local
        port: 9000
        includeRequestBodyInCheck: {{maxRequestBytes: 8}}
"#
    );
    lab.apply_yaml("mesh-config", &yaml)
        .expect("writing the mesh config");
}

fn get(lab: &Lab, url: &str, headers: &[&str]) -> Value {
    let mut args = vec!["get", url];
    for header in headers {
        args.extend_from_slice(&["-H", header]);
    }
    let mut lines = testapp_json(lab, "shop/client", &args);
    assert_eq!(lines.len(), 1, "one response: {lines:?}");
    lines.remove(0)
}

fn header<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line["headers"][name][0].as_str()
}

/// Lines of a lab log file.
fn log_lines(lab: &Lab, file: &str) -> Vec<String> {
    std::fs::read_to_string(lab.paths.logs().join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The checks the ext-authz server reported.
fn checks(lab: &Lab) -> Vec<Value> {
    log_lines(lab, "authz-ext-authz-server.log")
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The audit records in a log (the JSON after the `weft::audit:` target).
fn audit_records(lab: &Lab, file: &str) -> Vec<Value> {
    log_lines(lab, file)
        .iter()
        .filter_map(|l| {
            l.split_once("weft::audit: ")
                .map(|(_, json)| json.to_string())
        })
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect()
}

/// The waypoint's container is `weft-waypoint`, as the controller makes it.
const WAYPOINT_LOG: &str = "shop-waypoint-0-weft-waypoint.log";

#[test]
fn custom_and_audit_on_requests_at_the_waypoint() {
    let lab = lab("eah");
    let grpc = "http://grpc-echo.shop.svc.cluster.local:9080";
    let http = "http://http-echo.shop.svc.cluster.local:9080";

    // gRPC provider. The mesh config arrives with the first reload.
    assert!(
        eventually(CONVERGE, || get(&lab, &format!("{grpc}/headers"), &[ALLOW])
            ["status"]
            == 200),
        "the gRPC provider never allowed: {}",
        get(&lab, &format!("{grpc}/headers"), &[ALLOW])
    );
    let allowed = get(&lab, &format!("{grpc}/headers"), &[ALLOW]);
    assert_eq!(
        allowed["body"]["headers"][RESULT][0], "allowed",
        "the header the provider added reached the application: {allowed}"
    );
    let denied = get(&lab, &format!("{grpc}/headers"), &[]);
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(header(&denied, RESULT), Some("denied"), "{denied}");
    assert_eq!(denied["body"], DENIED_BODY);

    // The policy's rules leave /public* out: such requests never reach the provider.
    let public = get(&lab, &format!("{grpc}/public/page"), &[]);
    assert_eq!(public["status"], 200, "{public}");
    let seen = checks(&lab);
    assert!(
        seen.iter()
            .any(|c| c["kind"] == "grpc" && c["path"] == "/headers"),
        "the provider saw the checked requests: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|c| c["path"].as_str().is_some_and(|p| p.starts_with("/public"))),
        "a request the rules exclude was sent to the provider: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|c| c["kind"] == "grpc"
                && c["principal"] == "spiffe://cluster.local/ns/shop/sa/client"),
        "the check names the client's identity: {seen:?}"
    );

    // HTTP provider.
    let allowed = get(&lab, &format!("{http}/headers"), &[ALLOW]);
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(
        allowed["body"]["headers"][RESULT][0], "allowed",
        "{allowed}"
    );
    let denied = get(&lab, &format!("{http}/headers"), &["x-ext-authz: deny"]);
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(header(&denied, RESULT), Some("denied"), "{denied}");
    assert_eq!(denied["body"], DENIED_BODY);
    assert!(
        checks(&lab)
            .iter()
            .any(|c| c["kind"] == "http" && c["path"] == "/headers"),
        "the HTTP service got the request's path"
    );

    // includeRequestBodyInCheck: a body within maxRequestBytes goes to the provider (and
    // on to the application); a larger one is answered 413 without allowPartialMessage.
    let body = "http://body-echo.shop.svc.cluster.local:9080";
    let small = testapp_json(
        &lab,
        "shop/client",
        &[
            "get",
            &format!("{body}/small"),
            "-H",
            ALLOW,
            "--method",
            "POST",
            "--body-bytes",
            "5",
        ],
    );
    assert_eq!(small[0]["status"], 200, "{small:?}");
    assert_eq!(
        small[0]["body"]["body_bytes"], 5,
        "the application got the body: {small:?}"
    );
    assert!(
        checks(&lab)
            .iter()
            .any(|c| c["path"] == "/small" && c["body"] == 5),
        "the provider got the body: {:?}",
        checks(&lab)
    );
    let large = testapp_json(
        &lab,
        "shop/client",
        &[
            "get",
            &format!("{body}/large"),
            "-H",
            ALLOW,
            "--method",
            "POST",
            "--body-bytes",
            "100",
        ],
    );
    assert_eq!(large[0]["status"], 413, "{large:?}");
    assert!(
        !checks(&lab).iter().any(|c| c["path"] == "/large"),
        "a body over the limit is not sent"
    );

    // A provider the mesh config does not define: denied without asking anyone.
    let nowhere = get(
        &lab,
        "http://nowhere-echo.shop.svc.cluster.local:9080/",
        &[ALLOW],
    );
    assert_eq!(nowhere["status"], 403, "{nowhere}");
    assert_eq!(nowhere["body"], "RBAC: access denied");

    // A provider whose server is down: 403, then statusOnError's, then failOpen lets through.
    let down = "http://down-echo.shop.svc.cluster.local:9080/";
    let first = get(&lab, down, &[ALLOW]);
    assert_eq!(first["status"], 403, "failOpen false: {first}");
    assert_eq!(header(&first, RESULT), None);
    apply_mesh_config(&lab, ", statusOnError: \"418\"");
    assert!(
        eventually(CONVERGE, || get(&lab, down, &[ALLOW])["status"] == 418),
        "statusOnError 418: {}",
        get(&lab, down, &[ALLOW])
    );
    apply_mesh_config(&lab, ", failOpen: true");
    assert!(
        eventually(CONVERGE, || get(&lab, down, &[ALLOW])["status"] == 200),
        "failOpen: {}",
        get(&lab, down, &[ALLOW])
    );

    // AUDIT: a record for each request its rules match, and for no other.
    let audited = get(&lab, &format!("{grpc}/audited/1"), &[ALLOW]);
    assert_eq!(audited["status"], 200, "{audited}");
    let mut records = Vec::new();
    eventually(Duration::from_secs(5), || {
        records = audit_records(&lab, WAYPOINT_LOG);
        records.iter().any(|r| r["path"] == "/audited/1")
    });
    let record = records
        .iter()
        .find(|r| r["path"] == "/audited/1")
        .unwrap_or_else(|| panic!("no audit record for /audited/1: {records:?}"));
    assert_eq!(record["policies"][0], "shop/audit-grpc", "{record}");
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["method"], "GET");
    assert_eq!(record["reporter"], "waypoint");
    assert_eq!(
        record["source_principal"],
        "spiffe://cluster.local/ns/shop/sa/client"
    );
    assert_eq!(record["destination_name"], "shop/grpc-echo");
    assert!(
        records.iter().all(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/audited"))),
        "only requests the AUDIT rules match are recorded: {records:?}"
    );
}

/// `weft-testapp tcp` from `pod` to `addr`: whether the echo came back.
fn echoes(lab: &Lab, pod: &str, addr: &str) -> bool {
    testapp_in(lab, pod, &["tcp", addr, "--timeout-ms", "3000"])
        .status
        .success()
}

#[test]
fn custom_and_audit_on_connections_at_the_waypoint_and_the_agent() {
    let lab = lab("eat");
    let through_waypoint = "tcp-echo.shop.svc.cluster.local:9000";
    let guarded = "guarded.shop.svc.cluster.local:9000";

    // TCP through the waypoint: the gRPC provider's network check.
    assert!(
        eventually(CONVERGE, || echoes(&lab, "shop/client", through_waypoint)),
        "client's stream through the waypoint was never allowed"
    );
    assert!(
        !echoes(&lab, "shop/intruder", through_waypoint),
        "intruder's stream through the waypoint must be closed"
    );

    // The node agent, for a pod its selector policies cover.
    assert!(
        eventually(CONVERGE, || echoes(&lab, "shop/client", guarded)),
        "client's connection to guarded was never allowed"
    );
    assert!(
        !echoes(&lab, "shop/intruder", guarded),
        "intruder's connection to guarded must be refused"
    );
    let seen = checks(&lab);
    for principal in ["client", "intruder"] {
        assert!(
            seen.iter().any(|c| c["kind"] == "tcp"
                && c["principal"] == format!("spiffe://cluster.local/ns/shop/sa/{principal}")),
            "the provider checked {principal}'s connections: {seen:?}"
        );
    }

    // AUDIT: the waypoint's stream record and the agent's connection record, for client.
    let client = "spiffe://cluster.local/ns/shop/sa/client";
    let mut waypoint = Vec::new();
    eventually(Duration::from_secs(5), || {
        waypoint = audit_records(&lab, WAYPOINT_LOG);
        !waypoint.is_empty()
    });
    assert!(
        waypoint.iter().any(|r| r["protocol"] == "tcp"
            && r["policies"][0] == "shop/audit-tcp"
            && r["source_principal"] == client
            && r["decision"] == "allow"),
        "waypoint audit records: {waypoint:?}"
    );
    let agent = audit_records(&lab, "agent-node-2.log");
    assert!(
        agent.iter().any(|r| r["reporter"] == "agent"
            && r["policies"][0] == "shop/audit-guarded"
            && r["destination_name"] == "shop/guarded"
            && r["source_principal"] == client),
        "agent audit records: {agent:?}"
    );
    assert!(
        agent.iter().all(|r| r["source_principal"] == client),
        "the AUDIT rule matches client only: {agent:?}"
    );
}
