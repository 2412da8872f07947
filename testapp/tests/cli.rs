//! Runs the built binary on loopback: a server per test on its own ports, clients against it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{describe, free_port, json_lines, run, start};

#[test]
fn reports_identity_and_request() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/hello?x=1", server.http);
    let out = run(&[
        "get",
        &url,
        "-H",
        "X-Multi: a",
        "-H",
        "x-multi: b",
        "--method",
        "POST",
        "--body-bytes",
        "200000",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let line = &lines[0];
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["headers"]["x-testapp-pod"],
        serde_json::json!(["web-7f9c"])
    );
    assert_eq!(
        line["headers"]["x-testapp-version"],
        serde_json::json!(["v2"])
    );
    assert_eq!(
        line["headers"]["content-type"],
        serde_json::json!(["application/json"])
    );

    let body = &line["body"];
    for (field, value) in [
        ("pod", "web-7f9c"),
        ("namespace", "shop"),
        ("version", "v2"),
        ("service_account", "web-sa"),
        ("node", "node-a"),
        ("method", "POST"),
        ("path", "/hello?x=1"),
        ("http_version", "HTTP/1.1"),
    ] {
        assert_eq!(body[field], value, "{field}: {body}");
    }
    assert_eq!(body["status"], 200);
    assert_eq!(body["body_bytes"], 200_000);
    assert_eq!(body["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert_eq!(
        body["headers"]["host"],
        serde_json::json!([format!("127.0.0.1:{}", server.http)])
    );
    // Both ends of the one TCP connection, seen from each side.
    assert_eq!(body["peer"], line["local"]);
    assert_eq!(body["local"], line["peer"]);
    assert_eq!(line["peer"], format!("127.0.0.1:{}", server.http));
}

#[test]
fn expect_status_fails_on_injected_status() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/?status=503", server.http);
    let out = run(&["get", &url, "--expect-status", "200"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["status"], 503);
    assert_eq!(lines[0]["body"]["status"], 503);

    let out = run(&["get", &url, "--expect-status", "503"]);
    assert!(out.status.success(), "{}", describe(&out));

    // The same control as a header; without --expect-status any response is a success.
    let url = format!("http://127.0.0.1:{}/", server.http);
    let out = run(&["get", &url, "-H", "x-testapp-status: 418"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(json_lines(&out)[0]["status"], 418);
}

#[test]
fn invalid_control_is_400_naming_it() {
    let server = start(&[]);
    let url = format!("http://127.0.0.1:{}/?fail_rate=2", server.http);
    let out = run(&["get", &url]);
    assert!(out.status.success(), "{}", describe(&out));
    let line = &json_lines(&out)[0];
    assert_eq!(line["status"], 400);
    let error = line["body"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("fail_rate"), "{error}");
}

#[test]
fn fail_rate_one_always_fails_but_healthz_does_not() {
    let server = start(&["--fail-rate", "1"]);
    let url = format!("http://127.0.0.1:{}/", server.http);
    let out = run(&["get", &url, "--count", "3"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{}", describe(&out));
    assert!(
        lines.iter().all(|l| l["status"] == 500),
        "{}",
        describe(&out)
    );

    let url = format!("http://127.0.0.1:{}/healthz", server.http);
    let out = run(&["get", &url, "--expect-status", "200"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(json_lines(&out)[0]["body"], "ok");
}

#[test]
fn http2_prior_knowledge_on_one_connection() {
    let server = start(&[]);
    let url = format!("http://localhost:{}/h2", server.http);
    let out = run(&[
        "get",
        &url,
        "--http2",
        "--count",
        "3",
        "--expect-status",
        "200",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["body"]["http_version"], "HTTP/2.0", "{line}");
        assert_eq!(line["body"]["pod"], "web-7f9c");
        // Keep-alive: every request on the first request's connection.
        assert_eq!(line["local"], lines[0]["local"]);
    }
}

#[test]
fn bytes_streams_the_asked_size() {
    let server = start(&[]);
    for http2 in [false, true] {
        let url = format!("http://127.0.0.1:{}/bytes?n=3000000", server.http);
        let mut args = vec!["get", url.as_str()];
        if http2 {
            args.push("--http2");
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let line = &json_lines(&out)[0];
        assert_eq!(line["body_bytes"], 3_000_000, "http2={http2}");
        assert_eq!(
            line["headers"]["content-type"],
            serde_json::json!(["application/octet-stream"])
        );
    }
}

#[test]
fn tcp_echo_returns_the_bytes() {
    let server = start(&[]);
    let addr = format!("127.0.0.1:{}", server.echo);
    let text = "weft echo test: 0123456789\n";
    let out = run(&["tcp", &addr, "--send", text, "--repeat", "3"]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 6, "{}", describe(&out));
    for pair in lines.chunks(2) {
        assert_eq!(pair[0]["peer"], addr);
        assert_eq!(pair[1]["echoed"], text);
        assert_eq!(pair[1]["bytes"], text.len());
    }
}

#[test]
fn connects_counts_every_connection() {
    let server = start(&[]);
    let addr = format!("127.0.0.1:{}", server.echo);
    let out = run(&["connects", &addr, "--count", "20"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        json_lines(&out),
        vec![serde_json::json!({"ok": 20, "failed": 0})]
    );
}

#[test]
fn refused_connections_exit_1() {
    // Reserved but never listened on.
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run(&["connects", &addr, "--count", "2", "--timeout-ms", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        json_lines(&out),
        vec![serde_json::json!({"ok": 0, "failed": 2})]
    );

    let out = run(&["get", &format!("http://{addr}/"), "--timeout-ms", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn sigterm_exits_cleanly() {
    let mut server = start(&[]);
    let pid = server.child.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    // Bounded wait: poll rather than block forever if the signal were ignored.
    for _ in 0..100 {
        if let Ok(Some(status)) = server.child.0.try_wait() {
            assert!(status.success(), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server still running 5 s after SIGTERM");
}
