//! What the registry knows about a host's waypoint, as validation asks it
//! ([`crate::validate::Bindings`]): kept apart from the snapshot so the snapshot does not
//! depend on validation.
use super::snapshot::Snapshot;

impl crate::validate::Bindings for Snapshot {
    fn host(&self, host: &str) -> crate::validate::Binding {
        use crate::validate::Binding;
        if let Some(service) = self.service_by_host(host) {
            return if service.waypoint.is_some() {
                Binding::Waypoint
            } else {
                Binding::NoWaypoint { kind: "Service" }
            };
        }
        let mut entries = self.entry_hosts().filter(|e| e.host == host).peekable();
        if entries.peek().is_none() {
            return Binding::Unknown;
        }
        if entries.any(|e| e.waypoint.is_some()) {
            Binding::Waypoint
        } else {
            Binding::NoWaypoint {
                kind: "ServiceEntry",
            }
        }
    }

    fn service(&self, namespace: &str, name: &str) -> crate::validate::Binding {
        use crate::validate::Binding;
        match Snapshot::service(self, namespace, name) {
            Some(service) if service.waypoint.is_some() => Binding::Waypoint,
            Some(_) => Binding::NoWaypoint { kind: "Service" },
            None => Binding::Unknown,
        }
    }

    fn entry(&self, namespace: &str, name: &str) -> crate::validate::Binding {
        use crate::validate::Binding;
        let mut hosts = self
            .entry_hosts()
            .filter(|e| e.namespace == namespace && e.name == name)
            .peekable();
        if hosts.peek().is_none() {
            return Binding::Unknown;
        }
        if hosts.any(|e| e.waypoint.is_some()) {
            Binding::Waypoint
        } else {
            Binding::NoWaypoint {
                kind: "ServiceEntry",
            }
        }
    }

    fn gateway_routed(&self, host: &str) -> bool {
        self.gateway_virtual_services.values().flatten().any(|vs| {
            let namespace = vs
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(crate::api::DEFAULT_NAMESPACE);
            crate::validate::destination_hosts(&vs.spec, namespace, &self.settings)
                .iter()
                .any(|h| h == host)
        })
    }
}
