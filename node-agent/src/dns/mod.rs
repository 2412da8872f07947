//! The DNS proxy (ztunnel's): the enrolled pods' DNS queries, captured in the pod by its
//! cgroup programs (UDP with `sendmsg4`/`recvmsg4` and `connect4`, TCP with `connect4`), are
//! answered by the agent at `127.0.0.1:15053` inside the pod: Kubernetes Services and
//! ServiceEntry hosts from the registry (ServiceEntry hosts without addresses at the address
//! the registry allocated them, so a connection to the name is routed and policed as the
//! entry says), everything else forwarded to the upstream resolver.
//!
//! - [`answer`]: what the registry says about a name (pure);
//! - [`server`]: the per-pod UDP and TCP servers;
//! - [`upstream`]: forwarding, and the agent's own lookups of ServiceEntry hosts.
//!
//! A pod opts out with Istio's annotation `ambient.istio.io/dns-capture: "false"` (and in
//! with `"true"` when the agent runs with `--dns-capture=false`), read by
//! [`capture_override`]. While the agent is away, the pod's DNS queries reach no listener and
//! fail at once (connected UDP sockets get ICMP port unreachable); none leaves the pod
//! uncaptured.
pub mod answer;
pub mod server;
pub use weft_core::dns as upstream;

use std::collections::BTreeMap;

/// Istio's per-pod override of DNS capture (its CNI agent reads it the same way).
pub const DNS_CAPTURE_ANNOTATION: &str = "ambient.istio.io/dns-capture";

/// A pod's own say on its DNS capture: its annotation when it parses as a boolean (Go's
/// `strconv.ParseBool`, as Istio reads it), else `None` (the agent's `--dns-capture`).
pub fn capture_override(annotations: &BTreeMap<String, String>) -> Option<bool> {
    match annotations.get(DNS_CAPTURE_ANNOTATION).map(String::as_str) {
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Some(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_overrides_the_default_when_it_is_a_boolean() {
        let with =
            |value: &str| BTreeMap::from([(DNS_CAPTURE_ANNOTATION.to_string(), value.to_string())]);
        assert_eq!(capture_override(&BTreeMap::new()), None);
        assert_eq!(capture_override(&with("false")), Some(false));
        assert_eq!(capture_override(&with("0")), Some(false));
        assert_eq!(capture_override(&with("True")), Some(true));
        assert_eq!(
            capture_override(&with("tweedledum")),
            None,
            "a value that is no boolean is ignored, as Istio ignores it"
        );
    }
}
