//! Envoy's raw HTTP authorization service (`envoyExtAuthzHttp`), as pure functions: the
//! check request built from the client's request, and the service's response read as a
//! decision.
//!
//! - The check request has the client's method, `pathPrefix` + its path and query, its
//!   Host, `Content-Length` (0, or the body's length when the body is sent), its
//!   `Authorization`, the headers matching `includeRequestHeadersInCheck` (Istio's patterns,
//!   case-insensitive), then `includeAdditionalHeadersInCheck` (overwriting).
//! - A 5xx answer is a failure (`failOpen`, `statusOnError` decide). 200 allows: headers
//!   named by `headersToUpstreamOnAllow` replace the request's, those named by
//!   `headersToDownstreamOnAllow` are added to the client's response, and
//!   `x-envoy-auth-headers-to-remove` (comma-separated names) removes request headers.
//!   Anything else denies with that status and body, and the service's headers named by
//!   `headersToDownstreamOnDeny` (plus `Content-Length`, `WWW-Authenticate`, `Location`),
//!   or all but Host when that list is empty.
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};

use super::attributes::HttpAttributes;
use super::settings::{HttpSettings, any_pattern};
use super::verdict::{Allowed, Checked, Denied, Failure, HeaderMutation, MutationAction};

/// Names the service uses to have request headers removed on allow.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Headers of the service's answer never copied anywhere: they describe that answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// The check request for the HTTP service.
pub fn check_request(
    settings: &HttpSettings,
    attributes: &HttpAttributes<'_>,
) -> Result<Request<Bytes>, http::Error> {
    let body = attributes
        .body
        .as_ref()
        .map(|b| b.bytes.clone())
        .unwrap_or_default();
    let path = format!("{}{}", settings.path_prefix, attributes.path);
    let mut request = Request::builder()
        .method(Method::from_bytes(attributes.method.as_bytes())?)
        .uri(path)
        .body(body.clone())?;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(attributes.host) {
        headers.insert(HOST, host);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    for (name, value) in attributes.headers {
        let wanted =
            *name == AUTHORIZATION || any_pattern(&settings.include_request_headers, name.as_str());
        if wanted && *name != HOST && *name != CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &settings.additional_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    Ok(request)
}

fn copied(headers: &HeaderMap, wanted: impl Fn(&HeaderName) -> bool) -> Vec<HeaderMutation> {
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()) && wanted(name))
        .map(|(name, value)| HeaderMutation::new(name.clone(), value.clone(), MutationAction::Set))
        .collect()
}

/// The service's answer as a decision.
pub fn checked(
    settings: &HttpSettings,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Checked {
    if status.is_server_error() {
        return Checked::Failed(Failure::new(format!("the service answered {status}")));
    }
    if status == StatusCode::OK {
        let remove = headers
            .get_all(HEADERS_TO_REMOVE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .filter(|n| *n != HOST)
            .collect();
        let upstream = copied(headers, |n| {
            n != HEADERS_TO_REMOVE
                && any_pattern(&settings.headers_to_upstream_on_allow, n.as_str())
        });
        let downstream = copied(headers, |n| {
            n != HEADERS_TO_REMOVE
                && any_pattern(&settings.headers_to_downstream_on_allow, n.as_str())
        })
        .into_iter()
        .map(|mut m| {
            m.action = MutationAction::Add;
            m
        })
        .collect();
        return Checked::Allow(Allowed {
            upstream,
            remove,
            downstream,
            ..Allowed::default()
        });
    }
    let to_client = |name: &HeaderName| {
        if *name == CONTENT_LENGTH || name == HEADERS_TO_REMOVE {
            // The waypoint sets the length of the body it sends.
            return false;
        }
        if settings.headers_to_downstream_on_deny.is_empty() {
            return *name != HOST;
        }
        *name == http::header::WWW_AUTHENTICATE
            || *name == http::header::LOCATION
            || any_pattern(&settings.headers_to_downstream_on_deny, name.as_str())
    };
    Checked::Deny(Denied {
        status: status.as_u16(),
        headers: copied(headers, to_client),
        body,
        reason: format!("denied by the service ({status})"),
    })
}

#[cfg(test)]
mod tests {
    use http::Version;

    use super::*;
    use crate::ext_authz::attributes::{CheckBody, PeerInfo};

    fn settings() -> HttpSettings {
        HttpSettings {
            path_prefix: "/check".into(),
            include_request_headers: vec!["x-ext-authz".into(), "x-tenant-*".into()],
            additional_headers: vec![("x-from".into(), "weft".into())],
            headers_to_upstream_on_allow: vec!["x-ext-authz-check-result".into()],
            headers_to_downstream_on_deny: vec!["x-ext-authz-check-result".into()],
            headers_to_downstream_on_allow: vec!["x-seen".into()],
        }
    }

    #[test]
    fn the_check_request_carries_chosen_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("reviews:9080"));
        headers.insert("x-ext-authz", HeaderValue::from_static("allow"));
        headers.insert("x-tenant-id", HeaderValue::from_static("t1"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert("cookie", HeaderValue::from_static("secret"));
        headers.insert("x-from", HeaderValue::from_static("client"));
        headers.insert("content-length", HeaderValue::from_static("3"));
        let attributes = HttpAttributes {
            source: PeerInfo::default(),
            destination: PeerInfo::default(),
            method: "POST",
            path: "/reviews?id=1",
            host: "reviews:9080",
            scheme: "http",
            version: Version::HTTP_11,
            headers: &headers,
            body: None,
        };
        let request = check_request(&settings(), &attributes).expect("request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/check/reviews?id=1");
        let h = request.headers();
        assert_eq!(h["host"], "reviews:9080");
        assert_eq!(h["content-length"], "0");
        assert_eq!(h["x-ext-authz"], "allow");
        assert_eq!(h["x-tenant-id"], "t1");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["x-from"], "weft", "additional headers overwrite");
        assert!(!h.contains_key("cookie"));

        let with_body = HttpAttributes {
            body: Some(CheckBody {
                bytes: Bytes::from_static(b"abc"),
                partial: false,
            }),
            ..attributes
        };
        let request = check_request(&settings(), &with_body).expect("request");
        assert_eq!(request.headers()["content-length"], "3");
        assert_eq!(request.body(), "abc");
    }

    #[test]
    fn answers() {
        let mut allow = HeaderMap::new();
        allow.insert(
            "x-ext-authz-check-result",
            HeaderValue::from_static("allowed"),
        );
        allow.insert("x-seen", HeaderValue::from_static("1"));
        allow.insert("x-other", HeaderValue::from_static("no"));
        allow.insert(
            HEADERS_TO_REMOVE,
            HeaderValue::from_static("authorization, x-a"),
        );
        let Checked::Allow(allowed) = checked(&settings(), StatusCode::OK, &allow, Bytes::new())
        else {
            panic!("not allowed");
        };
        assert_eq!(allowed.upstream.len(), 1);
        assert_eq!(allowed.upstream[0].name, "x-ext-authz-check-result");
        assert_eq!(allowed.upstream[0].action, MutationAction::Set);
        assert_eq!(allowed.downstream[0].name, "x-seen");
        assert_eq!(allowed.remove, ["authorization", "x-a"]);

        let mut deny = HeaderMap::new();
        deny.insert(
            "x-ext-authz-check-result",
            HeaderValue::from_static("denied"),
        );
        deny.insert("x-other", HeaderValue::from_static("no"));
        deny.insert("content-length", HeaderValue::from_static("6"));
        let Checked::Deny(denied) = checked(
            &settings(),
            StatusCode::FORBIDDEN,
            &deny,
            Bytes::from_static(b"denied"),
        ) else {
            panic!("not denied");
        };
        assert_eq!(denied.status, 403);
        assert_eq!(denied.body, "denied");
        let names: Vec<&str> = denied.headers.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["x-ext-authz-check-result"]);

        let all = HttpSettings::default();
        let Checked::Deny(denied) = checked(&all, StatusCode::UNAUTHORIZED, &deny, Bytes::new())
        else {
            panic!("not denied");
        };
        assert_eq!(denied.headers.len(), 2, "all but Host and the length");

        assert!(matches!(
            checked(&all, StatusCode::BAD_GATEWAY, &deny, Bytes::new()),
            Checked::Failed(_)
        ));
    }
}
