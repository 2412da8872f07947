//! VirtualServices, the Gateway API routes of mesh Services, and DestinationRules indexed
//! by the host they configure.
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::gateway::{GatewayRef, bound_gateways};
use super::hosts::{MeshSettings, qualify};
use crate::api::DEFAULT_NAMESPACE;
use crate::api::networking::{DestinationRule, VirtualService};
use crate::registry::bound_route::BoundRoute;
use crate::registry::model::HostRoutes;

/// Routes by fully qualified host (wildcards such as `*.example.com` are keys too).
/// `gateway_routes` are the Gateway API routes bound to each Service's host
/// (`gateway_routes::mesh_index`).
pub fn index<'a>(
    virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
    destination_rules: impl IntoIterator<Item = &'a Arc<DestinationRule>>,
    gateway_routes: HashMap<String, Vec<Arc<BoundRoute>>>,
    settings: &MeshSettings,
) -> HashMap<String, Arc<HostRoutes>> {
    let mut by_host: HashMap<String, HostRoutes> = HashMap::new();
    for (host, routes) in gateway_routes {
        by_host.entry(host).or_default().gateway_routes = routes;
    }
    let mut virtual_services: Vec<_> = virtual_services.into_iter().collect();
    virtual_services.sort_by(|a, b| age_order(&a.metadata, &b.metadata));
    for vs in virtual_services {
        if !applies_to_mesh(vs) {
            continue;
        }
        let namespace = namespace_of(&vs.metadata);
        for host in &vs.spec.hosts {
            let entry = by_host
                .entry(qualify(host, namespace, settings))
                .or_default();
            // A VirtualService listing one host twice (short and long form) counts once.
            if !entry.virtual_services.iter().any(|v| Arc::ptr_eq(v, vs)) {
                entry.virtual_services.push(vs.clone());
            }
        }
    }
    let mut destination_rules: Vec<_> = destination_rules.into_iter().collect();
    destination_rules.sort_by(|a, b| age_order(&a.metadata, &b.metadata));
    for dr in destination_rules {
        let host = qualify(&dr.spec.host, namespace_of(&dr.metadata), settings);
        // Istio keeps the oldest DestinationRule of a host.
        by_host
            .entry(host)
            .or_default()
            .destination_rule
            .get_or_insert_with(|| dr.clone());
    }
    by_host
        .into_iter()
        .map(|(host, routes)| (host, Arc::new(routes)))
        .collect()
}

/// The VirtualServices bound to each Gateway they name in `spec.gateways` (whether it
/// exists or not), oldest first: what an ingress gateway serves for that Gateway.
pub fn by_gateway<'a>(
    virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
) -> HashMap<GatewayRef, Vec<Arc<VirtualService>>> {
    let mut virtual_services: Vec<_> = virtual_services.into_iter().collect();
    virtual_services.sort_by(|a, b| age_order(&a.metadata, &b.metadata));
    let mut bound: HashMap<GatewayRef, Vec<Arc<VirtualService>>> = HashMap::new();
    for vs in virtual_services {
        for gateway in bound_gateways(vs) {
            bound.entry(gateway).or_default().push(vs.clone());
        }
    }
    bound
}

/// Without `gateways`, a VirtualService applies to the mesh; with them, only if one of
/// them is the reserved name `mesh`.
pub fn applies_to_mesh(vs: &VirtualService) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// Oldest first, then by namespace and name so the order is total and stable.
pub fn age_order(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
    // Objects without a timestamp (hand-written YAML) sort as oldest, by name.
    a.creation_timestamp
        .cmp(&b.creation_timestamp)
        .then_with(|| a.namespace.cmp(&b.namespace))
        .then_with(|| a.name.cmp(&b.name))
}
