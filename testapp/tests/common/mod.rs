//! Helpers shared by the test binaries: a `serve` per test on its own ports, killed on drop,
//! and runs of the client subcommands against it.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_weft-testapp");

/// Ports handed out in this process: tests run in parallel threads, and two of them must not
/// be given the same just-released port.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("bind an ephemeral port: {e}"));
        let mut used = USED_PORTS.lock().unwrap_or_else(|p| p.into_inner());
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A running `serve` with one port of each kind.
pub struct Server {
    /// Kills the process when the Server goes out of scope, even on a failed assertion.
    pub child: Guard,
    pub http: u16,
    pub echo: u16,
    pub sink: u16,
}

/// A running `serve`, killed on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const IDENTITY: &[(&str, &str)] = &[
    ("POD_NAME", "web-7f9c"),
    ("POD_NAMESPACE", "shop"),
    ("POD_VERSION", "v2"),
    ("POD_SERVICE_ACCOUNT", "web-sa"),
    ("NODE_NAME", "node-a"),
];

/// Starts `serve ARGS` and returns it with its "listening" line, which it prints once every
/// port is bound.
pub fn serve(args: &[&str]) -> (Guard, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .envs(IDENTITY.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let stdout = child.stdout.take();
    // Guard first, so the child dies even if it never becomes ready.
    let guard = Guard(child);

    // Wait for the line, bounded.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server did not report listening: {e}"));
    (guard, line.trim_end().to_owned())
}

/// A server with one HTTP, one echo and one sink port.
pub fn start(extra: &[&str]) -> Server {
    let (http, echo, sink) = (free_port(), free_port(), free_port());
    let (http_s, echo_s, sink_s) = (http.to_string(), echo.to_string(), sink.to_string());
    let mut args = vec![
        "--http-port",
        &http_s,
        "--tcp-echo-port",
        &echo_s,
        "--tcp-sink-port",
        &sink_s,
    ];
    args.extend_from_slice(extra);
    let (child, line) = serve(&args);
    let server = Server {
        child,
        http,
        echo,
        sink,
    };
    assert_eq!(
        line,
        format!("listening http=[{http}] echo=[{echo}] sink=[{sink}]")
    );
    server
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"))
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON {l:?}: {e}")))
        .collect()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
