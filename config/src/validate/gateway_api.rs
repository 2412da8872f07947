//! Gateway API Gateways that declare waypoints; Gateways of other classes are not weft's to
//! judge (an ingress controller owns them).
use crate::api::gateway_api::KubernetesGateway;
use crate::refusal::FieldIssue;
use crate::translate::waypoint::{WAYPOINT_FOR_LABEL, is_waypoint};

/// The rule is weft-core's, which the control plane's controller applies too: a Gateway
/// refused here is one it runs no waypoint for.
pub(super) fn gateway(gateway: &KubernetesGateway) -> Vec<FieldIssue> {
    if !is_waypoint(gateway) {
        return Vec::new();
    }
    let labels = crate::api::labels(&gateway.metadata);
    weft_core::mesh::waypoint::declaration_issues(
        labels.get(WAYPOINT_FOR_LABEL).map(String::as_str),
        gateway
            .spec
            .listeners
            .iter()
            .map(|l| (l.protocol.as_str(), u64::from(l.port))),
    )
    .into_iter()
    .map(|(field, reason)| FieldIssue::new(field, reason))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> KubernetesGateway {
        serde_yaml::from_str(yaml).expect("gateway YAML")
    }

    #[test]
    fn a_waypoint_needs_an_hbone_listener_and_a_known_traffic_type() {
        let good = parse(
            "metadata: {name: wp, labels: {istio.io/waypoint-for: service}}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}",
        );
        assert!(gateway(&good).is_empty());
        let bad = parse(
            "metadata: {name: wp, labels: {istio.io/waypoint-for: everything}}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: http, port: 80, protocol: HTTP}]}",
        );
        let fields: Vec<_> = gateway(&bad).into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels[istio.io/waypoint-for]".to_string(),
                "spec.listeners".to_string()
            ]
        );
        let ingress = parse("metadata: {name: gw}\nspec: {gatewayClassName: nginx}");
        assert!(gateway(&ingress).is_empty(), "not a waypoint: not judged");
    }
}
