//! Accepted policies hold on every path a request can take: HTTP through a waypoint with
//! paths written to slip past a prefix rule, TCP through a waypoint, and straight to a
//! destination agent with a forged `Forwarded` header.
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{eventually, lab_up, pod_ip, testapp_in, testapp_json};
use weft_lab::Lab;

const WEB: &str = "http://web.shop.svc.cluster.local";
const DB: &str = "db.shop.svc.cluster.local:5000";
const WAIT: Duration = Duration::from_secs(15);

/// One GET from `pod`, the path sent exactly as written: (status, path the server saw).
fn get(lab: &Lab, pod: &str, path: &str) -> (u64, Option<String>) {
    let lines = testapp_json(lab, pod, &["get", &format!("{WEB}{path}")]);
    let line = lines.first().cloned().unwrap_or(Value::Null);
    (
        line["status"].as_u64().unwrap_or(0),
        line["body"]["path"].as_str().map(str::to_string),
    )
}

fn echoes(lab: &Lab, pod: &str, target: &str) -> bool {
    testapp_in(
        lab,
        pod,
        &["tcp", target, "--send", "policy", "--timeout-ms", "3000"],
    )
    .status
    .success()
}

const DENY_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
"#;

#[test]
fn paths_are_normalized_before_authorization_and_sent_normalized() {
    let lab = lab_up("paths", "security", 2, true);
    lab.apply_yaml("no-admin", DENY_ADMIN).expect("apply");
    assert!(
        eventually(WAIT, || get(&lab, "shop/client", "/admin").0 == 403),
        "the DENY is in force"
    );
    for sneaky in [
        "/./admin",
        "/%61dmin",
        "/public/../admin",
        "/public/%2e%2e/admin/users",
        "/admin/./x",
    ] {
        assert_eq!(
            get(&lab, "shop/client", sneaky).0,
            403,
            "{sneaky} is /admin… once normalized (Istio's default, BASE)"
        );
    }
    assert_eq!(
        get(&lab, "shop/client", "/public"),
        (200, Some("/public".to_string()))
    );
    assert_eq!(
        get(&lab, "shop/client", "/x/../public/%7euser"),
        (200, Some("/public/~user".to_string())),
        "the application receives the normalized path"
    );
    assert_eq!(
        get(&lab, "shop/client", "/a%00b").0,
        400,
        "a path Envoy refuses to normalize"
    );

    // Istio's documented behaviour without normalization: paths are matched as sent.
    lab.apply_yaml(
        "mesh",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: NONE\n",
    )
    .expect("apply the mesh config");
    assert!(
        eventually(WAIT, || get(&lab, "shop/client", "/%61dmin").0 == 200),
        "with NONE, /%61dmin is not /admin"
    );
    assert_eq!(
        get(&lab, "shop/client", "/%61dmin"),
        (200, Some("/%61dmin".to_string())),
        "and the application receives it as sent"
    );
    assert_eq!(get(&lab, "shop/client", "/admin").0, 403);
}

#[test]
fn a_tcp_service_behind_a_waypoint_admits_only_the_allowed_identity() {
    let lab = lab_up("tcpauthz", "security", 2, true);
    assert!(echoes(&lab, "shop/intruder", DB), "no policy yet");
    lab.apply_yaml(
        "db-allow",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
"#,
    )
    .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "shop/intruder", DB)),
        "an identity outside the ALLOW is refused through the waypoint"
    );
    assert!(echoes(&lab, "shop/client", DB), "the allowed one passes");
    // An ALLOW rule that needs HTTP attributes matches no TCP stream (Istio's rule).
    lab.apply_yaml(
        "db-allow",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: db}]
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: [GET]}}]
"#,
    )
    .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "shop/client", DB)),
        "an HTTP-only ALLOW rule admits no TCP stream"
    );
}

#[test]
fn a_forged_forwarded_header_is_judged_by_the_real_address() {
    let lab = lab_up("fwd", "security", 2, true);
    let vault = pod_ip(&lab, "shop/vault");
    let client_ip = pod_ip(&lab, "shop/client");
    let target = format!("{vault}:7000");
    lab.apply_yaml(
        "vault-allow",
        &format!(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: vault-from-client, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: vault}}}}
  rules:
  - from: [{{source: {{ipBlocks: ["{client_ip}/32"]}}}}]
"#
        ),
    )
    .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "shop/intruder", &target)),
        "the intruder's own address is outside the ipBlocks"
    );
    assert!(
        echoes(&lab, "shop/client", &target),
        "the client's is inside"
    );

    // The intruder, holding its own mesh certificate (its node may obtain it), opens an
    // HBONE tunnel from its pod claiming to be the client.
    let forged = hbone_echo(&lab, "shop/intruder", "intruder", &vault, Some(&client_ip));
    assert!(
        forged.is_err(),
        "a forged Forwarded was believed: {forged:?}"
    );
    // The same tunnel without the lie, from the client's pod as the client: it passes, so
    // the refusal above is the address, not the harness.
    let honest = hbone_echo(&lab, "shop/client", "client", &vault, None);
    assert_eq!(honest, Ok(()), "the client's own tunnel");
}

/// Opens an HBONE tunnel from `pod`'s network namespace to `server`:7000 with the mesh
/// certificate of service account `sa` (obtained with node-1's token, as node-1's agent
/// would), sending `Forwarded: for=<forwarded>` when given, and echoes a line through it.
fn hbone_echo(
    lab: &Lab,
    pod: &str,
    sa: &str,
    server: &str,
    forwarded: Option<&str>,
) -> Result<(), String> {
    let token = std::fs::read_to_string(lab.paths.ca_dir().join("node-1.token")).expect("token");
    let root = std::fs::read_to_string(lab.paths.ca_dir().join("root.pem")).expect("root");
    let ca = format!("{}:15012", lab.plan.control_plane.ip);
    let source: weft_core::identity::Identity = format!("spiffe://cluster.local/ns/shop/sa/{sa}")
        .parse()
        .expect("id");
    let destination = "spiffe://cluster.local/ns/shop/sa/vault"
        .parse()
        .expect("id");
    let hbone_address = format!("{server}:15008").parse().expect("addr");
    let target = format!("{server}:7000").parse().expect("addr");
    let forwarded = forwarded.map(|ip| ip.parse().expect("ip"));
    lab.in_pod_netns(pod, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            use weft_core::ca::{CaClientTls, GrpcIssuer, GrpcIssuerConfig};
            use weft_core::hbone::{ConnectRequest, HbonePool, PoolConfig};
            use weft_core::identity::{IdentityManager, ManagerConfig, TrustBundle};
            let trust = TrustBundle::from_pem(&root).expect("root PEM");
            let issuer = GrpcIssuer::new(GrpcIssuerConfig {
                tls: Some(CaClientTls {
                    trust: trust.clone().into(),
                    server_name: "weft-ca.weft-system.svc".into(),
                }),
                token: Some(token.trim().to_string()),
                ..GrpcIssuerConfig::new(ca)
            })
            .expect("issuer");
            let manager =
                IdentityManager::new(std::sync::Arc::new(issuer), ManagerConfig::default());
            manager
                .fetch(&source)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            let pool = HbonePool::new(manager, trust, PoolConfig::default());
            let request = ConnectRequest {
                source,
                destination,
                hbone_address,
                target,
                source_ip: forwarded,
                baggage: None,
                trace: None,
            };
            let mut stream = pool
                .connect(request, |addr| async move {
                    tokio::net::TcpStream::connect(addr).await
                })
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"policy\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 7];
            match tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut buf)).await {
                Ok(Ok(_)) if &buf == b"policy\n" => Ok(()),
                Ok(Ok(_)) => Err(format!("echoed {buf:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer".into()),
            }
        })
    })
    .expect("enter the pod")
}

/// A pod's outbound listener (`:15001`) takes the pod's own captured connects only: from
/// another pod, a connection to it is refused, so nobody can race a pending connect for
/// its original destination and leave with the pod's identity.
#[test]
fn a_pods_outbound_port_refuses_other_pods() {
    let lab = lab_up("outport", "security", 2, true);
    let db = pod_ip(&lab, "shop/db");
    assert!(
        echoes(&lab, "shop/intruder", DB),
        "the db pod is enrolled and serving"
    );
    let output = testapp_in(
        &lab,
        "shop/intruder",
        &[
            "connects",
            &format!("{db}:15001"),
            "--count",
            "3",
            "--timeout-ms",
            "2000",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let churn: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    assert_eq!(
        (churn["ok"].as_u64(), churn["failed"].as_u64()),
        (Some(0), Some(3)),
        "connections to another pod's :15001 are refused: {stdout}"
    );
}

/// An ALLOW policy attached by `targetRefs` to a Service that no waypoint serves cannot be
/// applied where it is meant to be: instead of the policy being ignored (every client let
/// in), the destination agent refuses every connection to the Service's pods, the allowed
/// client's too, until the policy goes (or the Service gets a waypoint).
#[test]
fn an_allow_policy_on_a_service_without_a_waypoint_fails_closed() {
    let lab = lab_up("unbound", "security", 2, true);
    let vault = pod_ip(&lab, "shop/vault");
    let target = format!("{vault}:7000");
    assert!(echoes(&lab, "shop/client", &target), "no policy yet");
    let service = r#"apiVersion: v1
kind: Service
metadata: {name: vault, namespace: shop}
spec: {selector: {app: vault}, ports: [{name: tcp-echo, port: 7000, targetPort: echo}]}
"#;
    let policy = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: vault-clients, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: vault}]
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
"#;
    lab.apply_yaml("vault", &format!("{service}---\n{policy}"))
        .expect("apply");
    assert!(
        eventually(WAIT, || !echoes(&lab, "shop/client", &target)),
        "a policy no waypoint can apply fails closed"
    );
    assert!(!echoes(&lab, "shop/intruder", &target));
    lab.apply_yaml("vault", service).expect("apply");
    assert!(
        eventually(WAIT, || echoes(&lab, "shop/client", &target)),
        "without the policy the pod is reachable again"
    );
}
