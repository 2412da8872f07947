//! IPv6 in a dual-stack lab: connections to a pod's IPv6 address and to an IPv6 ClusterIP are
//! captured like IPv4 ones, carried over HBONE to the destination pod's IPv6 :15008, and
//! PeerAuthentication and L4 AuthorizationPolicy apply to them as to IPv4. With the agent
//! away, IPv6 is refused, never passed around it.
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{
    FabricCapture, agent_connections_when, eventually, lab_up_dual_stack, pod_ip, pod_ip6,
    testapp_in, testapp_json,
};
use weft_lab::Lab;
use weft_lab::plan::IpFamily;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/server";

/// The IPv6 ClusterIP of Service mesh/server.
fn server_vip6(lab: &Lab) -> String {
    lab.plan
        .services
        .iter()
        .find(|s| s.namespace == "mesh" && s.name == "server")
        .and_then(|s| s.cluster_ip(IpFamily::V6))
        .expect("mesh/server has an IPv6 ClusterIP (PreferDualStack)")
        .to_string()
}

fn starts_with(value: &Value, prefix: &str) -> bool {
    value.as_str().is_some_and(|v| v.starts_with(prefix))
}

/// Records of `pod` in `direction` to `dst` once `count` are there (or after 5 s).
fn records_to(lab: &Lab, node: &str, pod: &str, direction: &str, dst: &str) -> Vec<Value> {
    let matches = |r: &Value| {
        r["pod"] == pod && r["direction"] == direction && r["original_destination"] == dst
    };
    agent_connections_when(lab, node, |records| records.iter().any(matches))
        .into_iter()
        .filter(matches)
        .collect()
}

/// Whether `pod` gets its bytes echoed by `target` (an echo server), within 3 s.
fn echoes(lab: &Lab, pod: &str, target: &str) -> bool {
    testapp_in(
        lab,
        pod,
        &["tcp", target, "--send", "ipv6", "--timeout-ms", "3000"],
    )
    .status
    .success()
}

/// Applies `yaml` as cluster file `name`, then waits (bounded) until `holds` does.
fn apply_until(lab: &Lab, name: &str, yaml: &str, mut holds: impl FnMut() -> bool) -> bool {
    lab.apply_yaml(name, yaml).expect("apply");
    eventually(Duration::from_secs(10), &mut holds)
}

#[test]
fn ipv6_between_mesh_pods_goes_over_hbone_to_the_ipv6_address() {
    let lab = lab_up_dual_stack("v6mtls", "ipv6", 2, true);
    let server6 = pod_ip6(&lab, "mesh/server");
    let client6 = pod_ip6(&lab, "mesh/client");
    let vip6 = server_vip6(&lab);
    let capture = FabricCapture::start(&lab);
    let marker = "weft-ipv6-plaintext-marker-0123456789";

    for (url, dialed) in [
        (
            format!("http://[{server6}]:8080/{marker}"),
            format!("[{server6}]:8080"),
        ),
        (format!("http://[{vip6}]/{marker}"), format!("[{vip6}]:80")),
    ] {
        let reply = &testapp_json(&lab, "mesh/client", &["get", &url])[0];
        assert_eq!(reply["status"], 200, "{reply}");
        assert_eq!(reply["body"]["pod"], "server", "{reply}");
        // The server's accept() shows the client pod's IPv6 address (the agent connects
        // from it), and the client's getpeername() what it dialed.
        assert!(
            starts_with(&reply["body"]["peer"], &format!("[{client6}]:")),
            "the server sees the client's IPv6 address: {reply}"
        );
        assert_eq!(
            reply["peer"],
            dialed.as_str(),
            "getpeername of a captured socket"
        );
    }
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &format!("[{server6}]:9000"), "--send", marker],
    );
    assert_eq!(echo[1]["echoed"], marker, "bytes arrive both ways");

    let (raw, summary) = capture.stop();
    assert!(
        !String::from_utf8_lossy(&raw).contains(marker),
        "plaintext payload seen on the fabric"
    );
    assert!(
        summary.contains(&format!("{client6}.")) && summary.contains(&format!("{server6}.15008")),
        "HBONE between the pods' IPv6 addresses on the fabric:\n{summary}"
    );
    for port in [8080, 9000] {
        assert!(
            !summary.contains(&format!("{server6}.{port}:")),
            "a direct IPv6 connection to the application's port {port} crossed the fabric:\n{summary}"
        );
    }

    // Captured at the source, each over HBONE to the server's IPv6 :15008, whose identity
    // was proven...
    for dst in [
        format!("[{server6}]:8080"),
        format!("[{vip6}]:80"),
        format!("[{server6}]:9000"),
    ] {
        let outbound = records_to(&lab, "node-1", "mesh/client", "outbound", &dst);
        assert_eq!(
            outbound.len(),
            1,
            "one outbound record to {dst}: {outbound:?}"
        );
        let record = &outbound[0];
        assert_eq!(record["protocol"], "hbone", "{record}");
        assert_eq!(record["peer_identity"], SERVER_ID, "{record}");
        assert_eq!(record["upstream"], format!("[{server6}]:15008"), "{record}");
        assert_eq!(record["listener"], format!("[{client6}]:15001"), "{record}");
        assert_eq!(record["error"], Value::Null, "{record}");
    }
    // ...and at the destination, which proved the client's.
    for (dst, count) in [
        (format!("[{server6}]:8080"), 2),
        (format!("[{server6}]:9000"), 1),
    ] {
        let matches = |r: &Value| {
            r["pod"] == "mesh/server"
                && r["direction"] == "inbound"
                && r["original_destination"] == dst.as_str()
        };
        let inbound: Vec<Value> = agent_connections_when(&lab, "node-2", |records| {
            records.iter().filter(|r| matches(r)).count() >= count
        })
        .into_iter()
        .filter(matches)
        .collect();
        assert_eq!(
            inbound.len(),
            count,
            "inbound records to {dst}: {inbound:?}"
        );
        for record in &inbound {
            assert_eq!(record["protocol"], "hbone", "{record}");
            assert_eq!(record["peer_identity"], CLIENT_ID, "{record}");
            assert!(
                starts_with(&record["source"], &format!("[{client6}]:")),
                "{record}"
            );
        }
    }
}

#[test]
fn ipv6_from_outside_the_mesh_is_captured_and_refused_under_strict() {
    let lab = lab_up_dual_stack("v6strict", "ipv6", 2, true);
    let server6 = pod_ip6(&lab, "mesh/server");
    let outsider6 = pod_ip6(&lab, "plain/outsider");
    let target6 = format!("[{server6}]:9000");
    let target4 = format!("{}:9000", pod_ip(&lab, "mesh/server"));

    // PERMISSIVE: through the agent's IPv6 inbound listener, from the client's own address.
    let reply = &testapp_json(
        &lab,
        "plain/outsider",
        &["get", &format!("http://[{server6}]:8080/")],
    )[0];
    assert_eq!(reply["status"], 200, "{reply}");
    assert!(
        starts_with(&reply["body"]["peer"], &format!("[{outsider6}]:")),
        "the application sees the plaintext client's IPv6 address: {reply}"
    );
    let records = records_to(
        &lab,
        "node-2",
        "mesh/server",
        "inbound",
        &format!("[{server6}]:8080"),
    );
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["listener"], "[::]:15006", "{}", records[0]);
    assert_eq!(records[0]["protocol"], "tcp", "{}", records[0]);
    assert!(
        starts_with(&records[0]["source"], &format!("[{outsider6}]:")),
        "{}",
        records[0]
    );
    assert!(
        echoes(&lab, "plain/outsider", &target6),
        "PERMISSIVE by default"
    );

    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: mesh}\nspec: {mtls: {mode: STRICT}}\n";
    assert!(
        apply_until(&lab, "strict", strict, || !echoes(
            &lab,
            "plain/outsider",
            &target6
        )),
        "plaintext over IPv6 from outside the mesh refused under STRICT"
    );
    assert!(!echoes(&lab, "plain/outsider", &target4), "as over IPv4");
    assert!(
        echoes(&lab, "mesh/client", &target6),
        "mutual TLS over IPv6 still passes"
    );
    let says_strict = |r: &Value| {
        r["original_destination"] == target6.as_str()
            && r["error"].as_str().is_some_and(|e| e.contains("STRICT"))
    };
    let refused = agent_connections_when(&lab, "node-2", |records| records.iter().any(says_strict))
        .iter()
        .any(says_strict);
    assert!(refused, "the agent says why");
}

#[test]
fn l4_authorization_policy_applies_over_ipv6() {
    let lab = lab_up_dual_stack("v6authz", "ipv6", 2, true);
    let server6 = pod_ip6(&lab, "mesh/server");
    let outsider6 = pod_ip6(&lab, "plain/outsider");
    let target6 = format!("[{server6}]:9000");
    let vip_target6 = format!("[{}]:9000", server_vip6(&lab));
    let target4 = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    assert!(
        echoes(&lab, "mesh/client", &target6),
        "allowed without a policy"
    );

    // By principal: the proven identity, whatever the family.
    let deny_client = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-client, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]}]\n";
    assert!(
        apply_until(&lab, "policy", deny_client, || !echoes(
            &lab,
            "mesh/client",
            &target6
        )),
        "the denied principal is refused over IPv6"
    );
    assert!(
        !echoes(&lab, "mesh/client", &vip_target6),
        "and through the IPv6 ClusterIP"
    );
    assert!(
        echoes(&lab, "plain/outsider", &target6),
        "others still pass over IPv6"
    );
    let names_policy = |r: &Value| {
        r["original_destination"] == target6.as_str()
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("mesh/deny-client"))
    };
    let reason = agent_connections_when(&lab, "node-2", |records| records.iter().any(names_policy))
        .into_iter()
        .find(names_policy);
    assert!(reason.is_some(), "the refusal names the policy");

    // By an IPv6 block: the outsider's own address, and only over IPv6.
    let deny_block = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-block, namespace: mesh}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  action: DENY\n  rules: [{{from: [{{source: {{ipBlocks: [\"{outsider6}/128\"]}}}}]}}]\n"
    );
    assert!(
        apply_until(&lab, "policy", &deny_block, || !echoes(
            &lab,
            "plain/outsider",
            &target6
        ) && echoes(
            &lab,
            "mesh/client",
            &target6
        )),
        "an IPv6 ipBlock refuses that address, and only it"
    );
    assert!(
        echoes(&lab, "plain/outsider", &target4),
        "the same pod over IPv4 is not in the IPv6 block"
    );

    // ALLOW from node-1's pods' IPv6 range: IPv6 from there passes (plaintext, and over
    // HBONE, whose source is the client pod's address), IPv4 matches nothing and is refused.
    let allow_range = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-range, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  rules: [{from: [{source: {ipBlocks: [\"fd00:10:244:1::/64\"]}}]}]\n";
    assert!(
        apply_until(&lab, "policy", allow_range, || !echoes(
            &lab,
            "plain/outsider",
            &target4
        )),
        "IPv4 is outside an ALLOW of IPv6 blocks"
    );
    assert!(
        echoes(&lab, "plain/outsider", &target6),
        "plaintext from inside the IPv6 block passes"
    );
    assert!(
        echoes(&lab, "mesh/client", &target6),
        "HBONE from inside the IPv6 block passes"
    );
    assert!(
        !echoes(&lab, "mesh/client", &target4),
        "HBONE over IPv4 is outside it"
    );
}

#[test]
fn ipv6_is_refused_while_the_agent_is_away() {
    let lab = lab_up_dual_stack("v6away", "ipv6", 2, true);
    let target6 = format!("[{}]:9000", pod_ip6(&lab, "mesh/server"));
    assert!(echoes(&lab, "mesh/client", &target6));
    assert!(echoes(&lab, "plain/outsider", &target6));

    // The client's agent is gone: its IPv6 connections are refused, not sent around it.
    lab.kill_agent("node-1").expect("SIGKILL");
    assert!(
        eventually(Duration::from_secs(5), || !echoes(
            &lab,
            "mesh/client",
            &target6
        )),
        "outbound IPv6 fails closed"
    );
    assert!(
        echoes(&lab, "plain/outsider", &target6),
        "the server is still reachable through its own agent"
    );

    // The server's agent is gone: plaintext IPv6 no longer reaches the application at all.
    lab.kill_agent("node-2").expect("SIGKILL");
    assert!(
        eventually(Duration::from_secs(5), || !echoes(
            &lab,
            "plain/outsider",
            &target6
        )),
        "inbound IPv6 fails closed"
    );
    let direct = lab
        .in_pod_netns("mesh/server", || {
            std::net::TcpStream::connect(("::1", 9000)).is_ok()
        })
        .expect("enter the server pod");
    assert!(direct, "the application itself still listens");
}
