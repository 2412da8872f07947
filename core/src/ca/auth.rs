//! Who is asking the CA, and what they may obtain.
use std::fmt;

use tonic::metadata::MetadataMap;

use crate::identity::{BoxFuture, Identity, crypto_provider};

/// An authenticated caller of the CA: the agent of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub node: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no authorization metadata: a node credential (\"authorization: Bearer <token>\") is required"
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
/// per-node bearer tokens; a Kubernetes deployment would implement it with TokenReview.
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
                .map(|node| Caller {
                    node: node.to_owned(),
                })
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
            authenticate(&auth, Some("Bearer t2"))
                .await
                .expect("known")
                .node,
            "node-2"
        );
        assert_eq!(
            authenticate(&auth, Some("bearer   t1 "))
                .await
                .expect("known")
                .node,
            "node-1"
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
}
