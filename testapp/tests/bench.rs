//! The load generators (`throughput`, `load`, `connrate`) against a local `serve`. Runs are
//! short (≤ 1 s) and the assertions are about shape and accounting, not speed: the machine is
//! shared and the binaries are debug builds.

mod common;

use serde_json::Value;

use common::{describe, free_port, json_lines, run, serve, start};

/// Runs a generator that must succeed and print exactly one JSON object with `keys`.
fn one_line(args: &[&str], keys: &[&str]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let line = lines.remove(0);
    let mut got: Vec<&str> = line
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{line}");
    line
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {v}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

const LOAD_KEYS: &[&str] = &[
    "rate",
    "sent",
    "ok",
    "errors",
    "duration_ms",
    "achieved_rps",
    "latency_us",
];

/// p50 ≤ p90 ≤ p99 ≤ max, all present; returns (p50, p99).
fn ordered_latency(line: &Value) -> (u64, u64) {
    let lat = &line["latency_us"];
    let [p50, p90, p99, max] = ["p50", "p90", "p99", "max"].map(|k| u(lat, k));
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{line}");
    assert!(f(lat, "mean") > 0.0, "{line}");
    (p50, p99)
}

#[test]
fn serve_sink_only() {
    let port = free_port();
    let (_server, line) = serve(&["--tcp-sink-port", &port.to_string()]);
    // No implicit 8080 when only a sink is asked for.
    assert_eq!(line, format!("listening http=[] echo=[] sink=[{port}]"));
}

#[test]
fn throughput_into_sink() {
    let server = start(&[]);
    let addr = format!("127.0.0.1:{}", server.sink);
    let line = one_line(
        &[
            "throughput",
            &addr,
            "--streams",
            "2",
            "--duration-ms",
            "300",
            "--warmup-ms",
            "100",
        ],
        &["streams", "duration_ms", "bytes", "gbit_per_s"],
    );
    assert_eq!(u(&line, "streams"), 2);
    assert_eq!(u(&line, "duration_ms"), 300);
    let bytes = u(&line, "bytes");
    let gbit = f(&line, "gbit_per_s");
    assert!(bytes > 0, "{line}");
    // Decimal gigabits over the measured 300 ms, rounded to 3 places.
    let expected = bytes as f64 * 8.0 / 0.3 / 1e9;
    assert!((gbit - expected).abs() < 0.001, "{line}");
    // Loopback: at least tens of Mbit/s even for a debug build on a busy machine.
    assert!((0.01..1000.0).contains(&gbit), "{line}");
}

#[test]
fn throughput_connect_failure_exits_1() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run(&["throughput", &addr, "--duration-ms", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn load_open_loop_sends_the_schedule() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/bytes?n=1024", server.http);
    let line = one_line(
        &["load", &url, "--rate", "200", "--duration-ms", "1000"],
        LOAD_KEYS,
    );
    assert_eq!(u(&line, "rate"), 200);
    let sent = u(&line, "sent");
    assert!((180..=220).contains(&sent), "{line}");
    assert_eq!(u(&line, "ok"), sent, "{line}");
    assert_eq!(u(&line, "errors"), 0, "{line}");
    assert!(u(&line, "duration_ms") >= 1000, "{line}");
    let rps = f(&line, "achieved_rps");
    assert!((180.0..=220.0).contains(&rps), "{line}");
    ordered_latency(&line);
}

#[test]
fn load_closed_loop_saturates() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/", server.http);
    let line = one_line(
        &[
            "load",
            &url,
            "--rate",
            "0",
            "--duration-ms",
            "300",
            "--connections",
            "2",
        ],
        LOAD_KEYS,
    );
    assert_eq!(u(&line, "rate"), 0);
    assert!(u(&line, "ok") > 0, "{line}");
    assert_eq!(u(&line, "ok"), u(&line, "sent"), "{line}");
    assert_eq!(u(&line, "errors"), 0, "{line}");
    assert!(f(&line, "achieved_rps") > 0.0, "{line}");
    ordered_latency(&line);
}

/// Two connections to a server that takes 50 ms per request serve 40 requests/s. At 100/s
/// the backlog grows by 60 a second, and latency measured from the schedule must show it:
/// the 50th request, due at 490 ms, is answered only around 1250 ms. A generator that timed
/// from the actual send (coordinated omission) would report ~50 ms throughout.
#[test]
fn load_latency_counts_queueing_from_the_schedule() {
    let server = start(&["--delay-ms", "50"]);
    let url = format!("http://127.0.0.1:{}/", server.http);
    let line = one_line(
        &[
            "load",
            &url,
            "--rate",
            "100",
            "--duration-ms",
            "500",
            "--connections",
            "2",
        ],
        LOAD_KEYS,
    );
    assert_eq!(u(&line, "sent"), 50, "{line}");
    assert_eq!(u(&line, "ok"), 50, "{line}");
    assert_eq!(u(&line, "errors"), 0, "{line}");
    let (p50, p99) = ordered_latency(&line);
    assert!(p50 > 200_000, "p50 {p50} µs: {line}");
    assert!(p99 > 500_000, "p99 {p99} µs: {line}");
    // The path answered at its capacity, well below the asked rate.
    assert!(f(&line, "achieved_rps") < 60.0, "{line}");
}

/// The control for the test above: below capacity the same server shows its 50 ms, not more.
#[test]
fn load_latency_below_capacity_is_the_service_time() {
    let server = start(&["--delay-ms", "50"]);
    let url = format!("http://127.0.0.1:{}/", server.http);
    let line = one_line(
        &[
            "load",
            &url,
            "--rate",
            "20",
            "--duration-ms",
            "500",
            "--connections",
            "2",
        ],
        LOAD_KEYS,
    );
    assert_eq!(u(&line, "ok"), 10, "{line}");
    let (p50, p99) = ordered_latency(&line);
    assert!(p50 >= 50_000, "p50 {p50} µs: {line}");
    // Generous: a busy machine can delay a wakeup, but not by a backlog's worth.
    assert!(p99 < 150_000, "p99 {p99} µs: {line}");
}

#[test]
fn load_refused_exits_1() {
    let url = format!("http://127.0.0.1:{}/", free_port());
    let out = run(&["load", &url, "--rate", "10", "--duration-ms", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn connrate_tcp_and_http() {
    let server = start(&[]);
    let echo = format!("127.0.0.1:{}", server.echo);
    let http = format!("127.0.0.1:{}", server.http);
    for args in [
        vec!["connrate", &echo, "--duration-ms", "300"],
        vec![
            "connrate",
            &http,
            "--duration-ms",
            "300",
            "--http",
            "--concurrency",
            "2",
        ],
    ] {
        let line = one_line(
            &args,
            &["connections", "errors", "per_second", "connect_us"],
        );
        assert!(u(&line, "connections") > 0, "{line}");
        assert_eq!(u(&line, "errors"), 0, "{line}");
        assert!(f(&line, "per_second") > 0.0, "{line}");
        let lat = &line["connect_us"];
        let (p50, p99) = (u(lat, "p50"), u(lat, "p99"));
        assert!(0 < p50 && p50 <= p99, "{line}");
    }
}
