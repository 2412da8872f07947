//! Hostile clients against the mesh's HTTP servers while legitimate traffic flows.
//!
//! `shop/attacker`, an enrolled pod on node-1 holding a valid mesh certificate of its own
//! (the realistic attacker), runs real attack clients (Python's `h2` stack:
//! `tests/manifests/adversarial/attack.py`) against node-2's agent's HBONE port (`web`'s
//! address, 15008), the waypoint's HBONE port and the waypoint's HTTP path (plain HTTP to
//! `target`, captured by node-1's agent and carried to the waypoint). Meanwhile `shop/client`
//! sends requests to `web` through the waypoint, which crosses every server attacked.
//!
//! Asserted: each attack is cut off (GOAWAY with the reason, or the connection closed
//! within a bound), smuggling attempts get 400 and never reach the backend, the agents and the waypoint are the same processes afterwards and still
//! answer, their RSS grew by less than [`RSS_BOUND_MIB`], and ≥ 99% of the legitimate
//! requests succeeded.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_e2e::{lab_up_with_commands, manifests, pod_ip, python, spawn_testapp_in, testapp_json};
use weft_lab::Lab;
use weft_lab::plan::IpFamily;

const WAYPOINT: &str = "shop/waypoint-0";
const WEB: &str = "http://web.shop.svc.cluster.local/";
/// How much the RSS of an agent or of the waypoint may grow over all the attacks.
const RSS_BOUND_MIB: f64 = 64.0;
const ENHANCE_YOUR_CALM: u64 = 0xb;

fn script() -> PathBuf {
    manifests("adversarial").join("attack.py")
}

/// The attacker's mesh credentials as PEM files, removed when dropped.
struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    fn args(&self) -> Vec<String> {
        let file = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--cert".into(),
            file("chain.pem"),
            "--key".into(),
            file("key.pem"),
            "--ca".into(),
            file("root.pem"),
        ]
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A key made in the attacker's pod and its certificate for `shop/attacker`, asked of the
/// CA with node-1's token as node-1's agent would.
fn attacker_credentials(lab: &Lab) -> Credentials {
    use weft_core::identity::CertificateIssuer;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("adversarial-{}", weft_e2e::unique_lab_name("cred")));
    std::fs::create_dir_all(&dir).expect("credentials dir");
    let credentials = Credentials { dir: dir.clone() };
    let token = std::fs::read_to_string(lab.paths.ca_dir().join("node-1.token")).expect("token");
    let root = std::fs::read_to_string(lab.paths.ca_dir().join("root.pem")).expect("root");
    let ca = format!("{}:15012", lab.plan.control_plane.ip);
    let identity: weft_core::identity::Identity = "spiffe://cluster.local/ns/shop/sa/attacker"
        .parse()
        .expect("id");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        identity.to_string().try_into().expect("URI SAN"),
    )];
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .expect("CSR");
    let root_pem = root.clone();
    let chain = lab
        .in_pod_netns("shop/attacker", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use weft_core::ca::{CaClientTls, GrpcIssuer, GrpcIssuerConfig};
                use weft_core::identity::{CertificateRequest, TrustBundle};
                let trust = TrustBundle::from_pem(&root_pem).expect("root PEM");
                let issuer = GrpcIssuer::new(GrpcIssuerConfig {
                    tls: Some(CaClientTls {
                        trust: trust.into(),
                        server_name: "weft-ca.weft-system.svc".into(),
                    }),
                    token: Some(token.trim().to_string()),
                    ..GrpcIssuerConfig::new(ca)
                })
                .expect("issuer");
                issuer
                    .issue(CertificateRequest {
                        identity,
                        csr_pem,
                        validity: Duration::from_secs(3600),
                    })
                    .await
                    .expect("the CA issues the attacker's certificate")
            })
        })
        .expect("enter the attacker's pod");
    let chain: String = chain
        .iter()
        .map(weft_core::identity::trust::der_to_pem)
        .collect();
    std::fs::write(dir.join("chain.pem"), chain).expect("chain");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    std::fs::write(dir.join("root.pem"), root).expect("root");
    credentials
}

/// Runs one attack from the attacker's pod: its JSON report.
fn attack(lab: &Lab, args: &[&str], credentials: Option<&Credentials>) -> Value {
    let mut command = lab
        .pod_command("shop/attacker", python())
        .expect("a command in the attacker's pod");
    command.arg(script()).args(args);
    if let Some(credentials) = credentials {
        command.args(credentials.args());
    }
    let output = command.output().expect("run the attack client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "attack {args:?} printed no report: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// The processes of a cgroup and of those below it.
fn processes_below(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|pid| pid.trim().parse().ok())
        .collect();
    for child in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(processes_below(&child.path()));
        }
    }
    pids.sort_unstable();
    pids
}

/// The servers watched: each agent and the waypoint, with their processes.
fn servers(lab: &Lab) -> Vec<(String, Vec<i32>)> {
    let mut servers: Vec<(String, Vec<i32>)> = ["node-1", "node-2"]
        .iter()
        .map(|node| {
            (
                format!("agent of {node}"),
                processes_below(&lab.agent_cgroup_dir(node)),
            )
        })
        .collect();
    let waypoint = lab
        .pod_processes(WAYPOINT)
        .expect("the waypoint's processes");
    servers.push(("waypoint".into(), waypoint));
    for (what, pids) in &servers {
        assert!(!pids.is_empty(), "{what} runs");
    }
    servers
}

/// The summed VmRSS of `pids`, in MiB.
fn rss_mib(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim())
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .sum::<f64>()
        / 1024.0
}

/// Legitimate requests from `client` to `web` through the waypoint, in 10-second runs of
/// 20 per second until `stop` (at most 40 runs): (sent, ok).
fn legitimate_traffic(lab: &Lab, stop: &AtomicBool) -> (u64, u64) {
    let (mut sent, mut ok) = (0, 0);
    for _ in 0..40 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let child = spawn_testapp_in(
            lab,
            "shop/client",
            &[
                "load",
                WEB,
                "--rate",
                "20",
                "--duration-ms",
                "10000",
                "--connections",
                "2",
            ],
        );
        // Its exit status says whether every request succeeded; the counts say how many.
        let output = child.wait_with_output().expect("the load");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        sent += report["sent"].as_u64().unwrap_or(0);
        ok += report["ok"].as_u64().unwrap_or(0);
    }
    (sent, ok)
}

/// What went wrong, all of it: one lab run says everything.
#[derive(Default)]
struct Failures(std::sync::Mutex<Vec<String>>);

impl Failures {
    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("FAILED: {what}");
            self.0.lock().expect("failures").push(what);
        }
    }

    fn assert_none(&self) {
        let failures = self.0.lock().expect("failures");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// The stream attacks on an HTTP/2 server, with the CONNECT (`connect`) or GET authority.
#[allow(clippy::too_many_arguments)]
fn h2_attacks(
    failures: &Failures,
    lab: &Lab,
    what: &str,
    host: &str,
    port: &str,
    authority: &str,
    hbone: Option<&Credentials>,
    first_request_timeout: u64,
) {
    let mut base = vec![host, port, "--authority", authority];
    if hbone.is_some() {
        base.push("--connect");
    }
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec![name];
        args.extend_from_slice(&base);
        args.extend_from_slice(extra);
        let report = attack(lab, &args, hbone);
        eprintln!("{what}: {report}");
        report
    };

    for (name, reason) in [
        ("rapid_reset", "too_many_resets"),
        ("made_you_reset", "too_many_internal_resets"),
        ("continuation", "too_many_continuations"),
    ] {
        let report = run(name, &["--count", "20000", "--seconds", "30"]);
        failures.check(
            (report["goaway"].as_u64(), report["debug"].as_str())
                == (Some(ENHANCE_YOUR_CALM), Some(reason)),
            || format!("{what}: {name} is cut off with GOAWAY ({reason}): {report}"),
        );
        failures.check(report["sent"].as_u64() < Some(20000), || {
            format!("{what}: {name} was cut off before it was all sent: {report}")
        });
    }

    let bound = first_request_timeout + 6;
    let seconds = (first_request_timeout + 20).to_string();
    let report = run("slow_headers", &["--seconds", &seconds]);
    failures.check(
        report["closed"] == true && report["seconds"].as_f64() <= Some(bound as f64),
        || format!("{what}: a client trickling its headers is closed within {bound} s: {report}"),
    );

    if hbone.is_some() {
        // 100 beyond the 200 streams one HBONE connection may carry.
        let report = run("streams", &["--count", "300", "--seconds", "10"]);
        failures.check(report["refused"].as_u64() >= Some(100), || {
            format!("{what}: streams beyond the limit are refused: {report}")
        });
    }
}

/// Requests `target` answered, from its `/stats` (not counted itself).
fn target_requests(lab: &Lab) -> u64 {
    let lines = testapp_json(
        lab,
        "shop/client",
        &["get", "http://target.shop.svc.cluster.local/stats"],
    );
    lines
        .first()
        .and_then(|l| l["body"]["requests"].as_u64())
        .unwrap_or_else(|| panic!("target's /stats: {lines:?}"))
}

#[test]
fn the_mesh_servers_shrug_off_hostile_clients_while_serving_others() {
    let lab = lab_up_with_commands("adversarial", "adversarial", 2, &[]);
    let web = pod_ip(&lab, "shop/web");
    let waypoint = pod_ip(&lab, WAYPOINT);
    let vip = |name: &str| {
        lab.plan
            .services
            .iter()
            .find(|s| s.namespace == "shop" && s.name == name)
            .and_then(|s| s.cluster_ip(IpFamily::V4))
            .unwrap_or_else(|| panic!("{name}'s ClusterIP"))
            .to_string()
    };
    let (web_vip, target_vip) = (vip("web"), vip("target"));
    let credentials = attacker_credentials(&lab);
    let failures = Failures::default();

    // The mesh serves before the attacks: the baseline is taken warm.
    assert!(
        weft_e2e::eventually(Duration::from_secs(30), || {
            testapp_json(&lab, "shop/client", &["get", WEB])
                .first()
                .and_then(|l| l["status"].as_u64())
                == Some(200)
        }),
        "client reaches web through the waypoint"
    );
    let before = servers(&lab);
    let rss_before: Vec<f64> = before.iter().map(|(_, pids)| rss_mib(pids)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (sent, ok, target_before) = std::thread::scope(|scope| {
        let legitimate = scope.spawn(|| legitimate_traffic(&lab, &stop));
        // A panic in the attacks still stops the traffic (the guard), then propagates.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = StopOnDrop(&stop);
        // Let the legitimate traffic start first.
        std::thread::sleep(Duration::from_secs(2));

        // (a) node-2's agent, HBONE to web's address; the first request within 10 s.
        h2_attacks(
            &failures,
            &lab,
            "agent HBONE",
            &web,
            "15008",
            &format!("{web}:8080"),
            Some(&credentials),
            10,
        );
        // (b) the waypoint's HBONE port.
        h2_attacks(
            &failures,
            &lab,
            "waypoint HBONE",
            &waypoint,
            "15008",
            &format!("{web_vip}:80"),
            Some(&credentials),
            10,
        );
        // (b) the waypoint's HTTP, HTTP/2 with prior knowledge to target's Service,
        // carried by node-1's agent; the first request within 30 s.
        h2_attacks(
            &failures,
            &lab,
            "waypoint HTTP",
            &target_vip,
            "80",
            "target.shop.svc.cluster.local",
            None,
            30,
        );
        // Counted from here: the HTTP/2 attacks above also aim at target.
        let target_before = target_requests(&lab);
        let smuggling = attack(
            &lab,
            &[
                "smuggle",
                &target_vip,
                "80",
                "--authority",
                "target.shop.svc.cluster.local",
            ],
            None,
        );
        eprintln!("waypoint HTTP/1.1: {smuggling}");
        for (case, expected) in [
            ("cl_te", "HTTP/1.1 400 Bad Request"),
            ("te_cl", "HTTP/1.1 400 Bad Request"),
            ("two_content_lengths", "HTTP/1.1 400 Bad Request"),
            ("te_not_chunked_last", "HTTP/1.1 400 Bad Request"),
            ("obs_fold", "HTTP/1.1 400 Bad Request"),
        ] {
            let result = &smuggling["cases"][case];
            failures.check(
                result["statuses"] == serde_json::json!([expected]) && result["closed"] == true,
                || format!("{case}: one answer, {expected}, then closed: {smuggling}"),
            );
        }
        drop(_stop);
        let (sent, ok) = legitimate.join().expect("the legitimate traffic");
        (sent, ok, target_before)
    });
    eprintln!("attacks took {:?}", started.elapsed());

    // None of the smuggling attempts, nor anything behind them, reached the backend (the
    // two with both Content-Length and Transfer-Encoding are answered 400 too).
    let target_got = target_requests(&lab) - target_before;
    failures.check(target_got == 0, || {
        format!("target got {target_got} requests from the smuggling attempts")
    });

    eprintln!("legitimate requests: {ok} of {sent} succeeded");
    failures.check(sent >= 200, || {
        format!("the legitimate traffic ran: {sent} requests")
    });
    failures.check(ok as f64 >= 0.99 * sent as f64, || {
        format!("legitimate requests succeeded {ok} of {sent}")
    });
    let after = servers(&lab);
    for ((what, pids), ((_, pids_after), rss_before)) in
        before.iter().zip(after.iter().zip(rss_before))
    {
        failures.check(pids == pids_after, || {
            format!("{what} is the same process, alive: {pids:?} then {pids_after:?}")
        });
        let rss_after = rss_mib(pids_after);
        eprintln!("{what}: RSS {rss_before:.1} MiB before, {rss_after:.1} MiB after");
        failures.check(rss_after - rss_before < RSS_BOUND_MIB, || {
            format!("{what}: RSS grew from {rss_before:.1} to {rss_after:.1} MiB")
        });
    }
    // And they still answer.
    let lines = testapp_json(&lab, "shop/client", &["get", WEB]);
    failures.check(
        lines.first().and_then(|l| l["status"].as_u64()) == Some(200),
        || format!("web answers through the waypoint after the attacks: {lines:?}"),
    );
    failures.assert_none();
}
