//! Why a proxied connection did not go through, with the `response_flags` Istio's metrics
//! report for it (ztunnel's codes) and the refusal the HBONE server answers with.
use std::net::SocketAddr;

use weft_core::hbone::Refusal;
use weft_core::metrics::ResponseFlags;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel filed no original destination for a captured connection.
    #[error("captured connection without an original destination")]
    NoOriginalDestination,
    /// Refused by PeerAuthentication, AuthorizationPolicy (or its external authorizer), a
    /// waypoint binding, or because the tunnel leads elsewhere than this pod.
    #[error("{0}")]
    Denied(String),
    /// The pod left the registry while the connection arrived (it is being unenrolled).
    #[error("the pod is no longer in the registry")]
    PodGone,
    /// The registry gives the destination no way out (a waypoint without a ready pod).
    #[error("refused: {0}")]
    NoRoute(String),
    /// The destination's SPIFFE id in the registry does not parse.
    #[error("destination identity {identity}: {reason}")]
    Identity { identity: String, reason: String },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HBONE to {address}: {reason}")]
    Hbone { address: SocketAddr, reason: String },
}

impl Error {
    /// ztunnel's `response_flags` for the connection's close.
    pub fn response_flags(&self) -> ResponseFlags {
        match self {
            Error::Denied(_) | Error::PodGone => ResponseFlags::DENY,
            Error::NoOriginalDestination
            | Error::NoRoute(_)
            | Error::Identity { .. }
            | Error::Connect { .. }
            | Error::Hbone { .. } => ResponseFlags::CONNECT,
        }
    }

    /// What the HBONE server answers a CONNECT that failed this way: 403 for what policy
    /// refused, 503 for what could not be reached.
    pub fn refusal(&self) -> Refusal {
        match self {
            Error::Denied(reason) => Refusal::Forbidden(reason.clone()),
            other => Refusal::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refusals_are_deny_and_forbidden_others_connect_and_unavailable() {
        let denied = Error::Denied("PeerAuthentication STRICT: plaintext refused".into());
        assert_eq!(denied.response_flags(), ResponseFlags::DENY);
        assert!(matches!(denied.refusal(), Refusal::Forbidden(r) if r.contains("STRICT")));
        let unreachable = Error::Connect {
            address: "10.244.1.10:8080".parse().expect("address"),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(unreachable.response_flags(), ResponseFlags::CONNECT);
        assert!(
            matches!(unreachable.refusal(), Refusal::Unavailable(r) if r.contains("10.244.1.10:8080"))
        );
        assert_eq!(Error::PodGone.response_flags(), ResponseFlags::DENY);
        assert!(matches!(Error::PodGone.refusal(), Refusal::Unavailable(_)));
    }
}
