//! The soak's traffic: each kind is a weft-testapp client in the client pod, run in rounds
//! of bounded length one after another until the soak ends, so no connection outlives a
//! round (an agent being upgraded drains within one). Each round's JSON report adds to the
//! kind's tally; a round whose client fails outright (no report) counts all it meant to do
//! as failed.
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::Lab;

/// How a kind's client reports what it did: (attempts, failures) from its stdout.
#[derive(Clone, Copy, Debug)]
pub enum Parse {
    /// `load`: requests sent, and those without a 2xx answer.
    Load,
    /// `connrate`: connections completed and failed.
    Connrate,
    /// `throughput`: streams, all failed when the run fails.
    Throughput,
    /// `get`: one line per response; those with another status than 200 failed.
    Get,
    /// `tcp`: a line per connection echoed; those missing failed.
    Echo,
}

/// One kind of traffic.
#[derive(Clone, Debug)]
pub struct Kind {
    pub name: &'static str,
    /// Whether it goes through the waypoint.
    pub waypoint: bool,
    /// weft-testapp's arguments; `{ms}` is replaced by the round's length in ms.
    pub args: Vec<String>,
    pub parse: Parse,
    /// Of each round, how long the client runs (the rest idle): bulk streams saturate the
    /// machine's CPUs, so they run a short part of each round.
    pub busy: Option<Duration>,
}

/// What one kind did over the soak.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    pub kind: String,
    pub waypoint: bool,
    pub rounds: u64,
    pub attempts: u64,
    pub failures: u64,
    /// Rounds whose client failed outright, with their message (the first few).
    pub failed_rounds: u64,
    pub messages: Vec<String>,
}

const KEPT_MESSAGES: usize = 5;
/// The end of a client's stderr kept in a message.
const KEPT_STDERR: usize = 400;

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().rev().nth(KEPT_STDERR) {
        Some((at, _)) => format!("…{}", &text[at..]),
        None => text.to_string(),
    }
}

impl Tally {
    fn note(&mut self, message: String) {
        if self.messages.len() < KEPT_MESSAGES {
            self.messages.push(message);
        }
    }
}

/// (attempts, failures) of one round's stdout.
pub fn parse(parse: Parse, stdout: &str, expected: u64) -> Option<(u64, u64)> {
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .ok()?;
    let number = |v: &Value, field: &str| v[field].as_u64();
    match parse {
        Parse::Load => {
            let r = lines.last()?;
            Some((number(r, "sent")?, number(r, "errors")?))
        }
        Parse::Connrate => {
            let r = lines.last()?;
            let (ok, errors) = (number(r, "connections")?, number(r, "errors")?);
            Some((ok + errors, errors))
        }
        Parse::Throughput => {
            let r = lines.last()?;
            number(r, "bytes").map(|_| (expected, 0))
        }
        Parse::Get => {
            let failed = lines.iter().filter(|l| l["status"] != 200).count() as u64;
            let answered = lines.len() as u64;
            Some((
                expected.max(answered),
                failed + expected.saturating_sub(answered),
            ))
        }
        Parse::Echo => {
            let echoed = lines.iter().filter(|l| l.get("echoed").is_some()).count() as u64;
            Some((expected, expected.saturating_sub(echoed)))
        }
    }
}

/// How many attempts a round that failed outright stands for (its share of the plan).
pub fn planned(kind: &Kind, round: Duration) -> u64 {
    let flag = |name: &str| {
        kind.args
            .iter()
            .position(|a| a == name)
            .and_then(|i| kind.args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match kind.parse {
        Parse::Load => flag("--rate").unwrap_or(1) * round.as_secs().max(1),
        Parse::Throughput => flag("--streams").unwrap_or(1),
        Parse::Get => flag("--count").unwrap_or(1),
        Parse::Echo => flag("--repeat").unwrap_or(1),
        Parse::Connrate => 1,
    }
}

/// Runs weft-testapp with `args` in `pod` once, `expected` attempts, and adds what it did
/// to `tally` (`at`: when, in seconds since the soak began, for the messages).
#[allow(clippy::too_many_arguments)]
pub fn once(
    lab: &RwLock<Lab>,
    testapp: &PathBuf,
    pod: &str,
    args: &[String],
    how: Parse,
    expected: u64,
    at: f64,
    tally: &mut Tally,
) {
    let command = {
        let lab = lab
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lab.pod_command(pod, testapp)
    };
    tally.rounds += 1;
    let output = command.and_then(|mut c| {
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(crate::LabError::io(format!(
                "running weft-testapp in {pod}"
            )))
    });
    match output {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match parse(how, &stdout, expected) {
                Some((attempts, failures)) if out.status.success() || failures > 0 => {
                    tally.attempts += attempts;
                    tally.failures += failures;
                    if failures > 0 {
                        tally.note(format!(
                            "{failures} of {attempts} at {at:.0} s ({}): {}",
                            args.join(" "),
                            tail(&out.stderr)
                        ));
                    }
                }
                _ => {
                    tally.failed_rounds += 1;
                    tally.attempts += expected;
                    tally.failures += expected;
                    tally.note(format!(
                        "the client started at {at:.0} s failed ({}; {}): {}",
                        out.status,
                        args.join(" "),
                        tail(&out.stderr)
                    ));
                }
            }
        }
        Err(e) => {
            tally.failed_rounds += 1;
            tally.attempts += expected;
            tally.failures += expected;
            tally.note(e.to_string());
        }
    }
}

/// Runs `kind` from `pod` in rounds of `round` from `started` until `end`; returns its
/// tally.
pub fn run(
    lab: &RwLock<Lab>,
    testapp: &PathBuf,
    pod: &str,
    kind: &Kind,
    round: Duration,
    (started, end): (Instant, Instant),
) -> Tally {
    let mut tally = Tally {
        kind: kind.name.to_string(),
        waypoint: kind.waypoint,
        ..Tally::default()
    };
    loop {
        let round_start = Instant::now();
        let left = end.saturating_duration_since(round_start);
        // A round shorter than 2 s is not worth a client.
        if left < Duration::from_secs(2) {
            return tally;
        }
        let length = round.min(left);
        let busy = kind.busy.map_or(length, |b| b.min(length));
        let args: Vec<String> = kind
            .args
            .iter()
            .map(|a| a.replace("{ms}", &busy.as_millis().to_string()))
            .collect();
        let at = round_start.duration_since(started).as_secs_f64();
        once(
            lab,
            testapp,
            pod,
            &args,
            kind.parse,
            planned(kind, busy),
            at,
            &mut tally,
        );
        // The rest of the round idle (bulk streams), then the next.
        let next = round_start + length;
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_per_kind() {
        let load = r#"{"rate":40,"sent":600,"ok":598,"errors":2,"duration_ms":15000}"#;
        assert_eq!(parse(Parse::Load, load, 600), Some((600, 2)));
        let connrate = r#"{"connections":300,"errors":1,"per_second":20.0}"#;
        assert_eq!(parse(Parse::Connrate, connrate, 1), Some((301, 1)));
        let get = "{\"status\":200}\n{\"status\":503}\n";
        assert_eq!(
            parse(Parse::Get, get, 3),
            Some((3, 2)),
            "a missing answer failed"
        );
        assert_eq!(parse(Parse::Throughput, "", 2), None);
        let echo = "{\"local\":\"a\",\"peer\":\"b\"}\n{\"echoed\":\"x\",\"bytes\":1}\n";
        assert_eq!(parse(Parse::Echo, echo, 2), Some((2, 1)));
        assert_eq!(parse(Parse::Load, "not json", 1), None);
    }
}
