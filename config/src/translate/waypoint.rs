//! Which waypoint a pod or service uses, by Istio ambient's labels.
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::DEFAULT_NAMESPACE;
use crate::api::gateway_api::KubernetesGateway;
use crate::registry::model::{Waypoint, WaypointFor, WaypointRef};

pub use weft_core::mesh::waypoint::{HBONE_PROTOCOL, WAYPOINT_CLASSES, WAYPOINT_FOR_LABEL};

pub fn is_waypoint(gateway: &KubernetesGateway) -> bool {
    WAYPOINT_CLASSES.contains(&gateway.spec.gateway_class_name.as_str())
}

/// `istio.io/waypoint-for`'s value; `None` for a value Istio does not define.
pub fn waypoint_for(value: Option<&str>) -> Option<WaypointFor> {
    match value {
        None | Some("") | Some("service") => Some(WaypointFor::Service),
        Some("workload") => Some(WaypointFor::Workload),
        Some("all") => Some(WaypointFor::All),
        Some("none") => Some(WaypointFor::None),
        Some(_) => None,
    }
}

/// The waypoints the Gateways declare, by (namespace, name). Gateways of other classes
/// (ingress gateways) are not waypoints; validation has refused malformed waypoint ones.
pub fn declared<'a>(
    gateways: impl IntoIterator<Item = &'a Arc<KubernetesGateway>>,
) -> BTreeMap<(String, String), Arc<Waypoint>> {
    gateways
        .into_iter()
        .filter(|g| is_waypoint(g))
        .filter_map(|g| {
            let labels = crate::api::labels(&g.metadata);
            let traffic = waypoint_for(labels.get(WAYPOINT_FOR_LABEL).map(String::as_str))?;
            let port = g
                .spec
                .listeners
                .iter()
                .find(|l| l.protocol == HBONE_PROTOCOL)
                .and_then(|l| u16::try_from(l.port).ok())?;
            let name = g.metadata.name.clone()?;
            let namespace = g
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            Some((
                (namespace.clone(), name.clone()),
                Arc::new(Waypoint {
                    name,
                    namespace,
                    traffic,
                    port,
                }),
            ))
        })
        .collect()
}

/// `istio.io/use-waypoint=<name>` on a Namespace, Service or Pod.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// `istio.io/use-waypoint-namespace=<namespace>`: where that waypoint lives, when not in
/// the labelled object's namespace.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// The value that opts a pod or service out of its namespace's waypoint.
pub const NO_WAYPOINT: &str = "none";

/// The waypoint of an object (pod or service) in `namespace` with `labels`: its own label
/// wins, `none` included; without one, its namespace's label decides.
pub fn binding(
    labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Option<WaypointRef> {
    if let Some(own) = labelled(labels, namespace) {
        return own;
    }
    namespace_labels
        .and_then(|ns| labelled(ns, namespace))
        .flatten()
}

/// `None`: no label; `Some(None)`: opted out; `Some(Some(w))`: bound to `w`.
fn labelled(labels: &BTreeMap<String, String>, namespace: &str) -> Option<Option<WaypointRef>> {
    let name = labels.get(USE_WAYPOINT_LABEL).filter(|n| !n.is_empty())?;
    if name == NO_WAYPOINT {
        return Some(None);
    }
    let waypoint_namespace = labels
        .get(USE_WAYPOINT_NAMESPACE_LABEL)
        .filter(|n| !n.is_empty())
        .map_or(namespace, String::as_str);
    Some(Some(WaypointRef {
        name: name.clone(),
        namespace: waypoint_namespace.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn waypoint(name: &str, namespace: &str) -> Option<WaypointRef> {
        Some(WaypointRef {
            name: name.into(),
            namespace: namespace.into(),
        })
    }

    #[test]
    fn own_label_wins_over_namespace_and_none_opts_out() {
        let ns = labels(&[(USE_WAYPOINT_LABEL, "ns-wp")]);
        assert_eq!(
            binding(&labels(&[]), "shop", Some(&ns)),
            waypoint("ns-wp", "shop")
        );
        assert_eq!(
            binding(&labels(&[(USE_WAYPOINT_LABEL, "mine")]), "shop", Some(&ns)),
            waypoint("mine", "shop")
        );
        assert_eq!(
            binding(&labels(&[(USE_WAYPOINT_LABEL, "none")]), "shop", Some(&ns)),
            None
        );
        assert_eq!(binding(&labels(&[]), "shop", None), None);
    }

    #[test]
    fn waypoint_namespace_label_points_elsewhere() {
        let own = labels(&[
            (USE_WAYPOINT_LABEL, "shared"),
            (USE_WAYPOINT_NAMESPACE_LABEL, "infra"),
        ]);
        assert_eq!(binding(&own, "shop", None), waypoint("shared", "infra"));
        let ns = labels(&[
            (USE_WAYPOINT_LABEL, "shared"),
            (USE_WAYPOINT_NAMESPACE_LABEL, "infra"),
        ]);
        assert_eq!(
            binding(&labels(&[]), "shop", Some(&ns)),
            waypoint("shared", "infra")
        );
    }
}
