//! VirtualServices, the Gateway API routes of mesh Services, and DestinationRules indexed
//! by the host they configure.
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::delegate::Delegates;
use super::export::Visibility;
use super::gateway::{GatewayRef, bound_gateways};
use super::hosts::{MeshSettings, qualify};
use crate::api::DEFAULT_NAMESPACE;
use crate::api::networking::{DestinationRule, VirtualService};
use crate::registry::bound_route::BoundRoute;
use crate::registry::model::HostRoutes;

/// Routes by fully qualified host (wildcards such as `*.example.com` are keys too).
/// `gateway_routes` are the Gateway API routes bound to each Service's host
/// (`gateway_routes::mesh_index`). Only the rules `visibility` lets this process see
/// count (`exportTo`); VirtualServices come with their delegates merged in, and a
/// DestinationRule of the proxy's own namespace wins over older ones of others.
pub fn index<'a>(
    virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
    destination_rules: impl IntoIterator<Item = &'a Arc<DestinationRule>>,
    gateway_routes: HashMap<String, Vec<Arc<BoundRoute>>>,
    settings: &MeshSettings,
    visibility: &Visibility,
) -> HashMap<String, Arc<HostRoutes>> {
    let mut by_host: HashMap<String, HostRoutes> = HashMap::new();
    for (host, routes) in gateway_routes {
        by_host.entry(host).or_default().gateway_routes = routes;
    }
    for vs in applied(virtual_services, visibility) {
        if !applies_to_mesh(&vs) {
            continue;
        }
        let namespace = namespace_of(&vs.metadata);
        for host in &vs.spec.hosts {
            let entry = by_host
                .entry(qualify(host, namespace, settings))
                .or_default();
            // A VirtualService listing one host twice (short and long form) counts once.
            if !entry.virtual_services.iter().any(|v| Arc::ptr_eq(v, &vs)) {
                entry.virtual_services.push(vs.clone());
            }
        }
    }
    let mut destination_rules: Vec<_> = destination_rules
        .into_iter()
        .filter(|dr| visibility.destination_rule(dr))
        .collect();
    // Pilot looks in the proxy's own namespace first (`PushContext.destinationRule`).
    destination_rules.sort_by(|a, b| {
        (!visibility.is_local(a))
            .cmp(&!visibility.is_local(b))
            .then_with(|| age_order(&a.metadata, &b.metadata))
    });
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
/// exists or not), oldest first, delegates merged, those `visibility` lets this process
/// see: what an ingress gateway serves for that Gateway.
pub fn by_gateway<'a>(
    virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
    visibility: &Visibility,
) -> HashMap<GatewayRef, Vec<Arc<VirtualService>>> {
    let mut bound: HashMap<GatewayRef, Vec<Arc<VirtualService>>> = HashMap::new();
    for vs in applied(virtual_services, visibility) {
        for gateway in bound_gateways(&vs) {
            bound.entry(gateway).or_default().push(vs.clone());
        }
    }
    bound
}

/// The root VirtualServices (those with hosts; the others are delegates) this process
/// applies, oldest first, with their delegates merged in.
fn applied<'a>(
    virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
    visibility: &Visibility,
) -> Vec<Arc<VirtualService>> {
    let mut all: Vec<&Arc<VirtualService>> = virtual_services.into_iter().collect();
    all.sort_by(|a, b| age_order(&a.metadata, &b.metadata));
    let delegates = Delegates::new(all.iter().copied(), &visibility.virtual_service_default);
    all.iter()
        .filter(|vs| !vs.spec.hosts.is_empty() && visibility.virtual_service(vs))
        .map(|vs| delegates.merge(vs))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn objects<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<Arc<T>> {
        yaml.split("\n---\n")
            .map(|doc| Arc::new(serde_yaml::from_str(doc).expect("object")))
            .collect()
    }

    const VIRTUAL_SERVICES: &str = "metadata: {name: public, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {hosts: [a.example.com], http: [{route: [{destination: {host: public}}]}]}\n---\nmetadata: {name: private, namespace: shop}\nspec: {hosts: [a.example.com], exportTo: ['.'], http: [{route: [{destination: {host: private}}]}]}\n---\nmetadata: {name: gw, namespace: shop}\nspec: {hosts: [b.example.com], gateways: [istio-system/ingress], exportTo: [istio-system], http: [{route: [{destination: {host: b}}]}]}\n---\nmetadata: {name: hidden-gw, namespace: shop}\nspec: {hosts: [c.example.com], gateways: [istio-system/ingress], exportTo: ['.'], http: [{route: [{destination: {host: c}}]}]}";

    const DESTINATION_RULES: &str = "metadata: {name: old, namespace: other}\nspec: {host: a.example.com}\n---\nmetadata: {name: local, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {host: a.example.com}\n---\nmetadata: {name: unseen, namespace: team}\nspec: {host: d.example.com, exportTo: [elsewhere]}";

    fn names<'a>(vss: impl IntoIterator<Item = &'a Arc<VirtualService>>) -> Vec<&'a str> {
        vss.into_iter()
            .map(|vs| vs.metadata.name.as_deref().unwrap_or_default())
            .collect()
    }

    fn at(namespace: Option<&str>) -> Visibility {
        Visibility {
            proxy_namespace: namespace.map(str::to_string),
            ..Visibility::default()
        }
    }

    #[test]
    fn a_waypoint_applies_the_rules_exported_to_its_namespace() {
        let vss = objects::<VirtualService>(VIRTUAL_SERVICES);
        let drs = objects::<DestinationRule>(DESTINATION_RULES);
        let settings = MeshSettings::default();
        let index_at = |namespace| index(&vss, &drs, HashMap::new(), &settings, &at(namespace));
        // The waypoint of `shop` sees both VirtualServices of a.example.com (the private
        // one is older), and its namespace's DestinationRule though another is older.
        let shop = index_at(Some("shop"));
        let a = &shop["a.example.com"];
        assert_eq!(names(&a.virtual_services), ["private", "public"]);
        assert_eq!(
            a.destination_rule
                .as_ref()
                .and_then(|d| d.metadata.name.as_deref()),
            Some("local")
        );
        assert!(!shop.contains_key("d.example.com"), "not exported to shop");
        // The waypoint of `team` sees only the public one.
        let team = index_at(Some("team"));
        assert_eq!(names(&team["a.example.com"].virtual_services), ["public"]);
        assert_eq!(
            team["a.example.com"]
                .destination_rule
                .as_ref()
                .and_then(|d| d.metadata.name.as_deref()),
            Some("old"),
            "no local rule: the oldest visible one"
        );
        // A process that is no proxy sees everything.
        let all = index_at(None);
        assert!(all.contains_key("d.example.com"));
    }

    #[test]
    fn an_ingress_gateway_serves_the_gateway_bound_rules_exported_to_its_namespace() {
        let vss = objects::<VirtualService>(VIRTUAL_SERVICES);
        let ingress = GatewayRef {
            namespace: "istio-system".into(),
            name: "ingress".into(),
        };
        let bound = by_gateway(&vss, &at(Some("istio-system")));
        assert_eq!(names(&bound[&ingress]), ["gw"]);
        let everything = by_gateway(&vss, &at(None));
        assert_eq!(names(&everything[&ingress]), ["gw", "hidden-gw"]);
        // The mesh config's default applies to rules without exportTo.
        let strict = Visibility {
            virtual_service_default: vec![".".into()],
            ..at(Some("istio-system"))
        };
        let vss = objects::<VirtualService>(
            "metadata: {name: plain, namespace: shop}\nspec: {hosts: [e.example.com], gateways: [istio-system/ingress], http: [{route: [{destination: {host: e}}]}]}",
        );
        assert!(by_gateway(&vss, &strict).is_empty());
        assert_eq!(
            names(&by_gateway(&vss, &at(Some("istio-system")))[&ingress]),
            ["plain"]
        );
    }
}
