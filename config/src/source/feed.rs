//! The contract between a source and the registry: a source sends [`Change`]s through its
//! [`Feed`]; an applier task drains the feed, merges what has queued up into one batch and
//! applies it, so a burst of events costs one snapshot.
use std::future::Future;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::registry::{Change, Registry};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the registry stopped taking changes")]
    Closed,
    #[error("the source ended before its first complete view")]
    EndedBeforeReady,
    #[error("the Kubernetes source was configured to watch no kind")]
    NothingToWatch,
    #[error("Kubernetes client")]
    Kube(#[from] ::kube::Error),
    #[error("Kubernetes client configuration")]
    KubeConfig(#[from] ::kube::config::InferConfigError),
}

/// Something that produces the cluster's objects.
pub trait Source: Send + 'static {
    /// For logs: "directory /etc/weft/config", "Kubernetes API".
    fn describe(&self) -> String;

    /// Runs until the feed closes or a fatal error. Sends the complete initial view, then
    /// calls [`Feed::ready`], then sends changes as they happen.
    fn run(self, feed: Feed) -> impl Future<Output = Result<(), SourceError>> + Send;
}

enum Message {
    Changes(Vec<Change>),
    Ready,
}

/// A source's way into the registry.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Message>,
}

impl Feed {
    pub async fn send(&self, changes: Vec<Change>) -> Result<(), SourceError> {
        self.tx
            .send(Message::Changes(changes))
            .await
            .map_err(|_| SourceError::Closed)
    }

    /// The initial view is complete: readiness flips once everything sent before this
    /// call is in the registry.
    pub async fn ready(&self) -> Result<(), SourceError> {
        self.tx
            .send(Message::Ready)
            .await
            .map_err(|_| SourceError::Closed)
    }
}

/// A running source. Dropping it stops the source.
pub struct SourceTask {
    ready: watch::Receiver<bool>,
    source: JoinHandle<Result<(), SourceError>>,
    applier: JoinHandle<()>,
}

/// Messages queued before the applier blocks the source (backpressure).
const FEED_CAPACITY: usize = 1024;

/// Starts `source` feeding `registry`.
pub fn spawn<S: Source>(registry: &Registry, source: S) -> SourceTask {
    let (tx, mut rx) = mpsc::channel::<Message>(FEED_CAPACITY);
    let (ready_tx, ready) = watch::channel(false);
    let description = source.describe();
    let registry = registry.clone();
    let applier = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::new();
            let mut became_ready = false;
            let mut take = |message| match message {
                Message::Changes(changes) => batch.extend(changes),
                Message::Ready => became_ready = true,
            };
            take(first);
            while let Ok(message) = rx.try_recv() {
                take(message);
            }
            if !batch.is_empty() {
                let registry = registry.clone();
                // Applying a large initial list is CPU work; keep it off the async workers.
                let applied = tokio::task::spawn_blocking(move || registry.apply(batch)).await;
                if let Err(panic) = applied {
                    error!("applying a batch of changes panicked: {panic}");
                }
            }
            if became_ready {
                ready_tx.send_replace(true);
            }
        }
    });
    let source = tokio::spawn(async move {
        info!(source = %description, "configuration source starting");
        let result = source.run(Feed { tx }).await;
        match &result {
            Ok(()) => info!(source = %description, "configuration source ended"),
            Err(e) => {
                error!(source = %description, error = %error_chain(e), "configuration source failed")
            }
        }
        result
    });
    SourceTask {
        ready,
        source,
        applier,
    }
}

impl SourceTask {
    /// Whether the source's complete initial view is in the registry.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until [`is_ready`](Self::is_ready).
    pub async fn ready(&self) -> Result<(), SourceError> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| SourceError::EndedBeforeReady)
    }

    /// Whether the source task has ended (it only does on error or shutdown).
    pub fn is_finished(&self) -> bool {
        self.source.is_finished()
    }
}

impl Drop for SourceTask {
    fn drop(&mut self) {
        self.source.abort();
        self.applier.abort();
    }
}

/// An error with its causes, for one log line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
