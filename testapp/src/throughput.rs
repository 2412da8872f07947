//! `throughput`: N TCP streams writing as fast as the path takes it, into a `serve
//! --tcp-sink-port`. What counts is what write(2) accepted during the measured window: the
//! bytes the kernel took responsibility for, which the receiver drains at the same rate once
//! the socket buffers are full.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::body::CHUNK;
use crate::hist::round;
use crate::{net, out};

pub struct ThroughputArgs {
    pub addr: String,
    pub streams: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
}

#[derive(Serialize)]
struct Report {
    streams: u32,
    duration_ms: u64,
    bytes: u64,
    gbit_per_s: f64,
}

pub async fn run(args: ThroughputArgs) -> Result<bool> {
    // All streams are connected before the clock starts, so setup is not part of the window.
    let setup = async {
        let addrs = net::resolve(&args.addr).await?;
        let (first, target) = net::connect_first(&addrs).await?;
        let mut streams = vec![first];
        for i in 1..args.streams {
            streams.push(
                TcpStream::connect(target)
                    .await
                    .with_context(|| format!("stream {}: connect {target}", i + 1))?,
            );
        }
        anyhow::Ok(streams)
    };
    let streams = match tokio::time::timeout(args.timeout, setup).await {
        Ok(r) => r?,
        Err(_) => bail!(
            "connect {}: timed out after {} ms",
            args.addr,
            args.timeout.as_millis()
        ),
    };

    let from = Instant::now() + args.warmup;
    let until = from + args.duration;
    let mut set = JoinSet::new();
    for stream in streams {
        set.spawn(blast(stream, from, until));
    }
    let mut bytes = 0u64;
    // The streams stop at `until` by themselves; the timeout is the hard bound.
    let hard = (until + args.timeout).into();
    loop {
        match tokio::time::timeout_at(hard, set.join_next()).await {
            Ok(Some(Ok(n))) => bytes += n,
            Ok(Some(Err(e))) => eprintln!("weft-testapp: throughput stream failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                eprintln!("weft-testapp: throughput streams still busy past the hard deadline");
                set.abort_all();
                break;
            }
        }
    }
    out::warn_summary();
    let secs = args.duration.as_secs_f64();
    out::json(&Report {
        streams: args.streams,
        duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
        bytes,
        gbit_per_s: round(bytes as f64 * 8.0 / secs / 1e9, 3),
    })?;
    if bytes == 0 {
        // Exit 1 needs its reason on stderr even when no failure was printed above.
        eprintln!("weft-testapp: no byte was written during the measured window");
        return Ok(false);
    }
    Ok(true)
}

/// Writes 64 KiB buffers until `until`; returns the bytes whose write completed within
/// [from, until). A write straddling a boundary counts by its completion, which is off by at
/// most one buffer per stream per boundary.
async fn blast(mut stream: TcpStream, from: Instant, until: Instant) -> u64 {
    // tokio's timer may fire up to a millisecond late; the clock check below decides, the
    // timer only ends a write that is blocked when time is up.
    let deadline = tokio::time::sleep_until(until.into());
    tokio::pin!(deadline);
    let mut counted = 0u64;
    // Bounded by time: every pass is one write, and the loop ends at `until`.
    loop {
        tokio::select! {
            biased;
            () = &mut deadline => break,
            written = stream.write(&CHUNK) => {
                let now = Instant::now();
                match written {
                    Ok(0) => {
                        out::warn_limited(format_args!("throughput stream: write returned 0"));
                        break;
                    }
                    Ok(n) if now >= from && now < until => counted += n as u64,
                    Ok(_) if now >= until => break,
                    Ok(_) => {}
                    Err(e) => {
                        out::warn_limited(format_args!("throughput stream: {e}"));
                        break;
                    }
                }
            }
        }
    }
    // Dropping closes: the kernel still delivers what is queued, then sends FIN.
    counted
}
