//! How a waypoint is declared, shared by the registry (which refuses a malformed
//! declaration), the control plane's controller (which runs a waypoint for each accepted one)
//! and the lab (which runs what that controller would).

/// Gateway API `gatewayClassName`s that declare a waypoint: Istio's, so Istio users' YAML
/// works unchanged, and weft's own.
pub const WAYPOINT_CLASSES: &[&str] = &["istio-waypoint", "weft-waypoint"];

/// Gateway API `gatewayClassName`s of ingress gateways weft serves (`weft-waypoint --mode
/// ingress`): Istio's `istio`, so Istio users' YAML works unchanged, and weft's own.
pub const INGRESS_CLASSES: &[&str] = &["istio", "weft"];

/// The label a waypoint's pods and Service carry, naming their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// `istio.io/waypoint-for` on a waypoint's Gateway: what traffic it takes.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";

/// Istio's values of [`WAYPOINT_FOR_LABEL`]; absent or empty means `service`.
pub const WAYPOINT_FOR_VALUES: [&str; 4] = ["service", "workload", "all", "none"];

/// The protocol of a waypoint's listener.
pub const HBONE_PROTOCOL: &str = "HBONE";

/// What is wrong with a waypoint declaration, as (field path, reason): an
/// `istio.io/waypoint-for` value Istio does not define, no listener with protocol HBONE, an
/// HBONE listener whose port is no port. `listeners` are (protocol, port) in the Gateway's
/// order. Empty when the declaration is good.
pub fn declaration_issues<'a>(
    waypoint_for: Option<&str>,
    listeners: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    if let Some(value) = waypoint_for
        && !value.is_empty()
        && !WAYPOINT_FOR_VALUES.contains(&value)
    {
        issues.push((
            format!("metadata.labels[{WAYPOINT_FOR_LABEL}]"),
            format!("{value:?} is not one of service, workload, all, none"),
        ));
    }
    let hbone: Vec<(usize, u64)> = listeners
        .into_iter()
        .enumerate()
        .filter(|(_, (protocol, _))| *protocol == HBONE_PROTOCOL)
        .map(|(i, (_, port))| (i, port))
        .collect();
    if hbone.is_empty() {
        issues.push((
            "spec.listeners".to_string(),
            "a waypoint needs a listener with protocol HBONE (port 15008)".to_string(),
        ));
    }
    for (i, port) in hbone {
        if port == 0 || port > u64::from(u16::MAX) {
            issues.push((
                format!("spec.listeners[{i}].port"),
                format!("{port} is not a port number"),
            ));
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waypoint_needs_an_hbone_listener_with_a_port_and_a_known_traffic_type() {
        assert!(declaration_issues(Some("service"), [("HBONE", 15008)]).is_empty());
        assert!(declaration_issues(None, [("HTTP", 80), ("HBONE", 15008)]).is_empty());
        let fields: Vec<String> = declaration_issues(Some("everything"), [("HTTP", 80)])
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(
            fields,
            ["metadata.labels[istio.io/waypoint-for]", "spec.listeners"]
        );
        let fields: Vec<String> = declaration_issues(None, [("HTTP", 80), ("HBONE", 70000)])
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(fields, ["spec.listeners[1].port"]);
    }
}
