//! `rewrite` and `redirect`: the request's new path and authority, or where to send the
//! client instead.
use std::borrow::Cow;
use std::fmt::Write as _;

use http::{HeaderValue, StatusCode};
use weft_config::api::gateway_routes::HttpRequestRedirectFilter;
use weft_config::api::networking::{HttpRedirect, HttpRewrite};

use super::facts::RequestFacts;
use super::matcher::{MatchedPath, one_line, warn_once};

/// `rewrite.uri` / `rewrite.uriRegexRewrite` (the authority part lives with the rule).
#[derive(Clone, Debug, Default)]
pub(crate) enum UriRewrite {
    #[default]
    None,
    /// Envoy's `prefix_rewrite`: replaces exactly what the route matched.
    Prefix(Box<str>),
    /// Envoy's `regex_rewrite`: every match in the path (not the query) is substituted.
    Regex {
        regex: regex::Regex,
        template: String,
    },
}

impl UriRewrite {
    pub(crate) fn compile(rewrite: Option<&HttpRewrite>, at: &str) -> Self {
        let Some(rewrite) = rewrite else {
            return Self::None;
        };
        // pilot checks the regex rewrite first.
        if let Some(regex_rewrite) = &rewrite.uri_regex_rewrite {
            return match regex::Regex::new(&regex_rewrite.pattern) {
                Ok(regex) => Self::Regex {
                    regex,
                    template: re2_template(&regex_rewrite.rewrite),
                },
                Err(error) => {
                    warn_once(format!(
                        "{at}.uriRegexRewrite: regex {:?} does not compile; no rewrite: {}",
                        regex_rewrite.pattern,
                        one_line(&error.to_string())
                    ));
                    Self::None
                }
            };
        }
        match rewrite.uri.as_deref() {
            Some(uri) if !uri.is_empty() => Self::Prefix(uri.into()),
            _ => Self::None,
        }
    }

    /// The Gateway API's `ReplaceFullPath`, as pilot emits it: a regex rewrite of `/.*`
    /// (the whole path; the query is kept) to `path`, taken literally.
    pub(crate) fn full_path(path: &str) -> Self {
        Self::Regex {
            // A constant pattern that always compiles.
            regex: regex::Regex::new("/.*").unwrap_or_else(|_| unreachable!()),
            template: path.replace('$', "$$"),
        }
    }

    /// The Gateway API's `ReplacePrefixMatch: /` after a `PathPrefix` match of `prefix`:
    /// pilot removes the prefix with a regex rather than a prefix rewrite, keeping a `/`
    /// when nothing is left (`/api/v1` → `/v1`, `/api` → `/`).
    pub(crate) fn strip_prefix(prefix: &str) -> Self {
        match regex::Regex::new(&format!("^{}(/?)(.*)", regex::escape(prefix))) {
            Ok(regex) => Self::Regex {
                regex,
                template: "/${2}".to_string(),
            },
            // An escaped literal always compiles; should it not, nothing is rewritten.
            Err(_) => Self::None,
        }
    }

    /// The new `:path`, query preserved, or `None` when nothing changes.
    ///
    /// A prefix rewrite replaces the matched prefix, the exact path, or for a regex match
    /// the whole path. Without a `uri` match the route matched the prefix "/", so
    /// `rewrite.uri: /v1` turns `/foo` into `/v1foo` — Istio's documented behaviour, and a
    /// common surprise.
    pub(crate) fn apply(&self, matched: MatchedPath, path_and_query: &str) -> Option<String> {
        match self {
            Self::None => None,
            Self::Prefix(replacement) => {
                let path_len = path_and_query.find('?').unwrap_or(path_and_query.len());
                let cut = match matched {
                    MatchedPath::Len(len) => len.min(path_len),
                    MatchedPath::WholePath => path_len,
                };
                let rest = path_and_query.get(cut..).unwrap_or_default();
                let mut path = String::with_capacity(replacement.len() + rest.len());
                path.push_str(replacement);
                path.push_str(rest);
                Some(path)
            }
            Self::Regex { regex, template } => {
                let (path, query) = path_and_query
                    .find('?')
                    .map_or((path_and_query, ""), |q| path_and_query.split_at(q));
                let mut rewritten = regex.replace_all(path, template.as_str()).into_owned();
                rewritten.push_str(query);
                Some(rewritten)
            }
        }
    }
}

/// RE2 rewrite strings reference groups as `\1`; the `regex` crate as `${1}` and treats
/// `$` specially.
fn re2_template(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    let _ = write!(out, "${{{d}}}");
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RedirectPort {
    /// Envoy keeps the request's host as is (minus a port the new scheme makes wrong).
    Keep,
    Fixed(u16),
    /// `derivePort: FROM_REQUEST_PORT`: the service port the client dialed.
    FromRequest,
}

/// `redirect`: the status and `Location` of the answer.
#[derive(Clone, Debug)]
pub struct RedirectPlan {
    uri: Option<Box<str>>,
    /// Envoy's `prefix_rewrite` of a redirect (the Gateway API's `ReplacePrefixMatch`):
    /// what the route matched is replaced, the rest of the path and the query kept.
    prefix: Option<Box<str>>,
    authority: Option<Box<str>>,
    scheme: Option<Box<str>>,
    port: RedirectPort,
    status: StatusCode,
}

impl RedirectPlan {
    /// `None` for a redirect code Envoy does not support (pilot then emits a route
    /// without action).
    pub(crate) fn compile(redirect: &HttpRedirect, at: &str) -> Option<Self> {
        let status = match redirect.redirect_code.unwrap_or(0) {
            0 | 301 => StatusCode::MOVED_PERMANENTLY,
            302 => StatusCode::FOUND,
            303 => StatusCode::SEE_OTHER,
            307 => StatusCode::TEMPORARY_REDIRECT,
            308 => StatusCode::PERMANENT_REDIRECT,
            other => {
                warn_once(format!(
                    "{at}.redirectCode: {other} is not a redirect code Envoy supports; rule skipped"
                ));
                return None;
            }
        };
        let non_empty = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(Into::into);
        let scheme: Option<Box<str>> = non_empty(&redirect.scheme);
        let port = match (redirect.port, redirect.derive_port.as_deref()) {
            (Some(port), _) => match u16::try_from(port) {
                Ok(port) => default_port_dropped(scheme.as_deref(), port)
                    .map_or(RedirectPort::Keep, RedirectPort::Fixed),
                Err(_) => {
                    warn_once(format!("{at}.port: {port} is not a port; ignored"));
                    RedirectPort::Keep
                }
            },
            (None, Some("FROM_REQUEST_PORT")) => RedirectPort::FromRequest,
            (None, _) => RedirectPort::Keep,
        };
        Some(Self {
            uri: non_empty(&redirect.uri),
            prefix: None,
            authority: non_empty(&redirect.authority),
            scheme,
            port,
            status,
        })
    }

    /// The Gateway API's `RequestRedirect`, as pilot translates it: without `port`, the
    /// request's port when no `scheme` is given (`FROM_REQUEST_PORT`), else Envoy's
    /// default (the request's host, minus a port the new scheme makes wrong); the
    /// scheme's default port is left out.
    pub(crate) fn gateway(redirect: &HttpRequestRedirectFilter, at: &str) -> Option<Self> {
        // The CRD's default status is 302.
        let status = match redirect.status_code.unwrap_or(302) {
            301 => StatusCode::MOVED_PERMANENTLY,
            302 => StatusCode::FOUND,
            303 => StatusCode::SEE_OTHER,
            307 => StatusCode::TEMPORARY_REDIRECT,
            308 => StatusCode::PERMANENT_REDIRECT,
            other => {
                warn_once(format!(
                    "{at}.statusCode: {other} is not a redirect code; rule skipped"
                ));
                return None;
            }
        };
        let scheme: Option<Box<str>> = redirect.scheme.as_deref().map(Into::into);
        let port = match redirect.port.and_then(|p| u16::try_from(p).ok()) {
            Some(port) => default_port_dropped(scheme.as_deref(), port)
                .map_or(RedirectPort::Keep, RedirectPort::Fixed),
            None if scheme.is_none() => RedirectPort::FromRequest,
            None => RedirectPort::Keep,
        };
        let (uri, prefix) = match &redirect.path {
            Some(path) if path.modifier_type == "ReplaceFullPath" => {
                (path.replace_full_path.as_deref().map(Into::into), None)
            }
            Some(path) if path.modifier_type == "ReplacePrefixMatch" => {
                (None, path.replace_prefix_match.as_deref().map(Into::into))
            }
            _ => (None, None),
        };
        Some(Self {
            uri,
            prefix,
            authority: redirect.hostname.as_deref().map(Into::into),
            scheme,
            port,
            status,
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Location` header, built as Envoy's `Utility::newUri`.
    pub fn location(&self, facts: &RequestFacts<'_>) -> Option<HeaderValue> {
        self.location_after(facts, MatchedPath::WholePath)
    }

    /// The `Location` header for a request whose route matched `matched` of its path
    /// (what a prefix rewrite replaces).
    pub(crate) fn location_after(
        &self,
        facts: &RequestFacts<'_>,
        matched: MatchedPath,
    ) -> Option<HeaderValue> {
        let scheme = self.scheme.as_deref().unwrap_or(facts.scheme());
        let port = match self.port {
            RedirectPort::Keep => None,
            RedirectPort::Fixed(port) => Some(port),
            RedirectPort::FromRequest => default_port_dropped(self.scheme.as_deref(), facts.port),
        };
        let host = match &self.authority {
            Some(authority) => authority,
            None => request_host(facts, scheme, port.is_some()),
        };
        let request_path = facts.path_and_query();
        let prefixed = self
            .prefix
            .as_ref()
            .and_then(|prefix| UriRewrite::Prefix(prefix.clone()).apply(matched, request_path));
        let path: Cow<'_, str> = match (&self.uri, prefixed) {
            (_, Some(prefixed)) => Cow::Owned(prefixed),
            // The request's query survives unless the new path brings its own.
            (Some(uri), None) if !uri.contains('?') => match request_path.find('?') {
                Some(q) => Cow::Owned(format!("{uri}{}", &request_path[q..])),
                None => Cow::Borrowed(uri),
            },
            (Some(uri), None) => Cow::Borrowed(uri),
            (None, None) => Cow::Borrowed(request_path),
        };
        let mut location = String::with_capacity(scheme.len() + host.len() + path.len() + 10);
        let _ = write!(location, "{scheme}://{host}");
        if let Some(port) = port {
            let _ = write!(location, ":{port}");
        }
        if !path.starts_with('/') {
            location.push('/');
        }
        location.push_str(&path);
        HeaderValue::try_from(location).ok()
    }
}

/// pilot leaves the port out when it is the default of the scheme, judging the scheme by
/// `redirect.scheme` or else plain `http` (the mesh listener is never TLS).
fn default_port_dropped(scheme: Option<&str>, port: u16) -> Option<u16> {
    let scheme = scheme.unwrap_or("http");
    let default = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    (port != 0 && !default).then_some(port)
}

/// Envoy's `processRequestHost`: the request's host, without its port when the redirect
/// sets one, or when the scheme changes and the port was the old scheme's default.
fn request_host<'f>(facts: &RequestFacts<'f>, new_scheme: &str, new_port: bool) -> &'f str {
    let host = facts.authority;
    let port_start = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    let Some(port_start) = port_start else {
        return host;
    };
    let request_port = &host[port_start..];
    let request_protocol = facts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(facts.scheme());
    let mut remove = new_port;
    if new_scheme != request_protocol {
        remove |= request_protocol.eq_ignore_ascii_case("https") && request_port == ":443";
        remove |= request_protocol.eq_ignore_ascii_case("http") && request_port == ":80";
    }
    if remove { &host[..port_start] } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Source;

    fn facts<'a>(
        uri: &'a http::Uri,
        authority: &'a str,
        headers: &'a http::HeaderMap,
        source: &'a Source,
    ) -> RequestFacts<'a> {
        RequestFacts {
            method: &http::Method::GET,
            uri,
            authority,
            headers,
            port: 8080,
            source,
            auth: None,
        }
    }

    fn redirect(yaml: &str) -> RedirectPlan {
        let redirect: HttpRedirect = serde_yaml::from_str(yaml).expect("redirect yaml");
        RedirectPlan::compile(&redirect, "t").expect("supported")
    }

    fn location(plan: &RedirectPlan, uri: &str, authority: &str) -> String {
        let uri: http::Uri = uri.parse().expect("uri");
        let headers = http::HeaderMap::new();
        let source = Source::default();
        plan.location(&facts(&uri, authority, &headers, &source))
            .expect("location")
            .to_str()
            .expect("ascii")
            .to_string()
    }

    #[test]
    fn prefix_rewrites_replace_what_matched() {
        let rewrite = UriRewrite::Prefix("/v1/bookRatings".into());
        assert_eq!(
            rewrite.apply(MatchedPath::Len("/ratings".len()), "/ratings/5?x=1"),
            Some("/v1/bookRatings/5?x=1".into())
        );
        // Exact and regex matches: the whole path goes, the query stays.
        assert_eq!(
            rewrite.apply(MatchedPath::WholePath, "/anything/here?q"),
            Some("/v1/bookRatings?q".into())
        );
        // No uri match: pilot's prefix "/" is what gets replaced.
        let rewrite = UriRewrite::Prefix("/v1".into());
        assert_eq!(
            rewrite.apply(MatchedPath::Len(1), "/foo"),
            Some("/v1foo".into())
        );
    }

    #[test]
    fn regex_rewrites_use_re2_group_syntax() {
        let rewrite: HttpRewrite = serde_yaml::from_str(
            "uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '/customprefix\\2/\\1'}",
        )
        .expect("yaml");
        let rewrite = UriRewrite::compile(Some(&rewrite), "t");
        assert_eq!(
            rewrite.apply(MatchedPath::WholePath, "/service/update/v1/api?a=b"),
            Some("/customprefix/v1/api/update?a=b".into())
        );
        let rewrite: HttpRewrite =
            serde_yaml::from_str("uriRegexRewrite: {match: '(?i)/xxx/', rewrite: '/yyy/'}")
                .expect("yaml");
        let rewrite = UriRewrite::compile(Some(&rewrite), "t");
        assert_eq!(
            rewrite.apply(MatchedPath::WholePath, "/aaa/XxX/bbb"),
            Some("/aaa/yyy/bbb".into())
        );
        assert_eq!(re2_template(r"$1\\\0"), r"$$1\${0}");
    }

    #[test]
    fn redirects_build_the_location_like_envoy() {
        let plan =
            redirect("uri: /v1/bookRatings\nauthority: newratings.default.svc.cluster.local");
        assert_eq!(plan.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            location(&plan, "/v1/getProductRatings?id=1", "ratings:8080"),
            "http://newratings.default.svc.cluster.local/v1/bookRatings?id=1"
        );
        // Only the scheme changes: the request host keeps its port.
        let plan = redirect("scheme: https\nredirectCode: 308");
        assert_eq!(plan.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location(&plan, "/a", "shop:8080"), "https://shop:8080/a");
        // ...unless it was the old scheme's default.
        assert_eq!(location(&plan, "/a", "shop:80"), "https://shop/a");
        // An explicit port replaces the request's...
        let plan = redirect("port: 9090");
        assert_eq!(location(&plan, "/a", "shop:8080"), "http://shop:9090/a");
        // ...except the scheme's default, which pilot drops, so Envoy keeps the request's.
        let plan = redirect("scheme: https\nport: 443");
        assert_eq!(location(&plan, "/a", "shop:8080"), "https://shop:8080/a");
        let plan = redirect("derivePort: FROM_REQUEST_PORT\nauthority: other");
        assert_eq!(location(&plan, "/a", "shop"), "http://other:8080/a");
        // A new path with a query replaces the request's query.
        let plan = redirect("uri: '/b?x=1'");
        assert_eq!(
            location(&plan, "/a?y=2", "[::1]:8080"),
            "http://[::1]:8080/b?x=1"
        );
        let bad: HttpRedirect = serde_yaml::from_str("redirectCode: 305").expect("yaml");
        assert!(RedirectPlan::compile(&bad, "t").is_none());
    }
}
