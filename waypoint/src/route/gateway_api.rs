//! The Gateway API's HTTPRoutes and GRPCRoutes attached to a Service, compiled into the
//! same match blocks and plans as VirtualServices, with the Gateway API's semantics as
//! Istio gives them (`pilot/pkg/config/kube/gateway/conversion.go` turns the routes into a
//! VirtualService marked with gateway semantics; `pilot/pkg/networking/core/route` then
//! treats it apart):
//!
//! - each rule is split into one route per match; the routes of every HTTPRoute and
//!   GRPCRoute of one namespace (and one `parentRef` port) are merged, oldest route first,
//!   and sorted by the Gateway API's precedence (stable): exact path, then longer path
//!   (a `PathPrefix` trimmed of its trailing `/`, a regex by its length), then a method
//!   match, then more header matches, then more query matches; routes without a match last;
//! - `PathPrefix` matches whole path segments (Envoy's `path_separated_prefix`), except `/`;
//! - `backendRefs` weigh 1 unless said otherwise; with no weight at all and no redirect the
//!   rule answers 500; a backendRef that cannot be used (no such Service, no
//!   ReferenceGrant) answers 500 for its share;
//! - `URLRewrite` `ReplacePrefixMatch: /` removes the matched prefix (keeping a `/`),
//!   `ReplaceFullPath` replaces the path, the query kept; `RequestRedirect` defaults to 302
//!   and, without `port` or `scheme`, to the request's port;
//! - `timeouts.request` is the route's timeout; `timeouts.backendRequest` the per-try
//!   timeout when `retry` is set, else (overriding `request`) the route's timeout;
//!   without `retry`, Istio's default retries;
//! - a GRPCRoute's method match is a path match on `/<service>/<method>`.
//!
//! What Istio refuses outright (a filter it does not implement) makes the rule answer 500
//! here, as the Gateway API asks of a filter that cannot be resolved.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use weft_config::api::common::StringMatch;
use weft_config::api::gateway_routes::{
    GrpcRoute, GrpcRouteFilter, GrpcRouteMatch, GrpcRouteRule, HttpCorsFilter, HttpHeaderFilter,
    HttpRequestMirrorFilter, HttpRequestRedirectFilter, HttpRoute, HttpRouteMatch, HttpRouteRetry,
    HttpRouteTimeouts, HttpUrlRewriteFilter, ValueMatch,
};
use weft_config::api::networking::{CorsPolicy, HeaderOperations, Headers, HttpRetry};
use weft_config::duration;
use weft_config::registry::bound_route::{BoundRoute, GatewayRoute, RefAt, RouteBackends};

use super::compile::HttpEntry;
use super::cors::CorsPlan;
use super::fault::PerMillion;
use super::headers::{self, CompiledHeaders};
use super::matcher::{
    Condition, Field, Gate, RequestMatcher, Scope, StrMatch, UriMatch, full_match_regex, warn_once,
};
use super::plan::{HttpRoutePlan, MirrorPlan, RouteAction, RouteDestination, RulePlan};
use super::retry::RetryPolicy;
use super::rewrite::{RedirectPlan, UriRewrite};

/// The routes of one namespace bound to a Service on one port (or every port): what Istio
/// merges into one VirtualService.
#[derive(Debug)]
pub(crate) struct RouteGroup<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) port: Option<u16>,
    /// Oldest first.
    pub(crate) routes: Vec<&'a BoundRoute>,
}

impl RouteGroup<'_> {
    /// The oldest route stands for the group when groups and VirtualServices are ordered.
    pub(crate) fn oldest(&self) -> Option<&GatewayRoute> {
        self.routes.first().map(|r| &r.route)
    }
}

/// Groups `bound` (oldest first) by namespace and port, in the order of each group's oldest
/// route.
pub(crate) fn groups(bound: &[Arc<BoundRoute>]) -> Vec<RouteGroup<'_>> {
    let mut groups: Vec<RouteGroup<'_>> = Vec::new();
    // TCPRoutes attached to the Service are its tcp rules (`tcp::gateway_api_rule`).
    for route in bound
        .iter()
        .filter(|r| matches!(r.route, GatewayRoute::Http(_) | GatewayRoute::Grpc(_)))
    {
        let namespace = route.route.namespace();
        match groups
            .iter_mut()
            .find(|g| g.namespace == namespace && g.port == route.port)
        {
            Some(group) => group.routes.push(route),
            None => groups.push(RouteGroup {
                namespace,
                port: route.port,
                routes: vec![route],
            }),
        }
    }
    groups
}

/// What orders the merged routes: the Gateway API's precedence as Istio's `sortHTTPRoutes`
/// computes it from the converted match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Precedence {
    /// A route without any match sorts last.
    matched: bool,
    /// Exact 3, prefix 2, regex 1, no path -1.
    uri_rank: i8,
    uri_len: usize,
    method: bool,
    headers: usize,
    query: usize,
}

impl Precedence {
    /// Whether `self` goes before `other` (a strict "less than" for a stable sort).
    fn before(&self, other: &Self) -> bool {
        if !self.matched {
            return false;
        }
        if !other.matched {
            return true;
        }
        if self.uri_rank != other.uri_rank {
            return self.uri_rank > other.uri_rank;
        }
        if self.uri_len != other.uri_len {
            return self.uri_len > other.uri_len;
        }
        if self.method != other.method {
            return self.method;
        }
        if self.headers != other.headers {
            return self.headers > other.headers;
        }
        self.query > other.query
    }
}

/// The path half of a converted match: Istio's StringMatch kind and value.
enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl PathMatch {
    fn rank_and_len(&self) -> (i8, usize) {
        match self {
            PathMatch::Exact(v) => (3, v.len()),
            PathMatch::Prefix(v) => (2, v.len()),
            PathMatch::Regex(v) => (1, v.len()),
        }
    }

    /// Gateway semantics: a prefix other than `/` matches whole segments.
    fn compile(&self, at: &str) -> UriMatch {
        match self {
            PathMatch::Exact(value) => UriMatch::Exact {
                value: value.as_str().into(),
                ignore_case: false,
            },
            PathMatch::Prefix(value) if value == "/" => UriMatch::any(),
            PathMatch::Prefix(value) => UriMatch::SeparatedPrefix(value.as_str().into()),
            PathMatch::Regex(pattern) => {
                full_match_regex(pattern, at).map_or(UriMatch::Never, UriMatch::Regex)
            }
        }
    }
}

/// One match of a rule, converted.
struct Converted {
    path: Option<PathMatch>,
    method: Option<String>,
    headers: Vec<(String, StringMatch)>,
    query: Vec<(String, StringMatch)>,
}

impl Converted {
    fn precedence(&self) -> Precedence {
        let (uri_rank, uri_len) = self.path.as_ref().map_or((-1, 0), PathMatch::rank_and_len);
        Precedence {
            matched: true,
            uri_rank,
            uri_len,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        }
    }

    fn matcher(&self, at: &str) -> RequestMatcher {
        let uri = self
            .path
            .as_ref()
            .map_or_else(UriMatch::any, |p| p.compile(&format!("{at}.path")));
        let mut headers: Vec<(Field, Condition)> = self
            .headers
            .iter()
            .map(|(name, m)| {
                let at = format!("{at}.headers.{name}");
                (Field::compile(name, &at), value_condition(m, &at))
            })
            .collect();
        if let Some(method) = &self.method {
            headers.push((
                Field::Method,
                Condition::Value(StrMatch::Exact(method.as_bytes().into())),
            ));
        }
        let query = self
            .query
            .iter()
            .map(|(name, m)| {
                let at = format!("{at}.queryParams.{name}");
                (name.clone(), value_condition(m, &at))
            })
            .collect();
        RequestMatcher::from_parts(uri, headers, query)
    }
}

/// A header or query value match: a value, never a presence test (the Gateway API's
/// values are required).
fn value_condition(m: &StringMatch, at: &str) -> Condition {
    StrMatch::compile(m, at).map_or(Condition::Present, Condition::Value)
}

fn string_match(m: &ValueMatch) -> StringMatch {
    match m.match_type.as_deref() {
        Some("RegularExpression") => StringMatch {
            regex: Some(m.value.clone()),
            ..Default::default()
        },
        _ => StringMatch {
            exact: Some(m.value.clone()),
            ..Default::default()
        },
    }
}

/// Istio's `createHeadersMatch`: one condition per name (header names without case).
fn value_matches(matches: &[ValueMatch], headers: bool) -> Vec<(String, StringMatch)> {
    let mut found: Vec<(String, StringMatch)> = Vec::new();
    for m in matches {
        let name = if headers {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        if !found.iter().any(|(n, _)| *n == name) {
            found.push((name, string_match(m)));
        }
    }
    found
}

fn http_match(m: &HttpRouteMatch) -> Converted {
    let path = m.path.as_ref();
    let value = path
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".to_string());
    let path = match path.and_then(|p| p.match_type.as_deref()) {
        Some("Exact") => PathMatch::Exact(value),
        Some("RegularExpression") => PathMatch::Regex(value),
        // "When specified, a trailing `/` is ignored."
        _ if value == "/" => PathMatch::Prefix(value),
        _ => PathMatch::Prefix(value.strip_suffix('/').unwrap_or(&value).to_string()),
    };
    Converted {
        path: Some(path),
        method: m.method.clone(),
        headers: value_matches(&m.headers, true),
        query: value_matches(&m.query_params, false),
    }
}

/// Istio's `createGRPCURIMatch`: gRPC's `/<service>/<method>` path.
fn grpc_match(m: &GrpcRouteMatch) -> Converted {
    let path = m.method.as_ref().and_then(|method| {
        let regex = method.match_type.as_deref() == Some("RegularExpression");
        match (method.service.as_deref(), method.method.as_deref(), regex) {
            (None, None, _) => None,
            (Some(service), None, false) => Some(PathMatch::Prefix(format!("/{service}"))),
            (None, Some(name), _) => Some(PathMatch::Regex(format!("/[^/]+/{name}"))),
            (Some(service), Some(name), false) => {
                Some(PathMatch::Exact(format!("/{service}/{name}")))
            }
            (Some(service), None, true) => Some(PathMatch::Regex(format!("/{service}/.+"))),
            (Some(service), Some(name), true) => {
                Some(PathMatch::Regex(format!("/{service}/{name}")))
            }
        }
    });
    Converted {
        path,
        method: None,
        headers: value_matches(&m.headers, true),
        query: Vec::new(),
    }
}

/// The merged, sorted match blocks of a group.
pub(crate) fn http_entries(group: &RouteGroup<'_>) -> Vec<HttpEntry> {
    let gate = Gate::new(
        group.port.map(u32::from),
        &[],
        &Default::default(),
        None,
        true,
        Scope::Mesh,
    );
    let mut entries: Vec<(Precedence, HttpEntry)> = Vec::new();
    for bound in &group.routes {
        let origin = format!(
            "{} {}/{}",
            bound.route.kind(),
            bound.route.namespace(),
            bound.route.name()
        );
        for (i, rule) in rules(&bound.route).into_iter().enumerate() {
            let at = format!("{origin}: spec.rules[{i}]");
            let name: Box<str> = rule.name.as_deref().map(Into::into).unwrap_or_else(|| {
                format!("{}.{}.{i}", bound.route.namespace(), bound.route.name()).into()
            });
            let prefix = rule.matches.first().and_then(|m| match &m.path {
                Some(PathMatch::Prefix(prefix)) => Some(prefix.clone()),
                _ => None,
            });
            let plan = Arc::new(rule_plan(&rule, i, &bound.backends, prefix.as_deref(), &at));
            if rule.matches.is_empty() {
                entries.push((
                    Precedence {
                        matched: false,
                        uri_rank: -1,
                        uri_len: 0,
                        method: false,
                        headers: 0,
                        query: 0,
                    },
                    HttpEntry {
                        gate: gate.clone(),
                        matcher: RequestMatcher::any(),
                        plan: HttpRoutePlan {
                            name: Some(name.clone()),
                            matched: UriMatch::any().matched(),
                            rule: plan,
                        },
                    },
                ));
                continue;
            }
            for (m, converted) in rule.matches.iter().enumerate() {
                let matcher = converted.matcher(&format!("{at}.matches[{m}]"));
                entries.push((
                    converted.precedence(),
                    HttpEntry {
                        gate: gate.clone(),
                        plan: HttpRoutePlan {
                            name: Some(name.clone()),
                            matched: matcher.uri().matched(),
                            rule: plan.clone(),
                        },
                        matcher,
                    },
                ));
            }
        }
    }
    // Stable: ties keep the order of routes (oldest first), rules and matches.
    let mut sorted: Vec<(Precedence, HttpEntry)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let position = sorted
            .iter()
            .position(|(p, _)| entry.0.before(p))
            .unwrap_or(sorted.len());
        sorted.insert(position, entry);
    }
    sorted.into_iter().map(|(_, entry)| entry).collect()
}

/// A rule of either kind, reduced to what the plan needs.
struct Rule<'a> {
    name: Option<String>,
    matches: Vec<Converted>,
    request_headers: Option<&'a HttpHeaderFilter>,
    response_headers: Option<&'a HttpHeaderFilter>,
    redirect: Option<&'a HttpRequestRedirectFilter>,
    rewrite: Option<&'a HttpUrlRewriteFilter>,
    /// (filter index, mirror)
    mirrors: Vec<(usize, &'a HttpRequestMirrorFilter)>,
    cors: Option<&'a HttpCorsFilter>,
    /// A filter weft cannot apply: the rule answers 500.
    unsupported: Option<String>,
    backends: Vec<Backend<'a>>,
    timeouts: Option<&'a HttpRouteTimeouts>,
    retry: Option<&'a HttpRouteRetry>,
}

struct Backend<'a> {
    weight: i32,
    request_headers: Option<&'a HttpHeaderFilter>,
    response_headers: Option<&'a HttpHeaderFilter>,
    unsupported: Option<String>,
}

fn rules(route: &GatewayRoute) -> Vec<Rule<'_>> {
    match route {
        GatewayRoute::Http(route) => http_rules(route),
        GatewayRoute::Grpc(route) => grpc_rules(route),
        // Routes of connections never reach an HTTP route table: `groups` leaves them out
        // (a TCPRoute attached to a Service is a tcp rule, a TLSRoute attached to one is
        // refused) and an ingress Gateway's TLS and TCP listeners serve them.
        GatewayRoute::Tls(_) | GatewayRoute::Tcp(_) => Vec::new(),
    }
}

fn http_rules(route: &HttpRoute) -> Vec<Rule<'_>> {
    // The API server's default for a route without rules: every path, no backend.
    static DEFAULT: std::sync::OnceLock<weft_config::api::gateway_routes::HttpRouteRule> =
        std::sync::OnceLock::new();
    let default = DEFAULT.get_or_init(Default::default);
    let listed: Vec<_> = if route.spec.rules.is_empty() {
        vec![default]
    } else {
        route.spec.rules.iter().collect()
    };
    listed
        .into_iter()
        .map(|rule| {
            let mut converted = Rule {
                name: rule.name.clone(),
                // The API server's default: one PathPrefix "/" match.
                matches: if rule.matches.is_empty() {
                    vec![http_match(&HttpRouteMatch::default())]
                } else {
                    rule.matches.iter().map(http_match).collect()
                },
                request_headers: None,
                response_headers: None,
                redirect: None,
                rewrite: None,
                mirrors: Vec::new(),
                cors: None,
                unsupported: None,
                backends: Vec::new(),
                timeouts: rule.timeouts.as_ref(),
                retry: rule.retry.as_ref(),
            };
            for (f, filter) in rule.filters.iter().enumerate() {
                match filter.filter_type.as_str() {
                    "RequestHeaderModifier" => {
                        converted.request_headers = filter.request_header_modifier.as_ref()
                    }
                    "ResponseHeaderModifier" => {
                        converted.response_headers = filter.response_header_modifier.as_ref()
                    }
                    "RequestRedirect" => converted.redirect = filter.request_redirect.as_ref(),
                    "URLRewrite" => converted.rewrite = filter.url_rewrite.as_ref(),
                    "RequestMirror" => {
                        if let Some(mirror) = &filter.request_mirror {
                            converted.mirrors.push((f, mirror));
                        }
                    }
                    "CORS" => converted.cors = filter.cors.as_ref(),
                    other => converted.unsupported = Some(format!("filters[{f}]: {other}")),
                }
            }
            converted.backends = rule
                .backend_refs
                .iter()
                .map(|backend| {
                    let mut b = Backend {
                        weight: backend.weight.unwrap_or(1),
                        request_headers: None,
                        response_headers: None,
                        unsupported: None,
                    };
                    for filter in &backend.filters {
                        match filter.filter_type.as_str() {
                            "RequestHeaderModifier" => {
                                b.request_headers = filter.request_header_modifier.as_ref()
                            }
                            "ResponseHeaderModifier" => {
                                b.response_headers = filter.response_header_modifier.as_ref()
                            }
                            other => b.unsupported = Some(other.to_string()),
                        }
                    }
                    b
                })
                .collect();
            converted
        })
        .collect()
}

fn grpc_rules(route: &GrpcRoute) -> Vec<Rule<'_>> {
    static DEFAULT: std::sync::OnceLock<GrpcRouteRule> = std::sync::OnceLock::new();
    if route.spec.rules.is_empty() {
        return vec![grpc_rule(DEFAULT.get_or_init(Default::default))];
    }
    route.spec.rules.iter().map(grpc_rule).collect()
}

fn grpc_rule(rule: &GrpcRouteRule) -> Rule<'_> {
    let mut mirrors = Vec::new();
    let (request_headers, response_headers, unsupported) =
        grpc_filters(&rule.filters, &mut mirrors);
    let backends = rule
        .backend_refs
        .iter()
        .map(|backend| {
            let (request_headers, response_headers, unsupported) =
                grpc_filters(&backend.filters, &mut Vec::new());
            Backend {
                weight: backend.weight.unwrap_or(1),
                request_headers,
                response_headers,
                unsupported: unsupported.or_else(|| {
                    backend
                        .filters
                        .iter()
                        .find(|f| f.filter_type == "RequestMirror")
                        .map(|f| f.filter_type.clone())
                }),
            }
        })
        .collect();
    Rule {
        name: rule.name.clone(),
        matches: rule.matches.iter().map(grpc_match).collect(),
        request_headers,
        response_headers,
        redirect: None,
        rewrite: None,
        mirrors,
        cors: None,
        unsupported,
        backends,
        timeouts: None,
        retry: None,
    }
}

type HeaderFilters<'a> = (
    Option<&'a HttpHeaderFilter>,
    Option<&'a HttpHeaderFilter>,
    Option<String>,
);

fn grpc_filters<'a>(
    filters: &'a [GrpcRouteFilter],
    mirrors: &mut Vec<(usize, &'a HttpRequestMirrorFilter)>,
) -> HeaderFilters<'a> {
    let (mut request, mut response, mut unsupported) = (None, None, None);
    for (f, filter) in filters.iter().enumerate() {
        match filter.filter_type.as_str() {
            "RequestHeaderModifier" => request = filter.request_header_modifier.as_ref(),
            "ResponseHeaderModifier" => response = filter.response_header_modifier.as_ref(),
            "RequestMirror" => {
                if let Some(mirror) = &filter.request_mirror {
                    mirrors.push((f, mirror));
                }
            }
            other => unsupported = Some(format!("filters[{f}]: {other}")),
        }
    }
    (request, response, unsupported)
}

/// A header modifier as Istio's header operations (`headerListToMap`: names lower-cased,
/// a later entry of the same name ignored).
fn operations(filter: Option<&HttpHeaderFilter>) -> Option<HeaderOperations> {
    let filter = filter?;
    let map = |list: &[weft_config::api::gateway_routes::HttpHeader]| {
        let mut map = std::collections::BTreeMap::new();
        for header in list {
            map.entry(header.name.to_ascii_lowercase())
                .or_insert_with(|| header.value.clone());
        }
        map
    };
    Some(HeaderOperations {
        set: map(&filter.set),
        add: map(&filter.add),
        remove: filter.remove.clone(),
    })
}

fn header_ops(
    request: Option<&HttpHeaderFilter>,
    response: Option<&HttpHeaderFilter>,
    at: &str,
) -> CompiledHeaders {
    let headers = Headers {
        request: operations(request),
        response: operations(response),
    };
    headers::compile(Some(&headers), at, headers::Values::Literal)
}

fn internal_error() -> RouteAction {
    RouteAction::DirectResponse {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: None,
    }
}

/// A Gateway API duration (validated), zero meaning none.
fn duration_of(text: Option<&String>, at: &str) -> Option<Duration> {
    let text = text?;
    match duration::parse(text) {
        Ok(d) => Some(d).filter(|d| !d.is_zero()),
        Err(error) => {
            warn_once(format!("{at}: {error}; ignored"));
            None
        }
    }
}

fn rule_plan(
    rule: &Rule<'_>,
    index: usize,
    backends: &RouteBackends,
    prefix: Option<&str>,
    at: &str,
) -> RulePlan {
    let route_headers = header_ops(
        rule.request_headers,
        rule.response_headers,
        &format!("{at}.filters"),
    );
    let mut plan = RulePlan {
        action: RouteAction::Forward(Vec::new()),
        weighted: false,
        uri_rewrite: UriRewrite::None,
        authority: route_headers.authority.clone(),
        request_ops: route_headers.request,
        response_ops: route_headers.response,
        timeout: None,
        retry: RetryPolicy::istio_default(),
        fault: None,
        mirrors: Vec::new(),
        cors: rule
            .cors
            .map(|cors| CorsPlan::compile(&cors_policy(cors), &format!("{at}.filters.cors"))),
    };
    if let Some(unsupported) = &rule.unsupported {
        warn_once(format!(
            "{at}.{unsupported} is not implemented: the requests this rule matches are answered 500"
        ));
        plan.action = internal_error();
        return plan;
    }
    // Mirrors whose backend resolved; the others are left out.
    for (f, mirror) in &rule.mirrors {
        let Some(Ok(resolved)) = backends.get(RefAt::Mirror {
            rule: index,
            filter: *f,
        }) else {
            continue;
        };
        let percent = match (&mirror.fraction, mirror.percent) {
            (Some(fraction), _) => {
                100.0 * f64::from(fraction.numerator)
                    / f64::from(fraction.denominator.unwrap_or(100).max(1))
            }
            (None, Some(percent)) => f64::from(percent),
            (None, None) => 100.0,
        };
        if percent > 0.0 {
            let destination = RouteDestination {
                port: Some(resolved.port),
                ..RouteDestination::to_service(&resolved.host)
            };
            plan.mirrors.push(MirrorPlan::new(
                destination,
                PerMillion::from_percent(percent),
            ));
        }
    }
    let weight_sum: i64 = rule.backends.iter().map(|b| i64::from(b.weight)).sum();
    if let Some(redirect) = rule.redirect {
        match RedirectPlan::gateway(redirect, &format!("{at}.filters.requestRedirect")) {
            Some(redirect) => plan.action = RouteAction::Redirect(redirect),
            None => plan.action = internal_error(),
        }
        return plan;
    }
    if weight_sum == 0 {
        // "If there are no backendRefs with a weight above 0, requests get a 500."
        plan.action = internal_error();
        return plan;
    }
    let taking: Vec<(usize, &Backend<'_>)> = rule
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .collect();
    plan.weighted = taking.len() > 1;
    let mut destinations = Vec::with_capacity(taking.len());
    for (b, backend) in taking {
        if let Some(filter) = &backend.unsupported {
            warn_once(format!(
                "{at}.backendRefs[{b}]: a {filter} filter on a backendRef is not supported: the requests this rule matches are answered 500"
            ));
            plan.action = internal_error();
            return plan;
        }
        let compiled = header_ops(
            backend.request_headers,
            backend.response_headers,
            &format!("{at}.backendRefs[{b}].filters"),
        );
        let weight = u32::try_from(backend.weight).unwrap_or(0);
        let destination = match backends.get(RefAt::Backend {
            rule: index,
            backend: b,
        }) {
            Some(Ok(resolved)) => RouteDestination {
                port: Some(resolved.port),
                weight,
                request_ops: compiled.request,
                response_ops: compiled.response,
                authority: compiled.authority,
                ..RouteDestination::to_service(&resolved.host)
            },
            // Not resolved (or not resolved yet): its share is answered 500.
            _ => RouteDestination {
                weight,
                unresolved: true,
                ..RouteDestination::to_service("")
            },
        };
        destinations.push(destination);
    }
    plan.action = RouteAction::Forward(destinations);
    if let Some(rewrite) = rule.rewrite {
        if let Some(hostname) = &rewrite.hostname {
            match HeaderValue::from_str(hostname) {
                Ok(authority) => plan.authority = Some(authority),
                Err(_) => warn_once(format!(
                    "{at}: rewrite hostname {hostname:?} is not valid; ignored"
                )),
            }
        }
        plan.uri_rewrite = match &rewrite.path {
            Some(path) if path.modifier_type == "ReplaceFullPath" => path
                .replace_full_path
                .as_deref()
                .map_or(UriRewrite::None, UriRewrite::full_path),
            Some(path) if path.modifier_type == "ReplacePrefixMatch" => {
                let replacement = path.replace_prefix_match.as_deref().unwrap_or("/");
                let replacement = replacement.strip_suffix('/').unwrap_or(replacement);
                if replacement.is_empty() {
                    // pilot: `/` removes the prefix (the separated prefix matched, or none
                    // for a `/` match).
                    UriRewrite::strip_prefix(prefix.filter(|p| *p != "/").unwrap_or(""))
                } else {
                    UriRewrite::Prefix(replacement.into())
                }
            }
            _ => UriRewrite::None,
        };
    }
    let request = rule
        .timeouts
        .and_then(|t| duration_of(t.request.as_ref(), &format!("{at}.timeouts.request")));
    let backend_request = rule.timeouts.and_then(|t| {
        duration_of(
            t.backend_request.as_ref(),
            &format!("{at}.timeouts.backendRequest"),
        )
    });
    plan.timeout = request;
    match rule.retry {
        Some(retry) => {
            let attempts = retry.attempts.unwrap_or(2);
            let mut retry_on = vec![
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
            ]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
            retry_on.extend(retry.codes.iter().map(ToString::to_string));
            let istio = HttpRetry {
                attempts,
                per_try_timeout: backend_request.map(|d| format!("{}ms", d.as_millis())),
                retry_on: (attempts != 0).then(|| retry_on.join(",")),
                retry_remote_localities: None,
            };
            plan.retry = RetryPolicy::from_istio(Some(&istio), &format!("{at}.retry"));
        }
        None => {
            if backend_request.is_some() {
                plan.timeout = backend_request;
            }
        }
    }
    plan
}

/// Istio's `createCorsFilter`.
fn cors_policy(filter: &HttpCorsFilter) -> CorsPolicy {
    let mut policy = CorsPolicy::default();
    for origin in filter.allow_origins.iter().filter(|o| !o.is_empty()) {
        let m = if origin == "*" {
            StringMatch {
                regex: Some(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+$".to_string()),
                ..Default::default()
            }
        } else if !origin.contains('*') {
            StringMatch {
                exact: Some(origin.clone()),
                ..Default::default()
            }
        } else if origin.matches('*').count() == 1 && origin.ends_with('*') {
            StringMatch {
                prefix: Some(origin.trim_end_matches('*').to_string()),
                ..Default::default()
            }
        } else {
            StringMatch {
                regex: Some(format!("^{}$", regex::escape(origin).replace(r"\*", ".*"))),
                ..Default::default()
            }
        };
        policy.allow_origins.push(m);
    }
    if filter.allow_credentials == Some(true) {
        policy.allow_credentials = Some(true);
    }
    policy.allow_methods = filter.allow_methods.clone();
    policy.allow_headers = filter.allow_headers.clone();
    policy.expose_headers = filter.expose_headers.clone();
    if let Some(age) = filter.max_age.filter(|a| *a > 0) {
        policy.max_age = Some(format!("{age}s"));
    }
    policy.unmatched_preflights = Some("IGNORE".to_string());
    policy
}
