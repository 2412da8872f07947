//! WebSocket through a waypoint, with real peers: Python's `websockets` server in a pod
//! behind a Service bound to the waypoint, its client in another pod on the other node. The
//! upgrade request crosses the client's agent, HBONE, the waypoint (policies, the
//! VirtualService's header operation and 1 s timeout) and HBONE again; the waypoint relays
//! the `101` and splices the two upgraded connections (`waypoint/src/http/upgrade.rs`).
//!
//! Checked: 100 messages of 10 to 1,000 bytes echoed through the waypoint with a 2 s pause
//! after the 50th (longer than the route's timeout, which covers the upgrade request only);
//! the server saw the routed request (`x-routed-by`) with its WebSocket headers; a DENY
//! policy on `/admin*` refuses the upgrade with 403. The same over HTTP/2: Python's `h2`
//! opening the WebSocket with RFC 8441 extended CONNECT (`h2_websocket.py`), the waypoint
//! carrying it to the HTTP/1.1 server, 100 messages echoed, the DENY answering 403.
use std::path::PathBuf;

use serde_json::Value;
use weft_e2e::{lab_up_with_commands, manifests, python};
use weft_lab::Lab;

const ECHO: &str = "ws://echo.shop.svc.cluster.local";

fn script() -> PathBuf {
    manifests("websocket").join("websocket_echo.py")
}

fn lab(tag: &str) -> Lab {
    lab_up_with_commands(
        tag,
        "websocket",
        2,
        &[("WS_PYTHON", python()), ("WS_ECHO", script())],
    )
}

/// Runs the WebSocket client in `shop/client`; its one JSON line.
fn call(lab: &Lab, url: &str, extra: &[&str]) -> Value {
    let output = lab
        .pod_command("shop/client", python())
        .expect("a command in the client pod")
        .arg(script())
        .arg("call")
        .arg(url)
        .args(extra)
        .output()
        .expect("the WebSocket client ran");
    assert!(
        output.status.success(),
        "the WebSocket client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn websocket_through_a_waypoint_echoes_both_ways_and_policies_apply_to_the_upgrade() {
    let lab = lab("websocket");
    // The server may still be starting: the first call waits for it.
    let mut first = Value::Null;
    for _ in 0..30 {
        let output = lab
            .pod_command("shop/client", python())
            .expect("a command in the client pod")
            .arg(script())
            .args(["call", &format!("{ECHO}/ready"), "--count", "1"])
            .output()
            .expect("the WebSocket client ran");
        if output.status.success()
            && let Ok(line) = serde_json::from_slice::<Value>(&output.stdout)
            && line["status"] == 101
        {
            first = line;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(first["status"], 101, "the echo server answered: {first}");

    let line = call(
        &lab,
        &format!("{ECHO}/chat"),
        &["--count", "100", "--pause-after", "50", "--pause", "2"],
    );
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["echoed"], 100, "{line}");
    assert_eq!(line["mismatched"], 0, "{line}");
    let request = &line["request"];
    assert_eq!(request["path"], "/chat", "{line}");
    assert_eq!(request["headers"]["upgrade"], "websocket", "{line}");
    assert_eq!(request["headers"]["connection"], "upgrade", "{line}");
    assert!(
        request["headers"]["sec-websocket-key"].is_string(),
        "{line}"
    );
    assert_eq!(
        request["headers"]["x-routed-by"], "waypoint",
        "the request went through the waypoint's route: {line}"
    );

    let denied = call(&lab, &format!("{ECHO}/admin/chat"), &[]);
    assert_eq!(denied["status"], 403, "{denied}");

    // Over HTTP/2: RFC 8441 extended CONNECT, scripted with Python's `h2`.
    let line = h2_call(&lab, "/h2chat", 100);
    assert_eq!(line["connect_protocol"], 1, "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["echoed"], 100, "{line}");
    assert_eq!(line["mismatched"], 0, "{line}");
    assert_eq!(line["closed"], 1000, "{line}");
    let request = &line["request"];
    assert_eq!(request["path"], "/h2chat", "{line}");
    assert_eq!(request["headers"]["upgrade"], "websocket", "{line}");
    assert_eq!(
        request["headers"]["x-routed-by"], "waypoint",
        "the request went through the waypoint's route: {line}"
    );
    let denied = h2_call(&lab, "/admin/h2chat", 1);
    assert_eq!(denied["status"], 403, "{denied}");
}

/// Runs the HTTP/2 (extended CONNECT) WebSocket client in `shop/client`; its JSON line.
fn h2_call(lab: &Lab, path: &str, count: u32) -> Value {
    let host = ECHO.trim_start_matches("ws://");
    let output = lab
        .pod_command("shop/client", python())
        .expect("a command in the client pod")
        .arg(manifests("websocket").join("h2_websocket.py"))
        .args([host, "80", host, path, "--count", &count.to_string()])
        .output()
        .expect("the HTTP/2 WebSocket client ran");
    assert!(
        output.status.success(),
        "the HTTP/2 WebSocket client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
