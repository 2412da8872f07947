//! The registry: one in-memory view of the cluster (workloads, services, routes, policies),
//! published as immutable [`Snapshot`]s.
//!
//! Readers on the connection path call [`Registry::load`] (or [`Registry::snapshot`]) and
//! look up by IP, VIP or host in hash maps, without locks. Writers — the sources — hand
//! batches of [`Change`]s to [`Registry::apply`]; each batch is validated, applied and
//! published atomically, and subscribers see the new version through a `watch` channel.
mod bindings;
pub mod bound_route;
mod change;
mod cow;
pub mod egress;
mod intern;
mod listing;
pub mod model;
mod name_key;
mod required_waypoints;
mod snapshot;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use change::{Candidate, Change};
pub use model::{
    Endpoint, EndpointPort, HostRoutes, Labels, NamedPort, Service, ServicePort, TargetPort,
    WaypointRef, Workload,
};
pub use snapshot::Snapshot;
pub use state::ApplyReport;

pub use crate::translate::MeshSettings;
use state::State;

/// A handle on the registry; clones share it.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    published: ArcSwap<Snapshot>,
    writer: Mutex<State>,
    versions: watch::Sender<u64>,
    refused_total: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(MeshSettings::default())
    }
}

impl Registry {
    pub fn new(settings: MeshSettings) -> Self {
        let state = State::new(settings);
        let (versions, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                published: ArcSwap::from_pointee(state.snapshot.clone()),
                writer: Mutex::new(state),
                versions,
                refused_total: AtomicU64::new(0),
            }),
        }
    }

    /// The current snapshot, for the hot path: no reference count is taken while the
    /// guard lives (arc-swap's debt list), so keep it short-lived.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.published.load()
    }

    /// The current snapshot, to keep as long as needed.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.published.load_full()
    }

    /// The version of every published snapshot. `changed().await` wakes on each new one
    /// (intermediate versions may be skipped: read the snapshot, not the count).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.versions.subscribe()
    }

    /// How many object versions were refused since start (for the agent's metrics). An
    /// object sent again unchanged while refused is not counted twice.
    pub fn refused_total(&self) -> u64 {
        self.inner.refused_total.load(Ordering::Relaxed)
    }

    /// Validates and applies a batch of changes, then publishes one new snapshot if
    /// anything changed. Refused objects leave their previous version in force.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> ApplyReport {
        // A panic while holding the lock leaves state that was only ever replaced whole
        // per index, so the last published snapshot stays consistent; carry on.
        let mut state = weft_core::sync::lock(&self.inner.writer);
        let report = state.apply(changes);
        self.inner
            .refused_total
            .fetch_add(report.refused.len() as u64, Ordering::Relaxed);
        if report.changed {
            self.inner.published.store(Arc::new(state.snapshot.clone()));
            self.inner.versions.send_replace(report.version);
        }
        report
    }
}
