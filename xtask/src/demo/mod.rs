//! `cargo xtask demo`: the main job. A two-node lab runs a Bookinfo-like application in
//! the mesh, with a waypoint for reviews and Istio's default ingress gateway
//! (`deploy/ingress/`), and a scripted tour starts as Istio's tutorials do — apply
//! `bookinfo-gateway.yaml`, open /productpage from a host outside the cluster, then over
//! HTTPS with a certificate the demo makes — then applies the manifests of
//! `examples/bookinfo/steps/` one by one, their traffic entering through the ingress.
//! Every step checks its expected outcome and fails loudly, naming the step, when it is
//! not seen.
mod fabric;
mod interrupt;
mod report;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use weft_lab::manifest::Manifests;
use weft_lab::{Lab, LabOptions, Runtime};

use self::report::{Sample, bar_table, percent, reviews_distribution, summary};
use crate::build::bin_dir;
use crate::lab_cmd::runtime;
use crate::workspace_root;

const PRODUCTPAGE: &str = "http://productpage:9080/productpage";
const REVIEWS: &str = "http://reviews:9080/reviews";
const CURL: &str = "bookinfo/curl";
/// A host of the lab's internet (`lab/src/external.rs`).
const EXTERNAL_HOST: &str = "api.external.test";
const SECURE_EXTERNAL_HOST: &str = "secure.external.test";
/// The ingress gateway's Service, as Istio's default install names it.
const INGRESS_SERVICE: &str = "istio-system/istio-ingressgateway";
/// The HTTPS host of step 2, and the Secret holding its certificate.
const HTTPS_HOST: &str = "bookinfo.example.com";
const HTTPS_SECRET: &str = "bookinfo-credential";
/// How long an agent being replaced waits for its open connections (the app pods keep
/// idle keep-alive connections open indefinitely): the DaemonSet's 25 s is a long pause
/// in a demo.
const DRAIN_TIMEOUT_S: &str = "5";
/// The waypoint reads configuration changes from the cluster view within its 1 s poll.
const SETTLE: Duration = Duration::from_millis(2500);

pub struct Options {
    pub keep: bool,
    /// The lab's name (tests give each run its own).
    pub name: String,
    /// Redraw a progress line while requests run (off when not on a terminal).
    pub progress: bool,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    interrupt::install();
    let app = workspace_root().join("examples/bookinfo/app");
    weft_lab::down(&options.name)?;
    println!(
        "weft demo: Bookinfo in a two-node lab, sidecarless, with a waypoint for reviews and Istio's default ingress gateway\n"
    );
    println!(
        "Bringing up the lab from {} and deploy/ingress …",
        app.display()
    );
    let started = Instant::now();
    let mut manifests =
        Manifests::load_dir(&app).with_context(|| format!("reading {}", app.display()))?;
    for file in [
        "deploy/ingress/namespace.yaml",
        "deploy/ingress/ingress.yaml",
    ] {
        let path = workspace_root().join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        manifests.add_yaml(&text, &path)?;
    }
    let lab = Lab::up(
        &LabOptions::new(&options.name).nodes(2),
        &manifests,
        &Runtime {
            agent_args: ["--drain-timeout", DRAIN_TIMEOUT_S]
                .map(String::from)
                .to_vec(),
            ..runtime(true)
        },
    )
    .with_context(|| format!("bringing up the demo lab from {}", app.display()))?;
    println!(
        "  up in {:.1} s: 2 nodes, a weft-agent on each, weft-ca, two weft-waypoints (reviews' and the egress gateway), the ingress gateway, {} pods\n",
        started.elapsed().as_secs_f64(),
        lab.plan.pods.len()
    );
    let gateway = lab
        .load_balancer_ip(INGRESS_SERVICE)
        .context("the ingress gateway's Service has no LoadBalancer address")?
        .to_string();
    let mut tour = Tour {
        lab,
        progress: options.progress,
        through_waypoint: 0,
        gateway,
    };
    let outcome = tour.run();
    let Tour { lab, .. } = tour;
    if let Err(error) = outcome {
        println!("\nLogs: {}", lab.paths.logs().display());
        if options.keep {
            lab.keep_running();
        }
        return Err(error);
    }
    println!("\nThe tour took {:.0} s.", started.elapsed().as_secs_f64());
    explore(&lab, &options);
    if options.keep {
        lab.keep_running();
    } else {
        lab.down()?;
        println!(
            "\nlab {} is down (run with --keep to explore it)",
            options.name
        );
    }
    Ok(())
}

struct Tour {
    lab: Lab,
    progress: bool,
    /// Requests that reached the waypoint (for the metrics check at the end).
    through_waypoint: u64,
    /// The ingress gateway's LoadBalancer address, reachable from the outside host.
    gateway: String,
}

/// Where a step's requests come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The outside host, through the ingress gateway (the tutorials' `$GATEWAY_URL`).
    Outside,
    /// The curl pod, inside the mesh.
    CurlPod,
}

impl Tour {
    fn run(&mut self) -> anyhow::Result<()> {
        self.ingress()
            .context("step 1 (the ingress gateway: Bookinfo from outside)")?;
        self.https()
            .context("step 2 (HTTPS at the ingress gateway)")?;
        self.mesh_on()
            .context("step 3 (mesh on: capture and mTLS)")?;
        self.all_to_v1()
            .context("step 4 (all traffic to reviews v1)")?;
        self.jason_to_v2()
            .context("step 5 (header-based routing)")?;
        self.canary().context("step 6 (50/50 v1/v3)")?;
        self.faults_and_retries()
            .context("step 7 (fault injection and retries)")?;
        self.deny_curl().context("step 8 (AuthorizationPolicy)")?;
        self.metrics().context("step 9 (metrics)")?;
        self.upgrade_agents()
            .context("step 10 (upgrading the agents under traffic)")?;
        self.egress()
            .context("step 11 (egress locked down, then opened)")?;
        self.tls_origination()
            .context("step 12 (TLS origination at the egress waypoint)")?;
        self.graph().context("step 13 (the service graph)")?;
        Ok(())
    }

    /// `weftctl graph` over the tour's metrics, as SVG in `target/demo-graph.svg`.
    fn graph(&mut self) -> anyhow::Result<()> {
        self.step(
            13,
            "the service graph",
            "weftctl graph reads the agents' and the waypoints' metrics and draws who called \
             whom during the tour: requests through the waypoint with their 5xx share, TCP \
             bytes, mTLS. Totals since each process started (the agents were replaced in step 10).",
            None,
        )?;
        let mut urls: Vec<String> = self
            .lab
            .summary()
            .nodes
            .iter()
            .map(|n| format!("http://{}:15020", n.1))
            .collect();
        for pod in [
            "bookinfo/waypoint-0",
            "istio-egress/waypoint-0",
            "istio-system/istio-ingressgateway-0",
        ] {
            if let Some(pod) = self.lab.plan.pod(pod) {
                urls.push(format!("http://{}:15020", pod.ip));
            }
        }
        let out = workspace_root().join("target/demo-graph.svg");
        let dot = workspace_root().join("target/demo-graph.dot");
        for (format, path) in [("svg", &out), ("dot", &dot)] {
            let output = self
                .lab
                .node_command("node-1", bin_dir().join("weftctl"))?
                .args(["graph", "--totals", "--format", format, "--scrape"])
                .args(&urls)
                .output()
                .context("running weftctl graph")?;
            ensure!(
                output.status.success(),
                "weftctl graph: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::write(path, &output.stdout)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let text = std::fs::read_to_string(&dot)?;
        let edges = text.lines().filter(|l| l.contains(" -> ")).count();
        println!(
            "    {edges} edges; the graph is in {} (and as DOT in {})",
            out.display(),
            dot.display()
        );
        let through_waypoint = |line: &&str| {
            line.trim_start().starts_with("\"waypoint/bookinfo/")
                && line.contains(" -> \"service/bookinfo/reviews\"")
        };
        expect(
            text.lines().any(|l| through_waypoint(&l)),
            "productpage → reviews is drawn through the waypoint",
        )
    }

    fn ingress(&mut self) -> anyhow::Result<()> {
        self.step(
            1,
            "the ingress gateway: Bookinfo from outside",
            &format!(
                "As every Istio tutorial starts: Istio's own samples/bookinfo/networking/\
                 bookinfo-gateway.yaml, unchanged — a Gateway selecting the ingress gateway's \
                 pods (istio: ingressgateway) and a VirtualService bound to it — and \
                 /productpage opened from a host outside the cluster, at the gateway \
                 Service's LoadBalancer address ({}), which the lab's cloud routes to the \
                 nodes. The gateway proves its own identity to productpage over HBONE.",
                self.gateway
            ),
            None,
        )?;
        println!(
            "   applying examples/bookinfo/ingress/bookinfo-gateway.yaml (as cargo xtask lab apply -n bookinfo -f …)"
        );
        self.apply_in(
            "bookinfo",
            "examples/bookinfo/ingress/bookinfo-gateway.yaml",
        )?;
        let page = format!("http://{}/productpage", self.gateway);
        let first = self.wait_for_page(&page, &[])?;
        println!("    outside$ curl {page}");
        println!(
            "      {} from {} (reviews {})",
            first.status,
            first.pod.as_deref().unwrap_or("?"),
            first
                .sample
                .reviews
                .as_ref()
                .and_then(|r| r.1.as_deref())
                .unwrap_or("-")
        );
        let samples = self.send(Client::Outside, &page, &[], 20)?;
        show(&samples);
        let nothing = self.curl(&[&format!("http://{}/nothing", self.gateway)])?;
        println!(
            "    outside$ curl {}/nothing → {}",
            self.gateway, nothing.status
        );
        expect(
            first.status == 200
                && first
                    .pod
                    .as_deref()
                    .is_some_and(|p| p.starts_with("productpage"))
                && samples.iter().all(|s| s.status == 200),
            "productpage serves /productpage from outside, through the ingress gateway",
        )?;
        expect(nothing.status == 404, "a path no route takes is a 404")
    }

    fn https(&mut self) -> anyhow::Result<()> {
        self.step(
            2,
            "HTTPS at the ingress gateway",
            &format!(
                "The demo makes a certificate for {HTTPS_HOST} signed by a CA of its own, with \
                 openssl as Istio's \"Secure Gateways\" task does, stores it as the Secret \
                 {HTTPS_SECRET} (type kubernetes.io/tls) in istio-system, where the gateway \
                 reads its credentials, and applies a Gateway with an HTTPS server naming it. \
                 curl, outside, trusts that CA only."
            ),
            None,
        )?;
        let ca = self.make_certificate()?;
        println!("   applying the Secret and examples/bookinfo/ingress/bookinfo-https.yaml");
        self.apply_in("bookinfo", "examples/bookinfo/ingress/bookinfo-https.yaml")?;
        let resolve = format!("{HTTPS_HOST}:443:{}", self.gateway);
        let url = format!("https://{HTTPS_HOST}/productpage");
        let args = ["--cacert", ca.as_str(), "--resolve", &resolve];
        let first = self.wait_for_page(&url, &args)?;
        println!("    outside$ curl --cacert example.com.crt --resolve {resolve} {url}");
        println!(
            "      {} over {} from {}, the gateway's certificate verified",
            first.status,
            first.version,
            first.pod.as_deref().unwrap_or("?")
        );
        let mut pages = Vec::new();
        for _ in 0..5 {
            let mut all = args.to_vec();
            all.push(&url);
            pages.push(self.curl(&all)?);
        }
        expect(
            first.status == 200
                && first.verified
                && pages.iter().all(|p| p.status == 200 && p.verified),
            "Bookinfo over HTTPS with the certificate the demo made",
        )
    }

    fn mesh_on(&mut self) -> anyhow::Result<()> {
        self.step(
            3,
            "mesh on",
            "The bookinfo namespace carries istio.io/dataplane-mode=ambient: each node's agent \
             attached eBPF programs to the pods' cgroups and network namespaces; no sidecar, \
             no iptables. curl asks productpage for its page 20 times; without a \
             VirtualService the waypoint balances reviews over v1, v2 and v3 (v3 fails 30% of \
             the time). A capture on the wire between the nodes records what crosses it.",
            None,
        )?;
        let capture = fabric::Capture::start(&self.lab)?;
        let samples = self.send(Client::CurlPod, PRODUCTPAGE, &[], 20)?;
        let seen = capture.stop()?;
        show(&samples);
        let mut pairs = BTreeSet::new();
        for node in &self.lab.plan.nodes {
            let body = self.lab.agent_get(&node.name, "/connections")?;
            let records: Vec<Value> = serde_json::from_str(&body)?;
            for r in records.iter().filter(|r| r["direction"] == "inbound") {
                if let Some(peer) = r["peer_identity"].as_str() {
                    pairs.insert((
                        node.name.clone(),
                        r["pod"].as_str().unwrap_or_default().to_string(),
                        peer.to_string(),
                    ));
                }
            }
        }
        println!("    who proved what (inbound HBONE, from the agents' admin data):");
        for (node, pod, peer) in &pairs {
            println!("      {node}: {pod:<28} ← {peer}");
        }
        println!(
            "    on the wire between nodes: {} packets, {} of them HBONE (TLS, port 15008); \
             plaintext HTTP seen: {}",
            seen.packets, seen.hbone, seen.plaintext_http
        );
        expect(
            samples.iter().all(|s| s.status == 200),
            "productpage served every page",
        )?;
        expect(
            pairs.iter().any(|(_, pod, peer)| {
                pod.starts_with("bookinfo/reviews") && peer.ends_with("/sa/waypoint")
            }),
            "reviews is reached through the waypoint's identity",
        )?;
        expect(
            pairs.iter().any(|(_, pod, peer)| {
                pod.starts_with("bookinfo/productpage") && peer.ends_with("/sa/curl")
            }),
            "productpage sees curl's identity",
        )?;
        expect(seen.hbone > 0, "mesh traffic crossed the wire as HBONE")?;
        expect(
            seen.plaintext_http == 0,
            "no plaintext HTTP between the nodes",
        )?;
        Ok(())
    }

    fn all_to_v1(&mut self) -> anyhow::Result<()> {
        self.step(
            4,
            "all traffic to reviews v1",
            "A VirtualService for reviews sends everything to subset v1 (the DestinationRule in \
             app/ defines v1, v2, v3 by the pods' version label). The waypoint applies it. \
             From here on, the pages are asked for from outside, through the ingress gateway.",
            Some("2-reviews-v1.yaml"),
        )?;
        let page = self.page();
        let samples = self.send(Client::Outside, &page, &[], 100)?;
        let counts = show(&samples);
        expect(
            percent(&counts, "reviews v1") == 100.0,
            "100% of reviews answers from v1",
        )
    }

    fn jason_to_v2(&mut self) -> anyhow::Result<()> {
        self.step(
            5,
            "header-based routing",
            "Requests carrying `end-user: jason` (productpage passes the header on) go to v2, \
             which also calls ratings; everyone else stays on v1.",
            Some("3-jason-v2.yaml"),
        )?;
        let page = self.page();
        println!("    as jason:");
        let jason = self.send(Client::Outside, &page, &["-H", "end-user: jason"], 50)?;
        let jason_counts = show(&jason);
        println!("    anonymous:");
        let others = self.send(Client::Outside, &page, &[], 50)?;
        let other_counts = show(&others);
        expect(
            percent(&jason_counts, "reviews v2") == 100.0,
            "jason always sees v2",
        )?;
        expect(
            percent(&other_counts, "reviews v1") == 100.0,
            "everyone else sees v1",
        )
    }

    fn canary(&mut self) -> anyhow::Result<()> {
        self.step(
            6,
            "50/50 v1/v3",
            "A weighted route sends half of the requests to v3. v3 is flaky: about 30% of its \
             answers are 500s, so about 15% of the pages now miss their reviews.",
            Some("4-v1-v3.yaml"),
        )?;
        let page = self.page();
        let samples = self.send(Client::Outside, &page, &[], 400)?;
        let counts = show(&samples);
        let v1 = percent(&counts, "reviews v1");
        let v3 = percent(&counts, "reviews v3") + percent(&counts, "error 500");
        expect(
            (v1 - 50.0).abs() <= 8.0 && (v3 - 50.0).abs() <= 8.0,
            "about half of the requests go to each version (±8 points over 400)",
        )?;
        expect(
            counts.get("error 500").copied().unwrap_or(0) > 0,
            "v3's failures show",
        )
    }

    fn faults_and_retries(&mut self) -> anyhow::Result<()> {
        self.step(
            7,
            "fault injection and retries",
            "The same split, now with up to 3 retries on a 5xx: v3's failures are retried \
             (on v1 or v3) and vanish. For jason, a fault answers 503 at the waypoint without \
             reaching reviews.",
            Some("5-faults-retries.yaml"),
        )?;
        let page = self.page();
        println!("    anonymous (retries):");
        let others = self.send(Client::Outside, &page, &[], 400)?;
        let other_counts = show(&others);
        println!("    as jason (fault):");
        let jason = self.send(Client::Outside, &page, &["-H", "end-user: jason"], 50)?;
        let jason_counts = show(&jason);
        let errors = others.iter().filter(|s| !s.ok()).count();
        expect(
            errors <= 12,
            "retries hide v3's failures (≤ 3% errors; expected < 1%)",
        )?;
        expect(
            percent(&jason_counts, "error 503") == 100.0,
            "jason's requests are aborted with 503",
        )?;
        let _ = other_counts;
        Ok(())
    }

    fn deny_curl(&mut self) -> anyhow::Result<()> {
        self.step(
            8,
            "an AuthorizationPolicy denies a caller",
            "A DENY policy attached to the reviews Service refuses curl's identity at the \
             waypoint (an L7 decision: 403 with Envoy's 'RBAC: access denied'). productpage \
             calls reviews with its own identity and is still served.",
            Some("6-deny-curl.yaml"),
        )?;
        println!("    curl → reviews directly:");
        let direct = self.send(Client::CurlPod, REVIEWS, &[], 10)?;
        let direct_counts = show(&direct);
        println!("    outside → ingress gateway → productpage → reviews:");
        let url = self.page();
        let page = self.send(Client::Outside, &url, &[], 20)?;
        show(&page);
        expect(
            percent(&direct_counts, "status 403") == 100.0,
            "curl is refused by reviews",
        )?;
        expect(
            page.iter().all(|s| s.status == 200 && s.reviews.is_some()),
            "productpage still gets its reviews",
        )
    }

    fn metrics(&mut self) -> anyhow::Result<()> {
        self.step(
            9,
            "metrics",
            "The waypoint exports Istio's standard metrics on :15020 (the agents too): \
             existing dashboards read them as they are.",
            None,
        )?;
        let scraped = self.testapp(
            "bookinfo/waypoint-0",
            &["get", "http://127.0.0.1:15020/metrics"],
        )?;
        let text = scraped
            .first()
            .and_then(|l| l["body"].as_str())
            .unwrap_or_default()
            .to_string();
        let mut counted = 0.0;
        for line in text.lines().filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"destination_service="reviews.bookinfo.svc.cluster.local""#)
        }) {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            counted += value;
            let label = |name: &str| {
                line.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("?")
                    .to_string()
            };
            println!(
                "    istio_requests_total  source={:<22} code={}  {value:>6}",
                label("source_principal")
                    .rsplit('/')
                    .next()
                    .unwrap_or("?")
                    .to_string(),
                label("response_code"),
            );
        }
        expect(
            counted as u64 == self.through_waypoint,
            &format!(
                "the waypoint counted every request it handled ({} sent, {counted} counted)",
                self.through_waypoint
            ),
        )
    }

    fn upgrade_agents(&mut self) -> anyhow::Result<()> {
        self.step(
            10,
            "upgrading the agents, traffic flowing",
            "While the outside host asks the ingress gateway for 40 pages a second on two \
             keep-alive connections, each node gets a new weft-agent beside the old one, as a \
             DaemonSet rollout with maxSurge does. The new agent takes the old one's listening sockets over (the same kernel \
             sockets, passed over a unix socket), serves, and then the old one stops \
             accepting, lets its connections finish and exits on SIGTERM.",
            None,
        )?;
        let page = self.page();
        let load = self
            .lab
            .outside_command(bin_dir().join("weft-testapp"))?
            .args([
                "load",
                page.as_str(),
                "--rate",
                "40",
                "--duration-ms",
                "6000",
                "--connections",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting weft-testapp load on the outside host")?;
        std::thread::sleep(Duration::from_secs(1));
        let nodes: Vec<String> = self.lab.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let mut replaced = Vec::new();
        for node in &nodes {
            interrupt::check()?;
            let (old, new) = self.lab.start_successor_agent(node)?;
            let status: Value = serde_json::from_str(&self.lab.agent_get(node, "/status")?)?;
            println!(
                "    {node}: agent {old:?} → {new}, which took over {} listening sockets",
                status["inherited_sockets"]
            );
            replaced.push((node.clone(), old));
        }
        let output = load.wait_with_output()?;
        ensure!(
            output.status.success(),
            "weft-testapp load: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_slice(&output.stdout).context("weft-testapp load printed no JSON")?;
        let stopping = Instant::now();
        let mut exited = true;
        for (node, old) in &replaced {
            if let Err(e) = self
                .lab
                .stop_agent_processes(node, old, Duration::from_secs(30))
            {
                println!("    {e}");
                exited = false;
            }
        }
        println!(
            "    {} pages asked, {} served, {} failed; p50 {:.1} ms, p99 {:.1} ms",
            report["sent"],
            report["ok"],
            report["errors"],
            report["latency_us"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
            report["latency_us"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
        );
        println!(
            "    the old agents exited {:.1} s after SIGTERM (idle keep-alive connections of \
             the app pods are closed after the drain time, {DRAIN_TIMEOUT_S} s here)",
            stopping.elapsed().as_secs_f64()
        );
        expect(
            report["errors"] == 0 && report["ok"].as_u64() > Some(0),
            "no page failed while both agents were replaced",
        )?;
        expect(exited, "the old agents drained and exited on SIGTERM")
    }

    fn egress(&mut self) -> anyhow::Result<()> {
        self.step(
            11,
            "egress: locked down, then opened by a ServiceEntry",
            "The mesh config's outboundTrafficPolicy REGISTRY_ONLY refuses connections to \
             anything the registry does not know (Istio's BlackHoleCluster). The lab's \
             internet has a host api.external.test (nginx, behind the nodes' NAT, named by a \
             real DNS server); the curl pod's DNS is answered by its agent.",
            Some("7-egress-registry-only.yaml"),
        )?;
        let http = format!("http://{EXTERNAL_HOST}/");
        let https = format!("https://{EXTERNAL_HOST}/");
        println!("    curl → {http} and {https}:");
        let blocked = [
            self.wait_for_egress(&http, |s| s == 0)?,
            self.wait_for_egress(&https, |s| s == 0)?,
        ];
        println!(
            "    refused: {} (no HTTP answer: the agent reset both connections)",
            if blocked.iter().all(|s| *s == 0) {
                "both"
            } else {
                "not both"
            }
        );
        expect(blocked == [0, 0], "REGISTRY_ONLY refuses the external host")?;
        let file = "8-egress-service-entry.yaml";
        let yaml = std::fs::read_to_string(steps_dir().join(file))?;
        println!("   applying examples/bookinfo/steps/{file}");
        self.lab.apply_yaml(file.trim_end_matches(".yaml"), &yaml)?;
        let opened = [
            self.wait_for_egress(&http, |s| s == 200)?,
            self.wait_for_egress(&https, |s| s == 200)?,
        ];
        println!(
            "    with the ServiceEntry: http {} https {}",
            opened[0], opened[1]
        );
        expect(
            opened == [200, 200],
            "the ServiceEntry opens its host's HTTP and HTTPS ports",
        )
    }

    fn tls_origination(&mut self) -> anyhow::Result<()> {
        self.step(
            12,
            "TLS origination at the egress waypoint",
            "A ServiceEntry labelled istio.io/use-waypoint sends secure.external.test's \
             traffic through the waypoint of istio-egress (ambient's egress gateway). Its \
             VirtualService routes port 80 to 443, its DestinationRule says SIMPLE TLS: the \
             application speaks plain HTTP, the external server receives TLS.",
            Some("9-egress-tls-origination.yaml"),
        )?;
        let url = format!("http://{SECURE_EXTERNAL_HOST}/");
        println!("    curl → {url}:");
        let originated = format!("scheme=https sni={SECURE_EXTERNAL_HOST}");
        // Until the rules reach the agents and the waypoint, ALLOW_ANY lets the request
        // out as it was sent: wait (bounded) for the first one the waypoint originated.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (status, body) = loop {
            interrupt::check()?;
            let output = self
                .lab
                .pod_command(CURL, "curl")?
                .args(["-s", "-m", "5", "-w", "\n%{http_code}", &url])
                .output()
                .context("running curl in the curl pod")?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
            let status: u16 = status.trim().parse().unwrap_or(0);
            let body = body.trim().to_string();
            if (status == 200 && body.contains(&originated)) || Instant::now() >= deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        println!("    {status}, the external server says: {body}");
        expect(
            status == 200 && body.contains(&originated),
            "the external server received TLS, with the host as SNI",
        )
    }

    /// curl in the curl pod to `url` (the lab's external CA trusted) until `wanted` holds
    /// of the status (0: no HTTP answer) or 15 s passed; returns the last status.
    fn wait_for_egress(&self, url: &str, wanted: impl Fn(u16) -> bool) -> anyhow::Result<u16> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let ca = self.lab.paths.external_ca();
        loop {
            interrupt::check()?;
            let output = self
                .lab
                .pod_command(CURL, "curl")?
                .args(["-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"])
                .arg("--cacert")
                .arg(&ca)
                .arg(url)
                .output()
                .context("running curl in the curl pod (cargo xtask setup installs it)")?;
            let status: u16 = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            if wanted(status) || Instant::now() >= deadline {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Prints a step's title and explanation, and applies its manifest as `kubectl apply`
    /// would (each step's VirtualService replaces the previous one: same name).
    fn step(
        &self,
        number: u32,
        title: &str,
        explanation: &str,
        manifest: Option<&str>,
    ) -> anyhow::Result<()> {
        interrupt::check()?;
        println!("\n── {number}. {title} ──");
        println!("{}", wrap(explanation, 88, "   "));
        if let Some(file) = manifest {
            let path = steps_dir().join(file);
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            println!("   applying examples/bookinfo/steps/{file}");
            self.lab.apply_yaml(file.trim_end_matches(".yaml"), &yaml)?;
            std::thread::sleep(SETTLE);
        }
        Ok(())
    }

    /// Productpage at the ingress gateway, as the outside host asks for it.
    fn page(&self) -> String {
        format!("http://{}/productpage", self.gateway)
    }

    /// Applies a file of the repository in `namespace`, as `cargo xtask lab apply -n`.
    fn apply_in(&mut self, namespace: &str, file: &str) -> anyhow::Result<()> {
        let path = workspace_root().join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut objects = Manifests::default();
        objects.add_yaml(&text, &path)?;
        self.lab.apply_objects(&objects.in_namespace(namespace))?;
        Ok(())
    }

    /// The CA and the certificate of `HTTPS_HOST`, made as Istio's task makes them, and
    /// the Secret holding it applied; returns the CA's path (what curl trusts).
    fn make_certificate(&mut self) -> anyhow::Result<String> {
        let dir = self.lab.paths.root.join("demo-certs");
        std::fs::create_dir_all(&dir)?;
        let host = HTTPS_HOST;
        let subject = format!("/CN={host}/O=bookinfo organization");
        let steps: [Vec<&str>; 3] = [
            vec![
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
            ],
            vec![
                "req",
                "-out",
                "bookinfo.csr",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "bookinfo.key",
                "-subj",
                &subject,
            ],
            vec![
                "x509",
                "-req",
                "-sha256",
                "-days",
                "365",
                "-CA",
                "example.com.crt",
                "-CAkey",
                "example.com.key",
                "-set_serial",
                "0",
                "-in",
                "bookinfo.csr",
                "-out",
                "bookinfo.crt",
            ],
        ];
        for args in steps {
            println!("    $ openssl {}", args.join(" "));
            let output = std::process::Command::new("openssl")
                .current_dir(&dir)
                .args(&args)
                .output()
                .context("running openssl (cargo xtask setup installs it)")?;
            ensure!(
                output.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let block = |file: &str| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(dir.join(file))?
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect())
        };
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {HTTPS_SECRET}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            block("bookinfo.crt")?,
            block("bookinfo.key")?
        );
        let mut objects = Manifests::default();
        objects.add_yaml(&secret, std::path::Path::new("secret.yaml"))?;
        self.lab.apply_objects(&objects)?;
        println!(
            "    the Secret {HTTPS_SECRET} (kubectl create -n istio-system secret tls {HTTPS_SECRET} --key … --cert …)"
        );
        Ok(dir.join("example.com.crt").display().to_string())
    }

    /// One request with curl on the outside host.
    fn curl(&mut self, args: &[&str]) -> anyhow::Result<Page> {
        let output = self
            .lab
            .outside_command("curl")?
            .args([
                "-s",
                "-m",
                "10",
                "-w",
                "\n%{http_code} %{http_version} %{ssl_verify_result}",
            ])
            .args(args)
            .output()
            .context("running curl on the outside host (cargo xtask setup installs it)")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut fields = last.split_whitespace();
        let status: u16 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = fields.next().unwrap_or("?").to_string();
        let verified = fields.next() == Some("0");
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let sample = Sample::from_line(&serde_json::json!({"status": status, "body": body}));
        // productpage calls reviews, through the waypoint, for every page it serves.
        if sample.reviews.is_some() {
            self.through_waypoint += 1;
        }
        Ok(Page {
            status,
            version: format!("HTTP/{version}"),
            verified,
            pod: body["pod"].as_str().map(str::to_string),
            sample,
        })
    }

    /// The first page of a newly applied route: the gateway reads the change within a
    /// second or two.
    fn wait_for_page(&mut self, url: &str, args: &[&str]) -> anyhow::Result<Page> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut all = args.to_vec();
        all.push(url);
        loop {
            interrupt::check()?;
            let page = self.curl(&all)?;
            if page.status == 200 || Instant::now() >= deadline {
                return Ok(page);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Sends `count` requests (from the outside host through the ingress gateway, or from
    /// the curl pod), showing progress, and reads every response.
    fn send(
        &mut self,
        from: Client,
        url: &str,
        extra: &[&str],
        count: u32,
    ) -> anyhow::Result<Vec<Sample>> {
        interrupt::check()?;
        let count_text = count.to_string();
        let mut args = vec!["get", url, "--count", &count_text];
        args.extend_from_slice(extra);
        let testapp = bin_dir().join("weft-testapp");
        let mut command = match from {
            Client::Outside => self.lab.outside_command(testapp)?,
            Client::CurlPod => self.lab.pod_command(CURL, testapp)?,
        };
        let mut child = command
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting weft-testapp get")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut samples = Vec::with_capacity(count as usize);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let value: Value = serde_json::from_str(&line)
                .with_context(|| format!("weft-testapp printed {line:?}"))?;
            samples.push(Sample::from_line(&value));
            if self.progress {
                let done = samples.len() * 30 / count.max(1) as usize;
                print!(
                    "\r    [{}{}] {}/{count}",
                    "#".repeat(done),
                    " ".repeat(30 - done),
                    samples.len()
                );
                let _ = std::io::stdout().flush();
            }
        }
        if self.progress {
            print!("\r{}\r", " ".repeat(50));
        }
        let output = child.wait_with_output()?;
        interrupt::check()?;
        ensure!(
            output.status.success() && samples.len() == count as usize,
            "weft-testapp get {url}: {} ({} of {count} responses)\n{}",
            output.status,
            samples.len(),
            String::from_utf8_lossy(&output.stderr)
        );
        // productpage calls reviews once per page; curl → reviews goes there directly.
        self.through_waypoint += samples
            .iter()
            .filter(|s| url == REVIEWS || s.reviews.is_some())
            .count() as u64;
        Ok(samples)
    }

    fn testapp(&self, pod: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let output = self
            .lab
            .pod_command(pod, bin_dir().join("weft-testapp"))?
            .args(args)
            .output()?;
        ensure!(
            output.status.success(),
            "weft-testapp {args:?} in {pod}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("weft-testapp output"))
            .collect()
    }
}

/// One page as curl on the outside host got it.
struct Page {
    status: u16,
    /// `HTTP/1.1`, `HTTP/2`.
    version: String,
    /// TLS only: curl verified the server's certificate.
    verified: bool,
    /// The pod that answered (weft-testapp's report).
    pod: Option<String>,
    sample: Sample,
}

fn steps_dir() -> PathBuf {
    workspace_root().join("examples/bookinfo/steps")
}

fn show(samples: &[Sample]) -> std::collections::BTreeMap<String, usize> {
    let counts = reviews_distribution(samples);
    print!("{}", bar_table(&counts));
    println!("{}", summary(samples));
    counts
}

fn expect(holds: bool, what: &str) -> anyhow::Result<()> {
    if holds {
        println!("   ✓ {what}");
        Ok(())
    } else {
        bail!("expected: {what}")
    }
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() + 1 > width {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{indent}{line}"));
    }
    lines.join("\n")
}

fn explore(lab: &Lab, options: &Options) {
    let name = &lab.plan.lab;
    println!(
        "\nWhat happened: pages asked for outside the cluster entered through the ingress gateway,"
    );
    println!("which Istio's Gateway and VirtualService configured, unchanged; inside, requests");
    println!("crossed the nodes inside HBONE (mutual TLS, identities from weft-ca), and every");
    println!("request to reviews passed the waypoint, which applied the VirtualService,");
    println!(
        "DestinationRule and AuthorizationPolicy of each step. The manifests are in examples/bookinfo/."
    );
    if options.keep {
        let gateway = lab
            .load_balancer_ip(INGRESS_SERVICE)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "<the gateway's address>".into());
        println!("\nThe lab stays up. Try:");
        println!(
            "  cargo xtask lab exec --name {name} outside -- curl -s http://{gateway}/productpage"
        );
        println!("  cargo xtask lab status {name}    (the ingress gateway's LoadBalancer address)");
        println!(
            "  cargo xtask lab apply --name {name} -n bookinfo -f examples/bookinfo/steps/4-v1-v3.yaml"
        );
        println!(
            "  cargo xtask lab delete --name {name} -n bookinfo -f examples/bookinfo/ingress/bookinfo-https.yaml"
        );
        println!(
            "  cargo xtask lab exec --name {name} bookinfo/curl -- weft-testapp get http://productpage:9080/productpage -H 'end-user: jason'"
        );
        println!("  cargo xtask lab exec --name {name} node-1 -- weftctl workloads");
        println!("  cargo xtask lab exec --name {name} node-1 -- weftctl certs");
        println!(
            "  cargo xtask lab exec --name {name} bookinfo/waypoint-0 -- weft-testapp get http://127.0.0.1:15020/metrics"
        );
        println!("  cargo xtask lab down {name}");
    }
}
