//! The Kubernetes API as the configuration: one watcher per kind (kube-runtime's
//! list-then-watch with bookmarks, resuming from the last resourceVersion), feeding the
//! registry.
//!
//! - An initial list (and every relist, after 410 Gone or a resync) is sent as one
//!   `Replace` of that kind, so objects deleted while the watch was down disappear and
//!   nothing is duplicated.
//! - Errors back off exponentially (kube-runtime's default backoff) and the watch resumes.
//! - kube-runtime retries a watch that fails to *start* with HTTP 410 forever with the same
//!   stale resourceVersion; this source restarts the watcher (a fresh list) instead.
//! - Istio kinds are read as JSON and parsed here, so an object that does not fit the
//!   schema is refused on its own instead of failing the whole list.
//! - Watches only the kinds its process selects ([`KubeSourceConfig::kinds`]), so each
//!   process's ClusterRole grants no more than it reads: the agent and waypoints read every
//!   kind but Secrets ([`AGENT_WATCHED`]), weft-ca only pods ([`CA_WATCHED`]), an ingress
//!   gateway what the agent reads and the `kubernetes.io/tls` Secrets of its own namespace
//!   ([`INGRESS_WATCHED`]).
//! - Ready once every selected kind has completed its first list; an Istio API group that is
//!   not served (CRDs not installed) counts as empty and is probed again later.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, ListParams};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::{WatchStreamExt, watcher as watch_stream};
use ::kube::{Client, Resource, ResourceExt};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::feed::{Feed, Source, SourceError, error_chain};
use crate::api::kubernetes::{ConfigMap, EndpointSlice, Namespace, Node, Pod, Secret, Service};
use crate::api::{Kind, Object, ObjectRef};
use crate::refusal::Refusal;
use crate::registry::{Candidate, Change};

/// What the node agent and waypoints list and watch, in all namespaces (the default of
/// [`KubeSourceConfig::kinds`]): every kind but Secrets, since addressing, routing and
/// policy need them all and no certificate of a gateway is theirs to hold. Their
/// ClusterRoles must grant `list` and `watch` on exactly these; `cli/tests/deploy_rbac.rs`
/// holds `deploy/`'s RBAC to it.
pub const AGENT_WATCHED: [Kind; Kind::ALL.len() - 1] = all_kinds_but_secrets();

/// What an ingress gateway lists and watches: what the agent does (cluster-wide, through
/// the same ClusterRole as waypoints) and the Secrets of type `kubernetes.io/tls` of its own
/// namespace ([`KubeSourceConfig::secrets_namespace`], field selector
/// `type=kubernetes.io/tls`), which a Role in that namespace grants. RBAC cannot name the
/// Secrets a gateway's servers will name (they change with every Gateway), so the grant is
/// the namespace's Secrets, as Istio's own gateway Role is (`istio-ingressgateway-sds`); the
/// gateway keeps only the TLS ones and uses only those its servers name.
pub const INGRESS_WATCHED: [Kind; Kind::ALL.len()] = Kind::ALL;

/// `Kind::ALL` without `Kind::Secret`, in its order: a kind added to `Kind::ALL` is read by
/// the agents and waypoints without another list to keep in step.
const fn all_kinds_but_secrets() -> [Kind; Kind::ALL.len() - 1] {
    let mut kinds = [Kind::Namespace; Kind::ALL.len() - 1];
    let (mut from, mut to) = (0, 0);
    while from < Kind::ALL.len() {
        if !matches!(Kind::ALL[from], Kind::Secret) {
            kinds[to] = Kind::ALL[from];
            to += 1;
        }
        from += 1;
    }
    kinds
}

/// What weft-ca lists and watches: pods only. It asks the registry for a pod's node (the
/// node of an agent's token, when the token does not name it) and for the service accounts
/// of a node's pods (`Snapshot::workload`, `Snapshot::workloads_on_node`); a workload's node
/// and identity come from its Pod alone (Namespace labels only decide mesh enrollment and
/// waypoints, which the CA does not read). Its ClusterRole grants `list` and `watch` on
/// exactly these, held there by `cli/tests/deploy_rbac.rs`.
pub const CA_WATCHED: [Kind; 1] = [Kind::Pod];

/// Which pods to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PodScope {
    /// Every pod: addresses of remote workloads resolve to identities, and the node's own
    /// pods are `Snapshot::workloads_on_node`.
    #[default]
    Cluster,
    /// Only the pods of one node (field selector `spec.nodeName=<node>`): enough for
    /// enrollment, at a fraction of the memory on large clusters.
    Node(String),
}

#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// The kinds to list and watch; no other is requested from the API server, so the
    /// process needs RBAC for these only. The registry holds none of the others (no
    /// services, routes or policies without their kinds). Default: [`AGENT_WATCHED`].
    pub kinds: BTreeSet<Kind>,
    /// Which pods, when [`Kind::Pod`] is among `kinds`.
    pub pods: PodScope,
    /// Relist every kind this often, as a safety net against missed events; `None` never.
    pub resync: Option<Duration>,
    /// How long to wait before probing again for an Istio API group that is not served,
    /// or after a failed probe.
    pub discovery_retry: Duration,
    /// Where Istio's mesh config is read, when [`Kind::MeshConfig`] is among `kinds`: the
    /// ConfigMap `istio` of this namespace (Istio's own, `istio-system` by default). Only
    /// that ConfigMap is listed and watched (field selector `metadata.name=istio`), so a
    /// Role in that namespace limited to that name is all the RBAC it needs.
    pub mesh_config_namespace: String,
    /// Where Secrets are read, when [`Kind::Secret`] is among `kinds`: an ingress gateway's
    /// own namespace. Only `kubernetes.io/tls` ones are listed (field selector), so a Role in
    /// that namespace is all the RBAC it needs.
    pub secrets_namespace: String,
    /// When not empty, the Secrets read instead of those of `secrets_namespace`: each by its
    /// (namespace, name), with a GET every `secret_poll` (never a list), so a Role naming
    /// them (`resourceNames`, verb `get`) in each namespace is all the RBAC it needs. What
    /// the controller's ingress gateways read: the Secrets their listeners' certificateRefs
    /// name.
    pub secret_names: Vec<(String, String)>,
    /// How often the Secrets of `secret_names` are read again.
    pub secret_poll: Duration,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        Self {
            kinds: AGENT_WATCHED.into(),
            pods: PodScope::Cluster,
            resync: Some(Duration::from_secs(30 * 60)),
            discovery_retry: Duration::from_secs(30),
            mesh_config_namespace: "istio-system".to_string(),
            secrets_namespace: "istio-system".to_string(),
            secret_names: Vec::new(),
            secret_poll: Duration::from_secs(10),
        }
    }
}

pub struct KubeSource {
    client: Client,
    config: KubeSourceConfig,
}

impl KubeSource {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            config: KubeSourceConfig::default(),
        }
    }

    /// A client from the environment: in-cluster service account, or `KUBECONFIG`.
    pub async fn try_default() -> Result<Self, SourceError> {
        Ok(Self::new(Client::try_default().await?))
    }

    pub fn with_config(mut self, config: KubeSourceConfig) -> Self {
        self.config = config;
        self
    }
}

impl Source for KubeSource {
    fn describe(&self) -> String {
        "Kubernetes API".to_string()
    }

    async fn run(self, feed: Feed) -> Result<(), SourceError> {
        // Readiness waits for a first list of every selected kind: with none selected it
        // would never come, and a registry that stays empty is a misconfiguration.
        if self.config.kinds.is_empty() {
            return Err(SourceError::NothingToWatch);
        }
        let tracker = Tracker {
            pending: Mutex::new(self.config.kinds.iter().copied().collect()),
        };
        let watches = self
            .config
            .kinds
            .iter()
            .map(|&kind| watch_kind(kind, &self.client, &self.config, &feed, &tracker));
        futures::future::try_join_all(watches).await?;
        Ok(())
    }
}

/// Which kinds have not yet delivered their first complete list.
struct Tracker {
    pending: Mutex<HashSet<Kind>>,
}

impl Tracker {
    async fn synced(&self, kind: Kind, feed: &Feed) -> Result<(), SourceError> {
        let all_done = {
            let mut pending = weft_core::sync::lock(&self.pending);
            pending.remove(&kind) && pending.is_empty()
        };
        if all_done {
            info!("initial lists complete");
            feed.ready().await?;
        }
        Ok(())
    }
}

async fn watch_kind(
    kind: Kind,
    client: &Client,
    config: &KubeSourceConfig,
    feed: &Feed,
    tracker: &Tracker,
) -> Result<(), SourceError> {
    loop {
        let resync = config.resync;
        match kind {
            Kind::Namespace => {
                let api: Api<Namespace> = Api::all(client.clone());
                run_watcher(
                    api,
                    watcher::Config::default(),
                    kind,
                    typed,
                    resync,
                    feed,
                    tracker,
                )
                .await?
            }
            Kind::Pod => {
                let api: Api<Pod> = Api::all(client.clone());
                let wc = match &config.pods {
                    PodScope::Cluster => watcher::Config::default(),
                    PodScope::Node(node) => {
                        watcher::Config::default().fields(&format!("spec.nodeName={node}"))
                    }
                };
                run_watcher(api, wc, kind, typed, resync, feed, tracker).await?
            }
            Kind::Service => {
                let api: Api<Service> = Api::all(client.clone());
                run_watcher(
                    api,
                    watcher::Config::default(),
                    kind,
                    typed,
                    resync,
                    feed,
                    tracker,
                )
                .await?
            }
            Kind::Node => {
                let api: Api<Node> = Api::all(client.clone());
                run_watcher(
                    api,
                    watcher::Config::default(),
                    kind,
                    typed,
                    resync,
                    feed,
                    tracker,
                )
                .await?
            }
            Kind::EndpointSlice => {
                let api: Api<EndpointSlice> = Api::all(client.clone());
                run_watcher(
                    api,
                    watcher::Config::default(),
                    kind,
                    typed,
                    resync,
                    feed,
                    tracker,
                )
                .await?
            }
            Kind::MeshConfig => {
                let api: Api<ConfigMap> =
                    Api::namespaced(client.clone(), &config.mesh_config_namespace);
                let wc = watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    crate::api::mesh::MESH_CONFIG_MAP
                ));
                run_watcher(api, wc, kind, config_map, resync, feed, tracker).await?
            }
            Kind::Secret if !config.secret_names.is_empty() => {
                poll_named_secrets(client, config, feed, tracker).await?
            }
            Kind::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &config.secrets_namespace);
                let wc = watcher::Config::default()
                    .fields(&format!("type={}", crate::api::kubernetes::TLS_SECRET_TYPE));
                run_watcher(api, wc, kind, typed, resync, feed, tracker).await?
            }
            // Custom resources: Istio's kinds and the Gateway API's Gateway.
            istio => match served_version(client, istio).await {
                Ok(Some(version)) => {
                    let resource = api_resource(istio, version);
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                    let to_candidate = |object: DynamicObject| dynamic(object, &resource);
                    info!(kind = %istio, version, "watching");
                    run_watcher(
                        api,
                        watcher::Config::default(),
                        istio,
                        to_candidate,
                        resync,
                        feed,
                        tracker,
                    )
                    .await?
                }
                Ok(None) => {
                    info!(
                        kind = %istio,
                        "API group {} not served (its CRDs not installed?); none of these objects until it is",
                        istio.group()
                    );
                    // Objects of an API that went away are gone too.
                    feed.send(vec![Change::Replace {
                        kinds: vec![istio],
                        candidates: Vec::new(),
                    }])
                    .await?;
                    tracker.synced(istio, feed).await?;
                    tokio::time::sleep(config.discovery_retry).await;
                }
                Err(e) => {
                    warn!(kind = %istio, error = %error_chain(&e), "probing the API version failed; retrying");
                    tokio::time::sleep(config.discovery_retry.min(Duration::from_secs(5))).await;
                }
            },
        }
    }
}

/// Reads the Secrets of `config.secret_names` by name, every `config.secret_poll`, and
/// replaces the registry's Secrets when what was read changed. A Secret that is absent (404)
/// or not of type `kubernetes.io/tls` is not held; one that cannot be read (403, the API
/// server unreachable) keeps what was last read of it, and the failure is logged.
async fn poll_named_secrets(
    client: &Client,
    config: &KubeSourceConfig,
    feed: &Feed,
    tracker: &Tracker,
) -> Result<(), SourceError> {
    let mut last: Option<BTreeMap<(String, String), Secret>> = None;
    loop {
        let mut read = BTreeMap::new();
        for (namespace, name) in &config.secret_names {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let key = (namespace.clone(), name.clone());
            match api.get_opt(name).await {
                Ok(Some(secret)) if secret.is_tls() => {
                    read.insert(key, secret);
                }
                Ok(Some(_)) => {
                    debug!(secret = %format!("{namespace}/{name}"), "not of type kubernetes.io/tls: not held");
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(secret = %format!("{namespace}/{name}"), error = %error_chain(&e), "reading the Secret failed; keeping what was read of it");
                    if let Some(kept) = last.as_ref().and_then(|l| l.get(&key)) {
                        read.insert(key, kept.clone());
                    }
                }
            }
        }
        let changed = last.as_ref().is_none_or(|l| {
            l.len() != read.len()
                || l.iter().zip(read.iter()).any(|((ka, a), (kb, b))| {
                    ka != kb || a.metadata.resource_version != b.metadata.resource_version
                })
        });
        if changed {
            feed.send(vec![Change::Replace {
                kinds: vec![Kind::Secret],
                candidates: read.values().cloned().map(typed).collect(),
            }])
            .await?;
            if last.is_none() {
                tracker.synced(Kind::Secret, feed).await?;
            }
            last = Some(read);
        }
        tokio::time::sleep(config.secret_poll).await;
    }
}

/// The first of the kind's versions the API server serves, `None` if it serves none.
async fn served_version(
    client: &Client,
    kind: Kind,
) -> Result<Option<&'static str>, ::kube::Error> {
    for version in kind.versions() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(kind, version));
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(version)),
            Err(::kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn api_resource(kind: Kind, version: &str) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: if kind.group().is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", kind.group())
        },
        kind: kind.name().to_string(),
        plural: kind.plural().to_string(),
    }
}

fn typed<K: Into<Object>>(object: K) -> Candidate {
    Candidate::from(object.into())
}

/// The `istio` ConfigMap → the mesh config it holds, or a refusal naming the field.
fn config_map(object: ConfigMap) -> Candidate {
    let object_ref = ObjectRef::new(
        Kind::MeshConfig,
        object.namespace().unwrap_or_default(),
        object.name_any(),
    );
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(e) => return Refusal::new(object_ref, "", e.to_string()).into(),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "ConfigMap".into());
    }
    match Object::from_json(value) {
        Ok(Some(object)) => object.into(),
        Ok(None) => Refusal::new(object_ref, "metadata.name", "not Istio's mesh config").into(),
        Err(refusal) => refusal.into(),
    }
}

/// A JSON object of an Istio kind → a parsed object, or a refusal naming the field that
/// does not fit.
fn dynamic(object: DynamicObject, resource: &ApiResource) -> Candidate {
    let object_ref = ObjectRef::new(
        kind_of(resource),
        object.namespace().unwrap_or_default(),
        object.name_any(),
    );
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(e) => return Refusal::new(object_ref, "", e.to_string()).into(),
    };
    // List items may come without their type; the watch knows it.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
    }
    match Object::from_json_checked(value) {
        Ok(Some((object, warnings))) => Candidate {
            warnings,
            ..object.into()
        },
        Ok(None) => Refusal::new(object_ref, "kind", "not a kind weft reads").into(),
        Err(refusal) => refusal.into(),
    }
}

fn kind_of(resource: &ApiResource) -> Kind {
    Kind::by_group_and_name(&resource.group, &resource.kind).unwrap_or(Kind::VirtualService)
}

/// Follows one watcher until it needs a fresh start: its stream ended, the resync period
/// passed, or a watch could not start because its resourceVersion is gone (410).
async fn run_watcher<K, F>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    to_candidate: F,
    resync: Option<Duration>,
    feed: &Feed,
    tracker: &Tracker,
) -> Result<(), SourceError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Candidate,
{
    let mut stream = pin!(watch_stream(api, config).default_backoff());
    let deadline = resync.map(|period| Instant::now() + period);
    let mut listed: Vec<Candidate> = Vec::new();
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    debug!(kind = %kind, "resync: relisting");
                    return Ok(());
                }
            },
            None => stream.next().await,
        };
        match next {
            None => return Ok(()),
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(object))) => listed.push(to_candidate(object)),
            Some(Ok(Event::InitDone)) => {
                debug!(kind = %kind, objects = listed.len(), "listed");
                feed.send(vec![Change::Replace {
                    kinds: vec![kind],
                    candidates: std::mem::take(&mut listed),
                }])
                .await?;
                tracker.synced(kind, feed).await?;
            }
            Some(Ok(Event::Apply(object))) => {
                feed.send(vec![Change::Apply(to_candidate(object))]).await?
            }
            Some(Ok(Event::Delete(object))) => {
                let gone = ObjectRef::new(
                    kind,
                    if kind.namespaced() {
                        object.namespace().unwrap_or_default()
                    } else {
                        String::new()
                    },
                    object.name_any(),
                );
                feed.send(vec![Change::Delete(gone)]).await?
            }
            Some(Err(e)) => {
                warn!(kind = %kind, error = %error_chain(&e), "watch error; backing off");
                if watch_start_gone(&e) {
                    info!(kind = %kind, "resourceVersion expired (410 Gone); relisting");
                    return Ok(());
                }
            }
        }
    }
}

fn watch_start_gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchStartFailed(::kube::Error::Api(status)) if status.code == 410)
}

/// Every object of `config.kinds` as the API server holds it now: one list of each kind
/// (in pages), nothing watched. What `weftctl analyze --kube` judges; the same reading as
/// the watches' (an Istio kind whose API group is not served has no objects).
pub async fn list_once(
    client: &Client,
    config: &KubeSourceConfig,
) -> Result<Vec<Candidate>, SourceError> {
    let mut out = Vec::new();
    for &kind in &config.kinds {
        let found = match kind {
            Kind::Namespace => list_all(Api::<Namespace>::all(client.clone()), None, typed).await?,
            Kind::Pod => list_all(Api::<Pod>::all(client.clone()), None, typed).await?,
            Kind::Service => list_all(Api::<Service>::all(client.clone()), None, typed).await?,
            Kind::EndpointSlice => {
                list_all(Api::<EndpointSlice>::all(client.clone()), None, typed).await?
            }
            Kind::MeshConfig => {
                let api: Api<ConfigMap> =
                    Api::namespaced(client.clone(), &config.mesh_config_namespace);
                let fields = format!("metadata.name={}", crate::api::mesh::MESH_CONFIG_MAP);
                list_all(api, Some(&fields), config_map).await?
            }
            Kind::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &config.secrets_namespace);
                let fields = format!("type={}", crate::api::kubernetes::TLS_SECRET_TYPE);
                list_all(api, Some(&fields), typed).await?
            }
            custom => match served_version(client, custom).await? {
                Some(version) => {
                    let resource = api_resource(custom, version);
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                    list_all(api, None, |object| dynamic(object, &resource)).await?
                }
                None => Vec::new(),
            },
        };
        out.extend(found);
    }
    Ok(out)
}

/// Every object `api` lists (following `continue`), each made a candidate.
async fn list_all<K>(
    api: Api<K>,
    fields: Option<&str>,
    to_candidate: impl Fn(K) -> Candidate,
) -> Result<Vec<Candidate>, ::kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    const PAGE: u32 = 500;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(fields) = fields {
            params = params.fields(fields);
        }
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await?;
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        out.extend(page.items.into_iter().map(&to_candidate));
        if token.is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind added to `Kind::ALL` is read by the agents and waypoints unless it is a Secret:
    /// forgetting it here would leave the kind unread on a cluster while the lab reads it.
    #[test]
    fn agents_read_every_kind_but_secrets_and_an_ingress_those_too() {
        let all_but_secrets: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Secret)
            .collect();
        assert_eq!(AGENT_WATCHED.to_vec(), all_but_secrets);
        assert_eq!(INGRESS_WATCHED.to_vec(), Kind::ALL.to_vec());
    }
}
