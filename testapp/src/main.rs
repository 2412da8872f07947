//! weft-testapp: the lab's test application. `serve` runs in pods; `get`, `tcp` and
//! `connects` are the clients tests run from other pods; `throughput`, `load` and `connrate`
//! are the load generators of `cargo xtask bench`. Every result goes to stdout as JSON (one
//! object per line) so tests can parse it; diagnostics go to stderr.

mod body;
mod calls;
mod client;
mod connrate;
mod controls;
mod echo;
mod h1;
mod hist;
mod load;
mod message;
mod net;
mod out;
mod rng;
mod server;
mod sink;
mod tcp;
mod throughput;
mod timer;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft-testapp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/1.1 + h2c that reports identity and request, and/or TCP echo and sink.
    Serve {
        /// HTTP port (repeatable). Default 8080 when no port at all is given; 0 picks one.
        #[arg(long = "http-port")]
        http_ports: Vec<u16>,
        /// TCP echo port (repeatable).
        #[arg(long = "tcp-echo-port")]
        tcp_echo_ports: Vec<u16>,
        /// TCP sink port (repeatable): reads and discards everything, for `throughput`.
        #[arg(long = "tcp-sink-port")]
        tcp_sink_ports: Vec<u16>,
        /// gRPC port serving `grpc.health.v1.Health` (repeatable), for the kubelet's `grpc`
        /// probes: SERVING, or NOT_SERVING while health is failing.
        #[arg(long = "grpc-health-port")]
        grpc_health_ports: Vec<u16>,
        /// Start with health failing: `/healthz` answers 503 and gRPC health NOT_SERVING
        /// until `POST /control/health?state=serving`.
        #[arg(long)]
        unhealthy: bool,
        /// Default probability (0.0-1.0) of answering 500.
        #[arg(long, default_value = "0", value_parser = controls::fail_rate_flag)]
        fail_rate: f64,
        /// Default delay before answering, in ms (capped at 60000).
        #[arg(long, default_value = "0", value_parser = controls::delay_ms_flag)]
        delay_ms: u64,
        /// Call this URL for every request answered, passing on the user and trace
        /// headers, and report what it answered (repeatable; Bookinfo's productpage).
        #[arg(long = "call")]
        calls: Vec<String>,
    },
    /// Send HTTP requests and print one JSON line per response.
    Get {
        /// http://host[:port]/path?query
        url: String,
        /// Extra request header 'Name: value' (repeatable). A Host header sets the authority.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// HTTP/2 with prior knowledge (h2c).
        #[arg(long)]
        http2: bool,
        /// Requests sent one after another on one keep-alive connection.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Per-request timeout (connect + response + body), in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Size of the request body to upload.
        #[arg(long, default_value_t = 0)]
        body_bytes: u64,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Exit 1 if any response has another status.
        #[arg(long)]
        expect_status: Option<u16>,
        /// Request trailer 'name:value' (repeatable), sent after the body (streamed, so over
        /// HTTP/1.1 chunked with a `Trailer` header and `TE: trailers`).
        #[arg(long = "trailer")]
        trailers: Vec<String>,
    },
    /// Send text to a TCP echo and check it comes back unchanged.
    Tcp {
        /// host:port
        addr: String,
        #[arg(long, default_value = "hello weft\n")]
        send: String,
        /// Per-connection timeout, in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Number of fresh connections.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
    /// Open and immediately close N connections, one after another.
    Connects {
        /// host:port
        addr: String,
        #[arg(long)]
        count: u32,
        /// Per-connection timeout, in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// TCP throughput into a `serve --tcp-sink-port`: one JSON line with the bytes written.
    Throughput {
        /// host:port
        addr: String,
        /// Parallel connections.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        streams: u32,
        /// Measured time, in ms.
        #[arg(long, value_parser = run_ms())]
        duration_ms: u64,
        /// Unmeasured time before it (slow start, buffer growth), in ms.
        #[arg(long, default_value_t = 0, value_parser = warmup_ms())]
        warmup_ms: u64,
        /// Connect timeout, and how far past the run the command may overrun, in ms.
        #[arg(long, default_value_t = 5000, value_parser = run_ms())]
        timeout_ms: u64,
        /// Runtime threads; 1 runs everything on the main thread.
        #[arg(long, default_value_t = 1, value_parser = threads())]
        threads: u16,
    },
    /// Open-loop HTTP/1.1 load at a fixed rate (or closed loop with --rate 0): one JSON line
    /// with counts and latency percentiles.
    Load {
        /// http://host[:port]/path?query, or https:// (with --cacert)
        url: String,
        /// Connect here (host:port) instead of the URL's host, which stays the Host header
        /// and the TLS server name (curl's --connect-to).
        #[arg(long)]
        connect: Option<String>,
        /// PEM certificates an https:// server must chain to.
        #[arg(long)]
        cacert: Option<std::path::PathBuf>,
        /// Requests per second, scheduled at fixed intervals; 0 = closed loop at saturation.
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        rate: u64,
        /// Measured time, in ms.
        #[arg(long, value_parser = run_ms())]
        duration_ms: u64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        connections: u32,
        /// Unmeasured time before it, in ms.
        #[arg(long, default_value_t = 0, value_parser = warmup_ms())]
        warmup_ms: u64,
        /// Per-request timeout, and how far past the run the command may overrun, in ms.
        #[arg(long, default_value_t = 5000, value_parser = run_ms())]
        timeout_ms: u64,
        /// Size of each request's body.
        #[arg(long, default_value_t = 0)]
        body_bytes: u64,
        /// Runtime threads; 1 runs everything on the main thread.
        #[arg(long, default_value_t = 1, value_parser = threads())]
        threads: u16,
    },
    /// New connections per second (connect, one exchange, close): one JSON line.
    Connrate {
        /// host:port: a TCP echo, or an HTTP port with --http.
        addr: String,
        /// Time during which new connections start, in ms.
        #[arg(long, value_parser = run_ms())]
        duration_ms: u64,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        concurrency: u32,
        /// Send `GET /healthz` with `Connection: close` instead of one byte to an echo.
        #[arg(long)]
        http: bool,
        /// Per-connection timeout, and how far past the run the command may overrun, in ms.
        #[arg(long, default_value_t = 5000, value_parser = run_ms())]
        timeout_ms: u64,
        /// Runtime threads; 1 runs everything on the main thread.
        #[arg(long, default_value_t = 1, value_parser = threads())]
        threads: u16,
    },
}

/// A day: longer runs are typos, and the cap keeps deadline arithmetic far from overflow.
const MAX_RUN_MS: u64 = 86_400_000;

fn run_ms() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=MAX_RUN_MS)
}

fn warmup_ms() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(0..=MAX_RUN_MS)
}

fn threads() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=256)
}

impl Command {
    fn threads(&self) -> u16 {
        match self {
            Command::Throughput { threads, .. }
            | Command::Load { threads, .. }
            | Command::Connrate { threads, .. } => *threads,
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // One thread unless a generator asks for more: many instances share a 2-core lab machine,
    // and a generator should not take CPU from the path it measures.
    let runtime = match command.threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(run(command)),
        Err(e) => Err(anyhow::anyhow!(e).context("start the tokio runtime")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("weft-testapp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false) is a clean run whose outcome was a failure (already explained on stderr).
async fn run(command: Command) -> Result<bool> {
    match command {
        Command::Serve {
            mut http_ports,
            tcp_echo_ports,
            tcp_sink_ports,
            grpc_health_ports,
            unhealthy,
            fail_rate,
            delay_ms,
            calls,
        } => {
            if http_ports.is_empty()
                && tcp_echo_ports.is_empty()
                && tcp_sink_ports.is_empty()
                && grpc_health_ports.is_empty()
            {
                http_ports.push(8080);
            }
            let defaults = controls::Defaults {
                fail_rate,
                delay_ms,
            };
            server::run(server::Config {
                http_ports,
                echo_ports: tcp_echo_ports,
                sink_ports: tcp_sink_ports,
                grpc_health_ports,
                healthy: !unhealthy,
                calls,
                defaults,
            })
            .await?;
            Ok(true)
        }
        Command::Get {
            url,
            headers,
            http2,
            count,
            timeout_ms,
            body_bytes,
            method,
            expect_status,
            trailers,
        } => {
            let args = client::GetArgs {
                url,
                headers,
                http2,
                count,
                timeout: Duration::from_millis(timeout_ms),
                body_bytes,
                method,
                expect_status,
                trailers,
            };
            client::run(args).await
        }
        Command::Tcp {
            addr,
            send,
            timeout_ms,
            repeat,
        } => {
            tcp::echo(&addr, &send, Duration::from_millis(timeout_ms), repeat).await?;
            Ok(true)
        }
        Command::Connects {
            addr,
            count,
            timeout_ms,
        } => tcp::connects(&addr, count, Duration::from_millis(timeout_ms)).await,
        Command::Throughput {
            addr,
            streams,
            duration_ms,
            warmup_ms,
            timeout_ms,
            threads: _,
        } => {
            throughput::run(throughput::ThroughputArgs {
                addr,
                streams,
                duration: Duration::from_millis(duration_ms),
                warmup: Duration::from_millis(warmup_ms),
                timeout: Duration::from_millis(timeout_ms),
            })
            .await
        }
        Command::Load {
            url,
            connect,
            cacert,
            rate,
            duration_ms,
            connections,
            warmup_ms,
            timeout_ms,
            body_bytes,
            threads: _,
        } => {
            load::run(load::LoadArgs {
                url,
                connect,
                cacert,
                rate,
                duration: Duration::from_millis(duration_ms),
                warmup: Duration::from_millis(warmup_ms),
                connections,
                timeout: Duration::from_millis(timeout_ms),
                body_bytes,
            })
            .await
        }
        Command::Connrate {
            addr,
            duration_ms,
            concurrency,
            http,
            timeout_ms,
            threads: _,
        } => {
            connrate::run(connrate::ConnrateArgs {
                addr,
                duration: Duration::from_millis(duration_ms),
                concurrency,
                http,
                timeout: Duration::from_millis(timeout_ms),
            })
            .await
        }
    }
}
