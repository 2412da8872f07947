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

/// Whether a process has begun to drain, for the parts that act on it: readiness answers
/// 503, HTTP connections ask their clients to go elsewhere. Cloned into each of them.
#[derive(Clone, Debug)]
pub struct Draining(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Draining {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Draining {
    /// Starts draining; every waiter of [`Draining::started`] wakes.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has started (at once if it already has).
    pub fn started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = self.0.subscribe();
        async move {
            // The sender lives in `self` and its clones; if all are gone nobody can start
            // a drain any more, so waiting forever is right.
            if changes.wait_for(|draining| *draining).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_draining_starts_and_late_ones_at_once() {
        let draining = Draining::default();
        assert!(!draining.is_draining());
        let early = tokio::spawn(draining.started());
        tokio::task::yield_now().await;
        assert!(!early.is_finished(), "nothing has started yet");
        draining.clone().start();
        tokio::time::timeout(Duration::from_secs(1), early)
            .await
            .expect("an early waiter wakes")
            .expect("the waiter does not panic");
        assert!(draining.is_draining());
        tokio::time::timeout(Duration::from_secs(1), draining.started())
            .await
            .expect("a late waiter returns at once");
    }
}
