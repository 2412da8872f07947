//! weft-testapp: the lab's test application. `serve` runs in pods; `get`, `tcp` and
//! `connects` are the clients tests run from other pods. Every result goes to stdout as JSON
//! (one object per line) so tests can parse it; diagnostics go to stderr.

mod body;
mod client;
mod controls;
mod echo;
mod net;
mod out;
mod rng;
mod server;
mod tcp;

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
    /// Serve HTTP/1.1 + h2c that reports identity and request, and/or TCP echo.
    Serve {
        /// HTTP port (repeatable). Default 8080 when no port at all is given; 0 picks one.
        #[arg(long = "http-port")]
        http_ports: Vec<u16>,
        /// TCP echo port (repeatable).
        #[arg(long = "tcp-echo-port")]
        tcp_echo_ports: Vec<u16>,
        /// Default probability (0.0-1.0) of answering 500.
        #[arg(long, default_value = "0", value_parser = controls::fail_rate_flag)]
        fail_rate: f64,
        /// Default delay before answering, in ms (capped at 60000).
        #[arg(long, default_value = "0", value_parser = controls::delay_ms_flag)]
        delay_ms: u64,
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
}

// One thread: many instances share a 2-core lab machine, and nothing here needs parallelism.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
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
            fail_rate,
            delay_ms,
        } => {
            if http_ports.is_empty() && tcp_echo_ports.is_empty() {
                http_ports.push(8080);
            }
            let defaults = controls::Defaults {
                fail_rate,
                delay_ms,
            };
            server::run(server::Config {
                http_ports,
                echo_ports: tcp_echo_ports,
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
    }
}
