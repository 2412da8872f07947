//! Who is asking the CA, and what they may obtain.
use std::fmt;

use tonic::metadata::MetadataMap;

use crate::identity::{BoxFuture, Identity, crypto_provider};

/// An authenticated caller of the CA, and so what it may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The agent of a node: may obtain the identities of the pods scheduled on that node (as
    /// [`NodeIdentities`] says), naming each in `ImpersonatedIdentity` as ztunnel does.
    Node { node: String },
    /// A workload authenticated as its own service account (a waypoint, say): may obtain
    /// exactly that identity, as istiod grants any workload, with a CSR naming it.
    Workload { identity: Identity },
}

impl Caller {
    pub fn node(node: impl Into<String>) -> Self {
        Self::Node { node: node.into() }
    }

    pub fn workload(identity: Identity) -> Self {
        Self::Workload { identity }
    }

    /// Whether this caller may obtain `identity` (the identity asked for) with a CSR whose
    /// SPIFFE SANs are `csr_identities`.
    ///
    /// - A node: `identity` must be one of its pods'. The CSR's names do not matter: the
    ///   certificate names `identity` only (see [`super::CertificateAuthority::sign_csr`]).
    /// - A workload: `identity` must be its own, and the CSR must name exactly that identity
    ///   (Istio's CreateCertificate: the CSR's SAN is the caller's identity).
    pub fn authorize(
        &self,
        identity: &Identity,
        csr_identities: &[Identity],
        nodes: &dyn NodeIdentities,
    ) -> Result<(), Forbidden> {
        match self {
            Self::Node { node } => {
                if nodes.may_issue(node, identity) {
                    Ok(())
                } else {
                    Err(Forbidden::NotOnNode {
                        node: node.clone(),
                        identity: identity.clone(),
                    })
                }
            }
            Self::Workload { identity: own } => {
                if identity != own {
                    Err(Forbidden::NotOwnIdentity {
                        caller: own.clone(),
                        identity: identity.clone(),
                    })
                } else if csr_identities != std::slice::from_ref(own) {
                    Err(Forbidden::CsrNames {
                        caller: own.clone(),
                        named: csr_identities.to_vec(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node { node } => write!(f, "node {node}"),
            Self::Workload { identity } => write!(f, "workload {identity}"),
        }
    }
}

/// Why an authenticated caller may not obtain the identity it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("node {node} may not obtain {identity}: no pod with that identity is scheduled on it")]
    NotOnNode { node: String, identity: Identity },
    #[error("{caller} may obtain only its own identity, not {identity}")]
    NotOwnIdentity {
        caller: Identity,
        identity: Identity,
    },
    #[error(
        "the CSR of {caller} must name exactly its identity as URI SAN; it names {}",
        list(named)
    )]
    CsrNames {
        caller: Identity,
        named: Vec<Identity>,
    },
}

fn list(identities: &[Identity]) -> String {
    if identities.is_empty() {
        return "no SPIFFE identity".to_owned();
    }
    identities
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no authorization metadata: a credential (\"authorization: Bearer <token>\") is required"
    )]
    Missing,
    #[error("the authorization metadata is not \"Bearer <token>\"")]
    Malformed,
    #[error("the bearer token is not the credential of any node")]
    UnknownToken,
    #[error("{0}")]
    Other(String),
}

/// Turns the metadata of a CA request into a caller, or refuses it. Implemented here with
/// per-node bearer tokens (the lab); weft-ca implements it with TokenReview.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        metadata: &'a MetadataMap,
    ) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

/// Which identities a node may obtain: those of pods scheduled on it. Supplied by the
/// caller of the CA (the configuration registry, in the product).
pub trait NodeIdentities: Send + Sync + 'static {
    fn may_issue(&self, node: &str, identity: &Identity) -> bool;
}

impl<F> NodeIdentities for F
where
    F: Fn(&str, &Identity) -> bool + Send + Sync + 'static,
{
    fn may_issue(&self, node: &str, identity: &Identity) -> bool {
        self(node, identity)
    }
}

/// One secret bearer token per node, as the lab hands them out.
pub struct NodeTokenAuthenticator {
    tokens: Vec<(String, Vec<u8>)>,
}

impl NodeTokenAuthenticator {
    /// From `(node, token)` pairs.
    pub fn new<N: Into<String>, T: AsRef<str>>(tokens: impl IntoIterator<Item = (N, T)>) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .map(|(node, token)| (node.into(), token.as_ref().as_bytes().to_vec()))
                .collect(),
        }
    }

    /// A new random token (256 bits, hex) to give a node.
    pub fn generate_token() -> Result<String, AuthError> {
        let mut bytes = [0u8; 32];
        crypto_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| AuthError::Other("no randomness for a token".to_owned()))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn node_of(&self, presented: &[u8]) -> Option<&str> {
        // Every entry is compared, in constant time each, so timing tells nothing about
        // which token (or how much of one) matched.
        let mut found = None;
        for (node, token) in &self.tokens {
            if constant_time_eq(token, presented) && found.is_none() {
                found = Some(node.as_str());
            }
        }
        found
    }
}

impl fmt::Debug for NodeTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTokenAuthenticator")
            .field(
                "nodes",
                &self.tokens.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Authenticator for NodeTokenAuthenticator {
    fn authenticate<'a>(
        &'a self,
        metadata: &'a MetadataMap,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        let result = bearer_token(metadata).and_then(|token| {
            self.node_of(token.as_bytes())
                .map(Caller::node)
                .ok_or(AuthError::UnknownToken)
        });
        Box::pin(std::future::ready(result))
    }
}

/// The token of an `authorization: Bearer <token>` entry.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = authorization {
            map.insert("authorization", value.parse().expect("ascii"));
        }
        map
    }

    async fn authenticate(
        auth: &NodeTokenAuthenticator,
        header: Option<&str>,
    ) -> Result<Caller, AuthError> {
        auth.authenticate(&metadata(header)).await
    }

    #[tokio::test]
    async fn tokens_map_to_their_nodes() {
        let auth = NodeTokenAuthenticator::new([("node-1", "t1"), ("node-2", "t2")]);
        assert_eq!(
            authenticate(&auth, Some("Bearer t2")).await.expect("known"),
            Caller::node("node-2")
        );
        assert_eq!(
            authenticate(&auth, Some("bearer   t1 "))
                .await
                .expect("known"),
            Caller::node("node-1")
        );
        assert!(matches!(
            authenticate(&auth, Some("Bearer t3")).await,
            Err(AuthError::UnknownToken)
        ));
        assert!(matches!(
            authenticate(&auth, Some("Bearer t")).await,
            Err(AuthError::UnknownToken)
        ));
        assert!(matches!(
            authenticate(&auth, None).await,
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            authenticate(&auth, Some("Basic dXNlcjpwYXNz")).await,
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            authenticate(&auth, Some("Bearer")).await,
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = NodeTokenAuthenticator::generate_token().expect("token");
        let b = NodeTokenAuthenticator::generate_token().expect("token");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let auth = NodeTokenAuthenticator::new([("n", a.as_str())]);
        assert!(
            !format!("{auth:?}").contains(&a),
            "Debug must not show tokens"
        );
    }

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::in_default_trust_domain(ns, sa).expect("valid")
    }

    /// node-1 runs shop/web; nothing runs shop/waypoint's pods on a node here.
    fn nodes(node: &str, identity: &Identity) -> bool {
        node == "node-1" && *identity == id("shop", "web")
    }

    #[test]
    fn a_node_obtains_the_identities_of_its_pods_whatever_its_csr_names() {
        let node = Caller::node("node-1");
        assert_eq!(node.authorize(&id("shop", "web"), &[], &nodes), Ok(()));
        assert_eq!(
            node.authorize(&id("shop", "web"), &[id("evil", "admin")], &nodes),
            Ok(()),
            "the certificate names the authorized identity, not the CSR's"
        );
        let refused = node
            .authorize(&id("shop", "db"), &[id("shop", "db")], &nodes)
            .expect_err("no pod of shop/db on node-1");
        assert_eq!(
            refused.to_string(),
            "node node-1 may not obtain spiffe://cluster.local/ns/shop/sa/db: \
             no pod with that identity is scheduled on it"
        );
        assert!(
            Caller::node("node-2")
                .authorize(&id("shop", "web"), &[], &nodes)
                .is_err()
        );
    }

    #[test]
    fn a_workload_obtains_its_own_identity_only() {
        let waypoint = Caller::workload(id("shop", "waypoint"));
        assert_eq!(
            waypoint.authorize(&id("shop", "waypoint"), &[id("shop", "waypoint")], &nodes),
            Ok(())
        );
        // Not another identity, not even one its node's agent could obtain.
        let refused = waypoint
            .authorize(&id("shop", "web"), &[id("shop", "web")], &nodes)
            .expect_err("not its own");
        assert_eq!(
            refused,
            Forbidden::NotOwnIdentity {
                caller: id("shop", "waypoint"),
                identity: id("shop", "web"),
            }
        );
        assert_eq!(
            refused.to_string(),
            "spiffe://cluster.local/ns/shop/sa/waypoint may obtain only its own identity, \
             not spiffe://cluster.local/ns/shop/sa/web"
        );
        // The same service account name in another namespace is another identity.
        assert!(
            waypoint
                .authorize(&id("other", "waypoint"), &[id("other", "waypoint")], &nodes)
                .is_err()
        );
    }

    #[test]
    fn a_workloads_csr_must_name_exactly_its_identity() {
        let own = id("shop", "waypoint");
        let waypoint = Caller::workload(own.clone());
        for named in [
            vec![],
            vec![id("shop", "web")],
            vec![own.clone(), id("shop", "web")],
            vec![own.clone(), own.clone()],
        ] {
            let refused = waypoint
                .authorize(&own, &named, &nodes)
                .expect_err("the CSR must name the identity, and only it");
            assert!(
                matches!(&refused, Forbidden::CsrNames { caller, named: n } if *caller == own && *n == named),
                "{refused:?}"
            );
        }
        assert_eq!(
            waypoint
                .authorize(&own, &[], &nodes)
                .map_err(|e| e.to_string()),
            Err(
                "the CSR of spiffe://cluster.local/ns/shop/sa/waypoint must name exactly its \
                 identity as URI SAN; it names no SPIFFE identity"
                    .to_owned()
            )
        );
    }

    #[test]
    fn callers_display_what_they_are() {
        assert_eq!(Caller::node("node-1").to_string(), "node node-1");
        assert_eq!(
            Caller::workload(id("shop", "waypoint")).to_string(),
            "workload spiffe://cluster.local/ns/shop/sa/waypoint"
        );
    }
}
