//! Egress as Istio's tasks use it, against the lab's internet: external hosts behind the
//! nodes' NAT serving HTTP and HTTPS (nginx, certificates from the lab's external CA) and a
//! real DNS server (dnsmasq) naming them. Pods call them with curl and resolve with dig;
//! mesh config, ServiceEntries and bad input are applied to the running lab as `kubectl
//! apply` would.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_e2e::{agent_admin, bin_dir, eventually, lab_up};
use weft_lab::Lab;
use weft_lab::manifest::Manifests;

/// How long a configuration change takes to reach the agents (the cluster view is polled
/// every second).
const SETTLE: Duration = Duration::from_secs(10);

const MESH_REGISTRY_ONLY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
"#;

const MESH_ALLOW_ANY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: ALLOW_ANY
"#;

/// The tutorial's egress rule: the external host's HTTP and HTTPS ports.
const API_ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-external, namespace: shop}
spec:
  hosts: [api.external.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
  location: MESH_EXTERNAL
"#;

fn apply(lab: &mut Lab, yaml: &str) {
    let mut objects = Manifests::default();
    objects
        .add_yaml(yaml, Path::new("applied.yaml"))
        .expect("YAML");
    lab.apply_objects(&objects)
        .unwrap_or_else(|e| panic!("applying to the lab: {e}"));
}

fn delete(lab: &mut Lab, yaml: &str) {
    let mut objects = Manifests::default();
    objects
        .add_yaml(yaml, Path::new("deleted.yaml"))
        .expect("YAML");
    lab.delete_objects(&objects)
        .unwrap_or_else(|e| panic!("deleting from the lab: {e}"));
}

fn external_ca(lab: &Lab) -> String {
    lab.paths.external_ca().display().to_string()
}

/// What curl in `pod` got: the status (0 without an HTTP answer) and the body.
fn curl(lab: &Lab, pod: &str, url: &str) -> (u16, String) {
    let output = lab
        .pod_command(pod, "curl")
        .expect("pod")
        .args([
            "-s",
            "-m",
            "5",
            "--cacert",
            &external_ca(lab),
            "-w",
            "\n%{http_code}",
        ])
        .arg(url)
        .output()
        .expect("curl runs (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn status(lab: &Lab, pod: &str, url: &str) -> u16 {
    curl(lab, pod, url).0
}

/// dig in `pod`: the response's status (`NOERROR`, `NXDOMAIN`, … or `""` without an
/// answer) and its A records.
fn dig(lab: &Lab, pod: &str, name: &str) -> (String, Vec<String>) {
    let output = lab
        .pod_command(pod, "dig")
        .expect("pod")
        .args([
            "+time=2",
            "+tries=1",
            "+noall",
            "+comments",
            "+answer",
            name,
            "A",
        ])
        .output()
        .expect("dig runs (cargo xtask setup installs bind9-dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() == 5 && fields[3] == "A").then(|| fields[4].to_string())
        })
        .collect();
    (status, answers)
}

/// The agent's Prometheus metrics on `node`.
fn metrics(lab: &Lab, node: &str) -> String {
    let output = lab
        .node_command(node, "curl")
        .expect("node")
        .args(["-s", "-m", "5", "http://127.0.0.1:15020/metrics"])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn counter(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn agent_log(lab: &Lab, node: &str) -> String {
    std::fs::read_to_string(lab.paths.logs().join(format!("agent-{node}.log"))).unwrap_or_default()
}

/// The external host's nginx access log: one line per request it served.
fn access_log(lab: &Lab, host: &str) -> String {
    std::fs::read_to_string(lab.paths.external_dir().join(host).join("access.log"))
        .unwrap_or_default()
}

/// The lab's DNS server's log (dnsmasq logs every query).
fn dns_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.paths.logs().join("dns.external.test.log")).unwrap_or_default()
}

const API_HTTP: &str = "http://api.external.test/egress";
const API_HTTPS: &str = "https://api.external.test/egress";

#[test]
fn registry_only_refuses_what_the_mesh_does_not_know_until_a_service_entry_names_it() {
    let mut lab = lab_up("egreg", "egress", 2, true);

    // ALLOW_ANY (Istio's default): both ports of the external host are reachable, passed
    // through as plain TCP behind the node's address.
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", API_HTTP) == 200),
        "ALLOW_ANY lets http through: {:?}",
        curl(&lab, "shop/client", API_HTTP)
    );
    let (code, body) = curl(&lab, "shop/client", API_HTTPS);
    assert_eq!(code, 200, "ALLOW_ANY lets https through: {body}");
    assert!(
        body.contains("scheme=https sni=api.external.test"),
        "{body}"
    );

    // Locked down: both refused, counted and logged as BlackHoleCluster.
    apply(&mut lab, MESH_REGISTRY_ONLY);
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", API_HTTP) == 0),
        "REGISTRY_ONLY refuses http to an unknown host"
    );
    let served = access_log(&lab, "api.external.test").lines().count();
    assert_eq!(status(&lab, "shop/client", API_HTTPS), 0, "and https");
    assert_eq!(status(&lab, "shop/client", API_HTTP), 0);
    assert_eq!(
        access_log(&lab, "api.external.test").lines().count(),
        served,
        "nothing reached the external host while it was refused"
    );
    let text = metrics(&lab, "node-1");
    assert!(
        counter(
            &text,
            "istio_tcp_connections_opened_total",
            &[
                "destination_service=\"BlackHoleCluster\"",
                "source_workload=\"client\""
            ]
        ) >= 3,
        "{text}"
    );
    let log = agent_log(&lab, "node-1");
    assert!(
        log.lines().any(|l| l.contains("BlackHoleCluster")
            && l.contains("source=shop/client")
            && l.contains("destination=192.0.2.10:443")),
        "the agent logs the refusal with source and destination:\n{log}"
    );

    // The egress rule opens both ports of that host, and only that host.
    apply(&mut lab, API_ENTRY);
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", API_HTTP) == 200),
        "the ServiceEntry opens http"
    );
    let (code, body) = curl(&lab, "shop/client", API_HTTPS);
    assert_eq!(code, 200, "and https: {body}");
    assert!(body.contains("sni=api.external.test"), "{body}");
    assert_eq!(
        status(&lab, "shop/client", "http://secure.external.test/"),
        0,
        "a host no ServiceEntry names stays refused"
    );
    let text = metrics(&lab, "node-1");
    assert!(
        counter(
            &text,
            "istio_tcp_connections_opened_total",
            &[
                "destination_service=\"api.external.test\"",
                "source_workload=\"client\""
            ]
        ) >= 2,
        "the ServiceEntry's host is the destination_service: {text}"
    );

    // Deleting it locks the host out again.
    delete(&mut lab, API_ENTRY);
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", API_HTTP) == 0),
        "without its ServiceEntry the host is refused again"
    );
    assert_eq!(status(&lab, "shop/client", API_HTTPS), 0);

    // Back to ALLOW_ANY: through again.
    apply(&mut lab, MESH_ALLOW_ANY);
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", API_HTTP) == 200),
        "ALLOW_ANY again"
    );
    assert_eq!(status(&lab, "shop/client", API_HTTPS), 200);
    lab.down().expect("down");
}

/// A ServiceEntry host without addresses, resolved by DNS: the DNS proxy gives it an
/// address from 240.240.0.0/16 so connections by name are routed as the entry says.
const SECURE_ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure-external, namespace: shop}
spec:
  hosts: [secure.external.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  location: MESH_EXTERNAL
"#;

#[test]
fn the_agent_answers_the_pods_dns_for_the_mesh_and_forwards_the_rest() {
    let mut lab = lab_up("egdns", "egress", 2, true);
    let web_ip = lab
        .summary()
        .services
        .iter()
        .find(|s| s.service == "shop/web")
        .map(|s| s.cluster_ip.clone())
        .expect("shop/web");

    // A Service name: answered by the agent, never asked of the DNS server.
    let (status_line, answers) = dig(&lab, "shop/client", "web.shop.svc.cluster.local");
    assert_eq!(status_line, "NOERROR");
    assert_eq!(answers, [web_ip]);
    assert!(
        !dns_log(&lab).contains("query[A] web.shop.svc.cluster.local from 10.240.0.10"),
        "the agent answered it itself:\n{}",
        dns_log(&lab)
    );
    // Another name: forwarded by the agent (from its node's address) to the DNS server.
    let (status_line, answers) = dig(&lab, "shop/client", "api.external.test");
    assert_eq!(
        (status_line.as_str(), answers),
        ("NOERROR", vec!["192.0.2.10".to_string()])
    );
    assert!(
        dns_log(&lab).contains("query[A] api.external.test from 10.240.0.10"),
        "{}",
        dns_log(&lab)
    );
    let (status_line, _) = dig(&lab, "shop/client", "nothing.external.test");
    assert_eq!(
        status_line, "NXDOMAIN",
        "the upstream's answer is passed on"
    );
    let text = metrics(&lab, "node-1");
    assert!(
        counter(
            &text,
            "istio_dns_requests_total",
            &["source_canonical_service=\"client\""]
        ) >= 3,
        "{text}"
    );
    assert!(
        counter(
            &text,
            "istio_dns_upstream_requests_total",
            &["source_canonical_service=\"client\""]
        ) >= 2,
        "{text}"
    );

    // A ServiceEntry host without addresses gets one from 240.240.0.0/16; TCP to the name
    // is routed to what DNS resolves, and known to REGISTRY_ONLY — unlike the host's own
    // address, which no entry declares.
    apply(&mut lab, MESH_REGISTRY_ONLY);
    apply(&mut lab, SECURE_ENTRY);
    let allocated = || {
        let (_, answers) = dig(&lab, "shop/client", "secure.external.test");
        answers
            .first()
            .filter(|a| a.starts_with("240.240."))
            .cloned()
    };
    assert!(
        eventually(SETTLE, || allocated().is_some()),
        "an auto-allocated address: {:?}",
        dig(&lab, "shop/client", "secure.external.test")
    );
    assert!(
        eventually(SETTLE, || {
            status(&lab, "shop/client", "http://secure.external.test/by-name") == 200
        }),
        "TCP to the name reaches the host: {:?}",
        curl(&lab, "shop/client", "http://secure.external.test/by-name")
    );
    assert!(
        access_log(&lab, "secure.external.test").contains("GET /by-name"),
        "{}",
        access_log(&lab, "secure.external.test")
    );
    assert_eq!(
        status(&lab, "shop/client", "http://192.0.2.11/by-address"),
        0,
        "the host's real address is no ServiceEntry's: REGISTRY_ONLY refuses it"
    );
    let text = metrics(&lab, "node-1");
    assert!(
        counter(
            &text,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"secure.external.test\""]
        ) >= 1,
        "{text}"
    );

    // The opted-out pod asks the DNS server itself: the real address, not the allocated.
    let (status_line, answers) = dig(&lab, "shop/no-dns", "secure.external.test");
    assert_eq!(
        (status_line.as_str(), answers),
        ("NOERROR", vec!["192.0.2.11".to_string()])
    );
    assert!(
        dns_log(&lab).contains("query[A] secure.external.test from 10.240.0.11"),
        "asked from node-2's address (masqueraded):\n{}",
        dns_log(&lab)
    );
    assert_eq!(
        counter(
            &metrics(&lab, "node-2"),
            "istio_dns_requests_total",
            &["source_canonical_service=\"no-dns\""]
        ),
        0,
        "the agent never saw the opted-out pod's queries"
    );

    // While the agent is away the captured pod's DNS fails at once (nothing leaves the pod
    // uncaptured); when it is back, answers again.
    lab.kill_agent("node-1").expect("kill the agent");
    let started = std::time::Instant::now();
    let (status_line, answers) = dig(&lab, "shop/client", "api.external.test");
    assert!(
        status_line.is_empty() && answers.is_empty(),
        "no answer without the agent: {status_line} {answers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the query fails within dig's timeout, not later"
    );
    assert!(
        !dns_log(&lab).contains("query[A] api.external.test from 10.244.1.10"),
        "the query never left the pod uncaptured:\n{}",
        dns_log(&lab)
    );
    lab.start_agent_again("node-1").expect("agent back");
    assert!(
        eventually(SETTLE, || dig(&lab, "shop/client", "api.external.test").1
            == ["192.0.2.10"]),
        "answered again once the agent is back"
    );
    lab.down().expect("down");
}

#[test]
fn bad_egress_input_is_named_and_disturbs_nothing() {
    let mut lab = lab_up("egbad", "egress", 2, true);
    apply(&mut lab, MESH_REGISTRY_ONLY);
    apply(&mut lab, API_ENTRY);
    // Both in force before the bad input comes (else there is no last good to keep).
    assert!(eventually(SETTLE, || {
        status(&lab, "shop/client", "http://secure.external.test/") == 0
            && status(&lab, "shop/client", API_HTTP) == 200
    }));

    let bad = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hostless, namespace: shop}
spec:
  hosts: []
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: overlap-a, namespace: shop}
spec:
  hosts: [a.internal.test]
  addresses: [192.0.2.200]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: overlap-b, namespace: shop}
spec:
  hosts: [b.internal.test]
  addresses: [192.0.2.200]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.11}]
"#;
    let bad_mesh = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: ALLOW_SOME
"#;
    apply(&mut lab, bad);
    apply(&mut lab, bad_mesh);

    // weftctl validate over the files, as a user would run it before applying.
    let dir = std::env::temp_dir().join(format!("weft-egress-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("entries.yaml"), bad).expect("write");
    std::fs::write(dir.join("mesh.yaml"), bad_mesh).expect("write");
    let output = Command::new(bin_dir().join("weftctl"))
        .args(["validate", "-f"])
        .arg(&dir)
        .output()
        .expect("weftctl");
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "refusals fail validate: {report}");
    for expected in [
        "ServiceEntry shop/hostless: spec.hosts",
        "ServiceEntry shop/overlap-b: spec.addresses[0]",
        "outboundTrafficPolicy.mode",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }

    // The agents name them too: the hostless entry and the mesh config refused (with the
    // field), the overlap warned about.
    let dump_has = |key: &str, needle: &str| {
        let dump = agent_admin(&lab, "node-1", "/config_dump");
        dump[key].as_array().into_iter().flatten().any(|item| {
            let text = item.to_string();
            text.contains(needle)
        })
    };
    assert!(
        eventually(SETTLE, || dump_has("refused", "hostless")
            && dump_has("refused", "outboundTrafficPolicy.mode")
            && dump_has("warnings", "overlap-b")),
        "{:#}",
        agent_admin(&lab, "node-1", "/config_dump")
    );
    // Nothing else disturbed: the last good mesh config (REGISTRY_ONLY) and the good
    // ServiceEntry keep serving.
    assert_eq!(status(&lab, "shop/client", API_HTTP), 200);
    assert_eq!(
        status(&lab, "shop/client", "http://secure.external.test/"),
        0,
        "REGISTRY_ONLY still holds: the bad mesh config did not replace it"
    );
    lab.down().expect("down");
}

/// Istio's egress TLS origination through ambient's egress gateway: the application calls
/// `http://secure.external.test/`, the ServiceEntry sends it through the waypoint of
/// `istio-egress`, whose VirtualService routes port 80 to 443 and whose DestinationRule
/// originates TLS there (verified against the pods' trust roots, where the lab's external
/// CA plays a public CA).
const TLS_ORIGINATION: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: secure-external
  namespace: istio-egress
  labels: {istio.io/use-waypoint: waypoint}
spec:
  hosts: [secure.external.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure-external, namespace: istio-egress}
spec:
  hosts: [secure.external.test]
  http:
  - match: [{port: 80}]
    route: [{destination: {host: secure.external.test, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure-external, namespace: istio-egress}
spec:
  host: secure.external.test
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE}
"#;

#[test]
fn an_egress_waypoint_originates_tls_and_never_sends_plaintext() {
    let mut lab = lab_up("egtls", "egress", 2, true);
    apply(&mut lab, TLS_ORIGINATION);
    let url = "http://secure.external.test/originated";
    // Until the agents and the waypoint hold the entry, ALLOW_ANY lets the request out in
    // plain text: wait for the first one the waypoint originated.
    let originated = || {
        let (code, body) = curl(&lab, "shop/client", url);
        code == 200
            && body.contains("scheme=https sni=secure.external.test host=secure.external.test")
    };
    assert!(
        eventually(SETTLE, originated),
        "the application's plain HTTP reaches the host as TLS with the host as SNI: {:?}\nwaypoint log:\n{}",
        curl(&lab, "shop/client", url),
        waypoint_log(&lab)
    );
    let before = access_log(&lab, "secure.external.test").lines().count();
    for _ in 0..5 {
        assert!(
            originated(),
            "every request is originated once the rules are in force"
        );
    }
    let log = access_log(&lab, "secure.external.test");
    let new: Vec<&str> = log.lines().skip(before).collect();
    assert_eq!(new.len(), 5, "{log}");
    assert!(
        new.iter()
            .all(|l| l.contains(" https sni=secure.external.test ")),
        "every request the server saw came over TLS:\n{log}"
    );
    // The waypoint counted it as the ServiceEntry's host.
    let metrics = lab
        .pod_command("istio-egress/waypoint-0", "curl")
        .expect("waypoint pod")
        .args(["-s", "-m", "5", "http://127.0.0.1:15020/metrics"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        counter(
            &text,
            "istio_requests_total",
            &[
                "destination_service=\"secure.external.test\"",
                "response_code=\"200\""
            ]
        ) >= 2,
        "{text}"
    );

    // A server certificate without the name the rule asks for: 503, and nothing in
    // plain text ever reaches the server.
    let wrong = TLS_ORIGINATION.replace(
        "tls: {mode: SIMPLE}",
        "tls: {mode: SIMPLE, subjectAltNames: [wrong.external.test]}",
    );
    apply(&mut lab, &wrong);
    assert!(
        eventually(SETTLE, || status(&lab, "shop/client", url) == 503),
        "a certificate without the wanted subjectAltNames fails the request: {:?}",
        curl(&lab, "shop/client", url)
    );
    let served = access_log(&lab, "secure.external.test").lines().count();
    for _ in 0..3 {
        assert_eq!(status(&lab, "shop/client", url), 503);
    }
    assert_eq!(
        access_log(&lab, "secure.external.test").lines().count(),
        served,
        "no request reached the server, in TLS or in plain text:\n{}",
        access_log(&lab, "secure.external.test")
    );
    lab.down().expect("down");
}

fn waypoint_log(lab: &Lab) -> String {
    std::fs::read_to_string(
        lab.paths
            .logs()
            .join("istio-egress-waypoint-0-weft-waypoint.log"),
    )
    .unwrap_or_default()
}
