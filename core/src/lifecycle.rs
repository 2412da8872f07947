//! Stopping a process of the mesh without cutting what it carries: the signals that ask it
//! to stop, and the wait for its connections to end.
use std::time::Duration;

use tracing::{info, warn};

/// SIGTERM and SIGINT, listened for from the start: a signal delivered before a listener
/// exists is lost (or, with no handler at all, kills the process on the spot).
pub struct Shutdown {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Must be called inside a tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
    }
}

/// Waits until `open()` is 0 or `limit` has passed, checking every 100 ms; logs the outcome.
pub async fn drain(open: impl Fn() -> usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        let left = open();
        if left == 0 {
            info!("every connection has ended");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                open = left,
                limit = ?limit,
                "drain time is up; closing the connections still open"
            );
            return;
        }
    }
}
