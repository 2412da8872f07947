//! Request authentication (JWT) at the waypoint: which RequestAuthentications apply, their
//! keys, and Istio's answer to an invalid token.
//!
//! Istio's attachment for waypoints (`WorkloadPolicyMatcher.ShouldAttachPolicy`): a policy
//! applies when a `targetRefs` entry names this waypoint's Gateway (policy in its
//! namespace), the Service the request was sent to (policy in the Service's namespace), or,
//! from the root namespace, the GatewayClass `istio-waypoint`. Policies without
//! `targetRefs` (selector or namespace-wide) never apply to waypoints.
//!
//! The decision itself is `weft_config::authn`: no token passes without a principal; an
//! invalid one is answered 401 with `www-authenticate`, as Envoy's JWT filter answers.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header, request};
use tracing::debug;
use weft_config::api::common::PolicyTargetReference;
use weft_config::api::security::RequestAuthentication;
use weft_config::authn::jwt::JwtError;
use weft_config::authn::{self, Authenticated, Keys, Outcome, Provider};
use weft_config::duration;
use weft_config::registry::Snapshot;

use super::local::{self, ResponseBody};
use crate::context::WaypointContext;
use crate::downstream::Target;
use crate::jwks::DEFAULT_TIMEOUT;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const WAYPOINT_CLASS: &str = "istio-waypoint";

/// The RequestAuthentications in force for a request to `target` through the waypoint
/// `name` of `namespace`.
pub fn policies<'s>(
    snapshot: &'s Snapshot,
    (name, namespace): (&str, &str),
    target: &Target,
) -> Vec<&'s Arc<RequestAuthentication>> {
    let root = snapshot.settings().root_namespace.as_str();
    let attaches = |r: &PolicyTargetReference, policy_ns: &str| {
        let namespace_fits = r.namespace.as_deref().is_none_or(|ns| ns == policy_ns);
        let gateway = r.group == GATEWAY_GROUP
            && r.kind == "Gateway"
            && r.name == name
            && policy_ns == namespace;
        let class = r.group == GATEWAY_GROUP
            && r.kind == "GatewayClass"
            && r.name == WAYPOINT_CLASS
            && policy_ns == root;
        let service = match target {
            Target::Service { service, .. } => {
                matches!(r.group.as_str(), "" | "core")
                    && r.kind == "Service"
                    && r.name == service.name
                    && policy_ns == service.namespace
            }
            Target::EntryHost { host, .. } => {
                crate::http::authz::names_service_entry(r, policy_ns, host)
            }
            Target::Workload { .. } | Target::Gateway(_) => false,
        };
        namespace_fits && (gateway || class || service)
    };
    // An ingress gateway is a workload: RequestAuthentications selecting its pod (root
    // namespace and its own, with a selector or none, without targetRefs) apply.
    if let Target::Gateway(gateway) = target {
        let Some(workload) = &gateway.workload else {
            return Vec::new();
        };
        let mut namespaces = vec![root, &*workload.namespace];
        namespaces.dedup();
        return namespaces
            .into_iter()
            .flat_map(|ns| snapshot.request_authentications(ns).iter())
            .filter(|policy| {
                let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
                let selected = policy.spec.targets().next().is_none()
                    && weft_config::translate::policy::selects(
                        policy.spec.selector.as_ref(),
                        &workload.labels,
                    );
                selected || policy.spec.targets().any(|r| attaches(r, policy_ns))
            })
            .collect();
    }
    let mut namespaces = vec![namespace];
    match target {
        Target::Service { service, .. } => namespaces.push(service.namespace.as_str()),
        Target::EntryHost { host, .. } => namespaces.push(host.namespace.as_str()),
        _ => {}
    }
    namespaces.push(root);
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces
        .into_iter()
        .flat_map(|ns| snapshot.request_authentications(ns).iter())
        .filter(|policy| {
            let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            policy.spec.targets().any(|r| attaches(r, policy_ns))
        })
        .collect()
}

/// Authenticates the request and rewrites its headers for the upstream: `Ok` with the
/// verified token (or `None`), `Err` with the 401 to send.
pub async fn authenticate(
    snapshot: &Snapshot,
    ctx: &WaypointContext,
    target: &Target,
    parts: &mut request::Parts,
    authority: &str,
) -> Result<Option<Authenticated>, Response<ResponseBody>> {
    let policies = policies(snapshot, (&ctx.name, &ctx.namespace), target);
    if policies.is_empty() {
        return Ok(None);
    }
    let mut providers = Vec::new();
    for policy in &policies {
        for rule in &policy.spec.jwt_rules {
            let keys = match (&rule.jwks, &rule.jwks_uri) {
                (Some(jwks), _) if !jwks.is_empty() => match ctx.jwks.inline(jwks) {
                    Ok(keys) => Keys::Ready(keys),
                    Err(_) => Keys::Unavailable,
                },
                (_, Some(uri)) if !uri.is_empty() => {
                    let timeout = rule
                        .timeout
                        .as_deref()
                        .and_then(|t| duration::parse(t).ok())
                        .filter(|t| !t.is_zero())
                        .unwrap_or(DEFAULT_TIMEOUT);
                    match ctx.jwks.remote(uri, timeout).await {
                        Some(keys) => Keys::Ready(keys),
                        None => Keys::Unavailable,
                    }
                }
                _ => Keys::Unavailable,
            };
            providers.push(Provider { rule, keys });
        }
    }
    let outcome = authn::authenticate(&providers, &parts.headers, parts.uri.query(), authn::now());
    authn::apply(&providers, &outcome, &mut parts.headers);
    match outcome {
        Outcome::Anonymous => Ok(None),
        Outcome::Verified { auth, .. } => Ok(Some(*auth)),
        Outcome::Rejected(error) => {
            debug!(%error, path = parts.uri.path(), "request authentication failed");
            Err(unauthorized(&error, authority, parts.uri.path()))
        }
    }
}

/// Envoy's answer: 401, the reason as the body, and `www-authenticate` with the request's
/// URL as the realm (`error="invalid_token"` unless the token was missing).
fn unauthorized(error: &JwtError, authority: &str, path: &str) -> Response<ResponseBody> {
    let mut response = Response::new(local::full(error.to_string().into()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let realm = format!("http://{authority}{path}").replace(['"', '\\'], "");
    let challenge = if *error == JwtError::Missing {
        format!("Bearer realm=\"{realm}\"")
    } else {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The refresh interval flag's parser (`20m`, `30s`).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weft_config::registry::{Change, Registry};
    use weft_config::source::yaml;

    use super::*;

    const JWKS: &str = r#"'{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'"#;

    fn policy(name: &str, namespace: &str, targets: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  {targets}\n  jwtRules: [{{issuer: i, jwks: {JWKS}}}]\n---\n"
        )
    }

    /// Istio's attachment for waypoints: Gateway, Service (in its namespace), GatewayClass
    /// from the root namespace; never selectors or namespace-wide policies.
    #[test]
    fn waypoints_take_policies_by_target_refs_only() {
        let text = [
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 9080}]}\n---\n".to_string(),
            policy("gateway", "shop", "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]"),
            policy("other-gateway", "shop", "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: other}]"),
            policy("service", "shop", "targetRef: {group: \"\", kind: Service, name: reviews}"),
            policy("service-elsewhere", "infra", "targetRefs: [{group: \"\", kind: Service, name: reviews}]"),
            policy("class", "istio-system", "targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}]"),
            policy("class-not-root", "shop", "targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}]"),
            policy("selector", "shop", "selector: {matchLabels: {app: reviews}}"),
            policy("namespace-wide", "shop", ""),
            policy("mesh-wide", "istio-system", ""),
        ]
        .concat();
        let registry = Registry::default();
        let documents = yaml::parse(&text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
        let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        let snapshot = registry.snapshot();
        let service = snapshot
            .service_by_host("reviews.shop.svc.cluster.local")
            .expect("service")
            .clone();
        let names = |target: &Target| {
            let mut names: Vec<String> = policies(&snapshot, ("waypoint", "shop"), target)
                .into_iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(&Target::Service {
                service,
                port: 9080
            }),
            ["class", "gateway", "service"]
        );
    }

    #[test]
    fn unauthorized_answers_as_envoy() {
        let response = unauthorized(&JwtError::Expired, "reviews:9080", "/a");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"http://reviews:9080/a\", error=\"invalid_token\""
        );
        let missing = unauthorized(&JwtError::Missing, "r", "/");
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"http://r/\""
        );
        assert_eq!(parse_interval("20m"), Ok(Duration::from_secs(1200)));
        assert!(parse_interval("0s").is_err());
    }
}
