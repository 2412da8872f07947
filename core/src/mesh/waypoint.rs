//! How a waypoint is declared, shared by the registry (which refuses a malformed
//! declaration), the control plane's controller (which runs a waypoint for each accepted one)
//! and the lab (which runs what that controller would).

/// Gateway API `gatewayClassName`s that declare a waypoint: Istio's, so Istio users' YAML
/// works unchanged, and weft's own.
pub const WAYPOINT_CLASSES: &[&str] = &["istio-waypoint", "weft-waypoint"];

/// Gateway API `gatewayClassName`s of ingress gateways weft serves (`weft-waypoint --mode
/// ingress`): Istio's `istio`, so Istio users' YAML works unchanged, and weft's own.
pub const INGRESS_CLASSES: &[&str] = &["istio", "weft"];

/// The route kinds (of the Gateway API group) a listener of an ingress Gateway serves, by
/// its `protocol` and `tls.mode` (`Terminate` when absent): HTTP and HTTPS take HTTPRoute
/// and GRPCRoute; TLS with `Passthrough` takes TLSRoute (routed by the ClientHello's SNI);
/// TLS with `Terminate` takes TLSRoute and TCPRoute (the decrypted stream); TCP takes
/// TCPRoute. None for what weft's ingress gateway does not serve.
pub fn listener_route_kinds(protocol: &str, tls_mode: &str) -> &'static [&'static str] {
    match (protocol, tls_mode) {
        ("HTTP", _) | ("HTTPS", "Terminate") => &["HTTPRoute", "GRPCRoute"],
        ("TLS", "Passthrough") => &["TLSRoute"],
        ("TLS", "Terminate") => &["TLSRoute", "TCPRoute"],
        ("TCP", _) => &["TCPRoute"],
        _ => &[],
    }
}

/// The route kinds a listener takes: those `allowedRoutes.kinds` lists (of the Gateway API
/// group, as `(group, kind)`) that it serves, or, when it lists none, the Gateway API's
/// default for the protocol (a TLS listener: TLSRoute only).
pub fn allowed_route_kinds<'a>(
    protocol: &str,
    tls_mode: &str,
    listed: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<&'static str> {
    let supported = listener_route_kinds(protocol, tls_mode);
    let listed: Vec<(&str, &str)> = listed.into_iter().collect();
    if listed.is_empty() {
        return match protocol {
            "TLS" => supported
                .iter()
                .copied()
                .filter(|k| *k == "TLSRoute")
                .collect(),
            _ => supported.to_vec(),
        };
    }
    supported
        .iter()
        .copied()
        .filter(|k| {
            listed
                .iter()
                .any(|(group, kind)| *group == GATEWAY_API_GROUP && kind == k)
        })
        .collect()
}

/// The Gateway API's group.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

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
    fn a_listener_takes_the_route_kinds_of_its_protocol_and_tls_mode() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            allowed_route_kinds("HTTP", "Terminate", none),
            ["HTTPRoute", "GRPCRoute"]
        );
        assert_eq!(
            allowed_route_kinds("TLS", "Passthrough", none),
            ["TLSRoute"]
        );
        // TCPRoutes reach a terminating TLS listener only when it lists them.
        assert_eq!(allowed_route_kinds("TLS", "Terminate", none), ["TLSRoute"]);
        assert_eq!(
            allowed_route_kinds("TLS", "Terminate", [(GATEWAY_API_GROUP, "TCPRoute")]),
            ["TCPRoute"]
        );
        assert_eq!(allowed_route_kinds("TCP", "Terminate", none), ["TCPRoute"]);
        // Listed kinds the listener cannot serve, or of another group, are not taken.
        assert!(
            allowed_route_kinds("TCP", "Terminate", [(GATEWAY_API_GROUP, "HTTPRoute")]).is_empty()
        );
        assert!(
            allowed_route_kinds("TLS", "Passthrough", [("example.com", "TLSRoute")]).is_empty()
        );
        assert!(allowed_route_kinds("UDP", "Terminate", none).is_empty());
    }

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
