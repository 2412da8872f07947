//! The HBONE tunnel between agents: mesh traffic crosses the network only inside mutual
//! TLS with SPIFFE identities issued by the mesh's CA, and L4 policy is enforced at the
//! destination.
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{
    FabricCapture, agent_admin, agent_connections, agent_connections_when, eventually, lab_up,
    lab_up_with, pod_ip, testapp_in, testapp_json,
};
use weft_lab::Lab;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/server";

#[test]
fn mesh_traffic_crosses_the_fabric_only_inside_mutual_tls() {
    let lab = lab_up("mtls", "tunnel", 2, true);
    let server = pod_ip(&lab, "mesh/server");
    let capture = FabricCapture::start(&lab);
    let marker = "weft-plaintext-marker-0123456789";

    let by_ip = testapp_json(
        &lab,
        "mesh/client",
        &["get", &format!("http://{server}:8080/{marker}")],
    );
    assert_eq!(by_ip[0]["status"], 200);
    assert_eq!(by_ip[0]["body"]["pod"], "server");
    let by_name = testapp_json(
        &lab,
        "mesh/client",
        &["get", &format!("http://server.mesh/{marker}")],
    );
    assert_eq!(by_name[0]["status"], 200);
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &format!("{server}:9000"), "--send", marker],
    );
    assert_eq!(echo[1]["echoed"], marker);

    let (raw, summary) = capture.stop();
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(
        !raw_text.contains(marker),
        "plaintext payload seen on the fabric"
    );
    assert!(
        summary.contains(&format!("{server}.15008")),
        "HBONE to 15008 on the fabric:\n{summary}"
    );
    for port in [8080, 9000] {
        assert!(
            !summary.contains(&format!("{server}.{port}")),
            "a direct connection to the application's port {port} crossed the fabric:\n{summary}"
        );
    }

    // The destination's agent proved the client's identity; the source's the server's.
    let is_inbound = |r: &Value| r["pod"] == "mesh/server" && r["direction"] == "inbound";
    let inbound: Vec<Value> = agent_connections_when(&lab, "node-2", |records| {
        records.iter().filter(|r| is_inbound(r)).count() >= 3
    })
    .into_iter()
    .filter(is_inbound)
    .collect();
    assert_eq!(inbound.len(), 3, "{inbound:?}");
    assert!(
        inbound
            .iter()
            .all(|r| r["protocol"] == "hbone" && r["peer_identity"] == CLIENT_ID),
        "{inbound:?}"
    );
    // The server pod's counters include what arrived over HBONE, once each stream ends.
    let counted = eventually(Duration::from_secs(5), || {
        let pods = agent_admin(&lab, "node-2", "/pods");
        pods.as_array()
            .and_then(|pods| pods.iter().find(|p| p["pod"] == "mesh/server"))
            .is_some_and(|p| {
                p["inbound_connections"] == 3
                    && p["bytes_received"].as_u64() >= Some(3 * marker.len() as u64)
                    && p["bytes_sent"].as_u64() > Some(0)
            })
    });
    assert!(counted, "{}", agent_admin(&lab, "node-2", "/pods"));
    let outbound: Vec<Value> = agent_connections(&lab, "node-1")
        .into_iter()
        .filter(|r| r["pod"] == "mesh/client" && r["direction"] == "outbound")
        .collect();
    assert!(
        outbound
            .iter()
            .all(|r| r["protocol"] == "hbone" && r["peer_identity"] == SERVER_ID),
        "{outbound:?}"
    );
}

#[test]
fn plaintext_to_the_hbone_port_is_refused() {
    let lab = lab_up("p15008", "tunnel", 2, true);
    let target = format!("{}:15008", pod_ip(&lab, "mesh/server"));
    let output = testapp_in(
        &lab,
        "plain/outsider",
        &[
            "tcp",
            &target,
            "--send",
            "GET / HTTP/1.1\r\n\r\n",
            "--timeout-ms",
            "3000",
        ],
    );
    assert!(
        !output.status.success(),
        "plaintext got an answer from 15008: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        agent_connections(&lab, "node-2")
            .iter()
            .all(|r| r["direction"] != "inbound" || r["error"] != Value::Null),
        "nothing reached the application"
    );
}

#[test]
fn a_node_cannot_obtain_the_identity_of_a_pod_it_does_not_run() {
    let lab = lab_up("csr", "tunnel", 2, true);
    let token = std::fs::read_to_string(lab.paths.ca_dir().join("node-1.token")).expect("token");
    let root = std::fs::read_to_string(lab.paths.ca_dir().join("root.pem")).expect("root");
    let ca = format!("{}:15012", lab.plan.control_plane.ip);
    let fetch = |identity: &'static str| {
        let (token, root, ca) = (token.clone(), root.clone(), ca.clone());
        lab.in_node_netns("node-1", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use weft_core::ca::{CaClientTls, GrpcIssuer, GrpcIssuerConfig};
                use weft_core::identity::{IdentityManager, ManagerConfig, TrustBundle};
                let trust = TrustBundle::from_pem(&root).expect("root PEM");
                let issuer = GrpcIssuer::new(GrpcIssuerConfig {
                    tls: Some(CaClientTls {
                        trust: trust.into(),
                        server_name: "weft-ca.weft-system.svc".into(),
                    }),
                    token: Some(token.trim().to_string()),
                    ..GrpcIssuerConfig::new(ca)
                })
                .expect("issuer");
                let manager =
                    IdentityManager::new(std::sync::Arc::new(issuer), ManagerConfig::default());
                let identity = identity.parse().expect("SPIFFE id");
                manager
                    .fetch(&identity)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .expect("enter node-1")
    };
    assert_eq!(fetch(CLIENT_ID), Ok(()), "node-1 runs mesh/client");
    let refused = fetch(SERVER_ID).expect_err("node-1 does not run mesh/server");
    assert!(
        refused.contains("node-1") && refused.contains("may not obtain"),
        "{refused}"
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let lab = lab_up("rogue", "tunnel", 2, true);
    let server = pod_ip(&lab, "mesh/server");
    let root = std::fs::read_to_string(lab.paths.ca_dir().join("root.pem")).expect("root");
    let result = lab
        .in_pod_netns("plain/outsider", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use weft_core::ca::{CaConfig, CertificateAuthority};
                use weft_core::hbone::{ConnectRequest, HbonePool, PoolConfig};
                use weft_core::identity::{IdentityManager, ManagerConfig, TrustBundle};
                // A CA of its own signs the client's certificate; the mesh's root verifies
                // the server, so only the client side is foreign.
                let rogue = std::sync::Arc::new(
                    CertificateAuthority::generate(CaConfig::default()).expect("CA"),
                );
                let manager = IdentityManager::new(rogue, ManagerConfig::default());
                let trust = TrustBundle::from_pem(&root).expect("root PEM");
                let pool = HbonePool::new(manager, trust, PoolConfig::default());
                let request = ConnectRequest {
                    source: CLIENT_ID.parse().expect("id"),
                    destination: SERVER_ID.parse().expect("id"),
                    hbone_address: format!("{server}:15008").parse().expect("addr"),
                    target: format!("{server}:9000").parse().expect("addr"),
                    source_ip: None,
                    baggage: None,
                    trace: None,
                };
                let stream = pool
                    .connect(request, |addr| async move {
                        tokio::net::TcpStream::connect(addr).await
                    })
                    .await;
                match stream {
                    Err(e) => Err(e.to_string()),
                    Ok(mut stream) => {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        // TLS 1.3 clients learn of a refused certificate only when they read.
                        let _ = stream.write_all(b"hello").await;
                        let mut buf = [0u8; 5];
                        match tokio::time::timeout(
                            Duration::from_secs(3),
                            stream.read_exact(&mut buf),
                        )
                        .await
                        {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("no answer".into()),
                        }
                    }
                }
            })
        })
        .expect("enter the outsider pod");
    assert!(result.is_err(), "a foreign client certificate was accepted");
}

/// Applies `yaml` to the cluster as file `name`, then waits (bounded) until `pod` can no
/// longer reach `target`; returns whether it came to that.
fn apply_until_refused(lab: &Lab, name: &str, yaml: &str, pod: &str, target: &str) -> bool {
    lab.apply_yaml(name, yaml).expect("apply");
    eventually(Duration::from_secs(10), || !echo_result(lab, pod, target))
}

fn echo_result(lab: &Lab, pod: &str, target: &str) -> bool {
    testapp_in(
        lab,
        pod,
        &["tcp", target, "--send", "policy", "--timeout-ms", "3000"],
    )
    .status
    .success()
}

#[test]
fn strict_peer_authentication_refuses_plaintext_but_not_the_mesh() {
    let lab = lab_up("strict", "tunnel", 2, true);
    let target = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(
        echo_result(&lab, "plain/outsider", &target),
        "PERMISSIVE by default"
    );
    assert!(
        apply_until_refused(
            &lab,
            "strict",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: mesh}\nspec: {mtls: {mode: STRICT}}\n",
            "plain/outsider",
            &target
        ),
        "plaintext from outside the mesh refused under STRICT"
    );
    assert!(
        echo_result(&lab, "mesh/client", &target),
        "mutual TLS still passes"
    );
    let says_strict = |r: &Value| r["error"].as_str().is_some_and(|e| e.contains("STRICT"));
    let refused = agent_connections_when(&lab, "node-2", |records| records.iter().any(says_strict))
        .iter()
        .any(says_strict);
    assert!(refused, "the agent says why");
}

#[test]
fn a_deny_policy_by_principal_refuses_that_client() {
    let lab = lab_up("deny", "tunnel", 2, true);
    let target = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(echo_result(&lab, "mesh/client", &target));
    assert!(
        apply_until_refused(
            &lab,
            "deny",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-client, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]}]\n",
            "mesh/client",
            &target
        ),
        "the denied principal is refused"
    );
    assert!(
        echo_result(&lab, "plain/outsider", &target),
        "others still pass"
    );
    let names_policy = |r: &Value| {
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("mesh/deny-client"))
    };
    let reason = agent_connections_when(&lab, "node-2", |records| records.iter().any(names_policy))
        .into_iter()
        .find(names_policy);
    assert!(reason.is_some(), "the refusal names the policy");
}

#[test]
fn an_allow_policy_that_does_not_match_refuses() {
    let lab = lab_up("allow", "tunnel", 2, true);
    let target = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(
        echo_result(&lab, "mesh/client", &target),
        "allowed without a policy"
    );
    let only_frontend = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-frontend, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  rules: [{from: [{source: {principals: [cluster.local/ns/mesh/sa/frontend]}}]}]\n";
    assert!(
        apply_until_refused(&lab, "allow", only_frontend, "mesh/client", &target),
        "a principal the ALLOW policy does not list is refused"
    );
    assert!(
        !echo_result(&lab, "plain/outsider", &target),
        "plaintext has no principal to match"
    );
}

/// Established TCP connections on local port `port` in the calling thread's namespace.
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1).and_then(|a| a.rsplit(':').next());
            local_port == Some(&format!("{port:04X}")) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[test]
fn fifty_concurrent_connections_share_a_pooled_tls_connection() {
    let lab = lab_up("pool", "tunnel", 2, true);
    let url = format!("http://{}:8080/", pod_ip(&lab, "mesh/server"));
    let result = testapp_json(
        &lab,
        "mesh/client",
        &[
            "load",
            &url,
            "--rate",
            "500",
            "--duration-ms",
            "1000",
            "--connections",
            "50",
        ],
    );
    assert!(result[0]["ok"].as_u64() >= Some(450), "{}", result[0]);
    assert_eq!(result[0]["errors"], 0);
    let tls = lab
        .in_pod_netns("mesh/server", || established_on(15008))
        .expect("enter server");
    assert!(
        (1..=2).contains(&tls),
        "{tls} TLS connections between the agents for 50 client connections"
    );
}

#[test]
fn a_stream_keeps_flowing_across_certificate_rotations() {
    // 4-second certificates rotate about every 2 s; the stream lasts 9 s.
    let lab = lab_up_with("rotate", "tunnel", 2, true, &["--cert-lifetime", "4"]);
    let serial = |lab: &Lab| -> Option<String> {
        let certs = agent_admin(lab, "node-1", "/certs");
        certs["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["identity"] == CLIENT_ID)
            .map(|c| c["serial"].to_string())
    };
    assert!(
        eventually(Duration::from_secs(10), || serial(&lab).is_some()),
        "the client's certificate is issued"
    );
    let first = serial(&lab);
    let sink = format!("{}:5001", pod_ip(&lab, "mesh/server"));
    let output = testapp_in(
        &lab,
        "mesh/client",
        &[
            "throughput",
            &sink,
            "--streams",
            "1",
            "--duration-ms",
            "9000",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(result["bytes"].as_u64() > Some(0));
    assert_ne!(
        serial(&lab),
        first,
        "the certificate rotated while the stream ran"
    );
    // One stream, one connection: every byte went through the TLS session opened with the
    // first certificate, so it was never interrupted.
    assert!(
        agent_connections(&lab, "node-1")
            .iter()
            .all(|r| r["error"] == Value::Null)
    );
}
