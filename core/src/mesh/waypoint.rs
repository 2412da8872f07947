//! How a waypoint is declared, shared by the registry and the lab (which runs a waypoint
//! pod for each declaration, as Istio's Gateway controller would).

/// Gateway API `gatewayClassName`s that declare a waypoint: Istio's, so Istio users' YAML
/// works unchanged, and weft's own.
pub const WAYPOINT_CLASSES: &[&str] = &["istio-waypoint", "weft-waypoint"];

/// The label a waypoint's pods and Service carry, naming their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
