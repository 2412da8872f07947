//! Which AuthorizationPolicies and PeerAuthentications apply to a workload, by Istio's
//! scoping: the root namespace is mesh-wide, a namespace's policies without a selector
//! cover the namespace, a selector narrows to matching workloads.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::routes::age_order;
use crate::api::common::WorkloadSelector;
use crate::api::security::{AuthorizationPolicy, MtlsMode, PeerAuthentication};
use crate::registry::model::Workload;

/// Policies grouped by namespace, oldest first within each.
pub fn by_namespace<T, F>(
    objects: impl IntoIterator<Item = Arc<T>>,
    meta: F,
) -> HashMap<String, Vec<Arc<T>>>
where
    F: Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
{
    let mut grouped: HashMap<String, Vec<Arc<T>>> = HashMap::new();
    for object in objects {
        let namespace = meta(&object).namespace.clone().unwrap_or_default();
        grouped.entry(namespace).or_default().push(object);
    }
    for list in grouped.values_mut() {
        list.sort_by(|a, b| age_order(meta(a), meta(b)));
    }
    grouped
}

/// An absent or empty selector selects every workload of its scope.
pub fn selects(selector: Option<&WorkloadSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn has_selector(selector: Option<&WorkloadSelector>) -> bool {
    selector.is_some_and(|s| !s.match_labels.is_empty())
}

/// The AuthorizationPolicies enforced on `workload` itself: those of the root namespace and
/// of its own namespace whose selector matches. Policies with `targetRef(s)` attach to
/// waypoints and gateways, not to workloads, and are left out.
pub fn authorization_policies_for<'a>(
    workload: &Workload,
    by_namespace: &'a HashMap<String, Vec<Arc<AuthorizationPolicy>>>,
    root_namespace: &str,
) -> Vec<&'a Arc<AuthorizationPolicy>> {
    let mut namespaces = vec![root_namespace];
    if *workload.namespace != *root_namespace {
        namespaces.push(&workload.namespace);
    }
    namespaces
        .into_iter()
        .filter_map(|ns| by_namespace.get(ns))
        .flatten()
        .filter(|p| p.spec.target_ref.is_none() && p.spec.target_refs.is_empty())
        .filter(|p| selects(p.spec.selector.as_ref(), &workload.labels))
        .collect()
}

/// The mTLS mode in force for `workload` on `port`: the oldest matching workload-level
/// policy (its port-level setting first), then the namespace's, then the mesh's (root
/// namespace); UNSET at one level defers to the next, and the mesh default is PERMISSIVE.
pub fn effective_mtls(
    workload: &Workload,
    port: u16,
    by_namespace: &HashMap<String, Vec<Arc<PeerAuthentication>>>,
    root_namespace: &str,
) -> MtlsMode {
    let set = |mode: MtlsMode| (mode != MtlsMode::Unset).then_some(mode);
    let in_namespace = |ns: &str| by_namespace.get(ns).map(Vec::as_slice).unwrap_or_default();
    let own = in_namespace(&workload.namespace);
    // Workload-level policies select within their own namespace only.
    let workload_level = own
        .iter()
        .filter(|p| has_selector(p.spec.selector.as_ref()))
        .find(|p| selects(p.spec.selector.as_ref(), &workload.labels))
        .and_then(|p| {
            p.spec
                .port_level_mtls
                .get(&port.to_string())
                .and_then(|m| set(m.mode))
                .or_else(|| p.spec.mtls.as_ref().and_then(|m| set(m.mode)))
        });
    let scope_level = |policies: &[Arc<PeerAuthentication>]| {
        policies
            .iter()
            .find(|p| !has_selector(p.spec.selector.as_ref()))
            .and_then(|p| p.spec.mtls.as_ref().and_then(|m| set(m.mode)))
    };
    workload_level
        .or_else(|| scope_level(own))
        .or_else(|| scope_level(in_namespace(root_namespace)))
        .unwrap_or(MtlsMode::Permissive)
}
