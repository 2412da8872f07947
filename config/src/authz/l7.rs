//! AuthorizationPolicy at L7, as a waypoint enforces it on each HTTP request.
//!
//! Same order as at L4 ([`custom`] first: whether the extension provider is asked; then
//! any matching DENY denies; then, if any ALLOW policy applies, one of its rules must
//! match; AUDIT decides nothing, [`audited`] names the policies to record), with the HTTP
//! attributes known: hosts, methods, paths and `request.headers[…]` conditions match as
//! Istio's generated Envoy matchers do.
//!
//! - `paths` match the path without the query string, as Envoy's `url_path` matcher; the
//!   caller passes the path already normalized the way the waypoint routes on it.
//! - `hosts` match the `:authority` (Host header) case-insensitively *as sent, port
//!   included*: Istio does not strip the port, and its guidance is to list both
//!   `example.com` and `example.com:*`.
//! - `methods`, header conditions: exact, `prefix*`, `*suffix`, case-sensitive; `*` means
//!   present. A header with several values matches as the values joined by `,`.
//! - `serviceAccounts` (and `source.serviceAccount`): `<ns>/<sa>`, or `<sa>` in the
//!   policy's namespace.
//!
//! - `requestPrincipals` and `request.auth.principal|audiences|presenter|claims[…]` read the
//!   token the waypoint verified ([`L7Request::auth`], see `crate::authn`); without one
//!   they are absent, as in Istio: `requestPrincipals: ["*"]` then does not match (an ALLOW
//!   rule needing it denies, 403) and `notRequestPrincipals: ["*"]` does. Claims match
//!   a string claim or any string of a list claim; nested claims are `[a][b]`.
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, header, request};

use super::decision::Decision;
use super::rules::{self, Custom, Http, Subject};
use crate::api::security::AuthorizationPolicy;
use crate::authn::Authenticated;

/// What the waypoint knows of one HTTP request.
#[derive(Clone, Copy, Debug)]
pub struct L7Request<'a> {
    /// The peer's identity without `spiffe://` (Istio's principal form,
    /// `cluster.local/ns/<ns>/sa/<sa>`), from the HBONE tunnel; `None` for plaintext.
    pub principal: Option<&'a str>,
    /// `source.ip` / `ipBlocks`: the client workload's address.
    pub source_ip: Option<IpAddr>,
    /// `remote.ip` / `remoteIpBlocks`: the original client from X-Forwarded-For when the
    /// waypoint trusts it; `None` uses `source_ip`.
    pub remote_ip: Option<IpAddr>,
    /// `destination.ip`; `None` when unknown (conditions on it then don't match).
    pub destination_ip: Option<IpAddr>,
    /// `ports` / `destination.port`: the port the request was sent to.
    pub destination_port: u16,
    pub method: &'a Method,
    /// The path without the query string.
    pub path: &'a str,
    /// The authority (`:authority`, or the Host header), port included if sent.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// `connection.sni`, when the request arrived over TLS with SNI.
    pub sni: Option<&'a str>,
    /// The verified JWT (request authentication), `None` when the request carried none.
    pub auth: Option<&'a Authenticated>,
}

impl<'a> L7Request<'a> {
    /// The HTTP attributes of `parts`, for a request from `principal`/`source_ip` to
    /// `destination_port`; the other fields start empty.
    pub fn from_parts(
        parts: &'a request::Parts,
        principal: Option<&'a str>,
        source_ip: Option<IpAddr>,
        destination_port: u16,
    ) -> Self {
        let host = parts
            .uri
            .authority()
            .map(|authority| authority.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or_default();
        Self {
            principal,
            source_ip,
            remote_ip: None,
            destination_ip: None,
            destination_port,
            method: &parts.method,
            path: parts.uri.path(),
            host,
            headers: &parts.headers,
            sni: None,
            auth: None,
        }
    }
}

fn subject<'a>(request: &'a L7Request<'a>) -> Subject<'a> {
    Subject {
        principal: request.principal,
        source_ip: request.source_ip,
        remote_ip: request.remote_ip.or(request.source_ip),
        destination_ip: request.destination_ip,
        destination_port: request.destination_port,
        http: Some(Http {
            method: request.method.as_str(),
            path: request.path,
            host: request.host,
            headers: request.headers,
            sni: request.sni,
            auth: request.auth,
        }),
    }
}

pub fn evaluate(policies: &[&Arc<AuthorizationPolicy>], request: &L7Request<'_>) -> Decision {
    rules::evaluate(policies, &subject(request))
}

/// The CUSTOM step for a request.
pub fn custom(policies: &[&Arc<AuthorizationPolicy>], request: &L7Request<'_>) -> Custom {
    rules::custom(policies, &subject(request))
}

/// The AUDIT policies whose rules match the request.
pub fn audited(policies: &[&Arc<AuthorizationPolicy>], request: &L7Request<'_>) -> Vec<String> {
    rules::audited(policies, &subject(request))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn policy(yaml: &str) -> Arc<AuthorizationPolicy> {
        Arc::new(serde_yaml::from_str(yaml).expect("valid AuthorizationPolicy"))
    }

    const SLEEP: &str = "cluster.local/ns/shop/sa/sleep";
    const OTHER: &str = "cluster.local/ns/other/sa/client";

    /// Builds the request and evaluates it, so tests read as one line per case.
    struct Check {
        principal: Option<&'static str>,
        method: Method,
        path: &'static str,
        host: &'static str,
        headers: HeaderMap,
        port: u16,
        auth: Option<Authenticated>,
    }

    impl Check {
        fn get(path: &'static str) -> Self {
            Self {
                principal: Some(SLEEP),
                method: Method::GET,
                path,
                host: "reviews.shop.svc.cluster.local",
                headers: HeaderMap::new(),
                port: 9080,
                auth: None,
            }
        }

        /// A verified token with this payload.
        fn token(mut self, payload: serde_json::Value) -> Self {
            let serde_json::Value::Object(claims) = payload else {
                panic!("a payload is an object");
            };
            let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
            let principal = text("iss")
                .zip(text("sub"))
                .map(|(iss, sub)| format!("{iss}/{sub}"));
            let audiences = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => vec![a.clone()],
                _ => Vec::new(),
            };
            self.auth = Some(Authenticated {
                principal,
                audiences,
                presenter: text("azp").map(str::to_string),
                claims,
                payload_base64url: String::new(),
            });
            self
        }

        fn from(mut self, principal: Option<&'static str>) -> Self {
            self.principal = principal;
            self
        }

        fn method(mut self, method: Method) -> Self {
            self.method = method;
            self
        }

        fn host(mut self, host: &'static str) -> Self {
            self.host = host;
            self
        }

        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.append(name, HeaderValue::from_static(value));
            self
        }

        fn against(&self, policies: &[&Arc<AuthorizationPolicy>]) -> Decision {
            let request = L7Request {
                principal: self.principal,
                source_ip: Some("10.244.1.10".parse().expect("ip")),
                remote_ip: None,
                destination_ip: Some("10.244.2.10".parse().expect("ip")),
                destination_port: self.port,
                method: &self.method,
                path: self.path,
                host: self.host,
                headers: &self.headers,
                sni: None,
                auth: self.auth.as_ref(),
            };
            evaluate(policies, &request)
        }

        fn allowed(&self, policies: &[&Arc<AuthorizationPolicy>]) -> bool {
            self.against(policies) == Decision::Allow
        }
    }

    #[test]
    fn deny_admin_paths() {
        let deny = policy(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#,
        );
        assert_eq!(
            Check::get("/admin/users").against(&[&deny]),
            Decision::Deny("denied by AuthorizationPolicy shop/no-admin".into())
        );
        assert!(Check::get("/admin").allowed(&[]));
        assert!(!Check::get("/admin").allowed(&[&deny]));
        assert!(Check::get("/").allowed(&[&deny]));
        assert!(Check::get("/reviews/1").allowed(&[&deny]));
    }

    #[test]
    fn allow_by_method_and_principal() {
        let allow = policy(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/sleep"]}}]
    to: [{operation: {methods: ["GET", "HEAD"]}}]
"#,
        );
        assert!(Check::get("/reviews/1").allowed(&[&allow]));
        assert!(
            Check::get("/reviews/1")
                .method(Method::HEAD)
                .allowed(&[&allow])
        );
        assert_eq!(
            Check::get("/reviews/1")
                .method(Method::POST)
                .against(&[&allow]),
            Decision::Deny("no ALLOW rule matches (AuthorizationPolicy shop/readers)".into())
        );
        assert!(
            !Check::get("/reviews/1")
                .from(Some(OTHER))
                .allowed(&[&allow])
        );
        assert!(!Check::get("/reviews/1").from(None).allowed(&[&allow]));
    }

    #[test]
    fn not_paths() {
        let allow = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: public, namespace: shop}
spec:
  rules:
  - to: [{operation: {methods: ["GET"], notPaths: ["/internal/*", "*.bak"]}}]
"#,
        );
        assert!(Check::get("/reviews").allowed(&[&allow]));
        assert!(!Check::get("/internal/metrics").allowed(&[&allow]));
        assert!(!Check::get("/db.bak").allowed(&[&allow]));
        assert!(
            !Check::get("/reviews")
                .method(Method::DELETE)
                .allowed(&[&allow])
        );
    }

    #[test]
    fn header_conditions() {
        let allow = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: versioned, namespace: shop}
spec:
  rules:
  - when:
    - key: request.headers[X-Api-Version]
      values: ["v2*"]
      notValues: ["v2-beta"]
"#,
        );
        assert!(
            Check::get("/")
                .header("x-api-version", "v2.1")
                .allowed(&[&allow])
        );
        assert!(
            !Check::get("/")
                .header("x-api-version", "v2-beta")
                .allowed(&[&allow])
        );
        assert!(
            !Check::get("/")
                .header("x-api-version", "v1")
                .allowed(&[&allow])
        );
        assert!(!Check::get("/").allowed(&[&allow]), "header absent");

        // Presence, and a DENY on a header that must be absent.
        let deny_untagged = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: tagged, namespace: shop}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-tenant]", notValues: ["*"]}]
"#,
        );
        assert!(!Check::get("/").allowed(&[&deny_untagged]));
        assert!(
            Check::get("/")
                .header("x-tenant", "")
                .allowed(&[&deny_untagged]),
            "present, even empty"
        );
    }

    #[test]
    fn hosts_are_case_insensitive_and_keep_the_port() {
        let allow = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: hosts, namespace: shop}
spec:
  rules:
  - to: [{operation: {hosts: ["Reviews.Shop.svc.cluster.local", "*.EXAMPLE.com"]}}]
"#,
        );
        assert!(Check::get("/").allowed(&[&allow]));
        assert!(
            Check::get("/")
                .host("REVIEWS.shop.SVC.cluster.local")
                .allowed(&[&allow])
        );
        assert!(Check::get("/").host("api.example.com").allowed(&[&allow]));
        assert!(
            !Check::get("/")
                .host("reviews.shop.svc.cluster.local:9080")
                .allowed(&[&allow]),
            "Istio matches the authority as sent"
        );
        let with_port = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: hosts, namespace: shop}
spec:
  rules: [{to: [{operation: {hosts: ["reviews.shop.svc.cluster.local:*"]}}]}]
"#,
        );
        assert!(
            Check::get("/")
                .host("reviews.shop.svc.cluster.local:9080")
                .allowed(&[&with_port])
        );
    }

    #[test]
    fn deny_wins_and_audit_and_custom_decide_nothing() {
        let allow_all = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: all, namespace: shop}\nspec: {rules: [{}]}\n",
        );
        let deny_posts = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: ro, namespace: shop}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]\n",
        );
        let audit = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: audit, namespace: shop}\nspec:\n  action: AUDIT\n  rules: [{}]\n",
        );
        let custom = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: ext, namespace: shop}\nspec:\n  action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]\n",
        );
        let all = [&allow_all, &deny_posts, &audit, &custom];
        assert!(Check::get("/").allowed(&all));
        assert!(!Check::get("/").method(Method::POST).allowed(&all));
        assert!(Check::get("/").allowed(&[&audit, &custom]));
    }

    #[test]
    fn custom_rules_decide_which_requests_the_provider_sees() {
        let custom = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules: [{to: [{operation: {notPaths: ["/public*"]}}]}]
"#,
        );
        let check = |path: &'static str| {
            let c = Check::get(path);
            let request = L7Request {
                principal: c.principal,
                source_ip: None,
                remote_ip: None,
                destination_ip: None,
                destination_port: c.port,
                method: &c.method,
                path: c.path,
                host: c.host,
                headers: &c.headers,
                sni: None,
                auth: None,
            };
            super::custom(&[&custom], &request)
        };
        assert_eq!(
            check("/headers"),
            Custom::Check {
                provider: "sample-ext-authz-grpc".into(),
                policies: vec!["shop/ext".into()]
            }
        );
        assert_eq!(check("/public/x"), Custom::Skip);
    }

    #[test]
    fn request_principals_and_claims() {
        let allow_jwt = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: shop}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admin"]}]
  - to: [{operation: {paths: ["/healthz"]}}]
"#,
        );
        assert!(!Check::get("/").allowed(&[&allow_jwt]), "no token");
        assert!(Check::get("/healthz").allowed(&[&allow_jwt]));
        let admin = serde_json::json!({
            "iss": "https://issuer.example", "sub": "alice", "groups": ["dev", "admin"]
        });
        assert!(Check::get("/").token(admin.clone()).allowed(&[&allow_jwt]));
        let dev = serde_json::json!({
            "iss": "https://issuer.example", "sub": "bob", "groups": "dev"
        });
        assert!(!Check::get("/").token(dev).allowed(&[&allow_jwt]));
        let elsewhere = serde_json::json!({
            "iss": "https://other.example", "sub": "alice", "groups": ["admin"]
        });
        assert!(!Check::get("/").token(elsewhere).allowed(&[&allow_jwt]));

        let attributes = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: attrs, namespace: shop}
spec:
  rules:
  - when:
    - {key: request.auth.principal, values: ["*/alice"]}
    - {key: request.auth.audiences, values: ["shop"]}
    - {key: request.auth.presenter, values: ["web*"]}
    - {key: "request.auth.claims[org][team]", values: ["core"]}
"#,
        );
        let full = serde_json::json!({
            "iss": "i", "sub": "alice", "aud": "shop", "azp": "webapp", "org": {"team": "core"}
        });
        assert!(Check::get("/").token(full).allowed(&[&attributes]));
        let other_team = serde_json::json!({
            "iss": "i", "sub": "alice", "aud": "shop", "azp": "webapp", "org": {"team": "x"}
        });
        assert!(!Check::get("/").token(other_team).allowed(&[&attributes]));

        // Istio's "require a JWT on /admin".
        let deny_without_jwt = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: need-jwt, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {notRequestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/admin*"]}}]
"#,
        );
        assert!(!Check::get("/admin").allowed(&[&deny_without_jwt]));
        assert!(Check::get("/public").allowed(&[&deny_without_jwt]));
        assert!(
            Check::get("/admin")
                .token(admin)
                .allowed(&[&deny_without_jwt])
        );
    }

    #[test]
    fn sources_and_l4_attributes() {
        let allow = policy(
            r#"
kind: AuthorizationPolicy
metadata: {name: src, namespace: shop}
spec:
  rules:
  - from: [{source: {serviceAccounts: ["sleep"]}}]
    to: [{operation: {ports: ["9080"]}}]
  - from: [{source: {namespaces: ["oth*"], ipBlocks: ["10.244.1.0/24"]}}]
    when: [{key: destination.port, values: ["9080"]}, {key: source.principal, notValues: ["*/sa/admin"]}]
"#,
        );
        assert!(
            Check::get("/").allowed(&[&allow]),
            "shop/sleep via serviceAccounts"
        );
        assert!(Check::get("/").from(Some(OTHER)).allowed(&[&allow]));
        assert!(
            !Check::get("/")
                .from(Some("cluster.local/ns/other/sa/admin"))
                .allowed(&[&allow])
        );
        let mut elsewhere = Check::get("/");
        elsewhere.port = 8080;
        assert!(!elsewhere.allowed(&[&allow]));
        assert!(!Check::get("/").from(None).allowed(&[&allow]));
    }

    #[test]
    fn from_parts_reads_the_request() {
        let request = http::Request::builder()
            .method(Method::PUT)
            .uri("/items/7?force=true")
            .header(header::HOST, "shop.example.com:8443")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let l7 = L7Request::from_parts(&parts, Some(SLEEP), None, 8443);
        assert_eq!(l7.path, "/items/7");
        assert_eq!(l7.host, "shop.example.com:8443");
        assert_eq!(l7.method, Method::PUT);

        let h2 = http::Request::builder()
            .uri("https://api.example.com/v1")
            .body(())
            .expect("request");
        let (parts, ()) = h2.into_parts();
        assert_eq!(
            L7Request::from_parts(&parts, None, None, 443).host,
            "api.example.com"
        );
    }
}
