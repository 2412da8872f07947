//! `weftctl analyze` as a user runs it, on the broken configurations of
//! `cli/tests/analyze/` (each says what it must bring in its `# expect:` line) and on the
//! repository's examples.
use std::path::{Path, PathBuf};
use std::process::Command;

fn weftctl(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .output()
        .expect("weftctl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("cli/tests/analyze")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
}

/// `Error IST0101 VirtualService default/reviews spec.gateways[0]` as the line istioctl
/// would print begins: `Error [IST0101] (VirtualService default/reviews ` and, after the
/// origin, `) spec.gateways[0]: `.
fn expected(file: &Path) -> (String, String, Option<String>) {
    let text = std::fs::read_to_string(file).expect("a case");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("an expect line");
    let words: Vec<&str> = line.splitn(5, ' ').collect();
    let object = if words[2] == "-" {
        String::new()
    } else {
        format!(" ({} {} ", words[2], words[3])
    };
    let field = (words[4] != "-").then(|| format!(") {}: ", words[4]));
    (
        words[0].to_string(),
        format!("{} [{}]{object}", words[0], words[1]),
        field,
    )
}

#[test]
fn each_broken_configuration_is_reported_with_its_code_object_and_field() {
    let cases = cases();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    for file in cases {
        let path = file.to_str().expect("utf-8 path");
        let (code, out) = weftctl(&["analyze", "--output-threshold", "info", "-f", path]);
        let (level, start, field) = expected(&file);
        let line = out
            .lines()
            .find(|l| l.starts_with(&start) && field.as_ref().is_none_or(|f| l.contains(f)));
        assert!(
            line.is_some(),
            "{path}: no line {start}…{field:?} in:\n{out}"
        );
        let errors = out.lines().any(|l| l.starts_with("Error ["));
        assert_eq!(code, if errors { 79 } else { 0 }, "{path}:\n{out}");
        if level == "Error" {
            assert_eq!(code, 79, "{path}:\n{out}");
        }
    }
}

#[test]
fn json_output_names_level_code_object_and_field() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze/gateway-not-found.yaml");
    let (code, out) = weftctl(&["analyze", "-o", "json", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 79, "{out}");
    let messages: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let first = &messages[0];
    assert_eq!(first["level"], "Error", "{out}");
    assert_eq!(first["code"], "IST0101", "{out}");
    assert_eq!(first["name"], "ReferencedResourceNotFound", "{out}");
    assert_eq!(first["object"]["kind"], "VirtualService", "{out}");
    assert_eq!(first["object"]["namespace"], "default", "{out}");
    assert_eq!(first["object"]["name"], "reviews", "{out}");
    assert_eq!(first["field"], "spec.gateways[0]", "{out}");
}

#[test]
fn warnings_alone_exit_zero_and_info_is_hidden_by_default() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze/port-name.yaml");
    let (code, out) = weftctl(&["analyze", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No validation issues found"), "{out}");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze/unknown-field.yaml");
    let (code, out) = weftctl(&[
        "analyze",
        "--failure-threshold",
        "warning",
        "-f",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        code, 79,
        "--failure-threshold warning fails on a warning:\n{out}"
    );
}

#[test]
fn the_examples_of_the_repository_bring_no_error() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, out) = weftctl(&["analyze", "-f", examples.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Error ["), "{out}");
}

#[test]
fn an_agent_that_does_not_answer_is_said_so() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let admin = format!("127.0.0.1:{port}");
    let (code, out) = weftctl(&["analyze", "--admin", &admin]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach agent admin"), "{out}");
}

/// An agent's admin on loopback that answers one `GET /config_dump` with `dump`.
fn admin_answering(dump: serde_json::Value) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("weftctl connects");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        reader.read_line(&mut request_line).expect("request line");
        let mut line = String::new();
        while reader.read_line(&mut line).expect("header") > 2 {
            line.clear();
        }
        let body = dump.to_string();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("answer");
        request_line
    });
    (admin, server)
}

#[test]
fn an_agents_refusals_and_warnings_are_analyzed_over_its_admin() {
    let (admin, server) = admin_answering(serde_json::json!({
        "node": "node-1",
        "refused": [{"kind": "VirtualService", "namespace": "shop", "name": "bad",
                     "field": "spec.http[0].route[1].weight",
                     "reason": "the weights of the 2 destinations sum to 90, not 100",
                     "origin": null}],
        "warnings": [{"kind": "Gateway", "namespace": "shop", "name": "web",
                      "field": "spec.servers[0].tls.credentialName",
                      "reason": "no Secret web-credential of type kubernetes.io/tls in namespace istio-system, where the gateway reads its credentials: this server refuses TLS connections until there is",
                      "origin": null}]
    }));
    let (code, out) = weftctl(&["analyze", "--admin", &admin]);
    let request = server.join().expect("the admin answered");
    assert!(request.starts_with("GET /config_dump "), "{request}");
    assert_eq!(code, 79, "{out}");
    assert!(
        out.contains(
            "Error [IST0106] (VirtualService shop/bad) spec.http[0].route[1].weight: the weights"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "Warning [IST0101] (Gateway shop/web) spec.servers[0].tls.credentialName: no Secret"
        ),
        "{out}"
    );
}
