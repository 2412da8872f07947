//! `corsPolicy`: Istio's `TranslateCORSPolicy` and Envoy's CORS filter.
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use weft_config::api::networking::CorsPolicy;
use weft_config::duration;

use super::facts::RequestFacts;
use super::matcher::{StrMatch, warn_once};

#[derive(Clone, Debug)]
pub struct CorsPlan {
    allow_origins: Vec<StrMatch>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    /// `unmatchedPreflights: FORWARD` (the default): a preflight from an origin that is not
    /// allowed goes to the upstream instead of being answered.
    forward_unmatched_preflights: bool,
}

impl CorsPlan {
    pub(crate) fn compile(cors: &CorsPolicy, at: &str) -> Self {
        let allow_origins = if cors.allow_origins.is_empty() {
            // The deprecated field, as exact matches.
            cors.allow_origin
                .iter()
                .map(|origin| StrMatch::Exact(origin.as_bytes().into()))
                .collect()
        } else {
            cors.allow_origins
                .iter()
                .enumerate()
                .filter_map(|(i, m)| StrMatch::compile(m, &format!("{at}.allowOrigins[{i}]")))
                .collect()
        };
        let max_age = cors
            .max_age
            .as_deref()
            .and_then(|max_age| match duration::parse(max_age) {
                // Whole seconds, as pilot formats it.
                Ok(max_age) => Some(HeaderValue::from(max_age.as_secs())),
                Err(error) => {
                    warn_once(format!("{at}.maxAge: {error}; ignored"));
                    None
                }
            });
        Self {
            allow_origins,
            allow_methods: joined(&cors.allow_methods, &format!("{at}.allowMethods")),
            allow_headers: joined(&cors.allow_headers, &format!("{at}.allowHeaders")),
            expose_headers: joined(&cors.expose_headers, &format!("{at}.exposeHeaders")),
            max_age,
            allow_credentials: cors.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights: cors.unmatched_preflights.as_deref() != Some("IGNORE"),
        }
    }

    /// Envoy allows an origin when a matcher accepts it or accepts the literal "*", so
    /// `exact: "*"` allows every origin.
    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.allow_origins
            .iter()
            .any(|m| m.matches(b"*") || m.matches(origin))
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` to carry on with the request: not a
    /// preflight, or one from an origin that is not allowed while unmatched preflights are
    /// forwarded. With `unmatchedPreflights: IGNORE` such a preflight is answered 200
    /// without `Access-Control-Allow-Origin`, which the browser reads as a refusal.
    pub fn preflight(&self, facts: &RequestFacts<'_>) -> Option<http::Response<()>> {
        let origin = facts.headers.get(ORIGIN).filter(|o| !o.is_empty())?;
        if facts.method != Method::OPTIONS {
            return None;
        }
        let requested_method = facts
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty())?;
        let allowed = self.origin_allowed(origin.as_bytes());
        if !allowed && self.forward_unmatched_preflights {
            return None;
        }
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        if allowed {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.allow_credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // "*" echoes what the browser asked for.
        if let Some(methods) = &self.allow_methods {
            let methods = if methods == "*" {
                requested_method
            } else {
                methods
            };
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
        }
        if let Some(allow) = &self.allow_headers {
            let allow = if allow == "*" {
                facts.headers.get(ACCESS_CONTROL_REQUEST_HEADERS)
            } else {
                Some(allow)
            };
            if let Some(allow) = allow {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
            }
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        Some(response)
    }

    /// Headers for the response to an actual (non-preflight) request carrying
    /// `request_origin`; nothing for a request without `Origin` or from a disallowed one.
    pub fn response_headers(&self, request_origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = request_origin.filter(|o| !o.is_empty()) else {
            return;
        };
        if !self.origin_allowed(origin.as_bytes()) {
            return;
        }
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// pilot joins lists with "," and Envoy treats an empty result as unset.
fn joined(items: &[String], at: &str) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    let joined = items.join(",");
    match HeaderValue::from_str(&joined) {
        Ok(value) => Some(value),
        Err(_) => {
            warn_once(format!(
                "{at}: {joined:?} is not a valid header value; ignored"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Source;

    fn plan(yaml: &str) -> CorsPlan {
        let cors: CorsPolicy = serde_yaml::from_str(yaml).expect("cors yaml");
        CorsPlan::compile(&cors, "t")
    }

    fn preflight(
        plan: &CorsPlan,
        method: Method,
        headers: &[(&str, &str)],
    ) -> Option<http::Response<()>> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let uri = http::Uri::from_static("/ratings");
        let source = Source::default();
        plan.preflight(&RequestFacts {
            method: &method,
            uri: &uri,
            authority: "ratings",
            headers: &map,
            port: 80,
            source: &source,
            auth: None,
        })
    }

    fn header<'r>(response: &'r http::Response<()>, name: &str) -> Option<&'r str> {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii"))
    }

    const ISTIO_EXAMPLE: &str = "allowOrigins: [{exact: 'https://example.com'}]\nallowMethods: [POST, GET]\nallowCredentials: false\nallowHeaders: [X-Foo-Bar]\nexposeHeaders: [X-Expose]\nmaxAge: 24h\n";

    #[test]
    fn preflights_from_allowed_origins_are_answered() {
        let cors = plan(ISTIO_EXAMPLE);
        let response = preflight(
            &cors,
            Method::OPTIONS,
            &[
                ("origin", "https://example.com"),
                ("access-control-request-method", "POST"),
            ],
        )
        .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://example.com")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("POST,GET")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("X-Foo-Bar")
        );
        assert_eq!(header(&response, "access-control-max-age"), Some("86400"));
        assert_eq!(header(&response, "access-control-allow-credentials"), None);
    }

    #[test]
    fn other_requests_and_origins_go_through() {
        let cors = plan(ISTIO_EXAMPLE);
        // Not a preflight: no request method, or not OPTIONS, or no origin.
        assert!(preflight(&cors, Method::OPTIONS, &[("origin", "https://example.com")]).is_none());
        assert!(
            preflight(
                &cors,
                Method::GET,
                &[
                    ("origin", "https://example.com"),
                    ("access-control-request-method", "GET")
                ]
            )
            .is_none()
        );
        assert!(
            preflight(
                &cors,
                Method::OPTIONS,
                &[("access-control-request-method", "GET")]
            )
            .is_none()
        );
        // A disallowed origin is forwarded by default...
        let evil = [
            ("origin", "https://evil.com"),
            ("access-control-request-method", "GET"),
        ];
        assert!(preflight(&cors, Method::OPTIONS, &evil).is_none());
        // ...and answered without an allowed origin under IGNORE.
        let ignore = plan(&format!("{ISTIO_EXAMPLE}unmatchedPreflights: IGNORE\n"));
        let response = preflight(&ignore, Method::OPTIONS, &evil).expect("answered");
        assert_eq!(header(&response, "access-control-allow-origin"), None);
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("POST,GET")
        );
    }

    #[test]
    fn wildcards_and_credentials() {
        let cors = plan(
            "allowOrigins: [{exact: '*'}]\nallowMethods: ['*']\nallowHeaders: ['*']\nallowCredentials: true\n",
        );
        let response = preflight(
            &cors,
            Method::OPTIONS,
            &[
                ("origin", "https://any.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-a,x-b"),
            ],
        )
        .expect("answered");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://any.example")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("PUT")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("x-a,x-b")
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
        let regex = plan("allowOrigins: [{regex: 'https://.*\\.example\\.com'}]");
        assert!(regex.origin_allowed(b"https://a.example.com"));
        assert!(!regex.origin_allowed(b"https://a.example.com.evil"));
        let deprecated = plan("allowOrigin: ['https://old.example']");
        assert!(deprecated.origin_allowed(b"https://old.example"));
    }

    #[test]
    fn actual_responses_get_origin_and_exposed_headers() {
        let cors = plan(ISTIO_EXAMPLE);
        let mut headers = HeaderMap::new();
        cors.response_headers(
            Some(&HeaderValue::from_static("https://example.com")),
            &mut headers,
        );
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .map(|v| v.as_bytes()),
            Some(&b"https://example.com"[..])
        );
        assert_eq!(
            headers
                .get("access-control-expose-headers")
                .map(|v| v.as_bytes()),
            Some(&b"X-Expose"[..])
        );
        let mut headers = HeaderMap::new();
        cors.response_headers(
            Some(&HeaderValue::from_static("https://evil.com")),
            &mut headers,
        );
        cors.response_headers(None, &mut headers);
        assert!(headers.is_empty());
    }
}
