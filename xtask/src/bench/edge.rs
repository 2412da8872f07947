//! The ingress group's rig: weft's ingress gateway as deploy/ingress installs it (pinned to
//! node-1), nginx (Debian's) beside it with the same routes to the same backend, one
//! certificate for both (made with openssl; weft reads it from a `kubernetes.io/tls` Secret,
//! nginx from files), and the wait until both serve.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use weft_lab::manifest::Manifests;
use weft_lab::{Lab, LabOptions, Plan};

use crate::workspace_root;

/// The files the rig writes: nginx's configuration and logs, the certificate.
pub fn dir() -> PathBuf {
    workspace_root().join("target/bench/edge")
}

/// The CA the clients trust.
pub fn ca() -> PathBuf {
    dir().join("ca.crt")
}

/// Adds the ingress gateway and nginx to `manifests`, writing nginx's configuration with
/// the backend's address in `options`' lab.
pub fn add_to(manifests: &mut Manifests, options: &LabOptions) -> anyhow::Result<()> {
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    make_certificate(&dir)?;
    for file in [
        "deploy/ingress/namespace.yaml",
        "deploy/ingress/ingress.yaml",
    ] {
        let path = workspace_root().join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        manifests.add_yaml(&text, &path)?;
    }
    for deployment in &mut manifests.deployments {
        if deployment.metadata.name == "istio-ingressgateway" {
            deployment.spec.template.spec.node_name = Some("node-1".into());
        }
    }
    let conf = dir.join("nginx.conf");
    manifests.add_yaml(
        &format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: edge}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nginx, namespace: edge, labels: {{app: nginx}}}}
spec:
  nodeName: node-1
  containers:
  - name: nginx
    command: [/usr/sbin/nginx, -c, {conf}, -g, "daemon off;"]
    ports: [{{containerPort: 8080}}, {{containerPort: 8443}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: edge}}
spec:
  type: NodePort
  selector: {{app: nginx}}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: https, port: 443, targetPort: 8443}}]
"#,
            conf = conf.display()
        ),
        Path::new("edge.yaml"),
    )?;
    let plan = Plan::build(options, manifests)?;
    let backend = plan
        .pod("plain/server")
        .context("the bench lab has no plain/server")?
        .ip;
    std::fs::write(&conf, nginx_conf(&dir, &backend.to_string()))?;
    Ok(())
}

/// nginx as an ingress controller configures it: as many workers as the gateway has runtime
/// threads (2), keep-alive connections to the backend's pod address, the same route
/// (`/bytes` of plain.bench), 404 for anything else, TLS 1.2 and 1.3.
fn nginx_conf(dir: &Path, backend: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client-body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {backend}:8080;
        keepalive 64;
    }}
    server {{
        listen 8080 default_server;
        listen 8443 ssl default_server;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        server_name _;
        return 404;
    }}
    server {{
        listen 8080;
        listen 8443 ssl;
        server_name plain.bench;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /bytes {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"#
    )
}

fn make_certificate(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:plain.bench,DNS:mesh.bench\n",
    )?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "30",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/O=weft bench/CN=bench CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-out",
            "server.csr",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-subj",
            "/CN=plain.bench",
        ],
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "30",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-in",
            "server.csr",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .context("running openssl (cargo xtask setup installs it)")?;
        ensure!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The certificate as the Secret weft's gateway reads.
pub fn apply_secret(lab: &mut Lab) -> anyhow::Result<()> {
    let block = |file: &str| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(dir().join(file))?
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect())
    };
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-credential, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        block("server.crt")?,
        block("server.key")?
    );
    let mut objects = Manifests::default();
    objects.add_yaml(&secret, Path::new("bench-secret.yaml"))?;
    lab.apply_objects(&objects)?;
    Ok(())
}

/// node-1's address and the NodePort of `service`'s `port`.
pub fn node_port(lab: &Lab, service: &str, port: u16) -> anyhow::Result<String> {
    let svc = lab
        .plan
        .services
        .iter()
        .find(|s| format!("{}/{}", s.namespace, s.name) == service)
        .with_context(|| format!("no Service {service}"))?;
    let node_port = svc
        .ports
        .iter()
        .find(|p| p.port == port)
        .and_then(|p| p.node_port)
        .with_context(|| format!("{service} has no NodePort for {port}"))?;
    let node = lab.plan.node("node-1").context("no node-1")?;
    Ok(format!("{}:{node_port}", node.ip))
}

/// Waits until every edge path answers 200 over HTTP and HTTPS (the gateway reads its
/// configuration and Secret within seconds).
pub fn wait_until_serving(lab: &Lab, targets: &[(&str, &str)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (service, host) in targets {
        for (scheme, port) in [("http", 80), ("https", 443)] {
            let address = node_port(lab, service, port)?;
            let connect_to = format!("{host}:{}:{address}", if port == 80 { 80 } else { 443 });
            loop {
                let output = lab
                    .outside_command("curl")?
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
                    .args(["--cacert", &ca().display().to_string()])
                    .args(["--connect-to", &format!("{host}:{port}:{address}")])
                    .arg(format!("{scheme}://{host}/bytes?n=10"))
                    .output()?;
                if String::from_utf8_lossy(&output.stdout) == "200" {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{service} does not serve {scheme}://{host} at {connect_to} after 30 s (answer {:?})",
                        String::from_utf8_lossy(&output.stdout)
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(())
}
