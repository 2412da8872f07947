//! gRPC streaming through a waypoint, with a real gRPC implementation: Python's `grpcio`
//! server (two versions) in pods behind a Service bound to the waypoint, its client in
//! another pod on the other node. Each stream crosses the client's agent, HBONE, the
//! waypoint (the VirtualService's header match and fault, the DestinationRule's subsets)
//! and HBONE again as one HTTP/2 request whose body flows both ways at once.
//!
//! Checked: a bidirectional stream of 100 messages, each sent only once the previous reply
//! came back (so both directions are open together), answered in order by v1, and by v2
//! with `x-version: v2`; 100 messages of 64 KiB pipelined both ways at once (flow control
//! through the waypoint in both directions), each echoed whole; a server-streaming call (100 replies) and a client-streaming call
//! (100 messages, one answer after the half-close); `x-fail: yes` aborted by the route's
//! fault with gRPC status UNAVAILABLE (14); the waypoint's `istio_requests_total` counting
//! the streams with `grpc_response_status="0"` and the abort with `"14"`.
use std::path::PathBuf;

use serde_json::Value;
use weft_e2e::{lab_up_with_commands, manifests, python, testapp_json};
use weft_lab::Lab;

const ECHO: &str = "echo.shop.svc.cluster.local:9000";

fn script() -> PathBuf {
    manifests("grpc_streaming").join("grpc_stream.py")
}

fn lab(tag: &str) -> Lab {
    lab_up_with_commands(
        tag,
        "grpc_streaming",
        2,
        &[("GRPC_PYTHON", python()), ("GRPC_STREAM", script())],
    )
}

/// Runs the gRPC client in `shop/client` (`chat`, `watch` or `collect`); its JSON line.
fn call(lab: &Lab, command: &str, extra: &[&str]) -> Value {
    let output = lab
        .pod_command("shop/client", python())
        .expect("a command in the client pod")
        .arg(script())
        .args([command, ECHO])
        .args(extra)
        .output()
        .expect("the gRPC client ran");
    assert!(
        output.status.success(),
        "the gRPC client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The replies a stream should have had from `version`: `<version>:<what> <i>`, in order.
fn expected(version: &str, what: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{version}:{what} {i}"))
        .collect()
}

fn replies(line: &Value) -> Vec<String> {
    line["replies"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The waypoint's `istio_requests_total` for `echo` with `grpc_response_status="<status>"`.
fn counted(lab: &Lab, status: &str) -> (f64, String) {
    let scraped = testapp_json(
        lab,
        "shop/waypoint-0",
        &["get", "http://127.0.0.1:15020/metrics"],
    );
    let text = scraped[0]["body"].as_str().unwrap_or_default().to_string();
    let grpc_status = format!("grpc_response_status=\"{status}\"");
    let sum = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"reporter="waypoint""#)
                && l.contains(r#"destination_service="echo.shop.svc.cluster.local""#)
                && l.contains(r#"request_protocol="grpc""#)
                && l.contains(&grpc_status)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (sum, text)
}

#[test]
fn grpc_streams_through_a_waypoint_flow_both_ways_in_order_and_routes_apply() {
    let lab = lab("grpcstream");
    // The servers may still be starting: the first call waits for v1 and v2.
    let mut ready = 0;
    for _ in 0..40 {
        let v1 = call(&lab, "chat", &["--count", "1"]);
        let v2 = call(&lab, "chat", &["--count", "1", "--header", "x-version=v2"]);
        if v1["code"] == 0 && v2["code"] == 0 {
            ready += 1;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        ready, 1,
        "the echo servers never answered through the waypoint"
    );
    let (before, _) = counted(&lab, "0");

    // Bidirectional: 100 messages interleaved with their replies, 20 ms apart.
    let line = call(&lab, "chat", &["--count", "100", "--pause", "0.02"]);
    assert_eq!(line["code"], 0, "{line}");
    assert_eq!(replies(&line), expected("v1", "message", 100), "{line}");
    // The VirtualService's header match sends the stream to v2.
    let line = call(
        &lab,
        "chat",
        &[
            "--count",
            "100",
            "--pause",
            "0.02",
            "--header",
            "x-version=v2",
        ],
    );
    assert_eq!(line["code"], 0, "{line}");
    assert_eq!(replies(&line), expected("v2", "message", 100), "{line}");
    // Both directions full at once: 100 messages of 64 KiB sent without waiting, far past
    // HTTP/2's initial 64 KiB windows, each echoed whole and in order.
    let line = call(
        &lab,
        "chat",
        &["--count", "100", "--size", "65536", "--pipelined"],
    );
    assert_eq!(line["code"], 0, "{line}");
    assert_eq!(replies(&line), expected("v1", "message", 100), "{line}");

    // Server streaming: one request, 100 replies.
    let line = call(&lab, "watch", &["--count", "100"]);
    assert_eq!(line["code"], 0, "{line}");
    assert_eq!(replies(&line), expected("v1", "tick", 100), "{line}");
    // Client streaming: 100 messages, one answer after the client's half-close.
    let line = call(&lab, "collect", &["--count", "100"]);
    assert_eq!(line["code"], 0, "{line}");
    let size: usize = (0..100).map(|i| format!("part {i}").len()).sum();
    assert_eq!(replies(&line), vec![format!("v1:100 {size}")], "{line}");

    // The route's fault answers the stream itself with gRPC UNAVAILABLE.
    let line = call(&lab, "chat", &["--count", "3", "--header", "x-fail=yes"]);
    assert_eq!(line["code"], 14, "{line}");
    assert_eq!(replies(&line), Vec::<String>::new(), "{line}");

    // The waypoint counted each stream once, with the status from its trailers.
    let (after, text) = counted(&lab, "0");
    assert_eq!(
        after - before,
        5.0,
        "streams counted with grpc status 0:\n{text}"
    );
    let (aborted, text) = counted(&lab, "14");
    assert_eq!(
        aborted, 1.0,
        "the abort counted with grpc status 14:\n{text}"
    );
}
