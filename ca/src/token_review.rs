//! Authenticating callers in a cluster by their service-account token, checked by the API
//! server with a TokenReview.
//!
//! - A node agent (its service account is one of `agents`): the token names the node the
//!   agent runs on, and the caller is that node ([`Caller::Node`]).
//! - Any other service account `system:serviceaccount:<ns>:<sa>` (a waypoint, say): the caller
//!   is the workload `spiffe://<trust domain>/ns/<ns>/sa/<sa>` ([`Caller::Workload`]), which
//!   may obtain that identity only, as istiod grants any workload.
//!
//! Audience: the review asks for the CA's audiences (`--token-audiences`, by default
//! `istio-ca`, as istiod does), so agents and waypoints present a token projected for that
//! audience: a token stolen from a workload that talks to the API server (the kubelet's
//! default token) is no credential here, and a token made for weft-ca is none anywhere else.
//! The API server answers with the audiences it matched; an answer without one of ours
//! (an authenticator that ignores audiences) is refused. With no audiences configured, the
//! API server's own are checked, those of the kubelet's default token.
//!
//! Binding: both kinds of caller must present a token bound to a pod (the kubelet's tokens
//! are; the API server then vouches that the pod exists and runs as that service account).
//! Tokens of service-account Secrets and tokens requested for no pod are refused: stricter
//! than istiod, which accepts any token of the service account.
use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use tonic::metadata::MetadataMap;
use weft_config::registry::Registry;
use weft_core::ca::{AuthError, Authenticator, Caller};
use weft_core::identity::{BoxFuture, Identity};

/// Set by the API server on bound service-account tokens (Kubernetes 1.30+).
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// The pod a bound token belongs to; its node comes from the registry on older clusters.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// How the API server names a service account as a user.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

pub struct TokenReviewAuthenticator {
    client: kube::Client,
    /// Node agents' usernames: `system:serviceaccount:<ns>:<sa>`.
    agents: Vec<String>,
    registry: Registry,
    /// The CA's: workloads' identities are in it.
    trust_domain: String,
    /// Audiences a token must be valid for, one of them at least; empty: the API server's.
    audiences: Vec<String>,
}

/// The audience istiod asks of tokens, and weft-ca by default: a token projected for
/// istiod works here unchanged.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

impl TokenReviewAuthenticator {
    pub fn new(
        client: kube::Client,
        agents: Vec<String>,
        registry: Registry,
        trust_domain: impl Into<String>,
        audiences: Vec<String>,
    ) -> Self {
        Self {
            client,
            agents,
            registry,
            trust_domain: trust_domain.into(),
            audiences,
        }
    }

    async fn review(&self, token: String) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token,
                // None: the API server's own audiences (see the module documentation).
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
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
        if !self.audiences.is_empty() {
            let confirmed = status.audiences.unwrap_or_default();
            if !confirmed.iter().any(|a| self.audiences.contains(a)) {
                return Err(AuthError::Other(format!(
                    "the API server did not confirm the token's audience (wanted one of {:?}, \
                     confirmed {confirmed:?}): project the service-account token for {:?}",
                    self.audiences, self.audiences[0]
                )));
            }
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let extra: BTreeMap<String, Vec<String>> = user.extra.unwrap_or_default();
        if self.agents.contains(&username) {
            self.agent(&username, &extra).map(Caller::node)
        } else {
            self.workload(&username, &extra).map(Caller::workload)
        }
    }

    /// The node of a node agent's token.
    fn agent(
        &self,
        username: &str,
        extra: &BTreeMap<String, Vec<String>>,
    ) -> Result<String, AuthError> {
        if let Some(node) = extra.get(NODE_NAME).and_then(|v| v.first()) {
            return Ok(node.clone());
        }
        // `system:serviceaccount:<namespace>:<name>`
        let namespace = username.split(':').nth(2).unwrap_or_default();
        let node = extra.get(POD_NAME).and_then(|v| v.first()).and_then(|pod| {
            self.registry
                .load()
                .workload(namespace, pod)
                .and_then(|w| w.node.as_deref().map(String::from))
        });
        node.ok_or_else(|| {
            AuthError::Other(format!(
                "the token of {username} is not bound to a pod with a node (use a projected service-account token)"
            ))
        })
    }

    /// The identity of a workload's token: its service account's.
    fn workload(
        &self,
        username: &str,
        extra: &BTreeMap<String, Vec<String>>,
    ) -> Result<Identity, AuthError> {
        let (namespace, name) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                AuthError::Other(format!(
                    "{username} is neither a node agent's nor a workload's service account"
                ))
            })?;
        let identity = Identity::new(&self.trust_domain, namespace, name).map_err(|e| {
            AuthError::Other(format!(
                "the service account of {username} is no SPIFFE identity: {e}"
            ))
        })?;
        if extra.get(POD_NAME).is_none_or(|pods| pods.is_empty()) {
            return Err(AuthError::Other(format!(
                "the token of {username} is not bound to a pod (use the pod's projected service-account token)"
            )));
        }
        Ok(identity)
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
