//! The writer's side of the registry: accepted objects, and the derived indexes brought up
//! to date for just what a batch of changes touched.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::change::{Candidate, Change};
use super::intern::Interned;
use super::model::{Endpoint, EntryHost, HostRoutes, Locality, Workload};
use super::name_key::{NameKey, NamePair};
use super::required_waypoints;
use super::snapshot::Snapshot;
use crate::api::gateway::Gateway;
use crate::api::gateway_api::KubernetesGateway;
use crate::api::gateway_routes::{GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute};
use crate::api::kubernetes::{EndpointSlice, Namespace, Node, Pod, Secret, Service};
use crate::api::mesh::MeshConfigMap;
use crate::api::networking::{DestinationRule, ServiceEntry, VirtualService};
use crate::api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::api::telemetry::Telemetry;
use crate::api::{Kind, Object, ObjectRef, labels};
use crate::refusal::Refusal;
use crate::registry::bound_route::BoundRoute;
use crate::translate::export::Visibility;
use crate::translate::gateway_routes::{self, GatewayRoute, RouteWorld};
use crate::translate::{self, MeshSettings, policy, route_shadowing, routes};
use crate::validate;

/// (namespace, name)
type Key = (String, String);

fn key(r: &ObjectRef) -> Key {
    (r.namespace.clone(), r.name.clone())
}

/// What one batch changed, and so what must be derived again.
#[derive(Default)]
struct Dirty {
    namespaces: BTreeSet<String>,
    /// A workload was added, changed or removed (indexed as its pod arrived).
    pods: bool,
    services: BTreeSet<Key>,
    kinds: BTreeSet<Kind>,
    refusals: bool,
    /// Warnings found when objects were read changed (`Candidate::warnings`).
    read_warnings: bool,
}

impl Dirty {
    fn any(&self) -> bool {
        !self.namespaces.is_empty()
            || self.pods
            || !self.services.is_empty()
            || !self.kinds.is_empty()
            || self.refusals
            || self.read_warnings
    }
}

/// What the registry keeps of an EndpointSlice (not the decoded slice: every agent holds
/// every slice of the cluster): the Service it belongs to and its endpoints, from which
/// the Service is derived again when it or its other slices change.
#[derive(Debug, PartialEq)]
struct SliceEndpoints {
    service: Option<String>,
    endpoints: Arc<[Endpoint]>,
}

/// The outcome of one batch.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// The version published, or the unchanged current one.
    pub version: u64,
    pub changed: bool,
    /// Refusals new in this batch (a refusal already on record is not repeated).
    pub refused: Vec<Refusal>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) snapshot: Snapshot,
    namespaces: HashMap<String, Arc<Namespace>>,
    nodes: BTreeMap<String, Arc<Node>>,
    // Pods are not kept: each is derived into its workload as it arrives, and the workload
    // (in the snapshot's indexes) is all that is kept of it — every agent holds every pod
    // of the cluster.
    /// One copy of what many workloads hold alike.
    interned: Interned,
    /// What is kept of each Service: the registry's Service derived from it (the one the
    /// snapshot has), not the decoded object.
    services: BTreeMap<Key, Arc<super::model::Service>>,
    /// What is kept of each EndpointSlice: its endpoints, already derived.
    slices: BTreeMap<Key, SliceEndpoints>,
    /// (namespace, service name) → names of its slices.
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    virtual_services: BTreeMap<Key, Arc<VirtualService>>,
    destination_rules: BTreeMap<Key, Arc<DestinationRule>>,
    service_entries: BTreeMap<Key, Arc<ServiceEntry>>,
    gateways: BTreeMap<Key, Arc<Gateway>>,
    kubernetes_gateways: BTreeMap<Key, Arc<KubernetesGateway>>,
    authorization_policies: BTreeMap<Key, Arc<AuthorizationPolicy>>,
    peer_authentications: BTreeMap<Key, Arc<PeerAuthentication>>,
    mesh_configs: BTreeMap<Key, Arc<MeshConfigMap>>,
    request_authentications: BTreeMap<Key, Arc<RequestAuthentication>>,
    http_routes: BTreeMap<Key, Arc<HttpRoute>>,
    grpc_routes: BTreeMap<Key, Arc<GrpcRoute>>,
    tls_routes: BTreeMap<Key, Arc<TlsRoute>>,
    tcp_routes: BTreeMap<Key, Arc<TcpRoute>>,
    reference_grants: BTreeMap<Key, Arc<ReferenceGrant>>,
    /// The Gateway API routes bound to each mesh Service's host, kept for rebuilding the
    /// route index when only VirtualServices or DestinationRules change.
    gateway_route_index: HashMap<String, Vec<Arc<BoundRoute>>>,
    secrets: BTreeMap<Key, Arc<Secret>>,
    telemetries: BTreeMap<Key, Arc<Telemetry>>,
    refusals: BTreeMap<ObjectRef, Vec<Refusal>>,
    /// What reading each accepted object found (unknown fields), kept with it.
    read_warnings: BTreeMap<ObjectRef, Vec<Refusal>>,
}

impl State {
    pub(super) fn new(settings: MeshSettings) -> Self {
        Self {
            snapshot: Snapshot {
                settings: Arc::new(settings),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Applies a batch; the caller publishes `self.snapshot` when `changed`.
    pub(super) fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> ApplyReport {
        let mut dirty = Dirty::default();
        let mut report = ApplyReport::default();
        for change in changes {
            match change {
                Change::Apply(candidate) => self.admit(candidate, &mut dirty, &mut report),
                Change::Delete(object) => {
                    self.set_read_warnings(&object, Vec::new(), &mut dirty);
                    self.remove(&object, &mut dirty);
                    self.clear_refusal(&object, &mut dirty);
                }
                Change::Replace { kinds, candidates } => {
                    let present: HashSet<ObjectRef> =
                        candidates.iter().map(Candidate::object_ref).collect();
                    for candidate in candidates {
                        self.admit(candidate, &mut dirty, &mut report);
                    }
                    for kind in kinds {
                        for gone in self
                            .refs_of(kind)
                            .into_iter()
                            .filter(|r| !present.contains(r))
                        {
                            self.set_read_warnings(&gone, Vec::new(), &mut dirty);
                            self.remove(&gone, &mut dirty);
                        }
                        let stale: Vec<ObjectRef> = self
                            .refusals
                            .keys()
                            .filter(|r| r.kind == kind && !present.contains(*r))
                            .cloned()
                            .collect();
                        for r in stale {
                            self.clear_refusal(&r, &mut dirty);
                        }
                    }
                }
            }
        }
        report.changed = dirty.any();
        if report.changed {
            self.derive(dirty);
            self.snapshot.version += 1;
        }
        report.version = self.snapshot.version;
        report
    }

    fn admit(&mut self, candidate: Candidate, dirty: &mut Dirty, report: &mut ApplyReport) {
        let Candidate {
            object,
            origin,
            warnings,
        } = candidate;
        let object = match object {
            Ok(object) => object,
            Err(refusal) => {
                let r = refusal.object.clone();
                self.refuse(r, vec![refusal.with_origin(origin)], dirty, report);
                return;
            }
        };
        let r = object.object_ref();
        if self.stored(&r).as_ref() == Some(&object) {
            // The same object, perhaps without the unknown field it had.
            self.set_read_warnings(&r, warnings, dirty);
            self.clear_refusal(&r, dirty);
            return;
        }
        let refusals = validate::validate(&object);
        if refusals.is_empty() {
            self.set_read_warnings(&r, warnings, dirty);
        }
        if !refusals.is_empty() {
            let with_origin = refusals
                .into_iter()
                .map(|refusal| refusal.with_origin(origin.clone()))
                .collect();
            self.refuse(r, with_origin, dirty, report);
            return;
        }
        self.clear_refusal(&r, dirty);
        self.store(object, dirty);
    }

    fn refuse(
        &mut self,
        object: ObjectRef,
        refusals: Vec<Refusal>,
        dirty: &mut Dirty,
        report: &mut ApplyReport,
    ) {
        if self.refusals.get(&object) == Some(&refusals) {
            return;
        }
        let kept = self.held(&object);
        for refusal in &refusals {
            warn!(
                object = %refusal.object,
                field = %refusal.field,
                reason = %refusal.reason,
                previous_version_kept = kept,
                "refused: {refusal}"
            );
        }
        report.refused.extend(refusals.iter().cloned());
        self.refusals.insert(object, refusals);
        dirty.refusals = true;
    }

    /// Records what reading the object found, marking warnings to be derived again when it
    /// changed.
    fn set_read_warnings(&mut self, object: &ObjectRef, found: Vec<Refusal>, dirty: &mut Dirty) {
        let changed = if found.is_empty() {
            self.read_warnings.remove(object).is_some()
        } else if self.read_warnings.get(object) != Some(&found) {
            self.read_warnings.insert(object.clone(), found);
            true
        } else {
            false
        };
        dirty.read_warnings |= changed;
    }

    fn clear_refusal(&mut self, object: &ObjectRef, dirty: &mut Dirty) {
        if self.refusals.remove(object).is_some() {
            info!(object = %object, "accepted after an earlier refusal, or gone");
            dirty.refusals = true;
        }
    }

    /// Whether a version of `r` is in force (for Pods, Services and EndpointSlices, what was
    /// derived of it: the decoded objects are not kept).
    fn held(&self, r: &ObjectRef) -> bool {
        match r.kind {
            Kind::Pod => self.snapshot.workload(&r.namespace, &r.name).is_some(),
            Kind::Service => self.services.contains_key(&key(r)),
            Kind::EndpointSlice => self.slices.contains_key(&key(r)),
            _ => self.stored(r).is_some(),
        }
    }

    fn stored(&self, r: &ObjectRef) -> Option<Object> {
        let k = key(r);
        match r.kind {
            Kind::Namespace => self.namespaces.get(&r.name).cloned().map(Object::Namespace),
            Kind::Node => self.nodes.get(&r.name).cloned().map(Object::Node),
            // Compared by the workload derived from it instead (`store_pod`).
            Kind::Pod => None,
            // Compared by the Service derived from it instead (`store_service`).
            Kind::Service => None,
            // Compared by the endpoints derived from it instead (`store_slice`).
            Kind::EndpointSlice => None,
            Kind::VirtualService => self
                .virtual_services
                .get(&k)
                .cloned()
                .map(Object::VirtualService),
            Kind::DestinationRule => self
                .destination_rules
                .get(&k)
                .cloned()
                .map(Object::DestinationRule),
            Kind::ServiceEntry => self
                .service_entries
                .get(&k)
                .cloned()
                .map(Object::ServiceEntry),
            Kind::Gateway => self.gateways.get(&k).cloned().map(Object::Gateway),
            Kind::AuthorizationPolicy => self
                .authorization_policies
                .get(&k)
                .cloned()
                .map(Object::AuthorizationPolicy),
            Kind::PeerAuthentication => self
                .peer_authentications
                .get(&k)
                .cloned()
                .map(Object::PeerAuthentication),
            Kind::KubernetesGateway => self
                .kubernetes_gateways
                .get(&k)
                .cloned()
                .map(Object::KubernetesGateway),
            Kind::MeshConfig => self.mesh_configs.get(&k).cloned().map(Object::MeshConfig),
            Kind::RequestAuthentication => self
                .request_authentications
                .get(&k)
                .cloned()
                .map(Object::RequestAuthentication),
            Kind::HttpRoute => self.http_routes.get(&k).cloned().map(Object::HttpRoute),
            Kind::GrpcRoute => self.grpc_routes.get(&k).cloned().map(Object::GrpcRoute),
            Kind::TlsRoute => self.tls_routes.get(&k).cloned().map(Object::TlsRoute),
            Kind::TcpRoute => self.tcp_routes.get(&k).cloned().map(Object::TcpRoute),
            Kind::ReferenceGrant => self
                .reference_grants
                .get(&k)
                .cloned()
                .map(Object::ReferenceGrant),
            Kind::Secret => self.secrets.get(&k).cloned().map(Object::Secret),
            Kind::Telemetry => self.telemetries.get(&k).cloned().map(Object::Telemetry),
        }
    }

    fn refs_of(&self, kind: Kind) -> Vec<ObjectRef> {
        fn refs<V>(kind: Kind, map: &BTreeMap<Key, V>) -> Vec<ObjectRef> {
            map.keys()
                .map(|(ns, name)| ObjectRef::new(kind, ns.clone(), name.clone()))
                .collect()
        }
        match kind {
            Kind::Namespace => self
                .namespaces
                .keys()
                .map(|name| ObjectRef::new(kind, "", name.clone()))
                .collect(),
            Kind::Node => self
                .nodes
                .keys()
                .map(|name| ObjectRef::new(kind, "", name.clone()))
                .collect(),
            Kind::Pod => self
                .snapshot
                .workloads_by_name
                .iter()
                .map(|(k, _)| ObjectRef::new(kind, &*k.namespace, &*k.name))
                .collect(),
            Kind::Service => refs(kind, &self.services),
            Kind::EndpointSlice => refs(kind, &self.slices),
            Kind::VirtualService => refs(kind, &self.virtual_services),
            Kind::DestinationRule => refs(kind, &self.destination_rules),
            Kind::ServiceEntry => refs(kind, &self.service_entries),
            Kind::Gateway => refs(kind, &self.gateways),
            Kind::AuthorizationPolicy => refs(kind, &self.authorization_policies),
            Kind::PeerAuthentication => refs(kind, &self.peer_authentications),
            Kind::KubernetesGateway => refs(kind, &self.kubernetes_gateways),
            Kind::MeshConfig => refs(kind, &self.mesh_configs),
            Kind::RequestAuthentication => refs(kind, &self.request_authentications),
            Kind::HttpRoute => refs(kind, &self.http_routes),
            Kind::GrpcRoute => refs(kind, &self.grpc_routes),
            Kind::TlsRoute => refs(kind, &self.tls_routes),
            Kind::TcpRoute => refs(kind, &self.tcp_routes),
            Kind::ReferenceGrant => refs(kind, &self.reference_grants),
            Kind::Secret => refs(kind, &self.secrets),
            Kind::Telemetry => refs(kind, &self.telemetries),
        }
    }

    fn store(&mut self, object: Object, dirty: &mut Dirty) {
        let r = object.object_ref();
        let k = key(&r);
        match object {
            Object::Namespace(ns) => {
                self.namespaces.insert(r.name.clone(), ns);
                dirty.namespaces.insert(r.name);
            }
            Object::Node(node) => {
                self.nodes.insert(r.name, node);
                dirty.kinds.insert(r.kind);
            }
            Object::Pod(pod) => self.store_pod(&pod, dirty),
            Object::Service(service) => self.store_service(k, &service, dirty),
            Object::EndpointSlice(slice) => self.store_slice(k, &slice, dirty),
            Object::VirtualService(o) => {
                self.virtual_services.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::DestinationRule(o) => {
                self.destination_rules.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::ServiceEntry(o) => {
                self.service_entries.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::Gateway(o) => {
                self.gateways.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::AuthorizationPolicy(o) => {
                self.authorization_policies.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::PeerAuthentication(o) => {
                self.peer_authentications.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::KubernetesGateway(o) => {
                self.kubernetes_gateways.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::MeshConfig(o) => {
                self.mesh_configs.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::RequestAuthentication(o) => {
                self.request_authentications.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::HttpRoute(o) => {
                self.http_routes.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::GrpcRoute(o) => {
                self.grpc_routes.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::TlsRoute(o) => {
                self.tls_routes.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::TcpRoute(o) => {
                self.tcp_routes.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::ReferenceGrant(o) => {
                self.reference_grants.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::Secret(o) => {
                self.secrets.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
            Object::Telemetry(o) => {
                self.telemetries.insert(k, o);
                dirty.kinds.insert(r.kind);
            }
        }
    }

    /// Detaches a slice from the service it belonged to (its label may have changed).
    fn unlink_slice(&mut self, k: &Key, dirty: &mut Dirty) {
        let Some(old) = self.slices.get(k) else {
            return;
        };
        if let Some(service) = &old.service {
            let service_key = (k.0.clone(), service.to_string());
            if let Some(names) = self.slices_by_service.get_mut(&service_key) {
                names.remove(&k.1);
                if names.is_empty() {
                    self.slices_by_service.remove(&service_key);
                }
            }
            dirty.services.insert(service_key);
        }
    }

    fn remove(&mut self, r: &ObjectRef, dirty: &mut Dirty) {
        let k = key(r);
        let removed = match r.kind {
            Kind::Namespace => {
                let removed = self.namespaces.remove(&r.name).is_some();
                if removed {
                    dirty.namespaces.insert(r.name.clone());
                }
                removed
            }
            Kind::Node => {
                let removed = self.nodes.remove(&r.name).is_some();
                if removed {
                    dirty.kinds.insert(r.kind);
                }
                removed
            }
            Kind::Pod => {
                let key: &dyn NamePair = &(r.namespace.as_str(), r.name.as_str());
                let removed = self.snapshot.workloads_by_name.remove(key);
                if let Some(old) = &removed {
                    unindex_workload(old, &mut self.snapshot);
                    dirty.pods = true;
                }
                removed.is_some()
            }
            Kind::Service => {
                let removed = self.services.remove(&k).is_some();
                if removed {
                    dirty.services.insert(k);
                }
                removed
            }
            Kind::EndpointSlice => {
                self.unlink_slice(&k, dirty);
                self.slices.remove(&k).is_some()
            }
            Kind::VirtualService => self.virtual_services.remove(&k).is_some(),
            Kind::DestinationRule => self.destination_rules.remove(&k).is_some(),
            Kind::ServiceEntry => self.service_entries.remove(&k).is_some(),
            Kind::Gateway => self.gateways.remove(&k).is_some(),
            Kind::AuthorizationPolicy => self.authorization_policies.remove(&k).is_some(),
            Kind::PeerAuthentication => self.peer_authentications.remove(&k).is_some(),
            Kind::KubernetesGateway => self.kubernetes_gateways.remove(&k).is_some(),
            Kind::MeshConfig => self.mesh_configs.remove(&k).is_some(),
            Kind::RequestAuthentication => self.request_authentications.remove(&k).is_some(),
            Kind::HttpRoute => self.http_routes.remove(&k).is_some(),
            Kind::GrpcRoute => self.grpc_routes.remove(&k).is_some(),
            Kind::TlsRoute => self.tls_routes.remove(&k).is_some(),
            Kind::TcpRoute => self.tcp_routes.remove(&k).is_some(),
            Kind::ReferenceGrant => self.reference_grants.remove(&k).is_some(),
            Kind::Telemetry => self.telemetries.remove(&k).is_some(),
            Kind::Secret => self.secrets.remove(&k).is_some(),
        };
        if removed && (r.kind.is_custom() || matches!(r.kind, Kind::MeshConfig | Kind::Secret)) {
            dirty.kinds.insert(r.kind);
        }
    }

    /// Brings the snapshot's indexes up to date with `dirty`.
    fn derive(&mut self, mut dirty: Dirty) {
        if !dirty.namespaces.is_empty() {
            self.snapshot.namespaces = Arc::new(self.namespaces.keys().cloned().collect());
        }
        if !dirty.namespaces.is_empty() {
            dirty.pods |= self.rebind_workloads(&dirty.namespaces);
        }
        for namespace in &dirty.namespaces {
            let in_namespace = |k: &&Key| &k.0 == namespace;
            let start = (namespace.clone(), String::new());
            dirty.services.extend(
                self.services
                    .range(start..)
                    .map(|(k, _)| k)
                    .take_while(in_namespace)
                    .cloned(),
            );
        }
        let mut hosts_changed = false;
        if !dirty.services.is_empty() {
            hosts_changed = self.derive_services(&dirty.services);
        }
        let kinds = &dirty.kinds;
        // First: `exportTo` defaults decide which routes this process applies.
        if kinds.contains(&Kind::MeshConfig) {
            // Istio's: the `istio` ConfigMap of its own namespace; defaults without one.
            let root = (
                self.snapshot.settings.root_namespace.clone(),
                crate::api::mesh::MESH_CONFIG_MAP.to_string(),
            );
            self.snapshot.mesh_config = Arc::new(
                self.mesh_configs
                    .get(&root)
                    .map(|m| m.mesh.clone())
                    .unwrap_or_default(),
            );
        }
        // Gateway API routes depend on their parents (Services, Gateways), their backends
        // (Services) and ReferenceGrants, and report the waypoints (namespace labels).
        let gateway_routes_changed = (kinds.contains(&Kind::HttpRoute)
            || kinds.contains(&Kind::GrpcRoute)
            || kinds.contains(&Kind::TlsRoute)
            || kinds.contains(&Kind::TcpRoute)
            || kinds.contains(&Kind::ReferenceGrant)
            || kinds.contains(&Kind::KubernetesGateway)
            || !dirty.namespaces.is_empty()
            || !dirty.services.is_empty())
            && (!self.http_routes.is_empty()
                || !self.grpc_routes.is_empty()
                || !self.tls_routes.is_empty()
                || !self.tcp_routes.is_empty()
                || !self.snapshot.route_resolutions.is_empty());
        if gateway_routes_changed {
            self.derive_gateway_routes();
        }
        if gateway_routes_changed
            || kinds.contains(&Kind::VirtualService)
            || kinds.contains(&Kind::DestinationRule)
            || kinds.contains(&Kind::MeshConfig)
        {
            self.derive_routes();
        }
        // An entry's waypoint binding may come from its namespace's label.
        if kinds.contains(&Kind::ServiceEntry) || !dirty.namespaces.is_empty() {
            self.derive_service_entries();
            hosts_changed = true;
        }
        if kinds.contains(&Kind::Gateway) {
            let mut gateways: Vec<Arc<Gateway>> = self.gateways.values().cloned().collect();
            gateways.sort_by(|a, b| routes::age_order(&a.metadata, &b.metadata));
            self.snapshot.gateways = Arc::new(gateways);
        }
        if kinds.contains(&Kind::VirtualService) || kinds.contains(&Kind::MeshConfig) {
            self.snapshot.gateway_virtual_services = Arc::new(routes::by_gateway(
                self.virtual_services.values(),
                &self.visibility(),
            ));
        }
        if kinds.contains(&Kind::Node) {
            self.snapshot.node_localities = Arc::new(
                self.nodes
                    .iter()
                    .map(|(name, node)| (name.clone(), Locality::of_node(labels(&node.metadata))))
                    .collect(),
            );
        }
        if kinds.contains(&Kind::ReferenceGrant) {
            self.snapshot.reference_grants = Arc::new(self.reference_grants.clone());
        }
        if kinds.contains(&Kind::Secret) {
            self.snapshot.secrets = Arc::new(self.secrets.clone().into_iter().collect());
        }
        if kinds.contains(&Kind::KubernetesGateway) {
            self.snapshot.waypoints = Arc::new(translate::waypoint::declared(
                self.kubernetes_gateways.values(),
            ));
            self.snapshot.kubernetes_gateways = Arc::new(self.kubernetes_gateways.clone());
        }
        if kinds.contains(&Kind::AuthorizationPolicy) {
            self.snapshot.authorization_policies = Arc::new(policy::by_namespace(
                self.authorization_policies.values().cloned(),
                |p| &p.metadata,
            ));
        }
        if kinds.contains(&Kind::PeerAuthentication) {
            self.snapshot.peer_authentications = Arc::new(policy::by_namespace(
                self.peer_authentications.values().cloned(),
                |p| &p.metadata,
            ));
        }
        if kinds.contains(&Kind::RequestAuthentication) {
            self.snapshot.request_authentications = Arc::new(policy::by_namespace(
                self.request_authentications.values().cloned(),
                |p| &p.metadata,
            ));
        }
        if kinds.contains(&Kind::Telemetry) {
            self.snapshot.telemetries = Arc::new(policy::by_namespace(
                self.telemetries.values().cloned(),
                |t| &t.metadata,
            ));
        }
        if hosts_changed
            || gateway_routes_changed
            || kinds.contains(&Kind::Gateway)
            || kinds.contains(&Kind::Secret)
            || kinds.contains(&Kind::VirtualService)
            || kinds.contains(&Kind::DestinationRule)
            || kinds.contains(&Kind::MeshConfig)
            || kinds.contains(&Kind::AuthorizationPolicy)
            || kinds.contains(&Kind::RequestAuthentication)
            || kinds.contains(&Kind::Telemetry)
            || dirty.read_warnings
            // Waypoint bindings decide whether L7 rules and policies can apply.
            || kinds.contains(&Kind::KubernetesGateway)
            || !dirty.namespaces.is_empty()
            || !dirty.services.is_empty()
                && (!self.virtual_services.is_empty()
                    || !self.destination_rules.is_empty()
                    || !self.authorization_policies.is_empty())
        {
            self.derive_warnings();
        }
        if dirty.refusals {
            self.snapshot.refusals = Arc::new(self.refusals.clone());
        }
    }

    /// Derives the registry's Service of a Service as it arrives, unless it is the one
    /// already held.
    fn store_service(&mut self, k: Key, service: &Service, dirty: &mut Dirty) {
        let namespace_labels = self.namespaces.get(&k.0).map(|ns| labels(&ns.metadata));
        let derived = translate::service::service(
            service,
            namespace_labels,
            self.endpoints_of(&k),
            &self.snapshot.settings,
        );
        if self.services.get(&k).is_some_and(|held| **held == derived) {
            return;
        }
        self.services.insert(k.clone(), Arc::new(derived));
        dirty.services.insert(k);
    }

    /// The endpoints of the Service `k`'s slices: those of its one slice, shared, or a
    /// list of all.
    fn endpoints_of(&self, k: &Key) -> Arc<[Endpoint]> {
        let mut slices = self
            .slices_by_service
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(&(k.0.clone(), slice.clone())));
        match (slices.next(), slices.next()) {
            (None, _) => Arc::from([]),
            (Some(one), None) => one.endpoints.clone(),
            (Some(first), Some(second)) => [first, second]
                .into_iter()
                .chain(slices)
                .flat_map(|slice| slice.endpoints.iter().cloned())
                .collect(),
        }
    }

    /// Derives the endpoints of a slice as it arrives and links them to their Service,
    /// unless they are the ones already held.
    fn store_slice(&mut self, k: Key, slice: &EndpointSlice, dirty: &mut Dirty) {
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for endpoint in translate::service::endpoints(slice, &k.0) {
            endpoints.push(self.share_endpoint(endpoint));
        }
        let derived = SliceEndpoints {
            service: slice.service_name().map(str::to_string),
            endpoints: endpoints.into(),
        };
        if self.slices.get(&k) == Some(&derived) {
            return;
        }
        self.unlink_slice(&k, dirty);
        if let Some(service) = &derived.service {
            let service_key = (k.0.clone(), service.clone());
            self.slices_by_service
                .entry(service_key.clone())
                .or_default()
                .insert(k.1.clone());
            dirty.services.insert(service_key);
        }
        self.slices.insert(k, derived);
    }

    /// `endpoint` sharing its node and its pod's namespace and name with the workloads.
    fn share_endpoint(&mut self, endpoint: Endpoint) -> Endpoint {
        let node = endpoint.node.map(|n| self.interned.string(&n));
        let target = endpoint.target.map(|(namespace, name)| {
            let namespace = self.interned.string(&namespace);
            let name = self
                .snapshot
                .workload(&namespace, &name)
                .map_or(name, |w| w.name.clone());
            (namespace, name)
        });
        Endpoint {
            node,
            target,
            ..endpoint
        }
    }

    /// Derives the workload of a pod as it arrives and indexes it, unless it is the one
    /// already held (an update that changes nothing the mesh reads, such as a container's
    /// status, leaves the registry unchanged).
    fn store_pod(&mut self, pod: &Pod, dirty: &mut Dirty) {
        let settings = self.snapshot.settings.clone();
        let namespace = pod
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(crate::api::DEFAULT_NAMESPACE);
        let namespace_labels = self
            .namespaces
            .get(namespace)
            .map(|ns| labels(&ns.metadata));
        let workload = translate::workload::workload(pod, namespace_labels, &settings);
        self.put_workload(workload, dirty);
    }

    /// Indexes `workload` in place of the one of the same (namespace, name), unless equal.
    fn put_workload(&mut self, workload: Workload, dirty: &mut Dirty) {
        let snapshot = &mut self.snapshot;
        let key: &dyn NamePair = &(&*workload.namespace, &*workload.name);
        if snapshot
            .workloads_by_name
            .get(key)
            .is_some_and(|held| **held == workload)
        {
            return;
        }
        if let Some(old) = snapshot.workloads_by_name.remove(key) {
            unindex_workload(&old, snapshot);
        }
        let workload = Arc::new(self.interned.workload(workload));
        dirty.pods = true;
        let snapshot = &mut self.snapshot;
        snapshot
            .workloads_by_uid
            .insert(workload.uid.clone(), workload.clone());
        for ip in &workload.ips {
            snapshot.workloads_by_ip.insert(*ip, workload.clone());
        }
        if let Some(node) = &workload.node {
            match snapshot.workloads_by_node.get_mut(&**node) {
                Some(on_node) => {
                    Arc::make_mut(on_node).insert(workload.uid.clone(), workload.clone());
                }
                None => {
                    let on_node = BTreeMap::from([(workload.uid.clone(), workload.clone())]);
                    snapshot
                        .workloads_by_node
                        .insert(node.clone(), Arc::new(on_node));
                }
            }
        }
        let key = NameKey::new(workload.namespace.clone(), workload.name.clone());
        snapshot.workloads_by_name.insert(key, workload);
    }

    /// Derives again what the namespaces' labels decide of their pods' workloads; returns
    /// whether any changed. Namespaces change rarely: this looks at every workload once.
    fn rebind_workloads(&mut self, namespaces: &BTreeSet<String>) -> bool {
        let rebound: Vec<Workload> = self
            .snapshot
            .workloads_by_name
            .iter()
            .filter(|(k, _)| namespaces.contains(&*k.namespace))
            .map(|(k, w)| {
                let namespace_labels = self
                    .namespaces
                    .get(&*k.namespace)
                    .map(|ns| labels(&ns.metadata));
                translate::workload::rebind(w, namespace_labels)
            })
            .collect();
        let mut dirty = Dirty::default();
        for workload in rebound {
            self.put_workload(workload, &mut dirty);
        }
        dirty.pods
    }

    /// Returns whether the set of service hostnames changed.
    fn derive_services(&mut self, services: &BTreeSet<Key>) -> bool {
        let mut hosts_changed = false;
        for k in services {
            let snapshot = &mut self.snapshot;
            let old = snapshot.services_by_name.remove(k);
            if let Some(old) = &old {
                required_waypoints::unindex_service(old, snapshot);
                for vip in &old.vips {
                    if snapshot
                        .services_by_vip
                        .get(vip)
                        .is_some_and(|s| Arc::ptr_eq(s, old))
                    {
                        snapshot.services_by_vip.remove(vip);
                    }
                }
                if snapshot
                    .services_by_host
                    .get(&old.hostname)
                    .is_some_and(|s| Arc::ptr_eq(s, old))
                {
                    snapshot.services_by_host.remove(&old.hostname);
                }
            }
            let Some(service) = self.services.get(k) else {
                hosts_changed |= old.is_some();
                continue;
            };
            hosts_changed |= old.is_none();
            let namespace_labels = self.namespaces.get(&k.0).map(|ns| labels(&ns.metadata));
            let derived = Arc::new(translate::service::rebind(
                service,
                namespace_labels,
                self.endpoints_of(k),
            ));
            self.services.insert(k.clone(), derived.clone());
            let snapshot = &mut self.snapshot;
            for vip in &derived.vips {
                snapshot.services_by_vip.insert(*vip, derived.clone());
            }
            snapshot
                .services_by_host
                .insert(derived.hostname.clone(), derived.clone());
            required_waypoints::index_service(&derived, snapshot);
            snapshot.services_by_name.insert(k.clone(), derived);
        }
        hosts_changed
    }

    /// Resolves every Gateway API route against the Services, Gateways and ReferenceGrants
    /// held, and indexes those bound to mesh Services by host.
    fn derive_gateway_routes(&mut self) {
        let mut grants: HashMap<String, Vec<Arc<ReferenceGrant>>> = HashMap::new();
        for ((namespace, _), grant) in &self.reference_grants {
            grants
                .entry(namespace.clone())
                .or_default()
                .push(grant.clone());
        }
        let world = StateWorld {
            namespaces: &self.namespaces,
            snapshot: &self.snapshot,
            gateways: &self.kubernetes_gateways,
            grants,
        };
        let settings = self.snapshot.settings.clone();
        let mut all: BTreeMap<ObjectRef, gateway_routes::RouteResolution> = self
            .http_routes
            .values()
            .cloned()
            .map(GatewayRoute::Http)
            .chain(self.grpc_routes.values().cloned().map(GatewayRoute::Grpc))
            .chain(self.tls_routes.values().cloned().map(GatewayRoute::Tls))
            .chain(self.tcp_routes.values().cloned().map(GatewayRoute::Tcp))
            .map(|route| {
                let resolved = gateway_routes::resolve(&route, &world, &settings);
                (route.object_ref(), resolved)
            })
            .collect();
        // Which routes' shares of an ingress Gateway's listeners older routes take.
        let mut shadowed = Vec::new();
        for ((namespace, name), gateway) in &self.kubernetes_gateways {
            let attached = gateway_routes::gateway_routes(all.values(), namespace, name);
            if !attached.is_empty() {
                shadowed.extend(route_shadowing::shadowed_routes(gateway, &attached));
            }
        }
        for (route, found) in shadowed {
            if let Some(resolution) = all.get_mut(&route) {
                resolution.shadowed.push(found);
            }
        }
        let all: BTreeMap<ObjectRef, Arc<gateway_routes::RouteResolution>> =
            all.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        self.gateway_route_index = gateway_routes::mesh_index(all.values().map(Arc::as_ref));
        self.snapshot.route_resolutions = Arc::new(all);
    }

    /// Which VirtualServices and DestinationRules this process applies (`exportTo`).
    fn visibility(&self) -> Visibility {
        Visibility::new(
            self.snapshot.settings.proxy_namespace.as_deref(),
            &self.snapshot.mesh_config,
        )
    }

    fn derive_routes(&mut self) {
        let all = routes::index(
            self.virtual_services.values(),
            self.destination_rules.values(),
            self.gateway_route_index.clone(),
            &self.snapshot.settings,
            &self.visibility(),
        );
        let (wildcards, exact): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(host, _)| host.starts_with('*'));
        let mut wildcard_routes: Vec<(String, Arc<HostRoutes>)> = wildcards
            .into_iter()
            .map(|(host, routes)| (host.trim_start_matches('*').to_string(), routes))
            .collect();
        // The most specific wildcard wins.
        wildcard_routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        self.snapshot.routes = Arc::new(exact.into_iter().collect());
        self.snapshot.wildcard_routes = Arc::new(wildcard_routes);
    }

    fn derive_service_entries(&mut self) {
        let mut entries: Vec<Arc<ServiceEntry>> = self.service_entries.values().cloned().collect();
        entries.sort_by(|a, b| routes::age_order(&a.metadata, &b.metadata));
        let mut by_host: HashMap<String, Vec<Arc<ServiceEntry>>> = HashMap::new();
        let mut by_address: HashMap<IpAddr, Arc<ServiceEntry>> = HashMap::new();
        for entry in &entries {
            for host in &entry.spec.hosts {
                by_host.entry(host.clone()).or_default().push(entry.clone());
            }
            for address in &entry.spec.addresses {
                // Single addresses act as VIPs; CIDR ranges are matched by the data path.
                if let Ok((ip, prefix)) = validate::cidr::parse(address)
                    && prefix == if ip.is_ipv4() { 32 } else { 128 }
                {
                    by_address.entry(ip).or_insert_with(|| entry.clone());
                }
            }
        }
        let namespaces = &self.namespaces;
        let hosts = translate::service_entry::entry_hosts(&entries, &|namespace| {
            namespaces.get(namespace).map(|ns| labels(&ns.metadata))
        });
        let mut hosts_by_vip: HashMap<IpAddr, Vec<Arc<EntryHost>>> = HashMap::new();
        let mut hosts_by_name: HashMap<String, Vec<Arc<EntryHost>>> = HashMap::new();
        for host in &hosts {
            for vip in &host.vips {
                hosts_by_vip.entry(*vip).or_default().push(host.clone());
            }
            hosts_by_name
                .entry(host.host.clone())
                .or_default()
                .push(host.clone());
        }
        let mut blocks: Vec<Arc<EntryHost>> = hosts
            .iter()
            .filter(|h| !h.blocks.is_empty())
            .cloned()
            .collect();
        // The most specific block first; equal prefixes keep the oldest entry first.
        blocks.sort_by_key(|h| std::cmp::Reverse(h.blocks.iter().map(|b| b.1).max()));
        self.snapshot.service_entries = Arc::new(entries);
        self.snapshot.service_entries_by_host = Arc::new(by_host);
        self.snapshot.service_entries_by_address = Arc::new(by_address);
        self.snapshot.entry_hosts = Arc::new(hosts);
        self.snapshot.entry_hosts_by_vip = Arc::new(hosts_by_vip);
        self.snapshot.entry_hosts_by_name = Arc::new(hosts_by_name);
        self.snapshot.entry_host_blocks = Arc::new(blocks);
    }

    fn derive_warnings(&mut self) {
        let snapshot = &self.snapshot;
        let wildcard_entries: Vec<&str> = snapshot
            .service_entries_by_host
            .keys()
            .filter_map(|h| h.strip_prefix('*'))
            .collect();
        let is_known = |host: &str| {
            snapshot.services_by_host.contains_key(host)
                || snapshot.service_entries_by_host.contains_key(host)
                || wildcard_entries.iter().any(|suffix| host.ends_with(suffix))
        };
        let mut warnings: BTreeMap<ObjectRef, Vec<Refusal>> = self.read_warnings.clone();
        let objects = self
            .virtual_services
            .values()
            .cloned()
            .map(Object::VirtualService)
            .chain(
                self.destination_rules
                    .values()
                    .cloned()
                    .map(Object::DestinationRule),
            )
            .chain(self.mesh_configs.values().cloned().map(Object::MeshConfig))
            .chain(
                self.request_authentications
                    .values()
                    .cloned()
                    .map(Object::RequestAuthentication),
            )
            .chain(self.http_routes.values().cloned().map(Object::HttpRoute))
            .chain(self.grpc_routes.values().cloned().map(Object::GrpcRoute))
            .chain(self.tls_routes.values().cloned().map(Object::TlsRoute))
            .chain(self.tcp_routes.values().cloned().map(Object::TcpRoute))
            .chain(self.gateways.values().cloned().map(Object::Gateway));
        for object in objects {
            let object_ref = object.object_ref();
            let mut found = validate::warnings(&object, &is_known, &snapshot.settings);
            // What resolving a Gateway API route against the cluster found.
            if let Some(resolution) = snapshot.route_resolutions.get(&object_ref) {
                found.extend(
                    gateway_routes::issues(resolution)
                        .into_iter()
                        .map(|(field, reason)| Refusal::new(object_ref.clone(), field, reason)),
                );
            }
            if !found.is_empty() {
                warnings.entry(object_ref).or_default().extend(found);
            }
        }
        // Gateways with VirtualServices and the Secrets this process reads, if any.
        let gateways: Vec<&Arc<Gateway>> = snapshot.gateways.iter().collect();
        let virtual_services: Vec<&Arc<VirtualService>> = self.virtual_services.values().collect();
        let secrets_namespace = snapshot.settings.secrets_namespace.clone();
        let has_secret = |name: &str| {
            secrets_namespace.as_deref().is_some_and(|ns| {
                self.secrets
                    .contains_key(&(ns.to_string(), name.to_string()))
            })
        };
        let cross = validate::gateway::cross_warnings(
            &gateways,
            &virtual_services,
            secrets_namespace
                .as_deref()
                .map(|ns| (ns, &has_secret as &dyn Fn(&str) -> bool)),
        );
        for (object, found) in cross {
            warnings.entry(object).or_default().extend(found);
        }
        let delegates = validate::delegate_warnings(
            &virtual_services,
            &snapshot.mesh_config.default_virtual_service_export_to,
        );
        for (object, found) in delegates {
            warnings.entry(object).or_default().extend(found);
        }
        // Addresses two ServiceEntries (or a ServiceEntry and a Service) both claim.
        for (object, found) in validate::address_overlaps(&snapshot.service_entries, &|ip| {
            snapshot
                .services_by_vip
                .get(&ip)
                .map(|s| format!("{}/{}", s.namespace, s.name))
        }) {
            warnings.entry(object).or_default().extend(found);
        }
        // Rules and policies only a waypoint applies, on what has none.
        let waypoint_objects = self
            .virtual_services
            .values()
            .cloned()
            .map(Object::VirtualService)
            .chain(
                self.destination_rules
                    .values()
                    .cloned()
                    .map(Object::DestinationRule),
            )
            .chain(
                self.authorization_policies
                    .values()
                    .cloned()
                    .map(Object::AuthorizationPolicy),
            );
        for object in waypoint_objects {
            let found = validate::waypoint_warnings(&object, snapshot, &snapshot.settings);
            if !found.is_empty() {
                warnings
                    .entry(object.object_ref())
                    .or_default()
                    .extend(found);
            }
        }
        // CUSTOM policies against the mesh config's extension providers.
        for policy in self.authorization_policies.values() {
            let found = validate::policy_warnings(policy, &snapshot.mesh_config);
            if let Some(first) = found.first() {
                warnings
                    .entry(first.object.clone())
                    .or_default()
                    .extend(found);
            }
        }
        for (object, found) in &warnings {
            if snapshot.warnings.get(object) != Some(found) {
                for warning in found {
                    warn!(object = %object, "accepted with a warning: {warning}");
                }
            }
        }
        self.snapshot.warnings = Arc::new(warnings);
    }
}

/// The registry's objects as route resolution looks them up.
struct StateWorld<'a> {
    namespaces: &'a HashMap<String, Arc<Namespace>>,
    snapshot: &'a Snapshot,
    gateways: &'a BTreeMap<Key, Arc<KubernetesGateway>>,
    grants: HashMap<String, Vec<Arc<ReferenceGrant>>>,
}

impl RouteWorld for StateWorld<'_> {
    fn service(&self, namespace: &str, name: &str) -> Option<&Arc<super::model::Service>> {
        self.snapshot.service(namespace, name)
    }

    fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces
            .get(namespace)
            .map(|ns| labels(&ns.metadata))
    }

    fn gateway(&self, namespace: &str, name: &str) -> Option<&Arc<KubernetesGateway>> {
        self.gateways
            .get(&(namespace.to_string(), name.to_string()))
    }

    fn grants(&self, namespace: &str) -> &[Arc<ReferenceGrant>] {
        self.grants
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn unindex_workload(old: &Arc<Workload>, snapshot: &mut Snapshot) {
    // Another pod may have taken over an address or (after a recreate) a uid entry;
    // only this workload's own entries go.
    if snapshot
        .workloads_by_uid
        .get(&old.uid)
        .is_some_and(|w| Arc::ptr_eq(w, old))
    {
        snapshot.workloads_by_uid.remove(&old.uid);
    }
    for ip in &old.ips {
        if snapshot
            .workloads_by_ip
            .get(ip)
            .is_some_and(|w| Arc::ptr_eq(w, old))
        {
            snapshot.workloads_by_ip.remove(ip);
        }
    }
    if let Some(node) = &old.node {
        let mut now_empty = false;
        if let Some(on_node) = snapshot.workloads_by_node.get_mut(&**node) {
            if on_node.get(&old.uid).is_some_and(|w| Arc::ptr_eq(w, old)) {
                Arc::make_mut(on_node).remove(&old.uid);
            }
            now_empty = on_node.is_empty();
        }
        if now_empty {
            snapshot.workloads_by_node.remove(&**node);
        }
    }
}
