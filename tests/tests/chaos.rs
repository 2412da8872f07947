//! Chaos under load (issue #21): parts of the mesh killed with SIGKILL while a client pod
//! keeps sending — new connections and a keep-alive connection, 20 requests a second each
//! (`weft_e2e::chaos`) — and the CA away for longer than a certificate lives. Each scenario
//! asserts what must hold and measures what was lost and how long until serving again;
//! the table is printed at the end (`cargo xtask chaos` runs this test and prints it,
//! the README quotes it).
//!
//! Agents ask for 60-second certificates (rotated at half their lifetime, as Istio's), so
//! the last scenario outlives them within the test's time.
use std::time::Duration;

use weft_e2e::chaos::{
    Kind, Load, Pace, Row, Sample, agent_log, agent_pid, failed_requests, held_certificates,
    issued, kill_pod, now, outage, publish, table, window,
};
use weft_e2e::{eventually, lab_up_with};
use weft_lab::Lab;

const CLIENT: &str = "chaos/client";
const WAYPOINT: &str = "chaos/waypoint-0";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/chaos/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/chaos/sa/server";
/// The agents' certificate lifetime, seconds.
const CERT_LIFETIME: &str = "60";
/// The identity manager's longest wait between two requests (`RotationPolicy::retry_max`).
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The ClusterIP of the Service `chaos/<name>`.
fn vip(lab: &Lab, name: &str) -> String {
    lab.plan
        .services
        .iter()
        .find(|s| s.namespace == "chaos" && s.name == name)
        .unwrap_or_else(|| panic!("no Service chaos/{name}"))
        .vip
        .to_string()
}

fn logs(lab: &Lab) -> String {
    let mut out = String::new();
    for file in [
        "agent-node-1.log",
        "agent-node-2.log",
        "ca.log",
        "kubelet.log",
    ] {
        let text = std::fs::read_to_string(lab.paths.logs().join(file)).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    || l.contains(" ERROR ")
                    || l.contains("failed")
                    || l.contains("refused")
                    || file == "kubelet.log"
            })
            .collect();
        out.push_str(&format!(
            "--- {file} (last warnings) ---\n{}\n",
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    out
}

/// Nothing failed in `[from, to)` and something was sent.
fn all_served(samples: &[Sample], kind: Kind, from: f64, to: f64) -> bool {
    let (sent, ok) = window(samples, kind, from, to);
    sent > 0 && ok == sent
}

/// Requests that failed before the event's last second (the previous scenario's wake),
/// said for the table's notes; empty when none did.
fn earlier(samples: &[Sample], event: f64) -> String {
    let (sent, ok) = window(samples, Kind::New, 0.0, event - 1.0);
    let (kept_sent, kept_ok) = window(samples, Kind::Kept, 0.0, event - 1.0);
    if sent == ok && kept_sent == kept_ok {
        return String::new();
    }
    format!(
        "; before the kill {} new and {} kept requests failed ({})",
        sent - ok,
        kept_sent - kept_ok,
        said(samples, 0.0, event - 1.0)
    )
}

/// The outcomes in `[from, to)`, counted, to explain a failed assertion.
fn said(samples: &[Sample], from: f64, to: f64) -> String {
    let mut counts = std::collections::BTreeMap::new();
    let mut failed = Vec::new();
    for s in samples.iter().filter(|s| s.end() >= from && s.end() < to) {
        *counts
            .entry(format!("{:?} {}", s.kind, s.outcome))
            .or_insert(0) += 1;
        if !s.ok {
            failed.push(format!(
                "{:?} {} on {} at {:.3}",
                s.kind,
                s.outcome,
                s.conn,
                s.end()
            ));
        }
    }
    format!("{counts:?}; failed: {}", failed.join(", "))
}

/// (1) The destination node's agent killed; the kubelet starts the DaemonSet's pod again at
/// once (a first restart has no back-off), which `start_agent_again` plays.
fn agent_killed(lab: &mut Lab, direct: &str) -> Row {
    let load = Load::start(lab, CLIENT, direct, 80, Pace::steady(14.0));
    std::thread::sleep(Duration::from_secs(2));
    let event = now();
    lab.kill_agent("node-2")
        .expect("SIGKILL to the agent of node-2");
    lab.start_agent_again("node-2")
        .expect("the agent of node-2 starts again");
    let ready = now() - event;
    let samples = load.finish();
    let new = outage(&samples, Kind::New, event);
    let kept = outage(&samples, Kind::Kept, event);
    assert!(
        all_served(&samples, Kind::New, event - 1.0, event),
        "all served in the second before the kill: {}\n{}",
        said(&samples, 0.0, event),
        logs(lab)
    );
    assert!(
        new.ends_ok && kept.ends_ok,
        "new and kept connections are served again once the agent is back: {new:?} {kept:?}\n{}",
        logs(lab)
    );
    Row {
        scenario: "SIGKILL of the destination node's agent, restarted at once".into(),
        new,
        kept,
        notes: format!(
            "the new agent ready {ready:.1} s after the kill{}",
            earlier(&samples, event)
        ),
    }
}

/// (2) The waypoint killed; the lab's kubelet restarts its container (restartPolicy
/// Always, first restart without back-off); its startup probe (every second, as Istio's
/// waypoint template) then its first readiness probe let it back into the Service's
/// endpoints.
fn waypoint_killed(lab: &Lab, viawp: &str) -> Row {
    let before = lab
        .pod_state(WAYPOINT)
        .expect("the waypoint pod")
        .containers
        .values()
        .map(|c| c.restart_count)
        .sum::<u32>();
    let pace = Pace {
        stop_after_ok: 40,
        ..Pace::steady(45.0)
    };
    let load = Load::start(lab, CLIENT, viawp, 80, pace);
    std::thread::sleep(Duration::from_secs(2));
    let event = now();
    assert!(kill_pod(lab, WAYPOINT) > 0, "the waypoint runs");
    let samples = load.finish();
    let new = outage(&samples, Kind::New, event);
    let kept = outage(&samples, Kind::Kept, event);
    let after = lab
        .pod_state(WAYPOINT)
        .expect("the waypoint pod")
        .containers
        .values()
        .map(|c| c.restart_count)
        .sum::<u32>();
    assert!(
        all_served(&samples, Kind::New, event - 1.0, event),
        "all served in the second before the kill: {}\n{}",
        said(&samples, 0.0, event),
        logs(lab)
    );
    assert_eq!(
        after,
        before + 1,
        "the kubelet restarted the waypoint's container once: {:?}",
        lab.pod_events(WAYPOINT)
    );
    assert!(
        new.failed > 0,
        "a killed waypoint is noticed by new connections: {new:?}"
    );
    assert!(
        new.ends_ok && kept.ends_ok,
        "served through the restarted waypoint again: {new:?} {kept:?}\n{:?}\n{}",
        lab.pod_events(WAYPOINT),
        logs(lab)
    );
    Row {
        scenario: "SIGKILL of the waypoint, restarted by its kubelet".into(),
        new,
        kept,
        notes: format!(
            "restartCount 1; back in the endpoints once its startup probe (every 1 s) and \
             then its readiness probe succeeded{}",
            earlier(&samples, event)
        ),
    }
}

/// (3) The CA killed and started again at once (its Deployment's kubelet): certificates
/// held keep serving, nothing fails.
fn ca_killed(lab: &mut Lab, direct: &str) -> Row {
    let load = Load::start(lab, CLIENT, direct, 80, Pace::steady(8.0));
    std::thread::sleep(Duration::from_secs(2));
    let event = now();
    lab.kill_ca().expect("SIGKILL to the CA");
    lab.start_ca_again().expect("the CA starts again");
    let back = now() - event;
    let samples = load.finish();
    let new = outage(&samples, Kind::New, event);
    let kept = outage(&samples, Kind::Kept, event);
    assert_eq!(
        (new.failed, kept.failed),
        (0, 0),
        "a CA crash costs no request: {new:?} {kept:?}\n{}",
        logs(lab)
    );
    Row {
        scenario: "SIGKILL of the CA, restarted at once".into(),
        new,
        kept,
        notes: format!(
            "the CA served again {back:.1} s after the kill{}",
            earlier(&samples, event)
        ),
    }
}

/// (4) The CA away longer than a certificate's lifetime, then back.
fn ca_away_past_expiry(lab: &mut Lab, direct: &str) -> Row {
    let pids = [agent_pid(lab, "node-1"), agent_pid(lab, "node-2")];
    let event = now();
    lab.kill_ca().expect("SIGKILL to the CA");
    let expiry = |node: &str, id: &str| {
        held_certificates(lab, node)
            .into_iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("the agent of {node} holds no certificate for {id}"))
            .1 as f64
    };
    let (client_expiry, server_expiry) = (expiry("node-1", CLIENT_ID), expiry("node-2", SERVER_ID));
    let first_expiry = client_expiry.min(server_expiry);
    let last_expiry = client_expiry.max(server_expiry);
    // Until a few seconds past the last expiry, with the CA still away.
    let until = last_expiry + 6.0;
    let load = Load::start(lab, CLIENT, direct, 80, Pace::steady(until - now()));
    let wait = |t: f64| {
        let left = t - now();
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left));
        }
    };
    // Each agent's log from its certificate's expiry on (the retries before it come sooner
    // as the certificate nears its end, by design).
    let mut marks_expired = [0; 2];
    let mut order = [(0, client_expiry, "node-1"), (1, server_expiry, "node-2")];
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (i, at, node) in order {
        wait(at);
        marks_expired[i] = agent_log(lab, node).len();
    }
    let samples = load.finish();
    wait(until);
    // The CA returns.
    let marks_away = [
        agent_log(lab, "node-1").len(),
        agent_log(lab, "node-2").len(),
    ];
    lab.start_ca_again().expect("the CA starts again");
    let back = now();
    let pace = Pace {
        stop_after_ok: 20,
        ..Pace::steady(RETRY_MAX.as_secs_f64() + 15.0)
    };
    let recovery = Load::start(lab, CLIENT, direct, 80, pace).finish();

    // Existing certificates serve until they expire, new connections and open ones alike.
    assert!(
        all_served(&samples, Kind::New, event, first_expiry - 1.0)
            && all_served(&samples, Kind::Kept, event, first_expiry - 1.0),
        "served until the first certificate expired ({:.1} s into the outage)\n{}",
        first_expiry - event,
        table(&[Row {
            scenario: "outage".into(),
            new: outage(&samples, Kind::New, event),
            kept: outage(&samples, Kind::Kept, event),
            notes: String::new(),
        }])
    );
    // After expiry, with the CA away: no new connection at all — never plaintext, never a
    // pooled connection made with a certificate now expired.
    let (sent, served) = window(&samples, Kind::New, first_expiry + 1.0, until);
    assert!(sent > 0, "new connections were tried after expiry");
    assert_eq!(
        served,
        0,
        "{served} of {sent} new connections served with expired certificates and no CA\n{}",
        logs(lab)
    );
    // Retries back off: counted per identity between its certificate's expiry and the CA's
    // return (at most the doubling steps to the 30 s cap, then one per 30 s).
    let mut retries = Vec::new();
    for (((node, id), expired_at), (from, to)) in [("node-1", CLIENT_ID), ("node-2", SERVER_ID)]
        .into_iter()
        .zip([client_expiry, server_expiry])
        .zip(marks_expired.into_iter().zip(marks_away))
    {
        let away = back - expired_at;
        let bound = 10 + (away / RETRY_MAX.as_secs_f64()).ceil() as usize;
        let log = agent_log(lab, node);
        let slice = log.get(from..to).unwrap_or_default();
        let failed = failed_requests(slice, id);
        assert!(
            (1..=bound).contains(&failed),
            "{node} asked the CA for {id} {failed} times in the {away:.0} s after expiry: \
             retries back off (at most {bound}), and go on"
        );
        retries.push((failed, away.round() as u64));
    }
    // Every failed request of the identity up to the CA's return (those of the outage, the
    // sooner ones before expiry included).
    let outage_failures: Vec<usize> = [("node-1", CLIENT_ID), ("node-2", SERVER_ID)]
        .iter()
        .zip(marks_away)
        .map(|((node, id), to)| {
            let log = agent_log(lab, node);
            failed_requests(log.get(..to).unwrap_or_default(), id)
        })
        .collect();
    // When the CA returns: the next request of each identity succeeds, traffic resumes with
    // no restart, and every certificate held is valid again.
    // Every identity the agents hold (the waypoint's server's too, whose certificate also
    // expired), not only the two the client's traffic needs.
    let renewed = eventually(RETRY_MAX + Duration::from_secs(10), || {
        let t = now() as i64;
        ["node-1", "node-2"].iter().all(|node| {
            let held = held_certificates(lab, node);
            !held.is_empty() && held.iter().all(|(_, not_after)| *not_after > t)
        })
    });
    assert!(
        renewed,
        "every certificate renewed within one retry (≤ {RETRY_MAX:?}) of the CA's return: \
         {:?} {:?}\n{}",
        held_certificates(lab, "node-1"),
        held_certificates(lab, "node-2"),
        logs(lab)
    );
    for ((node, id), from) in [("node-1", CLIENT_ID), ("node-2", SERVER_ID)]
        .into_iter()
        .zip(marks_away)
    {
        let log = agent_log(lab, node);
        let after = log.get(from..).unwrap_or_default();
        assert!(
            issued(after, id) >= 1 && failed_requests(after, id) <= 1,
            "{node}: {id} renewed by its first requests after the CA's return"
        );
    }
    let new_back = outage(&recovery, Kind::New, back);
    assert!(
        new_back.ends_ok,
        "traffic resumes once the certificates are renewed: {new_back:?}"
    );
    assert_eq!(
        [agent_pid(lab, "node-1"), agent_pid(lab, "node-2")],
        pids,
        "no agent restarted"
    );
    let t = now() as i64;
    for node in ["node-1", "node-2"] {
        for (id, not_after) in held_certificates(lab, node) {
            assert!(
                not_after > t,
                "{node} holds an expired certificate for {id}"
            );
        }
    }
    let kept = outage(&samples, Kind::Kept, event);
    let kept_past_expiry = window(&samples, Kind::Kept, first_expiry + 1.0, until);
    Row {
        scenario: "CA away longer than a certificate's lifetime (60 s), then back".into(),
        new: outage(&samples, Kind::New, event),
        kept,
        notes: format!(
            "certificates expired {:.0} s and {:.0} s into the outage; served until then; after \
             expiry 0 of {sent} new connections served (fail closed); the open connection \
             served {} of {} requests past expiry; failed requests to the CA per identity \
             (client, server) after its expiry: {} and {} in {} s and {} s (back-off to 30 s), \
             in all: {} and {}; after the CA's return serving again in {}, no restart",
            first_expiry - event,
            last_expiry - event,
            kept_past_expiry.1,
            kept_past_expiry.0,
            retries[0].0,
            retries[1].0,
            retries[0].1,
            retries[1].1,
            outage_failures[0],
            outage_failures[1],
            new_back
                .serving_again
                .map_or("—".into(), |s| format!("{:.1} s", s)),
        ),
    }
}

#[test]
fn the_mesh_under_chaos() {
    let mut lab = lab_up_with(
        "chaos",
        "chaos",
        2,
        true,
        &["--cert-lifetime", CERT_LIFETIME],
    );
    let direct = vip(&lab, "direct");
    let viawp = vip(&lab, "viawp");
    let mut rows = Vec::new();
    rows.push(agent_killed(&mut lab, &direct));
    println!("{}", table(&rows[rows.len() - 1..]));
    rows.push(waypoint_killed(&lab, &viawp));
    println!("{}", table(&rows[rows.len() - 1..]));
    rows.push(ca_killed(&mut lab, &direct));
    println!("{}", table(&rows[rows.len() - 1..]));
    rows.push(ca_away_past_expiry(&mut lab, &direct));
    publish(&rows);
    lab.down().expect("the lab comes down");
}
