//! `tcp` and `connects`: raw TCP clients for the echo server and for connection churn.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{net, out};

// Structs rather than `json!` so keys print in the documented order.
#[derive(Serialize)]
struct Endpoints {
    local: String,
    peer: String,
}

#[derive(Serialize)]
struct Echoed<'a> {
    echoed: &'a str,
    bytes: usize,
}

#[derive(Serialize)]
struct Churn {
    ok: u32,
    failed: u32,
}

/// Echoes are small; the cap only bounds memory if the peer is not an echo at all.
const MAX_ECHO: u64 = 64 << 20;

pub async fn echo(addr: &str, text: &str, timeout: Duration, repeat: u32) -> Result<()> {
    for i in 0..repeat {
        let round = async {
            let mut stream = net::connect(addr, timeout).await?;
            let (local, peer) = net::endpoints(&stream)?;
            out::json(&Endpoints {
                local: local.to_string(),
                peer: peer.to_string(),
            })?;
            stream.write_all(text.as_bytes()).await.context("send")?;
            // Half-close so the echo sees EOF, echoes the rest and closes its side in turn.
            stream.shutdown().await.context("half-close")?;
            let mut received = Vec::new();
            (&mut stream)
                .take(MAX_ECHO)
                .read_to_end(&mut received)
                .await
                .context("read echo")?;
            anyhow::Ok(received)
        };
        let received = match tokio::time::timeout(timeout, round).await {
            Ok(r) => r.with_context(|| format!("connection {} to {addr}", i + 1))?,
            Err(_) => bail!(
                "connection {} to {addr}: timed out after {} ms",
                i + 1,
                timeout.as_millis()
            ),
        };
        let echoed = String::from_utf8_lossy(&received);
        out::json(&Echoed {
            echoed: &echoed,
            bytes: received.len(),
        })?;
        if received != text.as_bytes() {
            bail!(
                "connection {} to {addr}: echoed {} bytes that differ from the {} sent",
                i + 1,
                received.len(),
                text.len()
            );
        }
    }
    Ok(())
}

/// Returns whether every connection succeeded; failures are counted, not fatal, so one run
/// measures the whole churn.
pub async fn connects(addr: &str, count: u32, timeout: Duration) -> Result<bool> {
    let (mut ok, mut failed) = (0u32, 0u32);
    for i in 0..count {
        match net::connect(addr, timeout).await {
            // Dropped at once: the point is the connect/close churn, not the exchange.
            Ok(stream) => {
                drop(stream);
                ok += 1;
            }
            Err(e) => {
                // The first failure explains the rest; more would flood stderr.
                if failed == 0 {
                    eprintln!("weft-testapp: connection {}: {e:#}", i + 1);
                }
                failed += 1;
            }
        }
    }
    out::json(&Churn { ok, failed })?;
    Ok(failed == 0)
}
