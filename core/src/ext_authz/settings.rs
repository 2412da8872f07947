//! One extension provider as the proxies use it: Istio's `envoyExtAuthzGrpc` /
//! `envoyExtAuthzHttp` fields with their defaults applied (the mesh config's own types live
//! in weft-config, which turns them into these).
use std::time::Duration;

/// Istio's default when `timeout` is unset (the ext_authz filter needs one; Istio puts
/// 600 s there so that a DestinationRule's shorter timeout decides).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Envoy's `status_on_error` when unset.
pub const DEFAULT_STATUS_ON_ERROR: u16 = 403;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    /// The provider's name in the mesh config.
    pub name: String,
    pub protocol: Protocol,
    /// `[<namespace>/]<hostname>` of the Service or ServiceEntry.
    pub service: String,
    pub port: u16,
    /// For the whole check: connecting, asking and reading the answer.
    pub timeout: Duration,
    /// Allow the request when the service cannot be reached or fails.
    pub fail_open: bool,
    /// The status a request gets when the service fails and `fail_open` is false.
    pub status_on_error: u16,
    /// Routes are chosen again after the provider changed the request's headers.
    pub clear_route_cache: bool,
    /// Send (part of) the request body.
    pub body: Option<BodySettings>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `envoy.service.auth.v3.Authorization/Check` over gRPC.
    Grpc,
    /// Envoy's raw HTTP check: the request itself (headers chosen), 200 allows.
    Http(HttpSettings),
}

/// `EnvoyExternalAuthorizationHttpProvider`'s own fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HttpSettings {
    /// Prepended to the request's path in the check request.
    pub path_prefix: String,
    /// Header name patterns (`exact`, `prefix*`, `*suffix`, case-insensitive) of the
    /// client's headers to send besides Host, Method, Path, Content-Length and
    /// Authorization.
    pub include_request_headers: Vec<String>,
    /// Added to (or overwriting in) the check request, sorted by name as Istio sorts them.
    pub additional_headers: Vec<(String, String)>,
    /// The provider's headers that replace the request's on allow.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// The provider's headers the client gets on deny; empty: all but Host.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// The provider's headers added to the client's response on allow.
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `includeRequestBodyInCheck`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BodySettings {
    pub max_request_bytes: u32,
    /// Send the first `max_request_bytes` of a larger body instead of answering 413.
    pub allow_partial_message: bool,
    /// gRPC: the body as bytes (`raw_body`) rather than as a string (`body`).
    pub pack_as_bytes: bool,
}

impl Settings {
    /// A gRPC provider with Istio's defaults.
    pub fn grpc(name: impl Into<String>, service: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            protocol: Protocol::Grpc,
            service: service.into(),
            port,
            timeout: DEFAULT_TIMEOUT,
            fail_open: false,
            status_on_error: DEFAULT_STATUS_ON_ERROR,
            clear_route_cache: false,
            body: None,
        }
    }

    /// The service's hostname, without the `<namespace>/` qualifier.
    pub fn hostname(&self) -> &str {
        service_hostname(&self.service).1
    }
}

/// `[<namespace>/]<hostname>` → (namespace, hostname).
pub fn service_hostname(service: &str) -> (Option<&str>, &str) {
    match service.split_once('/') {
        Some((namespace, host)) => (Some(namespace), host),
        None => (None, service),
    }
}

/// Istio's header-name pattern for the HTTP provider's lists: `*suffix`, `prefix*`, or
/// exact, all ignoring case.
pub fn header_pattern_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else {
        name == pattern
    }
}

pub(crate) fn any_pattern(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| header_pattern_matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns() {
        assert!(header_pattern_matches("X-Ext-Authz", "x-ext-authz"));
        assert!(header_pattern_matches("x-ext-*", "X-Ext-Authz-Check"));
        assert!(header_pattern_matches("*-result", "x-check-result"));
        assert!(!header_pattern_matches("x-ext", "x-ext-authz"));
    }

    #[test]
    fn services_may_name_their_namespace() {
        assert_eq!(
            service_hostname("foo/authz.foo.svc.cluster.local"),
            (Some("foo"), "authz.foo.svc.cluster.local")
        );
        assert_eq!(
            service_hostname("authz.example.com"),
            (None, "authz.example.com")
        );
    }
}
