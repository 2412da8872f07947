//! The route status writer of weft's control plane: the status of every HTTPRoute,
//! GRPCRoute, TLSRoute and TCPRoute (Gateway API conditions per parent, `weft_config::translate::route_status`),
//! written back through the Kubernetes API as the registry resolves the routes.
//!
//! - Reads the cluster through the CA's own registry, whose source then also watches the
//!   kinds resolving a route needs ([`WATCHED`]).
//! - On every new registry version, decides each route's status; where it differs from
//!   what the route holds, writes it with a JSON merge patch of the `status` subresource
//!   (the whole `parents` list: other controllers' entries are written back as found).
//!   The route's new status comes back through the watch and decides nothing new, so a
//!   write does not cause another.
//! - A failed write is logged with the route and the API server's answer and tried again
//!   after `retry` (or on the next change); a route deleted meanwhile (404) is skipped.
//! - The API version patched is the first the API server serves for the kind.
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use tracing::{debug, info, warn};
use weft_config::api::{Kind, ObjectRef};
use weft_config::registry::Registry;
use weft_config::translate::route_status;

/// What the registry must hold to resolve routes: their parents (Services, Gateways), their
/// backends (Services) and ReferenceGrants, and the namespaces whose labels bind Services
/// to waypoints. `ca/src/main.rs` adds them to the CA's own kinds when routes' status is
/// written; deploy/base/rbac.yaml grants their `list` and `watch` (held there by
/// `cli/tests/deploy_rbac.rs`).
pub const WATCHED: [Kind; 8] = [
    Kind::Namespace,
    Kind::Service,
    Kind::KubernetesGateway,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::TlsRoute,
    Kind::TcpRoute,
    Kind::ReferenceGrant,
];

/// What the writer asks of the API server besides its watches, as RBAC grants (API group,
/// resource, verbs, resource names): patches of the routes' `status`.
pub const GRANTS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "gateway.networking.k8s.io",
        "httproutes/status",
        &["patch"],
        &[],
    ),
    (
        "gateway.networking.k8s.io",
        "grpcroutes/status",
        &["patch"],
        &[],
    ),
    (
        "gateway.networking.k8s.io",
        "tlsroutes/status",
        &["patch"],
        &[],
    ),
    (
        "gateway.networking.k8s.io",
        "tcproutes/status",
        &["patch"],
        &[],
    ),
];

#[derive(Clone, Debug)]
pub struct RouteStatusConfig {
    /// A failed write is tried again after this.
    pub retry: Duration,
}

impl Default for RouteStatusConfig {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(10),
        }
    }
}

fn resource(kind: Kind, version: &str) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: format!("{}/{version}", kind.group()),
        kind: kind.name().to_string(),
        plural: kind.plural().to_string(),
    }
}

/// The first version of `kind` the API server serves, `None` when it serves none.
async fn served(client: &Client, kind: Kind) -> Result<Option<&'static str>, kube::Error> {
    for version in kind.versions() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource(kind, version));
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(version)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Runs until the registry is gone: keeps every route's status as resolving it says.
pub async fn run(client: Client, registry: Registry, config: RouteStatusConfig) {
    let mut versions = registry.subscribe();
    // The API resource to patch, per kind, once found.
    let mut resources: BTreeMap<Kind, ApiResource> = BTreeMap::new();
    // Routes whose last write failed, so a failure is logged once until it changes.
    let mut failing: BTreeSet<ObjectRef> = BTreeSet::new();
    loop {
        let snapshot = registry.snapshot();
        let now = weft_controller::status::rfc3339(unix_now());
        let mut failed = false;
        for resolution in snapshot.route_resolutions() {
            let Some(patch) = route_status::patch(resolution, &now) else {
                failing.remove(&resolution.route.object_ref());
                continue;
            };
            let route = resolution.route.object_ref();
            let kind = route.kind;
            let resource = match resources.entry(kind) {
                Entry::Occupied(found) => found.into_mut(),
                Entry::Vacant(vacant) => match served(&client, kind).await {
                    Ok(Some(version)) => vacant.insert(resource(kind, version)),
                    Ok(None) => {
                        debug!(kind = %kind, "not served: its routes' status is not written");
                        continue;
                    }
                    Err(e) => {
                        warn!(kind = %kind, error = %e, "looking for the API version failed");
                        failed = true;
                        continue;
                    }
                },
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &route.namespace, &*resource);
            match api
                .patch_status(&route.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    failing.remove(&route);
                    debug!(route = %route, "status written");
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(route = %route, "gone before its status was written");
                }
                Err(e) => {
                    failed = true;
                    if failing.insert(route.clone()) {
                        warn!(route = %route, error = %e, "writing the route's status failed; will retry");
                    }
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(config.retry).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = versions.changed() => {
                if changed.is_err() {
                    info!("the registry is gone: route status writer stops");
                    return;
                }
            }
            () = retry => {}
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
