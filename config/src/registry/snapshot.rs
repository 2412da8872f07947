//! One immutable, consistent view of the configuration. Readers hold an `Arc<Snapshot>`
//! as long as they like; every lookup is a hash-map probe.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::cow::CowMap;
use super::model::{
    Endpoint, EntryHost, HostRoutes, LOCALITY_LABEL, Locality, Service, Waypoint, WaypointRef,
    Workload,
};
use super::name_key::{NameKey, NamePair};
use crate::api::ObjectRef;
use crate::api::gateway::Gateway;
use crate::api::gateway_api::KubernetesGateway;
use crate::api::gateway_routes::ReferenceGrant;
use crate::api::kubernetes::Secret;
use crate::api::mesh::MeshConfig;
use crate::api::networking::ServiceEntry;
use crate::api::networking::VirtualService;
use crate::api::security::{
    AuthorizationPolicy, MtlsMode, PeerAuthentication, RequestAuthentication,
};
use crate::api::telemetry::Telemetry;
use crate::refusal::{Refusal, Warning};
use crate::translate::MeshSettings;
use crate::translate::gateway::GatewayRef;
use crate::translate::gateway_routes::RouteResolution;
use crate::translate::policy;

/// The workloads of one node, by uid.
pub(super) type NodeWorkloads = Arc<BTreeMap<Arc<str>, Arc<Workload>>>;

/// The waypoint-bound Services one pod backs: service name → its binding (the Services are
/// in the pod's namespace). Ordered by name, so every reader sees the same order.
pub(super) type BackedBindings = Arc<BTreeMap<String, WaypointRef>>;

/// Indexes are shared between successive snapshots; a change copies only the shards (of
/// the large maps) or the small maps it touches.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(super) version: u64,
    pub(super) settings: Arc<MeshSettings>,
    /// Istio's mesh config (the `istio` ConfigMap of the root namespace), or its defaults.
    pub(super) mesh_config: Arc<MeshConfig>,
    pub(super) workloads_by_uid: CowMap<Arc<str>, Arc<Workload>>,
    pub(super) workloads_by_ip: CowMap<IpAddr, Arc<Workload>>,
    /// Every workload by (namespace, name): also what the registry keeps of each pod.
    pub(super) workloads_by_name: CowMap<NameKey, Arc<Workload>>,
    pub(super) workloads_by_node: CowMap<Arc<str>, NodeWorkloads>,
    /// Each Node's locality (from its labels), by name.
    pub(super) node_localities: Arc<BTreeMap<String, Locality>>,
    /// The names of the Namespaces the registry holds.
    pub(super) namespaces: Arc<BTreeSet<String>>,
    pub(super) services_by_name: CowMap<(String, String), Arc<Service>>,
    pub(super) services_by_vip: CowMap<IpAddr, Arc<Service>>,
    pub(super) services_by_host: CowMap<String, Arc<Service>>,
    /// The waypoint bindings of the Services each pod backs, by the pod's (namespace,
    /// name); see `required_waypoints.rs`, which keeps it and reads it.
    pub(super) backed_waypoints: CowMap<NameKey, BackedBindings>,
    pub(super) routes: Arc<HashMap<String, Arc<HostRoutes>>>,
    /// Wildcard route hosts as (suffix, routes), longest suffix first.
    pub(super) wildcard_routes: Arc<Vec<(String, Arc<HostRoutes>)>>,
    pub(super) service_entries: Arc<Vec<Arc<ServiceEntry>>>,
    pub(super) service_entries_by_host: Arc<HashMap<String, Vec<Arc<ServiceEntry>>>>,
    pub(super) service_entries_by_address: Arc<HashMap<IpAddr, Arc<ServiceEntry>>>,
    /// Every host of every ServiceEntry, oldest entry first, with its addresses.
    pub(super) entry_hosts: Arc<Vec<Arc<EntryHost>>>,
    /// By each address clients dial (declared or allocated), oldest entry first.
    pub(super) entry_hosts_by_vip: Arc<HashMap<IpAddr, Vec<Arc<EntryHost>>>>,
    pub(super) entry_hosts_by_name: Arc<HashMap<String, Vec<Arc<EntryHost>>>>,
    /// The hosts with CIDR blocks, the most specific block first.
    pub(super) entry_host_blocks: Arc<Vec<Arc<EntryHost>>>,
    /// Istio Gateways, oldest first.
    pub(super) gateways: Arc<Vec<Arc<Gateway>>>,
    /// VirtualServices by the Gateway their `spec.gateways` names, oldest first.
    pub(super) gateway_virtual_services: Arc<HashMap<GatewayRef, Vec<Arc<VirtualService>>>>,
    /// TLS Secrets (only an ingress gateway's registry holds any), by (namespace, name).
    pub(super) secrets: Arc<BTreeMap<(String, String), Arc<Secret>>>,
    /// ReferenceGrants, by (namespace, name).
    pub(super) reference_grants: Arc<BTreeMap<(String, String), Arc<ReferenceGrant>>>,
    /// Gateway API Gateways, by (namespace, name).
    pub(super) kubernetes_gateways: Arc<BTreeMap<(String, String), Arc<KubernetesGateway>>>,
    /// Waypoints declared by Gateway API Gateways of a waypoint class, by (namespace, name).
    pub(super) waypoints: Arc<BTreeMap<(String, String), Arc<Waypoint>>>,
    pub(super) authorization_policies: Arc<HashMap<String, Vec<Arc<AuthorizationPolicy>>>>,
    pub(super) peer_authentications: Arc<HashMap<String, Vec<Arc<PeerAuthentication>>>>,
    pub(super) request_authentications: Arc<HashMap<String, Vec<Arc<RequestAuthentication>>>>,
    /// Telemetry resources by namespace, oldest first (Istio's order).
    pub(super) telemetries: Arc<HashMap<String, Vec<Arc<Telemetry>>>>,
    /// Every HTTPRoute and GRPCRoute, resolved against the cluster (parents, references).
    pub(super) route_resolutions: Arc<BTreeMap<ObjectRef, Arc<RouteResolution>>>,
    pub(super) refusals: Arc<BTreeMap<ObjectRef, Vec<Refusal>>>,
    pub(super) warnings: Arc<BTreeMap<ObjectRef, Vec<Warning>>>,
}

impl Snapshot {
    /// Increases by one with every published change; 0 before anything was applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// Istio's mesh config in force: the `istio` ConfigMap (key `mesh`) of the root
    /// namespace, Istio's defaults when there is none.
    pub fn mesh_config(&self) -> &Arc<MeshConfig> {
        &self.mesh_config
    }

    // --- workloads

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_by_ip.get(&ip)
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads_by_uid.get(uid)
    }

    /// Whether the registry holds the Namespace `name`: until it does, a pod of it without a
    /// `istio.io/dataplane-mode` label of its own cannot be said to be in the mesh or not.
    pub fn has_namespace(&self, name: &str) -> bool {
        self.namespaces.contains(name)
    }

    /// The pod `namespace/name`.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads_by_name
            .get(&(namespace, name) as &dyn NamePair)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads_by_uid.values()
    }

    pub fn workload_count(&self) -> usize {
        self.workloads_by_uid.len()
    }

    /// The locality of the node `name`: unknown (empty) for a node the registry does not
    /// hold or one without topology labels.
    pub fn node_locality(&self, name: &str) -> Locality {
        self.node_localities.get(name).cloned().unwrap_or_default()
    }

    /// A workload's locality: its `istio-locality` label, else its node's.
    pub fn workload_locality(&self, workload: &Workload) -> Locality {
        match workload.labels.get(LOCALITY_LABEL) {
            Some(label) => Locality::from_label(label),
            None => workload
                .node
                .as_deref()
                .map(|node| self.node_locality(node))
                .unwrap_or_default(),
        }
    }

    /// An endpoint's locality: its pod's ([`Snapshot::workload_locality`]), else that of the
    /// node its EndpointSlice names.
    pub fn endpoint_locality(&self, endpoint: &Endpoint) -> Locality {
        match self.endpoint_workload(endpoint) {
            Some(workload) => self.workload_locality(workload),
            None => endpoint
                .node
                .as_deref()
                .map(|node| self.node_locality(node))
                .unwrap_or_default(),
        }
    }

    /// The workloads scheduled on `node` (what an agent enrolls), ordered by uid.
    pub fn workloads_on_node(&self, node: &str) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads_by_node
            .get(node)
            .into_iter()
            .flat_map(|w| w.values())
    }

    /// The pod behind an endpoint: by address, else by its `targetRef`.
    pub fn endpoint_workload(&self, endpoint: &Endpoint) -> Option<&Arc<Workload>> {
        self.workload_by_ip(endpoint.address).or_else(|| {
            let (namespace, name) = endpoint.target.as_ref()?;
            self.workload(namespace, name)
        })
    }

    // --- services

    pub fn service_by_vip(&self, vip: IpAddr) -> Option<&Arc<Service>> {
        self.services_by_vip.get(&vip)
    }

    /// By `name.namespace.svc.<cluster domain>`.
    pub fn service_by_host(&self, host: &str) -> Option<&Arc<Service>> {
        self.services_by_host.get(host)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services_by_name
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services_by_name.values()
    }

    pub fn service_count(&self) -> usize {
        self.services_by_name.len()
    }

    // --- routes

    /// The VirtualServices (bound to the mesh) and DestinationRule of `host`, a fully
    /// qualified name; wildcard hosts (`*.example.com`) match when no exact entry does.
    pub fn routes_for_host(&self, host: &str) -> Option<&Arc<HostRoutes>> {
        self.routes.get(host).or_else(|| {
            self.wildcard_routes
                .iter()
                .find(|(suffix, _)| host.ends_with(suffix.as_str()))
                .map(|(_, routes)| routes)
        })
    }

    /// Endpoints of `host`'s Service whose pod carries the labels of `subset` in the host's
    /// DestinationRule. Empty when the host, the rule or the subset is unknown.
    pub fn subset_endpoints(&self, host: &str, subset: &str) -> Vec<&Endpoint> {
        let Some(service) = self.service_by_host(host) else {
            return Vec::new();
        };
        let Some(labels) = self
            .routes_for_host(host)
            .and_then(|r| r.subset_labels(subset))
        else {
            return Vec::new();
        };
        service
            .endpoints
            .iter()
            .filter(|e| {
                self.endpoint_workload(e)
                    .is_some_and(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            })
            .collect()
    }

    pub fn service_entries(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.service_entries.iter()
    }

    pub fn service_entries_for_host(&self, host: &str) -> &[Arc<ServiceEntry>] {
        self.service_entries_by_host
            .get(host)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn service_entry_by_address(&self, ip: IpAddr) -> Option<&Arc<ServiceEntry>> {
        self.service_entries_by_address.get(&ip)
    }

    /// Every host of every ServiceEntry, oldest entry first.
    pub fn entry_hosts(&self) -> impl Iterator<Item = &Arc<EntryHost>> {
        self.entry_hosts.iter()
    }

    /// The ServiceEntry host a client in `namespace` reaches at `ip`: one whose address it
    /// is (the oldest entry visible to the client), else one with a block holding it (the
    /// most specific).
    pub fn entry_host_by_address(&self, ip: IpAddr, namespace: &str) -> Option<&Arc<EntryHost>> {
        self.entry_hosts_by_vip
            .get(&ip)
            .into_iter()
            .flatten()
            .find(|h| h.visible_to(namespace))
            .or_else(|| {
                self.entry_host_blocks
                    .iter()
                    .find(|h| h.visible_to(namespace) && h.has_address(ip))
            })
    }

    /// The ServiceEntry host written exactly `host` (`*.example.com` finds the wildcard
    /// host itself) visible to a client in `namespace`, the oldest entry's.
    pub fn entry_host_named_exactly(&self, host: &str, namespace: &str) -> Option<&Arc<EntryHost>> {
        self.entry_hosts_by_name
            .get(host)
            .into_iter()
            .flatten()
            .find(|h| h.visible_to(namespace))
    }

    /// The ServiceEntry host named `host` for a client in `namespace`: an exact host, else
    /// the most specific wildcard host (`*.example.com`) matching it.
    pub fn entry_host_named(&self, host: &str, namespace: &str) -> Option<&Arc<EntryHost>> {
        let exact = self
            .entry_hosts_by_name
            .get(host)
            .into_iter()
            .flatten()
            .find(|h| h.visible_to(namespace));
        exact.or_else(|| {
            self.entry_hosts
                .iter()
                .filter(|h| h.visible_to(namespace))
                .filter_map(|h| {
                    let suffix = h.host.strip_prefix('*')?;
                    host.ends_with(suffix).then_some((suffix.len(), h))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, h)| h)
        })
    }

    /// The waypoint that traffic for the ServiceEntry host must pass: its binding names a
    /// declared waypoint that serves services.
    pub fn entry_host_waypoint(&self, host: &EntryHost) -> Option<&Arc<Waypoint>> {
        self.waypoint(host.waypoint.as_ref()?)
            .filter(|w| w.traffic.serves_services())
    }

    /// The pods a ServiceEntry's `workloadSelector` selects: those of its namespace with
    /// its labels.
    pub fn entry_host_workloads<'a>(
        &'a self,
        host: &'a EntryHost,
    ) -> impl Iterator<Item = &'a Arc<Workload>> + 'a {
        let selector = host.workload_selector.as_ref();
        self.workloads().filter(move |w| {
            selector.is_some_and(|labels| {
                *w.namespace == *host.namespace
                    && labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            })
        })
    }

    /// Istio's Gateways (networking.istio.io), oldest first.
    pub fn gateways(&self) -> impl Iterator<Item = &Arc<Gateway>> {
        self.gateways.iter()
    }

    /// The Istio Gateway `namespace/name`.
    pub fn gateway(&self, gateway: &GatewayRef) -> Option<&Arc<Gateway>> {
        self.gateways.iter().find(|g| {
            g.metadata.name.as_deref() == Some(gateway.name.as_str())
                && g.metadata
                    .namespace
                    .as_deref()
                    .unwrap_or(crate::api::DEFAULT_NAMESPACE)
                    == gateway.namespace
        })
    }

    /// The VirtualServices bound to `gateway` by their `spec.gateways`, oldest first.
    pub fn virtual_services_for_gateway(&self, gateway: &GatewayRef) -> &[Arc<VirtualService>] {
        self.gateway_virtual_services
            .get(gateway)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The TLS Secrets of `namespace` this registry holds, by name.
    pub fn secrets_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Secret>> + 'a {
        self.secrets
            .iter()
            .filter(move |((ns, _), _)| ns == namespace)
            .map(|(_, secret)| secret)
    }

    /// Every TLS Secret this registry reads.
    pub fn secrets(&self) -> impl Iterator<Item = &Arc<Secret>> {
        self.secrets.values()
    }

    /// Every ReferenceGrant.
    pub fn reference_grants(&self) -> impl Iterator<Item = &Arc<ReferenceGrant>> {
        self.reference_grants.values()
    }

    /// The TLS Secret `namespace/name`, if this registry reads Secrets and has it.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Arc<Secret>> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    /// The ReferenceGrants of `namespace`.
    pub fn reference_grants_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ReferenceGrant>> + 'a {
        self.reference_grants
            .iter()
            .filter(move |((ns, _), _)| ns == namespace)
            .map(|(_, grant)| grant)
    }

    // --- Gateway API Gateways

    /// The Gateway API `Gateway` `namespace/name` (of any class).
    pub fn kubernetes_gateway(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&Arc<KubernetesGateway>> {
        self.kubernetes_gateways
            .get(&(namespace.to_string(), name.to_string()))
    }

    // --- waypoints

    pub fn waypoints(&self) -> impl Iterator<Item = &Arc<Waypoint>> {
        self.waypoints.values()
    }

    /// The declared waypoint a binding names, if its Gateway exists.
    pub fn waypoint(&self, binding: &WaypointRef) -> Option<&Arc<Waypoint>> {
        self.waypoints
            .get(&(binding.namespace.clone(), binding.name.clone()))
    }

    /// The waypoint that traffic for `service` must pass: its binding names a declared
    /// waypoint that serves services.
    pub fn service_waypoint(&self, service: &Service) -> Option<&Arc<Waypoint>> {
        self.waypoint(service.waypoint.as_ref()?)
            .filter(|w| w.traffic.serves_services())
    }

    /// The waypoint that traffic addressed to `workload` itself (its pod IP) must pass.
    pub fn workload_waypoint(&self, workload: &Workload) -> Option<&Arc<Waypoint>> {
        self.waypoint(workload.waypoint.as_ref()?)
            .filter(|w| w.traffic.serves_workloads())
    }

    /// The Service that fronts a waypoint's pods (same name and namespace as its Gateway,
    /// as Istio's waypoint deployment names it).
    pub fn waypoint_service(&self, waypoint: &Waypoint) -> Option<&Arc<Service>> {
        self.service(&waypoint.namespace, &waypoint.name)
    }

    /// The identities a waypoint's pods prove: those of the ready pods behind its Service.
    pub fn waypoint_identities(&self, waypoint: &Waypoint) -> Vec<&str> {
        let mut identities: Vec<&str> = self
            .waypoint_service(waypoint)
            .into_iter()
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|e| self.endpoint_workload(e))
            .map(|w| &*w.identity)
            .collect();
        identities.sort_unstable();
        identities.dedup();
        identities
    }

    /// Whether `identity` (a SPIFFE id) is that of a pod serving a declared waypoint: a
    /// proxy of the mesh, whose `Forwarded` header (the client it carried traffic for) is
    /// believed. Any other peer's `Forwarded` is only its own claim.
    pub fn is_waypoint_identity(&self, identity: &str) -> bool {
        self.waypoints()
            .any(|w| self.waypoint_identities(w).contains(&identity))
    }

    // --- policies

    /// The AuthorizationPolicies of a namespace, oldest first.
    pub fn authorization_policies(&self, namespace: &str) -> &[Arc<AuthorizationPolicy>] {
        self.authorization_policies
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The AuthorizationPolicies enforced on `workload` (root namespace and its own,
    /// selector matching).
    pub fn authorization_policies_for(
        &self,
        workload: &Workload,
    ) -> Vec<&Arc<AuthorizationPolicy>> {
        policy::authorization_policies_for(
            workload,
            &self.authorization_policies,
            &self.settings.root_namespace,
        )
    }

    /// An ALLOW or CUSTOM AuthorizationPolicy attached by `targetRefs` to a Service that
    /// selects `workload` and is bound to no waypoint: only a waypoint can apply it, and a
    /// security rule weft cannot honour is not ignored, so connections to the workload are
    /// refused (fail closed) until the Service gets a waypoint. The reason, naming the
    /// policy and the Service; `None` when no such policy exists.
    pub fn unenforceable_policy(&self, workload: &Workload) -> Option<String> {
        use crate::api::security::Action;
        let policies = self.authorization_policies.get(&*workload.namespace)?;
        for policy in policies {
            if !matches!(
                policy.spec.effective_action(),
                Action::Allow | Action::Custom
            ) {
                continue;
            }
            let targets = policy
                .spec
                .target_refs
                .iter()
                .chain(policy.spec.target_ref.iter());
            for target in targets {
                if !matches!(target.group.as_str(), "" | "core") || target.kind != "Service" {
                    continue;
                }
                let Some(service) = self.service(&workload.namespace, &target.name) else {
                    continue;
                };
                let selects = service.selector.as_ref().is_some_and(|selector| {
                    !selector.is_empty()
                        && selector
                            .iter()
                            .all(|(k, v)| workload.labels.get(k) == Some(v))
                });
                if selects && service.waypoint.is_none() {
                    return Some(format!(
                        "AuthorizationPolicy {}/{} targets Service {}/{}, which has no waypoint \
                         to apply it: refused (fail closed)",
                        workload.namespace,
                        policy.metadata.name.as_deref().unwrap_or_default(),
                        service.namespace,
                        service.name
                    ));
                }
            }
        }
        None
    }

    pub fn peer_authentications(&self, namespace: &str) -> &[Arc<PeerAuthentication>] {
        self.peer_authentications
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The RequestAuthentications of a namespace, oldest first.
    pub fn request_authentications(&self, namespace: &str) -> &[Arc<RequestAuthentication>] {
        self.request_authentications
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The Telemetry resources of a namespace, oldest first.
    pub fn telemetries(&self, namespace: &str) -> &[Arc<Telemetry>] {
        self.telemetries
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The mTLS mode in force for `workload` on `port`.
    pub fn mtls_mode(&self, workload: &Workload, port: u16) -> MtlsMode {
        policy::effective_mtls(
            workload,
            port,
            &self.peer_authentications,
            &self.settings.root_namespace,
        )
    }

    // --- Gateway API routes

    /// Every HTTPRoute and GRPCRoute with what its parents and references resolved to
    /// (what the control plane writes into their status).
    pub fn route_resolutions(&self) -> impl Iterator<Item = &Arc<RouteResolution>> {
        self.route_resolutions.values()
    }

    // --- what was not accepted

    /// Every current refusal: objects whose latest version was refused. A previously
    /// accepted version of such an object, if any, is still in force.
    pub fn refused(&self) -> impl Iterator<Item = &Refusal> {
        self.refusals.values().flatten()
    }

    pub fn refusals_of(&self, object: &ObjectRef) -> &[Refusal] {
        self.refusals
            .get(object)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.warnings.values().flatten()
    }
}
