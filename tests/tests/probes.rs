//! Kubelet probes under PeerAuthentication STRICT and behind a waypoint: the lab's kubelet
//! probes pods from their node (HTTP, TCP and gRPC readiness, HTTP liveness), weft lets the
//! node's own probe connections reach the applications, readiness drives the EndpointSlices
//! and so the Services' traffic, a failing liveness probe restarts the container — and the
//! node's address alone opens nothing: a connection the node only NATs (a NodePort,
//! masqueraded to the very address the kubelet's probes come from) and a pod forging the
//! node's address are refused.
//!
//! Tolerances: probes run every second; readiness and restarts are awaited for at most 15 s
//! (failureThreshold × period plus the agents' one-second view of the cluster).
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{
    agent_admin, agent_connections_when, eventually, lab_up_dual_stack, pod_ip, pod_ip6,
    testapp_in, testapp_json,
};
use weft_lab::Lab;
use weft_lab::kubelet::ProbeKind;

const WAIT: Duration = Duration::from_secs(15);
/// The address the lab's nodes answer on every pod's veth: what the node's own connections
/// to a pod come from (`weft_lab::plan::POD_GATEWAY`).
const NODE_ON_POD_LINK: &str = "169.254.1.1";

/// (successes, failures) of the readiness probe of `pod`'s container `app`.
fn readiness(lab: &Lab, pod: &str) -> (u64, u64) {
    let state = lab.pod_state(pod).expect("pod state");
    let track = state.containers["app"]
        .probes
        .get(&ProbeKind::Readiness)
        .cloned()
        .unwrap_or_default();
    (track.successes, track.failures)
}

/// Sets `pod`'s health (`serving` or `failing`) on its loopback.
fn set_health(lab: &Lab, pod: &str, state: &str) {
    let url = format!("http://127.0.0.1:8080/control/health?state={state}");
    let answer = testapp_json(lab, pod, &["get", "--method", "POST", &url]);
    assert_eq!(answer[0]["status"], 200, "{answer:?}");
}

/// The agent of node-1's view of Service `name`'s ready endpoints.
fn ready_endpoints(lab: &Lab, name: &str) -> u64 {
    let services = agent_admin(lab, "node-1", "/services");
    services
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .and_then(|s| s["endpoints_ready"].as_u64())
        .unwrap_or(0)
}

/// One GET from the client pod through the Service: the status (0 when none came back).
fn get_status(lab: &Lab, url: &str) -> u64 {
    let output = testapp_in(lab, "shop/client", &["get", url, "--timeout-ms", "3000"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line["status"].as_u64())
        .unwrap_or(0)
}

/// `GET path` over HTTP/1.0 from the calling thread's network namespace; (status line, the
/// local address the connection had).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, SocketAddr)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    let local = stream.local_addr()?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok((
        response.lines().next().unwrap_or_default().to_string(),
        local,
    ))
}

#[test]
fn probed_pods_under_strict_and_behind_a_waypoint_become_ready_serve_and_restart() {
    let lab = lab_up_dual_stack("probes", "probes", 2, true);
    let pods = ["shop/web", "shop/echo", "shop/grpc", "shop/live"];

    // The agents capture the pods now (STRICT, a waypoint): the probes keep passing.
    let before: Vec<(u64, u64)> = pods.iter().map(|p| readiness(&lab, p)).collect();
    std::thread::sleep(Duration::from_secs(4));
    for (pod, (successes, failures)) in pods.iter().zip(before) {
        let (now_ok, now_failed) = readiness(&lab, pod);
        assert!(
            now_ok >= successes + 3 && now_failed == failures,
            "{pod}: readiness probes {successes}/{failures} → {now_ok}/{now_failed} (successes/failures) under the mesh; events: {:?}",
            lab.pod_events(pod)
        );
        assert!(lab.pod_ready(pod).expect("state"), "{pod} is Ready");
    }

    // Traffic through the Services: the waypoint for web, echo and grpc, STRICT for live.
    for service in ["web", "grpc", "live"] {
        assert_eq!(
            get_status(
                &lab,
                &format!("http://{service}.shop.svc.cluster.local:8080/")
            ),
            200,
            "{service} answers through its Service"
        );
    }
    let echo = testapp_in(
        &lab,
        "shop/client",
        &[
            "tcp",
            "echo.shop.svc.cluster.local:7000",
            "--send",
            "probed",
        ],
    );
    assert!(
        echo.status.success(),
        "echo answers through its Service: {}",
        String::from_utf8_lossy(&echo.stderr)
    );

    // Readiness follows the HTTP and gRPC probes both ways, and the Service with it.
    for (pod, service) in [("shop/web", "web"), ("shop/grpc", "grpc")] {
        let url = format!("http://{service}.shop.svc.cluster.local:8080/");
        set_health(&lab, pod, "failing");
        assert!(
            eventually(WAIT, || !lab.pod_ready(pod).expect("state")
                && ready_endpoints(&lab, service) == 0),
            "{pod} turns unready and its endpoint with it; events: {:?}",
            lab.pod_events(pod)
        );
        // The waypoint reads the cluster on its own (every second): it follows shortly.
        assert!(
            eventually(WAIT, || get_status(&lab, &url) != 200),
            "no ready endpoint, no answer"
        );
        set_health(&lab, pod, "serving");
        assert!(
            eventually(WAIT, || lab.pod_ready(pod).expect("state")
                && ready_endpoints(&lab, service) == 1),
            "{pod} becomes Ready again through the mesh; events: {:?}",
            lab.pod_events(pod)
        );
        assert!(
            eventually(WAIT, || get_status(&lab, &url) == 200),
            "{service} receives traffic again once its endpoint is ready"
        );
    }

    // A failing liveness probe restarts the container; the new one becomes Ready.
    let old = lab.pod_processes("shop/live").expect("processes");
    set_health(&lab, "shop/live", "failing");
    assert!(
        eventually(WAIT, || lab
            .pod_state("shop/live")
            .expect("state")
            .containers["app"]
            .restart_count
            == 1),
        "the container is restarted; events: {:?}",
        lab.pod_events("shop/live")
    );
    assert!(
        eventually(WAIT, || lab.pod_ready("shop/live").expect("state")),
        "the restarted container becomes Ready; events: {:?}",
        lab.pod_events("shop/live")
    );
    let startups = lab.pod_state("shop/live").expect("state").containers["app"].probes
        [&ProbeKind::Startup]
        .successes;
    assert!(
        startups >= 2,
        "the exec startup probe passed before each start of the container: {startups}"
    );
    let new = lab.pod_processes("shop/live").expect("processes");
    assert!(
        !new.is_empty() && new.iter().all(|pid| !old.contains(pid)),
        "a new process: {old:?} → {new:?}"
    );
    assert!(
        eventually(WAIT, || get_status(
            &lab,
            "http://live.shop.svc.cluster.local:8080/"
        ) == 200),
        "and it serves through its Service"
    );
}

/// Connects from a socket bound to `source`, an address of another host
/// (`IP_TRANSPARENT`), as a pod forging it would; true if the handshake completed.
fn forged_connect(source: IpAddr, target: SocketAddr) -> bool {
    let (family, level, option) = match source {
        IpAddr::V4(_) => (libc::AF_INET, libc::SOL_IP, libc::IP_TRANSPARENT),
        IpAddr::V6(_) => (libc::AF_INET6, libc::SOL_IPV6, libc::IPV6_TRANSPARENT),
    };
    // SAFETY: a new socket, owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let timeout = libc::timeval {
        tv_sec: 3,
        tv_usec: 0,
    };
    // SAFETY: options on an owned socket with values that outlive the calls.
    unsafe {
        assert_eq!(
            libc::setsockopt(
                fd,
                level,
                option,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t
            ),
            0,
            "IP_TRANSPARENT: {}",
            std::io::Error::last_os_error()
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let (bind, connect) = (sockaddr(SocketAddr::new(source, 0)), sockaddr(target));
    // SAFETY: sockaddr buffers of the lengths passed, alive for the calls.
    unsafe {
        assert_eq!(
            libc::bind(fd, bind.0.as_ptr().cast(), bind.1),
            0,
            "bind {source}: {}",
            std::io::Error::last_os_error()
        );
        let connected = libc::connect(fd, connect.0.as_ptr().cast(), connect.1) == 0;
        drop(socket);
        connected
    }
}

/// A socket address as the kernel's `sockaddr_in`/`sockaddr_in6` bytes.
fn sockaddr(addr: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match addr {
        SocketAddr::V4(v4) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a plain C struct viewed as its bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw const raw).cast::<u8>(), size_of_val(&raw))
            };
            (bytes.to_vec(), size_of_val(&raw) as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: a plain C struct viewed as its bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw const raw).cast::<u8>(), size_of_val(&raw))
            };
            (bytes.to_vec(), size_of_val(&raw) as libc::socklen_t)
        }
    }
}

/// Requests `pod`'s testapp counted (all but /healthz, /stats and the health control),
/// asked on its loopback.
fn requests_seen(lab: &Lab, pod: &str) -> u64 {
    let stats = testapp_json(lab, pod, &["get", "http://127.0.0.1:8080/stats"]);
    stats[0]["body"]["requests"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn only_the_nodes_own_connections_pass_not_the_nodes_address() {
    let mut lab = lab_up_dual_stack("nodeaddr", "probes", 2, true);
    let web = pod_ip(&lab, "shop/web");
    let web6 = pod_ip6(&lab, "shop/web");
    let node2 = lab.plan.node("node-2").expect("node-2").clone();

    // The node's own connections to the probe port reach the application past STRICT and the
    // waypoint, IPv4 and IPv6 (the kubelet dials the first pod IP; both are filed).
    for target in [
        SocketAddr::new(web.parse().expect("ip"), 8080),
        SocketAddr::new(web6.parse().expect("ip"), 8080),
    ] {
        let (status, local) = lab
            .in_node_netns("node-2", || http_get(target, "/healthz"))
            .expect("node netns")
            .unwrap_or_else(|e| panic!("the node's own GET {target}/healthz: {e}"));
        assert!(status.contains(" 200 "), "{target}: {status}");
        if target.is_ipv4() {
            assert_eq!(
                local.ip().to_string(),
                NODE_ON_POD_LINK,
                "the node's source"
            );
        }
    }

    // A NodePort on node-2, as kube-proxy programs one: DNAT, and masquerading to the
    // address of the interface towards the pod — the very address of the node's own probes.
    let rules = format!(
        "table ip nodeport {{\n  chain prerouting {{ type nat hook prerouting priority -100; ip daddr {node} tcp dport 30080 dnat to {web}:8080; }}\n  chain postrouting {{ type nat hook postrouting priority 100; ct status dnat ip daddr {web} masquerade; }}\n}}\n",
        node = node2.ip
    );
    let mut nft = lab
        .node_command("node-2", "nft")
        .expect("nft in node-2")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    nft.stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("rules written");
    assert!(
        nft.wait().expect("nft").success(),
        "the NodePort rules load"
    );

    let requests = requests_seen(&lab, "shop/web");
    let through_nodeport = testapp_in(
        &lab,
        "shop/outsider",
        &[
            "get",
            &format!("http://{}:30080/", node2.ip),
            "--timeout-ms",
            "3000",
        ],
    );
    let answered = String::from_utf8_lossy(&through_nodeport.stdout).contains("\"status\":200");
    assert!(
        !answered,
        "a NodePort connection carries the node's address but is not the node's own: refused"
    );
    let refused = agent_connections_when(&lab, "node-2", |records| {
        records.iter().any(|r| {
            r["source"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{NODE_ON_POD_LINK}:")))
                && r["error"].is_string()
        })
    });
    assert!(
        refused.iter().any(|r| r["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{NODE_ON_POD_LINK}:")))
            && r["original_destination"] == format!("{web}:8080")
            && r["error"].is_string()),
        "the agent refused the NodePort connection from {NODE_ON_POD_LINK}: {refused:?}"
    );
    assert_eq!(
        requests_seen(&lab, "shop/web"),
        requests,
        "the application received nothing"
    );

    // A pod forging the node's addresses completes no handshake, IPv4 or IPv6.
    let sources: Vec<IpAddr> = [NODE_ON_POD_LINK.parse().expect("ip"), IpAddr::V4(node2.ip)]
        .into_iter()
        .chain(node2.ip6.map(IpAddr::V6))
        .collect();
    for source in sources {
        let target = match source {
            IpAddr::V4(_) => SocketAddr::new(web.parse().expect("ip"), 8080),
            IpAddr::V6(_) => SocketAddr::new(web6.parse().expect("ip"), 8080),
        };
        let connected = lab
            .in_pod_netns("shop/intruder", || forged_connect(source, target))
            .expect("intruder's netns");
        assert!(!connected, "a pod forging {source} reaches {target}");
    }
    assert_eq!(
        requests_seen(&lab, "shop/web"),
        requests,
        "the application received nothing"
    );

    // The exemption lives in the kernel: with the agent gone the node's probes still pass,
    // and a new agent adopts the pinned tc link (pointing it at its own program).
    let node_get = |lab: &Lab| {
        lab.in_node_netns("node-2", || {
            http_get(SocketAddr::new(web.parse().expect("ip"), 8080), "/healthz")
        })
        .expect("node netns")
        .map(|(status, _)| status)
    };
    lab.kill_agent("node-2").expect("killing the agent");
    let status = node_get(&lab).expect("the node's GET while the agent is away");
    assert!(status.contains(" 200 "), "agent away: {status}");
    lab.start_agent_again("node-2").expect("a new agent");
    let status = node_get(&lab).expect("the node's GET after the restart");
    assert!(status.contains(" 200 "), "agent restarted: {status}");
    let log =
        std::fs::read_to_string(lab.paths.logs().join("agent-node-2.log")).unwrap_or_default();
    assert!(
        !log.contains("will not reach the application"),
        "every pod's probes are recognized, the restart included"
    );
}
