//! SPIFFE identities of Kubernetes service accounts: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The trust domain of a cluster that configures none, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// The identity of one service account in one trust domain.
///
/// Only the Kubernetes shape (`/ns/<ns>/sa/<sa>`) is an `Identity`: it is the only one Istio
/// issues, and knowing the namespace and service account is what policy needs. Cheap to
/// clone: identities key pools and maps all over the agent.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(Arc<Parts>);

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityParseError {
    #[error("{0:?} is not a SPIFFE id: it must start with \"spiffe://\"")]
    Scheme(String),
    #[error(
        "{input:?}: invalid trust domain {trust_domain:?} (lower-case letters, digits, '.', '-', '_')"
    )]
    TrustDomain { input: String, trust_domain: String },
    #[error("{input:?}: the path must be /ns/<namespace>/sa/<service-account>")]
    Path { input: String },
    #[error(
        "{input:?}: invalid {what} {value:?} (letters, digits, '.', '-', '_'; not '.' or '..')"
    )]
    Segment {
        input: String,
        what: &'static str,
        value: String,
    },
}

impl Identity {
    /// An identity from its parts, checked as [`FromStr`] checks a parsed one.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityParseError> {
        let input = || format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        if !valid_trust_domain(trust_domain) {
            return Err(IdentityParseError::TrustDomain {
                input: input(),
                trust_domain: trust_domain.to_owned(),
            });
        }
        for (what, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !valid_segment(value) {
                return Err(IdentityParseError::Segment {
                    input: input(),
                    what,
                    value: value.to_owned(),
                });
            }
        }
        Ok(Self(Arc::new(Parts {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })))
    }

    /// The identity of a service account in the default trust domain.
    pub fn in_default_trust_domain(
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityParseError> {
        Self::new(DEFAULT_TRUST_DOMAIN, namespace, service_account)
    }

    pub fn trust_domain(&self) -> &str {
        &self.0.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.0.service_account
    }

    /// The same service account in another trust domain (Istio's trust domain aliases).
    pub fn with_trust_domain(&self, trust_domain: &str) -> Result<Self, IdentityParseError> {
        Self::new(trust_domain, self.namespace(), self.service_account())
    }
}

/// SPIFFE: trust domain names are lower-case letters, digits, dots, dashes and underscores.
fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// SPIFFE: path segments are letters, digits, dots, dashes and underscores, and never the
/// relative segments `.` and `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl FromStr for Identity {
    type Err = IdentityParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        // SPIFFE requires the lower-case scheme; being lenient here would make two spellings
        // of one identity compare unequal later.
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityParseError::Scheme(input.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').ok_or(IdentityParseError::Path {
            input: input.to_owned(),
        })?;
        if !valid_trust_domain(trust_domain) {
            return Err(IdentityParseError::TrustDomain {
                input: input.to_owned(),
                trust_domain: trust_domain.to_owned(),
            });
        }
        let mut parts = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(IdentityParseError::Path {
                input: input.to_owned(),
            });
        };
        Self::new(trust_domain, namespace, service_account).map_err(|e| match e {
            // Report the text as given, not as re-assembled from its parts.
            IdentityParseError::Segment { what, value, .. } => IdentityParseError::Segment {
                input: input.to_owned(),
                what,
                value,
            },
            other => other,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.0.trust_domain, self.0.namespace, self.0.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let text = "spiffe://cluster.local/ns/shop/sa/web-frontend";
        let id: Identity = text.parse().expect("valid id");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "web-frontend");
        assert_eq!(id.to_string(), text);
    }

    #[test]
    fn default_trust_domain_is_cluster_local() {
        let id = Identity::in_default_trust_domain("default", "sleep").expect("valid");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "",
            "cluster.local/ns/a/sa/b",
            "SPIFFE://cluster.local/ns/a/sa/b",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = "spiffe://cluster.local/ns/a b/sa/c"
            .parse::<Identity>()
            .expect_err("space in namespace");
        assert!(
            matches!(err, IdentityParseError::Segment { what: "namespace", ref value, .. } if value == "a b"),
            "{err:?}"
        );
        assert!(matches!(
            "spiffe://Example.org/ns/a/sa/b".parse::<Identity>(),
            Err(IdentityParseError::TrustDomain { .. })
        ));
    }

    #[test]
    fn other_trust_domains_are_distinct() {
        let a: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().expect("valid");
        let b: Identity = "spiffe://example.org/ns/a/sa/b".parse().expect("valid");
        assert_ne!(a, b);
        assert_eq!(a.with_trust_domain("example.org").expect("valid"), b);
    }
}
