//! Authenticating node agents in a cluster: the agent's service-account token, checked by
//! the API server with a TokenReview, names the node the agent runs on.
use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use tonic::metadata::MetadataMap;
use weft_config::registry::Registry;
use weft_core::ca::{AuthError, Authenticator, Caller};
use weft_core::identity::BoxFuture;

/// Set by the API server on bound service-account tokens (Kubernetes 1.30+).
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// The pod a bound token belongs to; its node comes from the registry on older clusters.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

pub struct TokenReviewAuthenticator {
    client: kube::Client,
    /// Usernames allowed to ask: `system:serviceaccount:<ns>:<sa>` of the node agents.
    agents: Vec<String>,
    registry: Registry,
}

impl TokenReviewAuthenticator {
    pub fn new(client: kube::Client, agents: Vec<String>, registry: Registry) -> Self {
        Self {
            client,
            agents,
            registry,
        }
    }

    async fn review(&self, token: String) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token,
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Other(format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::UnknownToken);
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if !self.agents.contains(&username) {
            return Err(AuthError::Other(format!(
                "{username} is not a node agent's service account"
            )));
        }
        let extra: BTreeMap<String, Vec<String>> = user.extra.unwrap_or_default();
        if let Some(node) = extra.get(NODE_NAME).and_then(|v| v.first()) {
            return Ok(Caller { node: node.clone() });
        }
        // `system:serviceaccount:<namespace>:<name>`
        let namespace = username.split(':').nth(2).unwrap_or_default();
        let node = extra.get(POD_NAME).and_then(|v| v.first()).and_then(|pod| {
            self.registry
                .load()
                .workload(namespace, pod)
                .and_then(|w| w.node.clone())
        });
        node.map(|node| Caller { node }).ok_or_else(|| {
            AuthError::Other(format!(
                "the token of {username} is not bound to a pod with a node (use a projected service-account token)"
            ))
        })
    }
}

fn bearer(metadata: &MetadataMap) -> Result<String, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    value
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Malformed)
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        metadata: &'a MetadataMap,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let token = bearer(metadata)?;
            self.review(token).await
        })
    }
}
