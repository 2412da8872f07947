//! Gateway API Gateways that declare waypoints; Gateways of other classes are not weft's to
//! judge (an ingress controller owns them).
use crate::api::gateway_api::KubernetesGateway;
use crate::refusal::FieldIssue;
use crate::translate::waypoint::{HBONE_PROTOCOL, WAYPOINT_FOR_LABEL, is_waypoint, waypoint_for};

pub(super) fn gateway(gateway: &KubernetesGateway) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    if !is_waypoint(gateway) {
        return issues;
    }
    let labels = crate::api::labels(&gateway.metadata);
    if let Some(value) = labels.get(WAYPOINT_FOR_LABEL)
        && waypoint_for(Some(value)).is_none()
    {
        issues.push(FieldIssue::new(
            format!("metadata.labels[{WAYPOINT_FOR_LABEL}]"),
            format!("{value:?} is not one of service, workload, all, none"),
        ));
    }
    let hbone: Vec<_> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.protocol == HBONE_PROTOCOL)
        .collect();
    if hbone.is_empty() {
        issues.push(FieldIssue::new(
            "spec.listeners",
            "a waypoint needs a listener with protocol HBONE (port 15008)",
        ));
    }
    for (i, listener) in hbone {
        if listener.port == 0 || listener.port > u32::from(u16::MAX) {
            issues.push(FieldIssue::new(
                format!("spec.listeners[{i}].port"),
                format!("{} is not a port number", listener.port),
            ));
        }
    }
    issues
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
