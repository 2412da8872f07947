//! The waypoint controller of weft's control plane (weft-ca): it drives the pure decisions of
//! `weft_controller` against the Kubernetes API, as istiod's gateway deployment controller
//! does for Istio.
//!
//! - Watches (kube-runtime reflectors, one watch per kind): Gateway API Gateways; the
//!   Deployments, Services, ServiceAccounts, Roles and RoleBindings labelled
//!   `gateway.istio.io/managed` with weft's value; ConfigMaps named `weft-trust-bundle`; the
//!   ClusterRoleBinding `weft-waypoints`; ReferenceGrants (when served). Every event queues
//!   what it concerns: its Gateway, its namespace's trust bundle, the binding. Nothing is
//!   decided before every watch has listed once. Secrets are not watched: the Secrets an
//!   ingress Gateway's HTTPS listeners name are read by name (GET) when it is decided, and
//!   one naming a missing Secret is decided again after `secret_recheck`.
//! - Writes with server-side apply (field manager `weft-controller`, forced), each carrying
//!   the resourceVersion it was decided on, so a write over something that changed since is
//!   refused (409) and decided again. An object of a needed name that is not in the managed
//!   watch is read once (GET) to tell "absent" from "someone else's", which is left alone.
//! - Deletes only what it made for a Gateway that no longer wants it (its class changed, a
//!   certificate reference changed), with a uid precondition. A deleted Gateway's objects
//!   are the garbage collector's: they carry ownerReferences to it — but for the Roles and
//!   RoleBindings of an ingress Gateway in other namespaces than its own (an owner
//!   reference cannot cross namespaces), which the controller deletes itself.
//! - Writes the Gateway's status (`Accepted`, `Programmed`, addresses) with a merge patch of
//!   the `status` subresource, only when it changes.
//! - A failed key is retried with exponential backoff (0.5 s doubling to 5 min by default),
//!   logged with the object and the API server's answer; events for it meanwhile wait for
//!   the retry. Everything is decided again every `resync`.
//!
//! One process at a time is assumed: two replicas would both write the same objects with
//! the same field manager (harmless, twice the writes); there is no leader election.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use weft_controller::certificates::{self, RefProblem, ReferenceGrant, SecretKey};
use weft_controller::class::{Class, FIELD_MANAGER};
use weft_controller::gateway::{GATEWAY_API_GROUP, Gateway};
use weft_controller::ingress;
use weft_controller::object::{Existing, GATEWAY_NAMESPACE_LABEL, ObjectKey, ObjectKind};
use weft_controller::reconcile::{self, BindingPlan, NamespacePlan, Verdict};
use weft_controller::status::{self, Outcome};
use weft_controller::waypoint::{CLUSTER_ROLE_BINDING, Settings, TRUST_BUNDLE_CONFIG_MAP};

/// What the controller asks of the API server, as RBAC grants: (API group, resource, verbs,
/// resource names; none for any name). The ClusterRole weft-ca of deploy/base/rbac.yaml
/// grants exactly these besides the CA's own (`cli/tests/deploy_rbac.rs` holds it to them)
/// and `ca/tests/waypoint_controller.rs` runs the controller under that role.
/// - Gateways: listed and watched; their status patched; `gateways/finalizers` updated,
///   which is what the OwnerReferencesPermissionEnforcement admission plugin asks of whoever
///   sets `blockOwnerDeletion` on an owner reference.
/// - ServiceAccounts, Services, Deployments: named after Gateways, so by any name; `get`
///   reads one outside the label-selected watch; `create` is checked when an apply creates.
/// - ConfigMaps named `weft-trust-bundle` only; the ClusterRoleBinding `weft-waypoints`
///   only, and `bind` of the ClusterRole `weft-waypoint` only (RBAC's escalation check on
///   writing a binding).
/// - Roles and RoleBindings (an ingress gateway's grant to read the Secrets its HTTPS
///   listeners name, by name): as the ServiceAccounts. RBAC lets one write a Role only with
///   the permissions it grants, so the controller holds `get` on Secrets (any name: it
///   cannot know the names Gateways will give); it reads a referenced Secret by name to say
///   whether it exists and is of type `kubernetes.io/tls` (`ResolvedRefs`), and never lists
///   or watches Secrets. The alternative, `escalate` on Roles and `bind`, would let it grant
///   anything without holding it.
/// - ReferenceGrants: listed and watched (which Secrets of other namespaces a Gateway may
///   use).
pub const GRANTS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "gateway.networking.k8s.io",
        "gateways",
        &["list", "watch"],
        &[],
    ),
    (
        "gateway.networking.k8s.io",
        "gateways/status",
        &["patch"],
        &[],
    ),
    (
        "gateway.networking.k8s.io",
        "gateways/finalizers",
        &["update"],
        &[],
    ),
    ("", "serviceaccounts", OWNED_VERBS, &[]),
    ("", "services", OWNED_VERBS, &[]),
    ("apps", "deployments", OWNED_VERBS, &[]),
    (
        "",
        "configmaps",
        &["list", "watch", "create", "patch", "delete"],
        &[TRUST_BUNDLE_CONFIG_MAP],
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        &["list", "watch", "patch"],
        &[CLUSTER_ROLE_BINDING],
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        &["bind"],
        &[weft_controller::waypoint::CLUSTER_ROLE],
    ),
    ("rbac.authorization.k8s.io", "roles", OWNED_VERBS, &[]),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        OWNED_VERBS,
        &[],
    ),
    ("", "secrets", &["get"], &[]),
    (
        "gateway.networking.k8s.io",
        "referencegrants",
        &["list", "watch"],
        &[],
    ),
];

const OWNED_VERBS: &[&str] = &["list", "watch", "get", "create", "patch", "delete"];

/// The Gateway API versions serving Gateway, preferred first.
const GATEWAY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// What waypoints are given (image, the CA's address, the trust domain).
    pub settings: Settings,
    /// The mesh's root certificate (PEM), published in each waypoint namespace as
    /// `weft-trust-bundle`; `None` publishes nothing.
    pub trust_bundle: Option<String>,
    /// Everything is decided again this often.
    pub resync: Duration,
    /// The first retry of a failed key comes after this, each next one after twice as long…
    pub backoff_initial: Duration,
    /// … up to this.
    pub backoff_max: Duration,
    /// How long to wait before looking again for the Gateway API (its CRDs not installed).
    pub discovery_retry: Duration,
    /// An ingress Gateway naming a Secret that does not exist (or is of another type) is
    /// decided again after this: Secrets are read by name, not watched.
    pub secret_recheck: Duration,
    /// Where the routes are resolved (the route status writer's registry): an ingress
    /// Gateway's listeners report how many are attached (`attachedRoutes`), and a Gateway is
    /// decided again when its counts change. `None`: counts are kept as found.
    pub routes: Option<AttachedRoutes>,
}

/// The registry resolving the Gateway API's routes, for listeners' `attachedRoutes`.
#[derive(Clone)]
pub struct AttachedRoutes(pub weft_config::registry::Registry);

impl std::fmt::Debug for AttachedRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachedRoutes")
    }
}

/// Gateway (namespace, name) → listener name → number of routes attached.
type RouteCounts = BTreeMap<(String, String), BTreeMap<String, u32>>;

impl AttachedRoutes {
    /// The routes attached to each listener of `namespace/name`.
    fn of(&self, namespace: &str, name: &str) -> BTreeMap<String, u32> {
        let snapshot = self.0.snapshot();
        weft_config::translate::gateway_routes::attached_route_counts(
            snapshot.route_resolutions().map(|r| &**r),
            namespace,
            name,
        )
    }

    /// The counts of every Gateway some route attaches to.
    fn all(&self) -> RouteCounts {
        use weft_config::translate::gateway_routes::ParentOutcome;
        let snapshot = self.0.snapshot();
        let mut gateways: Vec<(String, String)> = snapshot
            .route_resolutions()
            .flat_map(|r| r.parents.iter())
            .filter_map(|p| match &p.outcome {
                ParentOutcome::Gateway {
                    namespace, name, ..
                } => Some((namespace.clone(), name.clone())),
                _ => None,
            })
            .collect();
        gateways.sort();
        gateways.dedup();
        gateways
            .into_iter()
            .map(|(namespace, name)| {
                let counts = weft_config::translate::gateway_routes::attached_route_counts(
                    snapshot.route_resolutions().map(|r| &**r),
                    &namespace,
                    &name,
                );
                ((namespace, name), counts)
            })
            .collect()
    }

    /// Queues every Gateway whose counts change, as the registry resolves routes anew.
    async fn follow(self, triggers: mpsc::UnboundedSender<Key>) {
        let mut versions = self.0.subscribe();
        let mut known = self.all();
        while versions.changed().await.is_ok() {
            let now = self.all();
            for gateway in known.keys().chain(now.keys()) {
                if known.get(gateway) != now.get(gateway) {
                    let (namespace, name) = gateway.clone();
                    if triggers.send(Key::Gateway { namespace, name }).is_err() {
                        return;
                    }
                }
            }
            known = now;
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            trust_bundle: None,
            resync: Duration::from_secs(10 * 60),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            discovery_retry: Duration::from_secs(30),
            secret_recheck: Duration::from_secs(30),
            routes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the ClusterRoleBinding {CLUSTER_ROLE_BINDING} does not exist (deploy/base/rbac.yaml creates it): waypoints cannot read the cluster"
    )]
    MissingBinding,
    #[error("the watch of {0} stopped")]
    WatchEnded(&'static str),
}

impl ControllerError {
    fn api(what: impl Into<String>, source: kube::Error) -> Self {
        ControllerError::Api {
            what: what.into(),
            source,
        }
    }

    /// The HTTP status the API server answered, if it answered.
    fn code(&self) -> Option<u16> {
        match self {
            ControllerError::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

/// What a queued key stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Gateway {
        namespace: String,
        name: String,
    },
    TrustBundle {
        namespace: String,
    },
    Binding,
    /// Every Gateway, namespace and the binding (after a relist, and every resync).
    All,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Gateway { namespace, name } => write!(f, "Gateway {namespace}/{name}"),
            Key::TrustBundle { namespace } => {
                write!(f, "ConfigMap {namespace}/{TRUST_BUNDLE_CONFIG_MAP}")
            }
            Key::Binding => write!(f, "ClusterRoleBinding {CLUSTER_ROLE_BINDING}"),
            Key::All => write!(f, "everything"),
        }
    }
}

fn resource(kind: ObjectKind) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: kind.version().to_string(),
        api_version: kind.api_version(),
        kind: kind.name().to_string(),
        plural: kind.plural().to_string(),
    }
}

fn gateway_resource(version: &str) -> ApiResource {
    ApiResource {
        group: GATEWAY_API_GROUP.to_string(),
        version: version.to_string(),
        api_version: format!("{GATEWAY_API_GROUP}/{version}"),
        kind: "Gateway".to_string(),
        plural: "gateways".to_string(),
    }
}

/// The watched objects.
struct Stores {
    gateways: Store<DynamicObject>,
    gateway_resource: ApiResource,
    owned: BTreeMap<ObjectKind, Store<DynamicObject>>,
    /// ReferenceGrants; `None` when the API server serves none.
    grants: Option<Store<DynamicObject>>,
}

impl Stores {
    fn gateways(&self) -> Vec<Gateway> {
        self.gateways
            .state()
            .iter()
            .filter_map(|g| to_gateway(g))
            .collect()
    }

    fn gateway(&self, namespace: &str, name: &str) -> Option<Gateway> {
        let reference = ObjectRef::new_with(name, self.gateway_resource.clone()).within(namespace);
        self.gateways.get(&reference).and_then(|g| to_gateway(&g))
    }

    fn get(&self, key: &ObjectKey) -> Option<Existing> {
        let store = self.owned.get(&key.kind)?;
        let mut reference = ObjectRef::new_with(&key.name, resource(key.kind));
        if key.kind.namespaced() {
            reference = reference.within(&key.namespace);
        }
        store.get(&reference).map(|o| existing(key.kind, &o))
    }

    /// Weft's objects made for the Gateway `uid` of `namespace`: in its namespace, and its
    /// Roles and RoleBindings in any.
    fn owned_by(&self, namespace: &str, uid: &str) -> Vec<Existing> {
        [
            ObjectKind::ServiceAccount,
            ObjectKind::Deployment,
            ObjectKind::Service,
            ObjectKind::Role,
            ObjectKind::RoleBinding,
        ]
        .into_iter()
        .filter_map(|kind| Some((kind, self.owned.get(&kind)?)))
        .flat_map(|(kind, store)| {
            store
                .state()
                .iter()
                .filter(|o| {
                    matches!(kind, ObjectKind::Role | ObjectKind::RoleBinding)
                        || o.namespace().as_deref() == Some(namespace)
                })
                .map(|o| existing(kind, o))
                .collect::<Vec<_>>()
        })
        .filter(|o| o.made_for(uid))
        .collect()
    }

    /// The Roles and RoleBindings made for the Gateway `namespace/name` in other namespaces
    /// (which no owner reference lets the garbage collector delete with it).
    fn made_elsewhere_for(&self, namespace: &str, name: &str) -> Vec<Existing> {
        [ObjectKind::Role, ObjectKind::RoleBinding]
            .into_iter()
            .filter_map(|kind| Some((kind, self.owned.get(&kind)?)))
            .flat_map(|(kind, store)| {
                store
                    .state()
                    .iter()
                    .filter(|o| o.namespace().as_deref() != Some(namespace))
                    .filter(|o| {
                        let labels = o.labels();
                        labels.get(GATEWAY_NAMESPACE_LABEL).map(String::as_str) == Some(namespace)
                            && labels
                                .get(weft_core::mesh::waypoint::GATEWAY_NAME_LABEL)
                                .map(String::as_str)
                                == Some(name)
                    })
                    .map(|o| existing(kind, o))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn grants(&self) -> Vec<ReferenceGrant> {
        self.grants
            .as_ref()
            .map(|store| {
                store
                    .state()
                    .iter()
                    .filter_map(|g| serde_json::to_value(&**g).ok())
                    .map(|g| ReferenceGrant::from_json(&g))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn to_gateway(object: &DynamicObject) -> Option<Gateway> {
    let value = serde_json::to_value(object).ok()?;
    match Gateway::from_json(&value) {
        Ok(gateway) => Some(gateway),
        Err(e) => {
            warn!(gateway = %object.name_any(), error = %e, "unreadable Gateway ignored");
            None
        }
    }
}

fn existing(kind: ObjectKind, object: &DynamicObject) -> Existing {
    Existing::from_json(kind, serde_json::to_value(object).unwrap_or(Value::Null))
}

/// Runs until the process ends: finds the Gateway API, watches, and keeps every waypoint
/// Gateway's objects and status as they should be.
pub async fn run(client: Client, config: ControllerConfig) -> Result<(), ControllerError> {
    let mut said = false;
    let version = loop {
        match served_gateway_version(&client).await {
            Ok(Some(version)) => break version,
            Ok(None) if !said => {
                said = true;
                info!(
                    "the Gateway API is not served (its CRDs not installed?): no waypoint controller until it is"
                );
            }
            Ok(None) => debug!("the Gateway API is still not served"),
            Err(e) => warn!(error = %e, "looking for the Gateway API failed; retrying"),
        }
        tokio::time::sleep(config.discovery_retry).await;
    };
    info!(version, "waypoint controller: watching Gateways");
    let (triggers, queue) = mpsc::unbounded_channel();
    let gateway_resource = gateway_resource(version);
    let gateways = watch(
        &client,
        gateway_resource.clone(),
        None,
        watcher::Config::default(),
        "Gateways",
        triggers.clone(),
        |object| {
            let namespace = object.namespace().unwrap_or_default();
            vec![
                Key::Gateway {
                    namespace: namespace.clone(),
                    name: object.name_any(),
                },
                Key::TrustBundle { namespace },
                Key::Binding,
            ]
        },
    );
    let managed = watcher::Config::default().labels(&Class::managed_selector());
    let mut owned = BTreeMap::new();
    for kind in [
        ObjectKind::ServiceAccount,
        ObjectKind::Deployment,
        ObjectKind::Service,
        ObjectKind::Role,
        ObjectKind::RoleBinding,
    ] {
        let store = watch(
            &client,
            resource(kind),
            None,
            managed.clone(),
            kind.plural(),
            triggers.clone(),
            |object| {
                let labels = object.labels();
                match labels.get(weft_core::mesh::waypoint::GATEWAY_NAME_LABEL) {
                    Some(name) => vec![Key::Gateway {
                        // A Role of another namespace names its Gateway's.
                        namespace: labels
                            .get(GATEWAY_NAMESPACE_LABEL)
                            .cloned()
                            .unwrap_or_else(|| object.namespace().unwrap_or_default()),
                        name: name.clone(),
                    }],
                    None => Vec::new(),
                }
            },
        );
        owned.insert(kind, store);
    }
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    owned.insert(
        ObjectKind::ConfigMap,
        watch(
            &client,
            resource(ObjectKind::ConfigMap),
            None,
            by_name(TRUST_BUNDLE_CONFIG_MAP),
            "ConfigMaps",
            triggers.clone(),
            |object| {
                vec![Key::TrustBundle {
                    namespace: object.namespace().unwrap_or_default(),
                }]
            },
        ),
    );
    owned.insert(
        ObjectKind::ClusterRoleBinding,
        watch(
            &client,
            resource(ObjectKind::ClusterRoleBinding),
            None,
            by_name(CLUSTER_ROLE_BINDING),
            "ClusterRoleBindings",
            triggers.clone(),
            |_| vec![Key::Binding],
        ),
    );
    let grants = match served_grant_version(&client).await {
        Ok(Some(version)) => Some(watch(
            &client,
            grant_resource(version),
            None,
            watcher::Config::default(),
            "ReferenceGrants",
            triggers.clone(),
            // Which Gateways it concerns is in its `from`: decide them all again.
            |_| vec![Key::All],
        )),
        Ok(None) => {
            info!("ReferenceGrants are not served: no Gateway may use another namespace's Secret");
            None
        }
        Err(e) => {
            warn!(error = %e, "looking for ReferenceGrants failed: no Gateway may use another namespace's Secret until weft-ca restarts");
            None
        }
    };
    let stores = Stores {
        gateways,
        gateway_resource,
        owned,
        grants,
    };
    stores
        .gateways
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::WatchEnded("Gateways"))?;
    for (kind, store) in &stores.owned {
        store
            .wait_until_ready()
            .await
            .map_err(|_| ControllerError::WatchEnded(kind.plural()))?;
    }
    if let Some(store) = &stores.grants {
        store
            .wait_until_ready()
            .await
            .map_err(|_| ControllerError::WatchEnded("ReferenceGrants"))?;
    }
    info!("waypoint controller: every watch has listed; reconciling");
    if let Some(routes) = config.routes.clone() {
        tokio::spawn(routes.follow(triggers.clone()));
    }
    let worker = Worker {
        client,
        config,
        stores,
    };
    worker.work(queue).await;
    Ok(())
}

/// The first Gateway API version the API server serves, `None` if none.
async fn served_gateway_version(client: &Client) -> Result<Option<&'static str>, kube::Error> {
    for version in GATEWAY_VERSIONS {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_resource(version));
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(version)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// ReferenceGrant's resource at `version`.
fn grant_resource(version: &str) -> ApiResource {
    ApiResource {
        group: GATEWAY_API_GROUP.to_string(),
        version: version.to_string(),
        api_version: format!("{GATEWAY_API_GROUP}/{version}"),
        kind: "ReferenceGrant".to_string(),
        plural: "referencegrants".to_string(),
    }
}

/// The first ReferenceGrant version the API server serves (v1 since Gateway API 1.5), `None`
/// if none.
async fn served_grant_version(client: &Client) -> Result<Option<&'static str>, kube::Error> {
    for version in ["v1", "v1beta1"] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &grant_resource(version));
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(version)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Watches one kind into a store (its watch retried with kube-runtime's backoff), sending
/// the keys each change concerns, and everything after each complete (re)list.
fn watch(
    client: &Client,
    resource: ApiResource,
    namespace: Option<&str>,
    config: watcher::Config,
    what: &'static str,
    triggers: mpsc::UnboundedSender<Key>,
    keys: impl Fn(&DynamicObject) -> Vec<Key> + Send + 'static,
) -> Store<DynamicObject> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let writer = Writer::new(resource);
    let store = writer.as_reader();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let keys = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => keys(&object),
                Ok(watcher::Event::InitDone) => vec![Key::All],
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Vec::new(),
                Err(e) => {
                    warn!(watch = what, error = %e, "watch failed; retrying with backoff");
                    Vec::new()
                }
            };
            for key in keys {
                if triggers.send(key).is_err() {
                    return;
                }
            }
        }
        warn!(watch = what, "watch ended");
    });
    store
}

struct Worker {
    client: Client,
    config: ControllerConfig,
    stores: Stores,
}

impl Worker {
    async fn work(&self, mut triggers: mpsc::UnboundedReceiver<Key>) {
        let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
        let mut failures: HashMap<Key, u32> = HashMap::new();
        due.insert(Key::All, Instant::now());
        let mut resync = tokio::time::interval(self.config.resync);
        resync.tick().await;
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                trigger = triggers.recv() => {
                    let Some(key) = trigger else { return };
                    // A key waiting out its backoff keeps its retry time.
                    if !failures.contains_key(&key) {
                        due.insert(key, Instant::now());
                    }
                }
                _ = resync.tick() => {
                    due.insert(Key::All, Instant::now());
                }
                _ = sleep_until(next) => {
                    let now = Instant::now();
                    let ready: Vec<Key> = due
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in ready {
                        due.remove(&key);
                        if key == Key::All {
                            // What it stands for, each at its own time: a key waiting out
                            // its backoff keeps waiting.
                            for key in self.expand() {
                                if !failures.contains_key(&key) {
                                    due.insert(key, now);
                                }
                            }
                            continue;
                        }
                        {
                            match self.reconcile(&key).await {
                                Ok(recheck) => {
                                    failures.remove(&key);
                                    if recheck {
                                        due.insert(key, Instant::now() + self.config.secret_recheck);
                                    }
                                }
                                Err(e) => {
                                    let attempt = failures.entry(key.clone()).or_insert(0);
                                    *attempt += 1;
                                    let delay = self.backoff(*attempt);
                                    warn!(
                                        key = %key,
                                        attempt = *attempt,
                                        retry_in_ms = delay.as_millis() as u64,
                                        code = e.code(),
                                        error = %e,
                                        "reconciling failed; retrying with backoff"
                                    );
                                    due.insert(key, Instant::now() + delay);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max)
    }

    /// What `All` stands for: every Gateway, every namespace with a Gateway or a trust
    /// bundle, the binding.
    fn expand(&self) -> Vec<Key> {
        let gateways = self.stores.gateways();
        let mut namespaces: Vec<String> = gateways.iter().map(|g| g.namespace.clone()).collect();
        if let Some(store) = self.stores.owned.get(&ObjectKind::ConfigMap) {
            namespaces.extend(store.state().iter().filter_map(|c| c.namespace()));
        }
        namespaces.sort();
        namespaces.dedup();
        let mut keys: Vec<Key> = gateways
            .into_iter()
            .map(|g| Key::Gateway {
                namespace: g.namespace,
                name: g.name,
            })
            .collect();
        keys.extend(
            namespaces
                .into_iter()
                .map(|namespace| Key::TrustBundle { namespace }),
        );
        keys.push(Key::Binding);
        keys
    }

    /// Whether to decide the key again after `secret_recheck` (a Secret it names is
    /// missing).
    async fn reconcile(&self, key: &Key) -> Result<bool, ControllerError> {
        match key {
            Key::Gateway { namespace, name } => self.reconcile_gateway(namespace, name).await,
            Key::TrustBundle { namespace } => {
                self.reconcile_trust_bundle(namespace).await.map(|_| false)
            }
            Key::Binding => self.reconcile_binding().await.map(|_| false),
            Key::All => Ok(false),
        }
    }

    /// The type of the Secret `namespace/name`, `None` when it does not exist (read by name;
    /// its data is dropped at once).
    async fn secret_type(&self, key: &SecretKey) -> Result<Option<String>, ControllerError> {
        let resource = ApiResource {
            group: String::new(),
            version: "v1".to_string(),
            api_version: "v1".to_string(),
            kind: "Secret".to_string(),
            plural: "secrets".to_string(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.0, &resource);
        match api.get_opt(&key.1).await {
            Ok(found) => Ok(
                found.map(|secret| secret.data["type"].as_str().unwrap_or("Opaque").to_string())
            ),
            Err(e) => Err(ControllerError::api(
                format!("reading Secret {}/{}", key.0, key.1),
                e,
            )),
        }
    }

    /// `ResolvedRefs` of each listener of an ingress Gateway.
    async fn certificate_refs(
        &self,
        gateway: &Gateway,
        grants: &[ReferenceGrant],
    ) -> Result<Vec<Result<(), RefProblem>>, ControllerError> {
        let mut types: BTreeMap<SecretKey, Option<String>> = BTreeMap::new();
        for (i, listener) in gateway.listeners.iter().enumerate() {
            if !certificates::terminates(listener) {
                continue;
            }
            for reference in &listener.certificate_refs {
                let field = format!("spec.listeners[{i}].tls.certificateRefs");
                if let Ok(key) =
                    certificates::resolve(&gateway.namespace, &field, reference, grants)
                    && !types.contains_key(&key)
                {
                    let found = self.secret_type(&key).await?;
                    types.insert(key, found);
                }
            }
        }
        Ok(certificates::resolved_refs(gateway, grants, &|key| {
            types.get(key).cloned().flatten()
        }))
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        let resource = resource(key.kind);
        if key.kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &key.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// The object at `key` as the watch has it, else as the API server has it (an object
    /// without weft's label is not in the watch).
    async fn lookup(&self, key: &ObjectKey) -> Result<Option<Existing>, ControllerError> {
        if let Some(found) = self.stores.get(key) {
            return Ok(Some(found));
        }
        match self.api(key).get_opt(&key.name).await {
            Ok(found) => Ok(found.map(|o| existing(key.kind, &o))),
            Err(e) => Err(ControllerError::api(format!("reading {key}"), e)),
        }
    }

    async fn reconcile_gateway(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ControllerError> {
        let Some(gateway) = self.stores.gateway(namespace, name) else {
            debug!(gateway = %format!("{namespace}/{name}"), "gone: its objects are the garbage collector's");
            // But for its Roles and RoleBindings of other namespaces, which no owner
            // reference can reach.
            for orphan in self.stores.made_elsewhere_for(namespace, name) {
                self.delete(&orphan.key, &orphan.uid).await?;
                info!(gateway = %format!("{namespace}/{name}"), object = %orphan.key, "deleted: its Gateway is gone");
            }
            return Ok(false);
        };
        let settings = &self.config.settings;
        let grants = self.stores.grants();
        let (_, objects) = reconcile::desired_with(&gateway, settings, &grants);
        let mut found = BTreeMap::new();
        for (kind, body) in &objects {
            let key = ObjectKey::of(*kind, body);
            if let Some(existing) = self.lookup(&key).await? {
                found.insert(key, existing);
            }
        }
        let owned = gateway
            .uid
            .as_deref()
            .map(|uid| self.stores.owned_by(namespace, uid))
            .unwrap_or_default();
        let plan = reconcile::gateway(&gateway, settings, &grants, |key| found.get(key), &owned);
        if gateway.deleting || (plan.verdict == Verdict::NotOurs && plan.delete.is_empty()) {
            return Ok(false);
        }
        // An ingress Gateway's listeners: each HTTPS listener's certificates.
        let listeners = match &plan.verdict {
            Verdict::Accepted {
                class: Class::Ingress,
                ..
            } => {
                let refs = self.certificate_refs(&gateway, &grants).await?;
                let mut listeners = ingress::listener_statuses(&gateway, &refs);
                if let Some(routes) = &self.config.routes {
                    ingress::count_attached(&mut listeners, &routes.of(namespace, name));
                }
                listeners
            }
            _ => Vec::new(),
        };
        let recheck = listeners.iter().any(|l| {
            l.resolved_refs
                .as_ref()
                .is_err_and(|p| p.reason == "InvalidCertificateRef")
        });
        let mut service: Option<Value> = found
            .iter()
            .find(|(k, _)| k.kind == ObjectKind::Service)
            .map(|(_, e)| e.value.clone());
        let mut failure: Option<(u16, String, ControllerError)> = None;
        for apply in &plan.apply {
            let created = apply.body["metadata"].get("resourceVersion").is_none();
            match self.apply(apply).await {
                Ok(stored) => {
                    info!(
                        gateway = %gateway.key(),
                        object = %apply.key,
                        "{}",
                        if created { "created" } else { "restored to what the Gateway asks" }
                    );
                    if apply.key.kind == ObjectKind::Service {
                        service = Some(stored);
                    }
                }
                Err(e) => {
                    let code = e.code().unwrap_or(0);
                    failure = Some((code, e.to_string(), e));
                    break;
                }
            }
        }
        if failure.is_none() {
            for delete in &plan.delete {
                if let Err(e) = self.delete(&delete.key, &delete.uid).await {
                    let code = e.code().unwrap_or(0);
                    failure = Some((code, e.to_string(), e));
                    break;
                }
                info!(gateway = %gateway.key(), object = %delete.key, "deleted: the Gateway no longer asks for it");
            }
        }
        for conflict in &plan.conflicts {
            warn!(gateway = %gateway.key(), object = %conflict, "exists and was not made by weft: left alone");
        }
        let outcome = Outcome {
            verdict: &plan.verdict,
            conflicts: &plan.conflicts,
            service: service.as_ref(),
            failure: failure
                .as_ref()
                .map(|(code, text, _)| (*code, text.as_str())),
            listeners: &listeners,
        };
        let written = self.write_status(&gateway, &outcome).await;
        if let Some((_, _, e)) = failure {
            return Err(e);
        }
        if let Ok(true) = written {
            match &plan.verdict {
                Verdict::Accepted { warnings, .. } => {
                    for warning in warnings {
                        warn!(gateway = %gateway.key(), "{warning}");
                    }
                    for listener in &listeners {
                        if let Err(problem) = &listener.resolved_refs {
                            warn!(
                                gateway = %gateway.key(),
                                listener = %listener.name,
                                reason = problem.reason,
                                "refuses TLS: {}",
                                problem.message
                            );
                        }
                    }
                }
                Verdict::Refused(refusal) => warn!(
                    gateway = %gateway.key(),
                    reason = refusal.reason,
                    "not accepted: {}",
                    refusal.message
                ),
                Verdict::NotOurs => {}
            }
        }
        written.map(|_| recheck)
    }

    /// Writes the Gateway's status if it changed; whether it wrote.
    async fn write_status(
        &self,
        gateway: &Gateway,
        outcome: &Outcome<'_>,
    ) -> Result<bool, ControllerError> {
        let Some(patch) = status::patch(gateway, outcome, &status::rfc3339(unix_now())) else {
            return Ok(false);
        };
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &gateway.namespace,
            &self.stores.gateway_resource,
        );
        match api
            .patch_status(
                &gateway.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(ControllerError::api(
                format!("writing the status of Gateway {}", gateway.key()),
                e,
            )),
        }
    }

    async fn apply(&self, apply: &reconcile::Apply) -> Result<Value, ControllerError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(&apply.key)
            .patch(&apply.key.name, &params, &Patch::Apply(&apply.body))
            .await
            .map(|stored| serde_json::to_value(stored).unwrap_or(Value::Null))
            .map_err(|e| ControllerError::api(format!("applying {}", apply.key), e))
    }

    async fn delete(&self, key: &ObjectKey, uid: &str) -> Result<(), ControllerError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.api(key).delete(&key.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another object of that name: not ours to delete.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(e) => Err(ControllerError::api(format!("deleting {key}"), e)),
        }
    }

    async fn reconcile_trust_bundle(&self, namespace: &str) -> Result<(), ControllerError> {
        let Some(pem) = &self.config.trust_bundle else {
            return Ok(());
        };
        let gateways = self.stores.gateways();
        let in_namespace: Vec<&Gateway> = gateways
            .iter()
            .filter(|g| g.namespace == namespace)
            .collect();
        let key = ObjectKey::new(ObjectKind::ConfigMap, namespace, TRUST_BUNDLE_CONFIG_MAP);
        let found = self.stores.get(&key);
        match reconcile::trust_bundle(namespace, &in_namespace, found.as_ref(), pem) {
            NamespacePlan::Nothing => Ok(()),
            NamespacePlan::Apply(apply) => {
                self.apply(&apply).await?;
                info!(object = %apply.key, "the mesh's root certificate published for the namespace's waypoints");
                Ok(())
            }
            NamespacePlan::Delete(delete) => {
                self.delete(&delete.key, &delete.uid).await?;
                info!(object = %delete.key, "deleted: no waypoint left in the namespace");
                Ok(())
            }
        }
    }

    async fn reconcile_binding(&self) -> Result<(), ControllerError> {
        let gateways = self.stores.gateways();
        let all: Vec<&Gateway> = gateways.iter().collect();
        let key = ObjectKey::new(ObjectKind::ClusterRoleBinding, "", CLUSTER_ROLE_BINDING);
        let found = self.stores.get(&key);
        match reconcile::binding(&all, found.as_ref()) {
            BindingPlan::Unchanged => Ok(()),
            BindingPlan::Missing => Err(ControllerError::MissingBinding),
            BindingPlan::Apply(apply) => {
                self.apply(&apply).await?;
                let subjects = apply.body["subjects"].as_array().map_or(0, Vec::len);
                info!(object = %apply.key, subjects, "waypoints' service accounts bound to their ClusterRole");
                Ok(())
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
