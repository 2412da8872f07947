//! One shared copy of each value many workloads and endpoints hold alike: namespaces,
//! nodes, service accounts, identities, label maps, port lists. Every agent holds a
//! workload per pod of the cluster (a million, issue #21), and most of what a pod carries
//! is the same as its ReplicaSet's other pods'; the scale bench (`config/benches/scale/`)
//! measures what this saves.
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use super::model::{Labels, NamedPort, WaypointRef, Workload};

/// Values by content. A value no holder uses any more is dropped by the sweep that runs
/// whenever the set has doubled since the last one, so the set stays within twice what is
/// in use at an amortised constant cost per value.
#[derive(Debug)]
pub(super) struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            sweep_at: 1024,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of `value`'s content (`value` itself when it is the first).
    pub(super) fn share(&mut self, value: Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(value.as_ref()) {
            return shared.clone();
        }
        self.values.insert(value.clone());
        if self.values.len() >= self.sweep_at {
            // Held only here: no workload uses it any more.
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.values.len() * 2).max(1024);
        }
        value
    }

    /// The shared copy of a value looked up by reference, made with `make` when new.
    pub(super) fn share_ref<Q>(&mut self, value: &Q, make: impl FnOnce(&Q) -> Arc<T>) -> Arc<T>
    where
        Arc<T>: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        match self.values.get(value) {
            Some(shared) => shared.clone(),
            None => self.share(make(value)),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
}

/// The registry's interners, one per kind of value.
#[derive(Debug, Default)]
pub(super) struct Interned {
    strings: Interner<str>,
    maps: Interner<BTreeMap<String, String>>,
    ports: Interner<[NamedPort]>,
    probe_ports: Interner<[u16]>,
    waypoints: Interner<WaypointRef>,
}

impl Interned {
    pub(super) fn string(&mut self, s: &str) -> Arc<str> {
        self.strings.share_ref(s, |s: &str| Arc::from(s))
    }

    pub(super) fn labels(&mut self, labels: Labels) -> Labels {
        Labels::from_shared(self.maps.share(labels.shared().clone()))
    }

    /// `workload` with every value it shares with others replaced by the shared copy (its
    /// uid, name and addresses are its own).
    pub(super) fn workload(&mut self, workload: Workload) -> Workload {
        let Workload {
            uid,
            name,
            namespace,
            service_account,
            identity,
            node,
            ips,
            labels,
            annotations,
            waypoint,
            in_mesh,
            host_network,
            phase,
            ready,
            ports,
            probe_ports,
        } = workload;
        Workload {
            uid,
            name,
            namespace: self.string(&namespace),
            service_account: self.string(&service_account),
            identity: self.string(&identity),
            node: node.map(|n| self.string(&n)),
            ips,
            labels: self.labels(labels),
            annotations: self.labels(annotations),
            waypoint: waypoint.map(|w| self.waypoints.share(w)),
            in_mesh,
            host_network,
            phase: phase.map(|p| self.string(&p)),
            ready,
            ports: self.ports.share(ports),
            probe_ports: self.probe_ports.share(probe_ports),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy_and_unused_ones_are_swept() {
        let mut strings: Interner<str> = Interner::default();
        let a = strings.share_ref("ns-1", |s: &str| Arc::from(s));
        let b = strings.share_ref("ns-1", |s: &str| Arc::from(s));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        // Fill past the first sweep with values held elsewhere, and see the unused one go.
        let held: Vec<Arc<str>> = (0..1100)
            .map(|i| strings.share_ref(format!("v-{i}").as_str(), |s: &str| Arc::from(s)))
            .collect();
        assert!(strings.len() <= held.len(), "{}", strings.len());
        assert!(held.iter().all(|v| Arc::strong_count(v) == 2));
    }
}
