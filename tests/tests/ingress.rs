//! The ingress gateway as the tutorials use it, from a host outside the cluster: Istio's
//! default ingress (`deploy/ingress/`) runs in the lab, the tests apply Gateways,
//! VirtualServices and Secrets to the running lab as `kubectl apply` would, and real
//! clients (curl, `openssl s_client`) on the `outside` host reach it at its LoadBalancer
//! address, as from the internet. Certificates are made with the openssl command line, as
//! Istio's tasks make them.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weft_e2e::{agent_admin, bin_dir, eventually, lab_up_manifests, manifests};
use weft_lab::Lab;
use weft_lab::manifest::Manifests;

/// How long a configuration change takes to reach the gateway (the cluster view is polled
/// every second).
const SETTLE: Duration = Duration::from_secs(10);

fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The test's application, the ingress gateway as deploy/ installs it, and `extra`.
fn lab_with_ingress(tag: &str, extra: &str) -> Lab {
    let mut all = Manifests::load_dir(&manifests("ingress")).expect("tests/manifests/ingress");
    for file in [
        "deploy/ingress/namespace.yaml",
        "deploy/ingress/ingress.yaml",
    ] {
        let path = repository().join(file);
        let text = std::fs::read_to_string(&path).expect("deploy/ingress");
        all.add_yaml(&text, &path).expect("deploy/ingress is YAML");
    }
    if !extra.is_empty() {
        all.add_yaml(extra, Path::new("extra.yaml")).expect("extra");
    }
    lab_up_manifests(tag, &all, 2, true, &[])
}

/// `kubectl apply -n namespace -f -`.
fn apply(lab: &mut Lab, namespace: &str, yaml: &str) {
    let mut objects = Manifests::default();
    objects
        .add_yaml(yaml, Path::new("applied.yaml"))
        .expect("YAML");
    lab.apply_objects(&objects.in_namespace(namespace))
        .unwrap_or_else(|e| panic!("applying to the lab: {e}"));
}

fn apply_file(lab: &mut Lab, namespace: &str, file: &str) {
    let text = std::fs::read_to_string(repository().join(file)).expect(file);
    apply(lab, namespace, &text);
}

/// The ingress gateway's LoadBalancer address.
fn gateway_address(lab: &Lab) -> String {
    lab.load_balancer_ip("istio-system/istio-ingressgateway")
        .expect("the ingress Service has a LoadBalancer address")
        .to_string()
}

/// The ingress gateway's log, for failure messages.
fn gateway_log(lab: &Lab) -> String {
    std::fs::read_to_string(
        lab.paths
            .logs()
            .join("istio-system-istio-ingressgateway-0-istio-proxy.log"),
    )
    .unwrap_or_default()
}

/// What curl on the outside host got: its status code (0 when it got no HTTP answer), the
/// body, and curl's `-w` extras.
#[derive(Debug)]
struct Got {
    status: u16,
    body: String,
    extra: String,
}

fn curl(lab: &Lab, args: &[&str], write_out: &str) -> Got {
    let output = lab
        .outside_command("curl")
        .expect("outside")
        .args(["-s", "-m", "10", "-w"])
        .arg(format!("\n%{{http_code}} {write_out}"))
        .args(args)
        .output()
        .expect("curl runs (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, extra) = last.split_once(' ').unwrap_or((last, ""));
    Got {
        status: status.parse().unwrap_or(0),
        body: body.to_string(),
        extra: extra.trim().to_string(),
    }
}

/// The pod that answered, from weft-testapp's report.
fn answered_by(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `count` requests, each answered as `expected` says; returns the statuses seen.
fn statuses(lab: &Lab, count: usize, args: &[&str]) -> Vec<u16> {
    (0..count).map(|_| curl(lab, args, "").status).collect()
}

#[test]
fn bookinfo_from_outside_through_istio_s_gateway_unchanged() {
    let mut lab = lab_with_ingress("igbook", "");
    let address = gateway_address(&lab);
    // Istio's sample, verbatim: no namespace in it, applied where Bookinfo runs.
    apply_file(
        &mut lab,
        "bookinfo",
        "examples/bookinfo/ingress/bookinfo-gateway.yaml",
    );
    let page = format!("http://{address}/productpage");
    assert!(
        eventually(SETTLE, || curl(&lab, &[&page], "").status == 200),
        "/productpage from outside: {:?}",
        curl(&lab, &[&page], "")
    );
    for path in [
        "/productpage",
        "/static/bootstrap/css/bootstrap.min.css",
        "/login",
        "/logout",
        "/api/v1/products",
        "/api/v1/products/0/reviews",
    ] {
        let url = format!("http://{address}{path}");
        for _ in 0..5 {
            let got = curl(&lab, &[&url], "");
            assert_eq!(got.status, 200, "{path}: {got:?}");
            assert_eq!(
                answered_by(&got.body),
                "productpage-v1-0",
                "{path}: {got:?}"
            );
        }
    }
    for path in ["/nothing", "/productpages/x", "/"] {
        let url = format!("http://{address}{path}");
        assert_eq!(statuses(&lab, 5, &[&url]), [404; 5], "{path}");
    }
    // HTTP/2 (prior knowledge) too, and the NodePort on each node's address.
    let got = curl(&lab, &["--http2-prior-knowledge", &page], "%{http_version}");
    assert_eq!((got.status, got.extra.as_str()), (200, "2"), "{got:?}");
    let service = lab
        .plan
        .services
        .iter()
        .find(|s| s.name == "istio-ingressgateway")
        .expect("the ingress Service");
    let node_port = service
        .ports
        .iter()
        .find(|p| p.port == 80)
        .and_then(|p| p.node_port)
        .expect("a NodePort for port 80");
    for node in &lab.plan.nodes {
        let url = format!("http://{}:{node_port}/productpage", node.ip);
        assert_eq!(statuses(&lab, 3, &[&url]), [200; 3], "{url}");
    }
    // What the outside host cannot reach: pods and ClusterIPs.
    let pod = lab.plan.pod("bookinfo/productpage-v1-0").expect("pod").ip;
    let direct = curl(
        &lab,
        &["-m", "2", &format!("http://{pod}:9080/productpage")],
        "",
    );
    assert_eq!(
        direct.status, 0,
        "pods are not reachable from outside: {direct:?}"
    );
    // The ingress proved its own identity to productpage's agent.
    let records = agent_admin(&lab, "node-2", "/connections");
    let peers: Vec<&str> = records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["pod"] == "bookinfo/productpage-v1-0")
        .filter_map(|r| r["peer_identity"].as_str())
        .collect();
    assert!(
        peers.contains(
            &"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
        ),
        "{peers:?}"
    );
}

/// Istio's Bookinfo ingress written with the Gateway API
/// (`samples/bookinfo/gateway-api/bookinfo-gateway.yaml`, verbatim in
/// `examples/bookinfo/ingress/bookinfo-gateway-api.yaml`), applied where Bookinfo runs: the
/// controller's `bookinfo-gateway-istio` Deployment and LoadBalancer Service serve it, with
/// the HTTPRoute's paths, from outside.
#[test]
fn bookinfo_from_outside_through_a_gateway_api_gateway_unchanged() {
    let file = "examples/bookinfo/ingress/bookinfo-gateway-api.yaml";
    let text = std::fs::read_to_string(repository().join(file)).expect(file);
    let mut applied = Manifests::default();
    applied
        .add_yaml(&text, &repository().join(file))
        .expect("the sample is YAML");
    let mut all = Manifests::load_dir(&manifests("ingress")).expect("tests/manifests/ingress");
    all.extend(applied.in_namespace("bookinfo"));
    let lab = lab_up_manifests("iggwapi", &all, 2, true, &[]);
    let address = lab
        .load_balancer_ip("bookinfo/bookinfo-gateway-istio")
        .expect("the Gateway's Service has a LoadBalancer address")
        .to_string();
    let log = || {
        std::fs::read_to_string(
            lab.paths
                .logs()
                .join("bookinfo-bookinfo-gateway-istio-0-istio-proxy.log"),
        )
        .unwrap_or_default()
    };
    let page = format!("http://{address}/productpage");
    assert!(
        eventually(SETTLE, || curl(&lab, &[&page], "").status == 200),
        "/productpage from outside: {:?}\n{}",
        curl(&lab, &[&page], ""),
        log()
    );
    for path in [
        "/productpage",
        "/static/bootstrap/css/bootstrap.min.css",
        "/login",
        "/logout",
        "/api/v1/products",
        "/api/v1/products/0/reviews",
    ] {
        let url = format!("http://{address}{path}");
        for _ in 0..3 {
            let got = curl(&lab, &[&url], "");
            assert_eq!(got.status, 200, "{path}: {got:?}");
            assert_eq!(
                answered_by(&got.body),
                "productpage-v1-0",
                "{path}: {got:?}"
            );
        }
    }
    for path in ["/nothing", "/productpage/x", "/staticky", "/"] {
        let url = format!("http://{address}{path}");
        assert_eq!(statuses(&lab, 3, &[&url]), [404; 3], "{path}");
    }
    // The gateway proved the identity of the ServiceAccount the controller made for it.
    let records = agent_admin(&lab, "node-2", "/connections");
    let peers: Vec<&str> = records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["pod"] == "bookinfo/productpage-v1-0")
        .filter_map(|r| r["peer_identity"].as_str())
        .collect();
    assert!(
        peers.contains(&"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-gateway-istio"),
        "{peers:?}"
    );
}

#[test]
fn the_httpbin_pattern_routes_only_its_host_and_paths_through_the_waypoint() {
    let mut lab = lab_with_ingress("ighttp", "");
    let address = gateway_address(&lab);
    apply_file(&mut lab, "httpbin", "examples/ingress/httpbin-gateway.yaml");
    let url = |path: &str| format!("http://{address}{path}");
    let host = "Host: httpbin.example.com";
    assert!(
        eventually(SETTLE, || curl(
            &lab,
            &["-H", host, &url("/status/200")],
            ""
        )
        .status
            == 200),
        "{:?}",
        curl(&lab, &["-H", host, &url("/status/200")], "")
    );
    assert_eq!(
        statuses(&lab, 10, &["-H", host, &url("/status/200")]),
        [200; 10]
    );
    assert_eq!(statuses(&lab, 5, &["-H", host, &url("/delay/1")]), [200; 5]);
    assert_eq!(statuses(&lab, 5, &["-H", host, &url("/headers")]), [404; 5]);
    assert_eq!(
        statuses(
            &lab,
            5,
            &["-H", "Host: other.example.com", &url("/status/200")]
        ),
        [404; 5]
    );
    // httpbin is bound to its namespace's waypoint: the gateway went through it, and
    // httpbin's agent saw the waypoint's identity, never the gateway's.
    let records = agent_admin(&lab, "node-1", "/connections");
    let peers: Vec<&str> = records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["pod"] == "httpbin/httpbin-0")
        .filter_map(|r| r["peer_identity"].as_str())
        .collect();
    assert!(!peers.is_empty(), "httpbin was reached");
    assert!(
        peers
            .iter()
            .all(|p| *p == "spiffe://cluster.local/ns/httpbin/sa/waypoint"),
        "{peers:?}"
    );
}

/// Certificates as Istio's "Secure Gateways" task makes them (openssl; the server ones are
/// X.509 v1 with OpenSSL 3.0), and a v3 client certificate for MUTUAL.
struct Certificates {
    dir: PathBuf,
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Certificates {
    fn make(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-ingress-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let certs = Self { dir };
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .current_dir(&certs.dir)
                .args(args)
                .output()
                .expect("openssl runs (cargo xtask setup installs it)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "365",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/O=example Inc./CN=example.com",
            "-keyout",
            "example.com.key",
            "-out",
            "example.com.crt",
        ]);
        for (serial, host) in [
            "httpbin.example.com",
            "helloworld.example.com",
            "mtls.example.com",
            "nginx.example.com",
            "client.example.com",
            "bookinfo.example.com",
            "echo.example.com",
            "raw.example.com",
        ]
        .into_iter()
        .enumerate()
        {
            let subject = format!("/CN={host}/O={host} organization");
            openssl(&[
                "req",
                "-out",
                &format!("{host}.csr"),
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{host}.key"),
                "-subj",
                &subject,
            ]);
            let mut args = vec![
                "x509".to_string(),
                "-req".into(),
                "-sha256".into(),
                "-days".into(),
                "365".into(),
                "-CA".into(),
                "example.com.crt".into(),
                "-CAkey".into(),
                "example.com.key".into(),
                "-set_serial".into(),
                serial.to_string(),
                "-in".into(),
                format!("{host}.csr"),
                "-out".into(),
                format!("{host}.crt"),
            ];
            if host == "client.example.com" {
                std::fs::write(
                    certs.dir.join("client.ext"),
                    "subjectAltName=DNS:client.example.com\nextendedKeyUsage=clientAuth\n",
                )
                .expect("extensions");
                args.extend(["-extfile".into(), "client.ext".into()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            openssl(&args);
        }
        // A client of another authority.
        openssl(&[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "365",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/CN=intruder.example.com",
            "-keyout",
            "intruder.key",
            "-out",
            "intruder.crt",
        ]);
        certs
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).expect(file)
    }

    /// `kubectl create secret tls NAME --cert --key` (and Istio's `ca.crt` for MUTUAL).
    fn secret(&self, name: &str, host: &str, ca: bool) -> String {
        let block = |text: String| {
            text.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        let mut yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            block(self.read(&format!("{host}.crt"))),
            block(self.read(&format!("{host}.key"))),
        );
        if ca {
            yaml.push_str(&format!(
                "  ca.crt: |\n{}",
                block(self.read("example.com.crt"))
            ));
        }
        yaml
    }
}

/// A TLS server of its own behind the gateway, for PASSTHROUGH: `openssl s_server`.
fn tls_backend(certs: &Certificates) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: nginx, namespace: bookinfo, labels: {{run: my-nginx}}}}
spec:
  nodeName: node-1
  containers:
    - name: tls
      command: [openssl, s_server, "-4", -accept, "8443", -cert, {cert}, -key, {key}, -www, -quiet]
      ports: [{{name: https, containerPort: 8443}}]
---
apiVersion: v1
kind: Service
metadata: {{name: my-nginx, namespace: bookinfo}}
spec:
  selector: {{run: my-nginx}}
  ports: [{{name: https, port: 443, targetPort: https}}]
"#,
        cert = certs.path("nginx.example.com.crt"),
        key = certs.path("nginx.example.com.key"),
    )
}

const TLS_GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-httpbin, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
    hosts: [httpbin.example.com]
  - port: {number: 443, name: https-helloworld, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: helloworld-credential}
    hosts: [helloworld.example.com]
  - port: {number: 443, name: https-mtls, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: mtls-credential}
    hosts: [mtls.example.com]
  - port: {number: 443, name: https-missing, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: missing-credential}
    hosts: [missing.example.com]
  - port: {number: 80, name: http, protocol: HTTP}
    tls: {httpsRedirect: true}
    hosts: [httpbin.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-tls}
spec:
  hosts: [httpbin.example.com, helloworld.example.com, mtls.example.com, missing.example.com]
  gateways: [mygateway]
  http:
  - match: [{uri: {prefix: /status}}]
    route: [{destination: {port: {number: 8000}, host: httpbin}}]
"#;

const PASSTHROUGH: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway-passthrough}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: [nginx.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nginx}
spec:
  hosts: [nginx.example.com]
  gateways: [mygateway-passthrough]
  tls:
  - match:
    - port: 443
      sniHosts: [nginx.example.com]
    route:
    - destination: {host: my-nginx, port: {number: 443}}
"#;

/// The certificate `openssl s_client` is shown for `server_name` on `address:443`.
fn presented_subject(lab: &Lab, address: &str, server_name: &str) -> String {
    let output = lab
        .outside_command("openssl")
        .expect("outside")
        .args([
            "s_client",
            "-connect",
            &format!("{address}:443"),
            "-servername",
            server_name,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn https_serves_by_sni_requires_client_certificates_redirects_and_passes_through() {
    let certs = Certificates::make("igtls");
    let mut lab = lab_with_ingress("igtls", &tls_backend(&certs));
    let address = gateway_address(&lab);
    let secrets = [
        certs.secret("httpbin-credential", "httpbin.example.com", false),
        certs.secret("helloworld-credential", "helloworld.example.com", false),
        certs.secret("mtls-credential", "mtls.example.com", true),
    ]
    .join("---\n");
    apply(&mut lab, "istio-system", &secrets);
    apply(&mut lab, "httpbin", TLS_GATEWAYS);
    apply(&mut lab, "bookinfo", PASSTHROUGH);
    let ca = certs.path("example.com.crt");
    let https = |host: &str, extra: &[&str]| {
        let resolve = format!("{host}:443:{address}");
        let url = format!("https://{host}/status/200");
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&lab, &args, "%{ssl_verify_result} %{http_version}")
    };
    assert!(
        eventually(SETTLE, || https("httpbin.example.com", &[]).status == 200),
        "{:?}",
        https("httpbin.example.com", &[])
    );
    // SIMPLE: each SNI gets its own server's certificate, verified by curl against the CA.
    for host in ["httpbin.example.com", "helloworld.example.com"] {
        for _ in 0..5 {
            let got = https(host, &[]);
            assert_eq!(
                (got.status, got.extra.as_str()),
                (200, "0 2"),
                "{host}: {got:?}"
            );
        }
        assert!(
            presented_subject(&lab, &address, host).contains(&format!("CN = {host}")),
            "{host}"
        );
    }
    let http11 = https("helloworld.example.com", &["--http1.1"]);
    assert_eq!((http11.status, http11.extra.as_str()), (200, "0 1.1"));
    // MUTUAL: no client certificate, no answer; the CA's client certificate, served.
    let anonymous = https("mtls.example.com", &[]);
    assert_eq!(anonymous.status, 0, "{anonymous:?}");
    let (client_cert, client_key) = (
        certs.path("client.example.com.crt"),
        certs.path("client.example.com.key"),
    );
    for _ in 0..5 {
        let got = https(
            "mtls.example.com",
            &["--cert", &client_cert, "--key", &client_key],
        );
        assert_eq!(got.status, 200, "{got:?}");
    }
    // A certificate of another authority is refused too.
    let foreign = https(
        "mtls.example.com",
        &[
            "--cert",
            &certs.path("intruder.crt"),
            "--key",
            &certs.path("intruder.key"),
        ],
    );
    assert_eq!(foreign.status, 0, "{foreign:?}");
    // The server whose Secret is missing refuses TLS; the others keep serving.
    assert_eq!(https("missing.example.com", &[]).status, 0);
    assert_eq!(https("httpbin.example.com", &[]).status, 200);
    // httpsRedirect: 301 to https, same host and path.
    let redirect = curl(
        &lab,
        &[
            "-H",
            "Host: httpbin.example.com",
            &format!("http://{address}/status/200"),
        ],
        "%{redirect_url}",
    );
    assert_eq!(
        (redirect.status, redirect.extra.as_str()),
        (301, "https://httpbin.example.com/status/200"),
        "{redirect:?}"
    );
    // PASSTHROUGH: the backend's own certificate (the gateway has none for this name) and
    // the backend's own page, through the gateway's port 443 by SNI.
    assert!(
        presented_subject(&lab, &address, "nginx.example.com").contains("CN = nginx.example.com"),
        "the backend terminates TLS"
    );
    for _ in 0..3 {
        let resolve = format!("nginx.example.com:443:{address}");
        let got = curl(
            &lab,
            &[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "https://nginx.example.com/",
            ],
            "%{ssl_verify_result}",
        );
        assert_eq!((got.status, got.extra.as_str()), (200, "0"), "{got:?}");
        assert!(
            got.body.contains("s_server"),
            "openssl s_server's page: {}",
            got.body
        );
    }
    let log = gateway_log(&lab);
    assert!(
        log.contains("spec.servers[3] refuses TLS connections")
            && log.contains("missing-credential"),
        "the gateway names the server without its Secret:\n{log}"
    );
    let _ = bin_dir();
}

/// Istio's Bookinfo Gateway API sample with an HTTPS listener for bookinfo.example.com
/// (`tls.certificateRefs` to a Secret of the Gateway's namespace) and a second HTTPS listener
/// on the same port whose Secret does not exist.
const BOOKINFO_HTTPS_LISTENERS: &str = r#"  - name: https
    port: 443
    protocol: HTTPS
    hostname: bookinfo.example.com
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        group: ""
        name: bookinfo-credential
    allowedRoutes:
      namespaces:
        from: Same
  - name: missing
    port: 443
    protocol: HTTPS
    hostname: missing.example.com
    tls:
      certificateRefs:
      - name: missing-credential
---
"#;

/// Each listener's `ResolvedRefs` (listener, status, reason and message when False) as
/// weft-ca's controller reports it for the Gateway `namespace/name` of `all`, its Secrets
/// those of `all`.
fn controller_listener_status(
    all: &Manifests,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let objects: Vec<serde_json::Value> = all
        .others
        .iter()
        .map(|v| serde_json::to_value(v).expect("JSON"))
        .collect();
    let value = objects
        .iter()
        .find(|o| {
            o["kind"] == "Gateway"
                && o["metadata"]["namespace"] == namespace
                && o["metadata"]["name"] == name
        })
        .expect("the Gateway");
    let gateway = weft_controller::gateway::Gateway::from_json(value).expect("a Gateway");
    let secret_type = |key: &(String, String)| {
        objects
            .iter()
            .find(|o| {
                o["kind"] == "Secret"
                    && o["metadata"]["namespace"] == key.0.as_str()
                    && o["metadata"]["name"] == key.1.as_str()
            })
            .map(|o| o["type"].as_str().unwrap_or("Opaque").to_string())
    };
    let refs = weft_controller::certificates::resolved_refs(&gateway, &[], &secret_type);
    weft_controller::ingress::listener_statuses(&gateway, &refs)
        .into_iter()
        .map(|l| match l.resolved_refs {
            Ok(()) => (l.name, "True".to_string(), "ResolvedRefs".to_string()),
            Err(problem) => (
                l.name,
                "False".to_string(),
                format!("{}: {}", problem.reason, problem.message),
            ),
        })
        .collect()
}

#[test]
fn bookinfo_over_https_through_a_gateway_api_gateway_by_its_certificate_refs() {
    let certs = Certificates::make("iggwtls");
    let file = "examples/bookinfo/ingress/bookinfo-gateway-api.yaml";
    let sample = std::fs::read_to_string(repository().join(file)).expect(file);
    let (gateway, route) = sample
        .split_once(
            "---
",
        )
        .expect("Gateway, then HTTPRoute");
    let text = format!(
        "{gateway}{BOOKINFO_HTTPS_LISTENERS}{route}---
{}",
        certs
            .secret("bookinfo-credential", "bookinfo.example.com", false)
            .replace("namespace: istio-system", "namespace: bookinfo")
    );
    let mut applied = Manifests::default();
    applied
        .add_yaml(&text, Path::new("bookinfo-https.yaml"))
        .expect("YAML");
    let mut all = Manifests::load_dir(&manifests("ingress")).expect("tests/manifests/ingress");
    all.extend(applied.in_namespace("bookinfo"));
    // The lab has no API server to write the Gateway's status: what the controller's code
    // reports for these objects (`ResolvedRefs` of each listener, judged against the
    // Secrets the lab holds).
    let statuses = controller_listener_status(&all, "bookinfo", "bookinfo-gateway");
    assert_eq!(
        statuses,
        [
            ("http".to_string(), "True".to_string(), "ResolvedRefs".to_string()),
            ("https".to_string(), "True".to_string(), "ResolvedRefs".to_string()),
            (
                "missing".to_string(),
                "False".to_string(),
                "InvalidCertificateRef: spec.listeners[2].tls.certificateRefs[0]: Secret bookinfo/missing-credential does not exist".to_string()
            ),
        ]
    );
    let lab = lab_up_manifests("iggwtls", &all, 2, true, &[]);
    let address = lab
        .load_balancer_ip("bookinfo/bookinfo-gateway-istio")
        .expect("the Gateway's Service has a LoadBalancer address")
        .to_string();
    let log = || {
        std::fs::read_to_string(
            lab.paths
                .logs()
                .join("bookinfo-bookinfo-gateway-istio-0-istio-proxy.log"),
        )
        .unwrap_or_default()
    };
    let ca = certs.path("example.com.crt");
    let https = |host: &str, path: &str| {
        let resolve = format!("{host}:443:{address}");
        let url = format!("https://{host}{path}");
        curl(
            &lab,
            &["--cacert", &ca, "--resolve", &resolve, &url],
            "%{ssl_verify_result} %{http_version}",
        )
    };
    assert!(
        eventually(SETTLE, || https("bookinfo.example.com", "/productpage")
            .status
            == 200),
        "https://bookinfo.example.com/productpage: {:?}
{}",
        https("bookinfo.example.com", "/productpage"),
        log()
    );
    // The listener's own certificate, verified by curl against the CA; the HTTPRoute
    // attached to every listener serves over TLS, HTTP/2 offered.
    for path in ["/productpage", "/api/v1/products"] {
        for _ in 0..3 {
            let got = https("bookinfo.example.com", path);
            assert_eq!(
                (got.status, got.extra.as_str()),
                (200, "0 2"),
                "{path}: {got:?}"
            );
            assert_eq!(
                answered_by(&got.body),
                "productpage-v1-0",
                "{path}: {got:?}"
            );
        }
    }
    assert_eq!(https("bookinfo.example.com", "/nothing").status, 404);
    assert!(
        presented_subject(&lab, &address, "bookinfo.example.com")
            .contains("CN = bookinfo.example.com")
    );
    // The listener whose Secret is missing refuses TLS; the other keeps serving, and so does
    // plain HTTP.
    for _ in 0..3 {
        assert_eq!(https("missing.example.com", "/productpage").status, 0);
        assert_eq!(https("bookinfo.example.com", "/productpage").status, 200);
    }
    assert_eq!(
        curl(&lab, &[&format!("http://{address}/productpage")], "").status,
        200
    );
    let log = log();
    assert!(
        log.contains("spec.listeners[2] (missing HTTPS on 443) refuses TLS connections")
            && log
                .contains("Secret bookinfo/missing-credential (type kubernetes.io/tls) is missing"),
        "the gateway names the listener without its Secret:\n{log}"
    );
}

/// A Gateway API Gateway's TLS listener with `tls.mode: Passthrough` and its TCP listener,
/// from outside: two TLSRoutes send `nginx.example.com` and `helloworld.example.com` to two
/// `openssl s_server`s by the ClientHello's SNI (the client is shown each backend's own
/// certificate: the gateway does not terminate), an SNI no route has is refused, and a
/// TCPRoute sends the TCP listener's connections to a TCP echo.
#[test]
fn tls_passthrough_and_tcp_listeners_of_a_gateway_api_gateway() {
    let certs = Certificates::make("iggwtcp");
    let text = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bookinfo}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: tls, port: 443, protocol: TLS, hostname: "*.example.com", tls: {{mode: Passthrough}}}}
  - {{name: tcp, port: 9000, protocol: TCP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: nginx, namespace: bookinfo}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [nginx.example.com]
  rules: [{{backendRefs: [{{name: my-nginx, port: 443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: helloworld, namespace: bookinfo}}
spec:
  parentRefs: [{{name: edge, sectionName: tls}}]
  hostnames: [helloworld.example.com]
  rules: [{{backendRefs: [{{name: hello-tls, port: 443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: echo, namespace: bookinfo}}
spec:
  parentRefs: [{{name: edge, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: tcp-echo, port: 9000}}]}}]
---
{nginx}
---
apiVersion: v1
kind: Pod
metadata: {{name: hello-tls, namespace: bookinfo, labels: {{run: hello-tls}}}}
spec:
  nodeName: node-2
  containers:
    - name: tls
      command: [openssl, s_server, "-4", -accept, "8443", -cert, {hello_cert}, -key, {hello_key}, -www, -quiet]
      ports: [{{name: https, containerPort: 8443}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hello-tls, namespace: bookinfo}}
spec:
  selector: {{run: hello-tls}}
  ports: [{{name: https, port: 443, targetPort: https}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: tcp-echo, namespace: bookinfo, labels: {{run: tcp-echo}}}}
spec:
  nodeName: node-2
  containers:
    - name: echo
      command: [weft-testapp, serve, --tcp-echo-port, "9000"]
      ports: [{{name: echo, containerPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tcp-echo, namespace: bookinfo}}
spec:
  selector: {{run: tcp-echo}}
  ports: [{{name: tcp, port: 9000, targetPort: echo}}]
"#,
        nginx = tls_backend(&certs),
        hello_cert = certs.path("helloworld.example.com.crt"),
        hello_key = certs.path("helloworld.example.com.key"),
    );
    let mut applied = Manifests::default();
    applied
        .add_yaml(&text, Path::new("edge.yaml"))
        .expect("YAML");
    let mut all = Manifests::load_dir(&manifests("ingress")).expect("tests/manifests/ingress");
    all.extend(applied.in_namespace("bookinfo"));
    let lab = lab_up_manifests("iggwtcp", &all, 2, true, &[]);
    let address = lab
        .load_balancer_ip("bookinfo/edge-istio")
        .expect("the Gateway's Service has a LoadBalancer address")
        .to_string();
    let log = || {
        std::fs::read_to_string(
            lab.paths
                .logs()
                .join("bookinfo-edge-istio-0-istio-proxy.log"),
        )
        .unwrap_or_default()
    };
    let ca = certs.path("example.com.crt");
    let https = |host: &str| {
        let resolve = format!("{host}:443:{address}");
        let url = format!("https://{host}/");
        curl(
            &lab,
            &["--cacert", &ca, "--resolve", &resolve, &url],
            "%{ssl_verify_result}",
        )
    };
    assert!(
        eventually(SETTLE, || https("nginx.example.com").status == 200),
        "https://nginx.example.com/ through the TLS listener: {:?}\n{}",
        https("nginx.example.com"),
        log()
    );
    assert!(
        eventually(SETTLE, || https("helloworld.example.com").status == 200),
        "https://helloworld.example.com/: {:?}\n{}",
        https("helloworld.example.com"),
        log()
    );
    for host in ["nginx.example.com", "helloworld.example.com"] {
        for _ in 0..3 {
            let got = https(host);
            assert_eq!(
                (got.status, got.extra.as_str()),
                (200, "0"),
                "{host}: {got:?}"
            );
            assert!(
                got.body.contains("s_server"),
                "openssl s_server's page: {got:?}"
            );
        }
        // The backend's own certificate: the gateway passed the TLS through.
        assert!(
            presented_subject(&lab, &address, host).contains(&format!("CN = {host}")),
            "{host}: {}",
            presented_subject(&lab, &address, host)
        );
    }
    assert_eq!(
        https("other.example.com").status,
        0,
        "no TLSRoute has the SNI: refused"
    );
    // The TCP listener: bytes come back from the echo behind it.
    let echo = || {
        let output = lab
            .outside_command("python3")
            .expect("outside")
            .args([
                "-c",
                "import socket,sys\n\
                 s=socket.create_connection((sys.argv[1],9000),timeout=5)\n\
                 s.sendall(b'through the gateway\\n')\n\
                 got=b''\n\
                 while not got.endswith(b'\\n'):\n    \
                 chunk=s.recv(100)\n    \
                 if not chunk: break\n    \
                 got+=chunk\n\
                 print(got.decode().strip())",
                &address,
            ])
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert!(
        eventually(SETTLE, || echo() == "through the gateway"),
        "TCP echo through the TCP listener: {:?}\n{}",
        echo(),
        log()
    );
}

/// A Gateway API Gateway's TLS listeners with `tls.mode: Terminate`, from outside: the
/// listener for `echo.example.com` terminates TLS with the certificate of its
/// `certificateRefs` Secret and a TLSRoute sends the decrypted bytes to a TCP echo; a second
/// terminating listener for `raw.example.com` takes a TCPRoute (its `allowedRoutes.kinds`
/// lists TCPRoute) to the same echo with its own certificate; an SNI neither listener has
/// gets no certificate.
#[test]
fn tls_terminate_listeners_of_a_gateway_api_gateway_serve_their_certificates_to_tcp_backends() {
    let certs = Certificates::make("gwfixterm");
    let text = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bookinfo}}
spec:
  gatewayClassName: istio
  listeners:
  - name: echo
    port: 443
    protocol: TLS
    hostname: echo.example.com
    tls:
      mode: Terminate
      certificateRefs: [{{kind: Secret, group: "", name: echo-credential}}]
  - name: raw
    port: 443
    protocol: TLS
    hostname: raw.example.com
    tls:
      mode: Terminate
      certificateRefs: [{{name: raw-credential}}]
    allowedRoutes:
      kinds: [{{kind: TCPRoute}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: echo, namespace: bookinfo}}
spec:
  parentRefs: [{{name: edge, sectionName: echo}}]
  hostnames: [echo.example.com]
  rules: [{{backendRefs: [{{name: tcp-echo, port: 9000}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: raw, namespace: bookinfo}}
spec:
  parentRefs: [{{name: edge, sectionName: raw}}]
  rules: [{{backendRefs: [{{name: tcp-echo, port: 9000}}]}}]
---
{echo_secret}
---
{raw_secret}
---
apiVersion: v1
kind: Pod
metadata: {{name: tcp-echo, namespace: bookinfo, labels: {{run: tcp-echo}}}}
spec:
  nodeName: node-2
  containers:
    - name: echo
      command: [weft-testapp, serve, --tcp-echo-port, "9000"]
      ports: [{{name: echo, containerPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tcp-echo, namespace: bookinfo}}
spec:
  selector: {{run: tcp-echo}}
  ports: [{{name: tcp, port: 9000, targetPort: echo}}]
"#,
        echo_secret = certs
            .secret("echo-credential", "echo.example.com", false)
            .replace("namespace: istio-system", "namespace: bookinfo"),
        raw_secret = certs
            .secret("raw-credential", "raw.example.com", false)
            .replace("namespace: istio-system", "namespace: bookinfo"),
    );
    let mut applied = Manifests::default();
    applied
        .add_yaml(&text, Path::new("edge.yaml"))
        .expect("YAML");
    let mut all = Manifests::load_dir(&manifests("ingress")).expect("tests/manifests/ingress");
    all.extend(applied.in_namespace("bookinfo"));
    let lab = lab_up_manifests("gwfix", &all, 2, true, &[]);
    let address = lab
        .load_balancer_ip("bookinfo/edge-istio")
        .expect("the Gateway's Service has a LoadBalancer address")
        .to_string();
    let log = || {
        std::fs::read_to_string(
            lab.paths
                .logs()
                .join("bookinfo-edge-istio-0-istio-proxy.log"),
        )
        .unwrap_or_default()
    };
    let ca = certs.path("example.com.crt");
    // A TLS client on the outside host: verifies the certificate against the CA for the SNI
    // it asks, sends a line in the clear over TLS and prints the certificate's CN and what
    // came back, or `refused` and why.
    let echo = |sni: &str| {
        let output = lab
            .outside_command("python3")
            .expect("outside")
            .args([
                "-c",
                "import socket,ssl,sys\n\
                 ctx=ssl.create_default_context(cafile=sys.argv[3])\n\
                 ctx.verify_flags&=~getattr(ssl,'VERIFY_X509_STRICT',0)\n\
                 try:\n    \
                 s=ctx.wrap_socket(socket.create_connection((sys.argv[1],443),timeout=5),server_hostname=sys.argv[2])\n    \
                 cn=dict(x[0] for x in s.getpeercert()['subject'])['commonName']\n    \
                 s.sendall(b'terminated at the gateway\\n')\n    \
                 got=b''\n    \
                 while not got.endswith(b'\\n'):\n        \
                 chunk=s.recv(100)\n        \
                 if not chunk: break\n        \
                 got+=chunk\n    \
                 print(cn, got.decode().strip())\n\
                 except Exception as e:\n    \
                 print('refused', type(e).__name__, e)",
                &address,
                sni,
                &ca,
            ])
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    for host in ["echo.example.com", "raw.example.com"] {
        let expected = format!("{host} terminated at the gateway");
        assert!(
            eventually(SETTLE, || echo(host) == expected),
            "{host} through its terminating TLS listener: {:?}\n{}",
            echo(host),
            log()
        );
        for _ in 0..3 {
            assert_eq!(echo(host), expected);
        }
        // `openssl s_client -servername` is shown the listener's certificate (the gateway
        // terminates; the echo has none).
        let subject = presented_subject(&lab, &address, host);
        assert!(
            subject.contains(&format!("CN = {host}")),
            "{host}: {subject}"
        );
    }
    // An SNI no listener has: no certificate, the connection closed.
    let other = echo("other.example.com");
    assert!(other.starts_with("refused"), "other.example.com: {other}");
    assert_eq!(
        presented_subject(&lab, &address, "other.example.com"),
        "",
        "no certificate for an SNI no listener has"
    );
}

/// Bad input is named — by `weftctl validate` over the files, by the agents'
/// configuration — and disturbs nothing else: a VirtualService bound to a Gateway that
/// does not exist, a server whose Secret is missing (above, served), two Gateways claiming
/// the same port and host.
#[test]
fn bad_input_is_named_and_disturbs_nothing_else() {
    let mut lab = lab_with_ingress("igbad", "");
    let address = gateway_address(&lab);
    apply_file(
        &mut lab,
        "bookinfo",
        "examples/bookinfo/ingress/bookinfo-gateway.yaml",
    );
    let bad = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lost, namespace: bookinfo}
spec:
  hosts: ["lost.example.com"]
  gateways: [no-such-gateway]
  http:
  - route: [{destination: {host: productpage, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: copycat, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: uncredentialed, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: nowhere}
    hosts: ["secure.example.com"]
"#;
    apply(&mut lab, "bookinfo", bad);
    // weftctl validate, over the files as a user would run it before applying.
    let dir = std::env::temp_dir().join(format!("weft-ingress-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("bad.yaml"), bad).expect("write");
    std::fs::copy(
        repository().join("examples/bookinfo/ingress/bookinfo-gateway.yaml"),
        dir.join("bookinfo-gateway.yaml"),
    )
    .expect("copy");
    let output = Command::new(bin_dir().join("weftctl"))
        .args(["validate", "-f"])
        .arg(&dir)
        .output()
        .expect("weftctl");
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "warnings only: {report}");
    for expected in [
        "VirtualService bookinfo/lost: spec.gateways[0]: Gateway bookinfo/no-such-gateway does not exist",
        "Gateway bookinfo/copycat: spec.servers[0]: conflict with Gateway default/bookinfo-gateway",
        "Gateway bookinfo/uncredentialed: spec.servers[0].tls.credentialName: no Secret nowhere",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    // The agents' configuration names the first two (they read no Secret).
    let named = |needle: &str| {
        let dump = agent_admin(&lab, "node-1", "/config_dump");
        dump["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["reason"].as_str().is_some_and(|r| r.contains(needle)))
    };
    assert!(
        eventually(SETTLE, || named("does not exist")
            && named("conflict with Gateway")),
        "{}",
        agent_admin(&lab, "node-1", "/config_dump")["warnings"]
    );
    // Nothing else is disturbed: Bookinfo is still served, in the same gateway, beside
    // the conflicting Gateway (whose host `*` adds no route).
    let page = format!("http://{address}/productpage");
    assert!(eventually(SETTLE, || curl(&lab, &[&page], "").status == 200));
    assert_eq!(
        statuses(&lab, 10, &[&page]),
        [200; 10],
        "{}",
        gateway_log(&lab)
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        statuses(&lab, 3, &["-H", "Host: lost.example.com", &page]),
        [200; 3],
        "lost.example.com is no host of its own: Bookinfo's `*` serves it"
    );
}
