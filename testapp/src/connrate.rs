//! `connrate`: new connections per second. Each worker loops connect → one tiny exchange →
//! close, so every connection is proven to carry data end to end (through any proxy), and the
//! time reported per connection is all of it, handshake to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::hist::{self, Histogram, Short};
use crate::{h1, net, out};

/// Pause after a failed connection, which would otherwise spin on a refusing target as fast as
/// connect(2) fails.
const BACKOFF: Duration = Duration::from_millis(10);

pub struct ConnrateArgs {
    pub addr: String,
    pub duration: Duration,
    pub concurrency: u32,
    pub http: bool,
    pub timeout: Duration,
}

#[derive(Serialize)]
struct Report {
    connections: u64,
    errors: u64,
    per_second: f64,
    connect_us: Short,
}

struct Shared {
    target: SocketAddr,
    /// `--http`: the request; otherwise one byte goes to an echo.
    request: Option<h1::Request>,
    until: Instant,
    hard: Instant,
    timeout: Duration,
}

struct Tally {
    connections: u64,
    errors: u64,
    latency: Histogram,
    last_done: Option<Instant>,
}

pub async fn run(args: ConnrateArgs) -> Result<bool> {
    // Resolve once and pin the address that answers: a lookup per connection would be
    // measured too. The probe connection also fails a dead target fast.
    let probe = async {
        let addrs = net::resolve(&args.addr).await?;
        net::connect_first(&addrs).await
    };
    let target = match tokio::time::timeout(args.timeout, probe).await {
        Ok(r) => r?.1,
        Err(_) => bail!(
            "connect {}: timed out after {} ms",
            args.addr,
            args.timeout.as_millis()
        ),
    };

    let start = Instant::now();
    let until = start + args.duration;
    let shared = Arc::new(Shared {
        target,
        request: args
            .http
            .then(|| h1::Request::get(&args.addr, "/healthz", 0, true)),
        until,
        hard: until + args.timeout,
        timeout: args.timeout,
    });
    let mut set = JoinSet::new();
    for _ in 0..args.concurrency {
        set.spawn(worker(shared.clone()));
    }
    let mut total = Tally {
        connections: 0,
        errors: 0,
        latency: Histogram::new(),
        last_done: None,
    };
    // Bounded by the workers, which stop by the hard deadline, and by the deadline itself.
    let give_up = (shared.hard + Duration::from_secs(1)).into();
    loop {
        match tokio::time::timeout_at(give_up, set.join_next()).await {
            Ok(Some(Ok(t))) => {
                total.connections += t.connections;
                total.errors += t.errors;
                total.latency.merge(&t.latency);
                total.last_done = total.last_done.max(t.last_done);
            }
            Ok(Some(Err(e))) => eprintln!("weft-testapp: connrate worker failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                eprintln!("weft-testapp: connrate workers still busy past the hard deadline");
                set.abort_all();
                break;
            }
        }
    }
    // Connections started before `until` all count, so the rate runs to the last one's end.
    let span = total
        .last_done
        .map_or(until, |d| d.max(until))
        .saturating_duration_since(start);
    let per_second = if span.is_zero() {
        0.0
    } else {
        total.connections as f64 / span.as_secs_f64()
    };
    out::warn_summary();
    out::json(&Report {
        connections: total.connections,
        errors: total.errors,
        per_second: hist::round(per_second, 1),
        connect_us: total.latency.short(),
    })?;
    if total.connections == 0 {
        // Exit 1 needs its reason on stderr even when no failure was printed above.
        eprintln!("weft-testapp: no connection succeeded");
        return Ok(false);
    }
    Ok(true)
}

async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally {
        connections: 0,
        errors: 0,
        latency: Histogram::new(),
        last_done: None,
    };
    let mut buf = h1::Buffer::new();
    // Bounded by time: every pass starts before `until` and is itself bounded by the timeout.
    loop {
        let started = Instant::now();
        if started >= shared.until {
            break;
        }
        let deadline = (started + shared.timeout).min(shared.hard).into();
        let result = match tokio::time::timeout_at(deadline, one(&shared, &mut buf)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "connection not done within {} ms",
                shared.timeout.as_millis()
            )),
        };
        let done = Instant::now();
        match result {
            Ok(()) => {
                tally.connections += 1;
                tally.latency.record(done - started);
                tally.last_done = Some(done);
            }
            Err(e) => {
                tally.errors += 1;
                out::warn_limited(format_args!("connection to {}: {e:#}", shared.target));
                let resume = (done + BACKOFF).min(shared.until);
                tokio::time::sleep_until(resume.into()).await;
            }
        }
    }
    tally
}

/// One connection: connect, exchange, close (on drop).
async fn one(shared: &Shared, buf: &mut h1::Buffer) -> Result<()> {
    let mut stream = TcpStream::connect(shared.target).await.context("connect")?;
    match &shared.request {
        Some(req) => {
            let _ = stream.set_nodelay(true);
            buf.clear();
            let resp = h1::exchange(&mut stream, buf, req).await?;
            if !(200..300).contains(&resp.status) {
                bail!("status {}", resp.status);
            }
        }
        None => {
            stream.write_all(b"w").await.context("send")?;
            let mut back = [0u8; 1];
            stream.read_exact(&mut back).await.context("read echo")?;
            if back != *b"w" {
                bail!("echo returned {:?} for \"w\"", back[0] as char);
            }
        }
    }
    Ok(())
}
