//! Upgrading the agents loses no connection: a new agent takes the running one's listening
//! sockets over, and the old one drains what it carries before it exits. The lab upgrades
//! both agents of a connection (source and destination) while requests flow on open
//! keep-alive connections and new connections keep being made.
use std::time::Duration;

use weft_e2e::{agent_admin, lab_up, pod_ip, spawn_testapp_in, testapp_json, testapp_report};
use weft_lab::Lab;

/// What the agents (old and new) warned about, to explain a failure.
fn warnings(lab: &Lab) -> String {
    ["node-1", "node-2"]
        .iter()
        .flat_map(|node| {
            let log = lab.paths.logs().join(format!("agent-{node}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("error"))
                .map(|l| format!("{node}: {l}"))
                .collect::<Vec<_>>()
        })
        .take(60)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn upgrading_both_agents_loses_no_connection() {
    let mut lab = lab_up("upgrade", "tunnel", 2, true);
    let server = pod_ip(&lab, "mesh/server");
    let echo = format!("{server}:9000");
    let url = format!("http://{server}:8080/");
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "before"])[1]["echoed"],
        "before"
    );

    // 10 s of requests at 50/s on two keep-alive connections opened before the upgrade,
    // and new connections one after another for 8 s.
    let requests = spawn_testapp_in(
        &lab,
        "mesh/client",
        &[
            "load",
            &url,
            "--rate",
            "50",
            "--duration-ms",
            "10000",
            "--connections",
            "2",
        ],
    );
    let connections = spawn_testapp_in(
        &lab,
        "mesh/client",
        &[
            "connrate",
            &echo,
            "--duration-ms",
            "8000",
            "--concurrency",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    // The client's node, then the server's, while the traffic flows; then the old agents
    // are told to stop and exit once what they carry has ended (the keep-alive
    // connections, with the load).
    let mut replaced = Vec::new();
    for node in ["node-1", "node-2"] {
        let (old, new) = lab
            .start_successor_agent(node)
            .unwrap_or_else(|e| panic!("starting a new agent on {node}: {e}"));
        replaced.push((node, old, new));
        std::thread::sleep(Duration::from_secs(1));
    }
    for (node, old, _) in &replaced {
        lab.stop_agent_processes(node, old, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("stopping the old agent of {node}: {e}"));
    }

    let load = testapp_report(requests, "the keep-alive requests");
    assert_eq!(
        load["errors"],
        0,
        "every request was answered: {load}\n{}",
        warnings(&lab)
    );
    assert!(
        load["ok"].as_u64() >= Some(490),
        "the requests kept their pace: {load}"
    );
    let churn = testapp_report(connections, "the new connections");
    assert_eq!(
        churn["errors"],
        0,
        "no new connection was refused: {churn}\n{}",
        warnings(&lab)
    );
    assert!(
        churn["connections"].as_u64() > Some(100),
        "connections were made throughout: {churn}"
    );

    for (node, old, new) in replaced {
        let status = agent_admin(&lab, node, "/status");
        assert_eq!(status["pid"], new, "{node}: {status}");
        assert!(!old.contains(&new));
        // Three listeners per mesh pod and the node's three endpoints at least.
        assert!(
            status["inherited_sockets"].as_u64() >= Some(6),
            "{node} took the listeners over: {status}"
        );
        assert_eq!(status["ready"], true, "{status}");
    }
    // And the new agents carry new traffic.
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "after"])[1]["echoed"],
        "after"
    );
}

#[test]
fn an_agent_stopped_without_a_successor_exits_and_the_next_starts_afresh() {
    let mut lab = lab_up("stop", "tunnel", 2, true);
    let echo = format!("{}:9000", pod_ip(&lab, "mesh/server"));
    let old = agent_admin(&lab, "node-1", "/status")["pid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .expect("the agent's pid");
    // Nothing open: SIGTERM ends it well within the drain time.
    let started = std::time::Instant::now();
    lab.stop_agent_processes("node-1", &[old], Duration::from_secs(10))
        .expect("the agent exits on SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle agent does not wait out the drain time: {:?}",
        started.elapsed()
    );
    lab.start_agent_again("node-1")
        .expect("the next agent starts without a predecessor");
    let status = agent_admin(&lab, "node-1", "/status");
    assert_eq!(status["inherited_sockets"], 0, "{status}");
    assert_eq!(
        testapp_json(&lab, "mesh/client", &["tcp", &echo, "--send", "again"])[1]["echoed"],
        "again"
    );
}
