//! HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and ReferenceGrant: what the Gateway API's CRD schemas and their
//! validation rules (CEL) refuse, so a manifest the API server would refuse is refused
//! here too with its field path; and what is accepted but not acted on (warnings).
use std::collections::HashSet;

use super::paths::{FieldPath, Issues};
use crate::api::gateway_routes::{
    BackendObjectReference, GrpcRouteFilter, GrpcRouteSpec, HttpHeaderFilter, HttpPathModifier,
    HttpRouteFilter, HttpRouteSpec, HttpRouteTimeouts, ParentReference, ReferenceGrantSpec,
    StreamRouteRule, TcpRouteSpec, TlsRouteSpec, ValueMatch,
};
use crate::refusal::FieldIssue;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// Standard and experimental HTTPRoute filter types (the experimental channel serves CORS
/// and ExternalAuth).
const HTTP_FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
    "ExternalAuth",
    "ExtensionRef",
];
const GRPC_FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

pub(super) fn http_route(spec: &HttpRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    common(
        &spec.parent_refs,
        &spec.hostnames,
        spec.rules.len(),
        &spec_path,
        &mut issues,
    );
    let mut names = HashSet::new();
    let mut total_matches = 0;
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = spec_path.field("rules").index(r);
        if let Some(name) = &rule.name {
            section_name(name, &at.field("name"), &mut issues);
            if !names.insert(name) {
                issues.add(
                    &at.field("name"),
                    "Rule name must be unique within the route",
                );
            }
        }
        if rule.matches.len() > 64 {
            issues.add(&at.field("matches"), "must have at most 64 items");
        }
        total_matches += rule.matches.len().max(1);
        let mut prefix_matches = 0;
        for (m, matched) in rule.matches.iter().enumerate() {
            let at = at.field("matches").index(m);
            if let Some(path) = &matched.path {
                let at = at.field("path");
                let kind = path.match_type.as_deref().unwrap_or("PathPrefix");
                let value = path.value.as_deref().unwrap_or("/");
                if value.len() > 1024 {
                    issues.add(&at.field("value"), "must be at most 1024 characters");
                }
                match kind {
                    "Exact" | "PathPrefix" => {
                        if kind == "PathPrefix" {
                            prefix_matches += 1;
                        }
                        if let Some(reason) = path_value_problem(value) {
                            issues.add(&at.field("value"), reason);
                        }
                    }
                    "RegularExpression" => regex(value, &at.field("value"), &mut issues),
                    other => issues.add(
                        &at.field("type"),
                        format!(
                            "{other:?}: must be one of \"Exact\", \"PathPrefix\", \"RegularExpression\""
                        ),
                    ),
                }
            } else {
                prefix_matches += 1;
            }
            value_matches(&matched.headers, true, &at.field("headers"), &mut issues);
            value_matches(
                &matched.query_params,
                false,
                &at.field("queryParams"),
                &mut issues,
            );
            if let Some(method) = &matched.method
                && !METHODS.contains(&method.as_str())
            {
                issues.add(
                    &at.field("method"),
                    format!("{method:?}: must be one of {}", METHODS.join(", ")),
                );
            }
        }
        if rule.matches.is_empty() {
            // The API server's default: one PathPrefix "/" match.
            prefix_matches += 1;
        }
        let one_prefix = rule.matches.len() <= 1 && prefix_matches == 1;
        http_filters(
            &rule.filters,
            one_prefix,
            true,
            &at.field("filters"),
            &mut issues,
        );
        if rule.backend_refs.len() > 16 {
            issues.add(&at.field("backendRefs"), "must have at most 16 items");
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(b);
            backend_ref(&backend.object(), &at, &mut issues);
            if let Some(weight) = backend.weight
                && !(0..=1_000_000).contains(&weight)
            {
                issues.add(&at.field("weight"), "must be between 0 and 1000000");
            }
            http_filters(
                &backend.filters,
                one_prefix,
                false,
                &at.field("filters"),
                &mut issues,
            );
        }
        if let Some(timeouts) = &rule.timeouts {
            timeouts_issues(timeouts, &at.field("timeouts"), &mut issues);
        }
        if let Some(retry) = &rule.retry {
            let at = at.field("retry");
            for (c, code) in retry.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    issues.add(&at.field("codes").index(c), "must be between 400 and 599");
                }
            }
            if retry.attempts.is_some_and(|a| a < 0) {
                issues.add(&at.field("attempts"), "must not be negative");
            }
            if let Some(backoff) = &retry.backoff {
                gateway_duration(backoff, &at.field("backoff"), &mut issues);
            }
        }
    }
    if total_matches > 128 {
        issues.add(
            &spec_path.field("rules"),
            "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128",
        );
    }
    issues.into_vec()
}

pub(super) fn grpc_route(spec: &GrpcRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    common(
        &spec.parent_refs,
        &spec.hostnames,
        spec.rules.len(),
        &spec_path,
        &mut issues,
    );
    let mut names = HashSet::new();
    let mut total_matches = 0;
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = spec_path.field("rules").index(r);
        if let Some(name) = &rule.name {
            section_name(name, &at.field("name"), &mut issues);
            if !names.insert(name) {
                issues.add(
                    &at.field("name"),
                    "Rule name must be unique within the route",
                );
            }
        }
        if rule.matches.len() > 8 {
            issues.add(&at.field("matches"), "must have at most 8 items");
        }
        total_matches += rule.matches.len().max(1);
        for (m, matched) in rule.matches.iter().enumerate() {
            let at = at.field("matches").index(m);
            if let Some(method) = &matched.method {
                let at = at.field("method");
                if method.service.is_none() && method.method.is_none() {
                    issues.add(
                        &at,
                        "One or both of 'service' or 'method' must be specified",
                    );
                }
                match method.match_type.as_deref().unwrap_or("Exact") {
                    "Exact" => {
                        if let Some(service) = &method.service
                            && !grpc_service_name(service)
                        {
                            issues.add(
                                &at.field("service"),
                                "must be a fully qualified gRPC service name (package.Service)",
                            );
                        }
                        if let Some(name) = &method.method
                            && !grpc_method_name(name)
                        {
                            issues.add(&at.field("method"), "must be a gRPC method name");
                        }
                    }
                    "RegularExpression" => {
                        for (field, value) in
                            [("service", &method.service), ("method", &method.method)]
                        {
                            if let Some(value) = value {
                                regex(value, &at.field(field), &mut issues);
                            }
                        }
                    }
                    other => issues.add(
                        &at.field("type"),
                        format!("{other:?}: must be \"Exact\" or \"RegularExpression\""),
                    ),
                }
            }
            value_matches(&matched.headers, true, &at.field("headers"), &mut issues);
        }
        grpc_filters(&rule.filters, &at.field("filters"), &mut issues);
        if rule.backend_refs.len() > 16 {
            issues.add(&at.field("backendRefs"), "must have at most 16 items");
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(b);
            backend_ref(&backend.object(), &at, &mut issues);
            if let Some(weight) = backend.weight
                && !(0..=1_000_000).contains(&weight)
            {
                issues.add(&at.field("weight"), "must be between 0 and 1000000");
            }
            grpc_filters(&backend.filters, &at.field("filters"), &mut issues);
        }
    }
    if total_matches > 128 {
        issues.add(
            &spec_path.field("rules"),
            "While 16 rules and 8 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128",
        );
    }
    issues.into_vec()
}

pub(super) fn reference_grant(spec: &ReferenceGrantSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    for (field, len) in [("from", spec.from.len()), ("to", spec.to.len())] {
        if len == 0 {
            issues.add(&spec_path.field(field), "must have at least 1 item");
        }
        if len > 16 {
            issues.add(&spec_path.field(field), "must have at most 16 items");
        }
    }
    for (i, from) in spec.from.iter().enumerate() {
        let at = spec_path.field("from").index(i);
        if from.kind.is_empty() {
            issues.add(&at.field("kind"), "required");
        }
        if from.namespace.is_empty() {
            issues.add(&at.field("namespace"), "required");
        }
    }
    for (i, to) in spec.to.iter().enumerate() {
        if to.kind.is_empty() {
            issues.add(&spec_path.field("to").index(i).field("kind"), "required");
        }
    }
    issues.into_vec()
}

/// Accepted, and not acted on as written.
pub(super) fn http_route_warnings(spec: &HttpRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    route_warnings(
        &spec.parent_refs,
        &spec.hostnames,
        spec.use_default_gateways.is_some(),
        &mut issues,
    );
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = spec_path.field("rules").index(r);
        if rule.session_persistence.is_some() {
            issues.add(
                &at.field("sessionPersistence"),
                "session persistence is not implemented: requests are balanced as without it",
            );
        }
        if rule.retry.as_ref().is_some_and(|r| r.backoff.is_some()) {
            issues.add(
                &at.field("retry").field("backoff"),
                "not acted on: retries back off as Envoy does by default (25 ms base, up to 250 ms)",
            );
        }
        let filters = rule
            .filters
            .iter()
            .enumerate()
            .map(|(f, filter)| (at.field("filters").index(f), filter));
        let backend_filters = rule
            .backend_refs
            .iter()
            .enumerate()
            .flat_map(|(b, backend)| {
                let at = at.field("backendRefs").index(b).field("filters");
                backend
                    .filters
                    .iter()
                    .enumerate()
                    .map(move |(f, filter)| (at.index(f), filter))
            });
        for (at, filter) in filters.chain(backend_filters) {
            if let Some(reason) = unsupported_http_filter(filter) {
                issues.add(&at, reason);
            }
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            for (f, filter) in backend.filters.iter().enumerate() {
                if !matches!(
                    filter.filter_type.as_str(),
                    "RequestHeaderModifier"
                        | "ResponseHeaderModifier"
                        | "ExtensionRef"
                        | "ExternalAuth"
                ) {
                    issues.add(
                        &at.field("backendRefs").index(b).field("filters").index(f),
                        format!(
                            "{} is not supported on a backendRef (only the header modifiers are, as in Istio): the rule answers 500",
                            filter.filter_type
                        ),
                    );
                }
            }
        }
    }
    issues.into_vec()
}

pub(super) fn grpc_route_warnings(spec: &GrpcRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    route_warnings(
        &spec.parent_refs,
        &spec.hostnames,
        spec.use_default_gateways.is_some(),
        &mut issues,
    );
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = spec_path.field("rules").index(r);
        if rule.session_persistence.is_some() {
            issues.add(
                &at.field("sessionPersistence"),
                "session persistence is not implemented: requests are balanced as without it",
            );
        }
        for (f, filter) in rule.filters.iter().enumerate() {
            if filter.filter_type == "ExtensionRef" {
                issues.add(&at.field("filters").index(f), EXTENSION_REF);
            }
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            for (f, filter) in backend.filters.iter().enumerate() {
                if !matches!(
                    filter.filter_type.as_str(),
                    "RequestHeaderModifier" | "ResponseHeaderModifier"
                ) {
                    issues.add(
                        &at.field("backendRefs").index(b).field("filters").index(f),
                        format!(
                            "{} is not supported on a backendRef (only the header modifiers are, as in Istio): the rule answers 500",
                            filter.filter_type
                        ),
                    );
                }
            }
        }
    }
    issues.into_vec()
}

const EXTENSION_REF: &str = "ExtensionRef filters name an implementation's own extension; weft has none, so the requests this rule matches are answered 500 (the Gateway API's rule for a filter that cannot be resolved)";

fn unsupported_http_filter(filter: &HttpRouteFilter) -> Option<&'static str> {
    match filter.filter_type.as_str() {
        "ExtensionRef" => Some(EXTENSION_REF),
        "ExternalAuth" => Some(
            "ExternalAuth is not implemented (use an AuthorizationPolicy with action CUSTOM): the requests this rule matches are answered 500, rather than let through unchecked",
        ),
        _ => None,
    }
}

/// TLSRoute: what its CRD refuses (v1 and v1alpha2: 1 to 16 rules, 1 to 16 backendRefs
/// each; v1 also requires a hostname and one rule, which v1alpha2 does not).
pub(super) fn tls_route(spec: &TlsRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    common(
        &spec.parent_refs,
        &spec.hostnames,
        spec.rules.len(),
        &spec_path,
        &mut issues,
    );
    stream_rules(&spec.rules, &spec_path, &mut issues);
    issues.into_vec()
}

/// TCPRoute: what its CRD refuses (1 to 16 rules, 1 to 16 backendRefs each).
pub(super) fn tcp_route(spec: &TcpRouteSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec_path = FieldPath::spec();
    common(
        &spec.parent_refs,
        &[],
        spec.rules.len(),
        &spec_path,
        &mut issues,
    );
    stream_rules(&spec.rules, &spec_path, &mut issues);
    issues.into_vec()
}

fn stream_rules(rules: &[StreamRouteRule], spec_path: &FieldPath, issues: &mut Issues) {
    if rules.is_empty() {
        issues.add(&spec_path.field("rules"), "must have at least 1 item");
    }
    let mut names = HashSet::new();
    for (r, rule) in rules.iter().enumerate() {
        let at = spec_path.field("rules").index(r);
        if let Some(name) = &rule.name {
            section_name(name, &at.field("name"), issues);
            if !names.insert(name) {
                issues.add(
                    &at.field("name"),
                    "Rule name must be unique within the route",
                );
            }
        }
        if rule.backend_refs.is_empty() {
            issues.add(&at.field("backendRefs"), "must have at least 1 item");
        }
        if rule.backend_refs.len() > 16 {
            issues.add(&at.field("backendRefs"), "must have at most 16 items");
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(b);
            backend_ref(&backend.object(), &at, issues);
            if let Some(weight) = backend.weight
                && !(0..=1_000_000).contains(&weight)
            {
                issues.add(&at.field("weight"), "must be between 0 and 1000000");
            }
        }
    }
}

/// What a TLSRoute or TCPRoute has that weft does not act on: rules after the first (a
/// rule has no matches, so the first takes every connection, as in Istio), default
/// Gateways.
pub(super) fn stream_route_warnings(
    parents: &[ParentReference],
    rules: &[StreamRouteRule],
    default_gateways: bool,
) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    route_warnings(parents, &[], default_gateways, &mut issues);
    for r in 1..rules.len() {
        issues.add(
            &FieldPath::spec().field("rules").index(r),
            "only the first rule routes (a rule has no matches, so it takes every connection): ignored",
        );
    }
    issues.into_vec()
}

fn route_warnings(
    parents: &[ParentReference],
    hostnames: &[String],
    default_gateways: bool,
    issues: &mut Issues,
) {
    let spec = FieldPath::spec();
    if default_gateways {
        issues.add(
            &spec.field("useDefaultGateways"),
            "default Gateways are not implemented: the route attaches to its parentRefs only",
        );
    }
    let service_parent = |p: &ParentReference| {
        matches!(p.group.as_deref(), Some("") | Some("core"))
            && p.kind.as_deref() == Some("Service")
    };
    if !hostnames.is_empty() && !parents.is_empty() && parents.iter().all(service_parent) {
        issues.add(
            &spec.field("hostnames"),
            "not acted on for Service parents: a route attached to a Service applies to requests for that Service, whatever their Host (as Istio does)",
        );
    }
}

fn common(
    parents: &[ParentReference],
    hostnames: &[String],
    rules: usize,
    spec: &FieldPath,
    issues: &mut Issues,
) {
    if parents.len() > 32 {
        issues.add(&spec.field("parentRefs"), "must have at most 32 items");
    }
    let mut seen = HashSet::new();
    for (i, parent) in parents.iter().enumerate() {
        let at = spec.field("parentRefs").index(i);
        if parent.name.is_empty() {
            issues.add(&at.field("name"), "required");
        }
        if let Some(port) = parent.port
            && !(1..=65535).contains(&port)
        {
            issues.add(&at.field("port"), "must be between 1 and 65535");
        }
        if let Some(section) = &parent.section_name {
            section_name(section, &at.field("sectionName"), issues);
        }
        let key = (
            parent
                .group
                .as_deref()
                .unwrap_or("gateway.networking.k8s.io"),
            parent.kind.as_deref().unwrap_or("Gateway"),
            parent.namespace.as_deref().unwrap_or_default(),
            parent.name.as_str(),
            parent.section_name.as_deref().unwrap_or_default(),
            parent.port,
        );
        if !seen.insert(key) {
            issues.add(
                &at,
                "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent",
            );
        }
    }
    if hostnames.len() > 16 {
        issues.add(&spec.field("hostnames"), "must have at most 16 items");
    }
    for (i, hostname) in hostnames.iter().enumerate() {
        if !is_hostname(hostname) {
            issues.add(
                &spec.field("hostnames").index(i),
                format!("{hostname:?} is not a hostname (lower-case DNS name, optionally starting with \"*.\")"),
            );
        }
    }
    if rules > 16 {
        issues.add(&spec.field("rules"), "must have at most 16 items");
    }
}

/// The Gateway API's `Hostname`: a DNS name, optionally with a leading `*.` label.
fn is_hostname(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `SectionName` (also a rule's name): a DNS-1123 subdomain.
fn section_name(name: &str, at: &FieldPath, issues: &mut Issues) {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        issues.add(at, format!("{name:?} must be a lower-case DNS subdomain"));
    }
}

/// The CRD's rules for an `Exact` or `PathPrefix` value.
fn path_value_problem(value: &str) -> Option<&'static str> {
    if !value.starts_with('/') {
        return Some(
            "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
        );
    }
    if ["//", "/./", "/../", "%2f", "%2F", "#"]
        .iter()
        .any(|bad| value.contains(bad))
    {
        return Some(
            "must not contain '//', '/./', '/../', '%2f', '%2F' or '#' when type one of ['Exact', 'PathPrefix']",
        );
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Some("must not end with '/..' or '/.' when type one of ['Exact', 'PathPrefix']");
    }
    None
}

fn regex(pattern: &str, at: &FieldPath, issues: &mut Issues) {
    if let Err(error) = regex::Regex::new(pattern) {
        issues.add(
            at,
            format!(
                "{pattern:?} is not a regular expression (RE2 syntax): {}",
                error
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
}

/// An HTTP header name (RFC 7230 token), as the CRD's pattern says.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn value_matches(matches: &[ValueMatch], headers: bool, at: &FieldPath, issues: &mut Issues) {
    if matches.len() > 16 {
        issues.add(at, "must have at most 16 items");
    }
    let mut names = HashSet::new();
    for (i, m) in matches.iter().enumerate() {
        let at = at.index(i);
        if !is_header_name(&m.name) {
            issues.add(
                &at.field("name"),
                format!("{:?} is not a valid name", m.name),
            );
        }
        // Header names compare without case; query parameter names with it.
        let key = if headers {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        if !names.insert(key) {
            issues.add(&at.field("name"), "Duplicate value: names must be unique");
        }
        if m.value.is_empty() || m.value.len() > 4096 {
            issues.add(&at.field("value"), "must be 1 to 4096 characters");
        }
        match m.match_type.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            "RegularExpression" => regex(&m.value, &at.field("value"), issues),
            other => issues.add(
                &at.field("type"),
                format!("{other:?}: must be \"Exact\" or \"RegularExpression\""),
            ),
        }
    }
}

fn header_filter(filter: &HttpHeaderFilter, at: &FieldPath, issues: &mut Issues) {
    for (field, list) in [("set", &filter.set), ("add", &filter.add)] {
        let at = at.field(field);
        if list.len() > 16 {
            issues.add(&at, "must have at most 16 items");
        }
        let mut names = HashSet::new();
        for (i, header) in list.iter().enumerate() {
            if !is_header_name(&header.name) {
                issues.add(
                    &at.index(i).field("name"),
                    format!("{:?} is not a valid header name", header.name),
                );
            }
            if !names.insert(header.name.to_ascii_lowercase()) {
                issues.add(
                    &at.index(i).field("name"),
                    "Duplicate value: names must be unique",
                );
            }
            if header.value.len() > 4096
                || header
                    .value
                    .bytes()
                    .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                issues.add(
                    &at.index(i).field("value"),
                    "header value contains invalid characters or is longer than 4096",
                );
            }
        }
    }
    if filter.remove.len() > 16 {
        issues.add(&at.field("remove"), "must have at most 16 items");
    }
    let mut removed = HashSet::new();
    for (i, name) in filter.remove.iter().enumerate() {
        if !is_header_name(name) {
            issues.add(
                &at.field("remove").index(i),
                format!("{name:?} is not a valid header name"),
            );
        }
        if !removed.insert(name.to_ascii_lowercase()) {
            issues.add(&at.field("remove").index(i), "Duplicate value");
        }
    }
}

fn path_modifier(
    modifier: &HttpPathModifier,
    one_prefix: bool,
    at: &FieldPath,
    issues: &mut Issues,
) {
    match modifier.modifier_type.as_str() {
        "ReplaceFullPath" => {
            if modifier.replace_full_path.is_none() {
                issues.add(
                    &at.field("replaceFullPath"),
                    "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
                );
            }
            if modifier.replace_prefix_match.is_some() {
                issues.add(
                    &at.field("replacePrefixMatch"),
                    "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
                );
            }
        }
        "ReplacePrefixMatch" => {
            if modifier.replace_prefix_match.is_none() {
                issues.add(
                    &at.field("replacePrefixMatch"),
                    "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'",
                );
            }
            if modifier.replace_full_path.is_some() {
                issues.add(
                    &at.field("replaceFullPath"),
                    "type must be 'ReplaceFullPath' when replaceFullPath is set",
                );
            }
            if !one_prefix {
                issues.add(
                    at,
                    "When using a filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
                );
            }
        }
        other => issues.add(
            &at.field("type"),
            format!("{other:?}: must be \"ReplaceFullPath\" or \"ReplacePrefixMatch\""),
        ),
    }
    for value in [&modifier.replace_full_path, &modifier.replace_prefix_match]
        .into_iter()
        .flatten()
    {
        if value.len() > 1024 {
            issues.add(at, "must be at most 1024 characters");
        }
    }
}

/// The filter's `type` names exactly the field it sets.
fn filter_fields(kind: &str, set: &[(&str, bool)], at: &FieldPath, issues: &mut Issues) {
    for (name, present) in set {
        let expected = kind.eq_ignore_ascii_case(name)
            || (kind == "URLRewrite" && *name == "urlRewrite")
            || (kind == "CORS" && *name == "cors");
        if expected && !present {
            issues.add(
                &at.field(name),
                format!("must be specified for {kind} filter.type"),
            );
        }
        if !expected && *present {
            issues.add(
                &at.field(name),
                format!(
                    "must be nil if the filter.type is not {}",
                    upper_first(name)
                ),
            );
        }
    }
}

fn upper_first(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn http_filters(
    filters: &[HttpRouteFilter],
    one_prefix: bool,
    rule_level: bool,
    at: &FieldPath,
    issues: &mut Issues,
) {
    if filters.len() > 16 {
        issues.add(at, "must have at most 16 items");
    }
    let mut once = HashSet::new();
    let mut redirect = false;
    let mut rewrite = false;
    for (i, filter) in filters.iter().enumerate() {
        let at = at.index(i);
        let kind = filter.filter_type.as_str();
        if !HTTP_FILTERS.contains(&kind) {
            issues.add(
                &at.field("type"),
                format!("{kind:?}: must be one of {}", HTTP_FILTERS.join(", ")),
            );
            continue;
        }
        filter_fields(
            kind,
            &[
                (
                    "requestHeaderModifier",
                    filter.request_header_modifier.is_some(),
                ),
                (
                    "responseHeaderModifier",
                    filter.response_header_modifier.is_some(),
                ),
                ("requestMirror", filter.request_mirror.is_some()),
                ("requestRedirect", filter.request_redirect.is_some()),
                ("urlRewrite", filter.url_rewrite.is_some()),
                ("cors", filter.cors.is_some()),
                ("externalAuth", filter.external_auth.is_some()),
                ("extensionRef", filter.extension_ref.is_some()),
            ],
            &at,
            issues,
        );
        if matches!(
            kind,
            "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestRedirect" | "URLRewrite"
        ) && !once.insert(kind)
        {
            issues.add(&at, format!("{kind} filter cannot be repeated"));
        }
        redirect |= kind == "RequestRedirect";
        rewrite |= kind == "URLRewrite";
        for (name, modifier) in [
            ("requestHeaderModifier", &filter.request_header_modifier),
            ("responseHeaderModifier", &filter.response_header_modifier),
        ] {
            if let Some(modifier) = modifier {
                header_filter(modifier, &at.field(name), issues);
            }
        }
        if let Some(mirror) = &filter.request_mirror {
            let at = at.field("requestMirror");
            backend_ref(&mirror.backend_ref, &at.field("backendRef"), issues);
            if mirror.percent.is_some() && mirror.fraction.is_some() {
                issues.add(
                    &at,
                    "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
                );
            }
            if let Some(percent) = mirror.percent
                && !(0..=100).contains(&percent)
            {
                issues.add(&at.field("percent"), "must be between 0 and 100");
            }
            if let Some(fraction) = &mirror.fraction {
                let denominator = fraction.denominator.unwrap_or(100);
                if denominator < 1 {
                    issues.add(
                        &at.field("fraction").field("denominator"),
                        "must be at least 1",
                    );
                }
                if fraction.numerator < 0 || fraction.numerator > denominator {
                    issues.add(
                        &at.field("fraction"),
                        "numerator must be between 0 and the denominator",
                    );
                }
            }
        }
        if let Some(redirect) = &filter.request_redirect {
            let at = at.field("requestRedirect");
            if let Some(scheme) = &redirect.scheme
                && !matches!(scheme.as_str(), "http" | "https")
            {
                issues.add(
                    &at.field("scheme"),
                    format!("{scheme:?}: must be \"http\" or \"https\""),
                );
            }
            if let Some(hostname) = &redirect.hostname
                && (hostname.starts_with("*.") || !is_hostname(hostname))
            {
                issues.add(
                    &at.field("hostname"),
                    format!("{hostname:?} is not a precise hostname"),
                );
            }
            if let Some(port) = redirect.port
                && !(1..=65535).contains(&port)
            {
                issues.add(&at.field("port"), "must be between 1 and 65535");
            }
            if let Some(code) = redirect.status_code
                && ![301, 302, 303, 307, 308].contains(&code)
            {
                issues.add(
                    &at.field("statusCode"),
                    format!("{code}: must be 301, 302, 303, 307 or 308"),
                );
            }
            if let Some(path) = &redirect.path {
                path_modifier(path, one_prefix, &at.field("path"), issues);
            }
        }
        if let Some(rewrite) = &filter.url_rewrite {
            let at = at.field("urlRewrite");
            if let Some(hostname) = &rewrite.hostname
                && (hostname.starts_with("*.") || !is_hostname(hostname))
            {
                issues.add(
                    &at.field("hostname"),
                    format!("{hostname:?} is not a precise hostname"),
                );
            }
            if let Some(path) = &rewrite.path {
                path_modifier(path, one_prefix, &at.field("path"), issues);
            }
        }
    }
    if rule_level && redirect && rewrite {
        issues.add(
            at,
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
        );
    }
}

fn grpc_filters(filters: &[GrpcRouteFilter], at: &FieldPath, issues: &mut Issues) {
    if filters.len() > 16 {
        issues.add(at, "must have at most 16 items");
    }
    let mut once = HashSet::new();
    for (i, filter) in filters.iter().enumerate() {
        let at = at.index(i);
        let kind = filter.filter_type.as_str();
        if !GRPC_FILTERS.contains(&kind) {
            issues.add(
                &at.field("type"),
                format!("{kind:?}: must be one of {}", GRPC_FILTERS.join(", ")),
            );
            continue;
        }
        filter_fields(
            kind,
            &[
                (
                    "requestHeaderModifier",
                    filter.request_header_modifier.is_some(),
                ),
                (
                    "responseHeaderModifier",
                    filter.response_header_modifier.is_some(),
                ),
                ("requestMirror", filter.request_mirror.is_some()),
                ("extensionRef", filter.extension_ref.is_some()),
            ],
            &at,
            issues,
        );
        if matches!(kind, "RequestHeaderModifier" | "ResponseHeaderModifier") && !once.insert(kind)
        {
            issues.add(&at, format!("{kind} filter cannot be repeated"));
        }
        for (name, modifier) in [
            ("requestHeaderModifier", &filter.request_header_modifier),
            ("responseHeaderModifier", &filter.response_header_modifier),
        ] {
            if let Some(modifier) = modifier {
                header_filter(modifier, &at.field(name), issues);
            }
        }
        if let Some(mirror) = &filter.request_mirror {
            backend_ref(
                &mirror.backend_ref,
                &at.field("requestMirror").field("backendRef"),
                issues,
            );
        }
    }
}

fn backend_ref(reference: &BackendObjectReference, at: &FieldPath, issues: &mut Issues) {
    if reference.name.is_empty() {
        issues.add(&at.field("name"), "required");
    }
    let service = matches!(reference.group.as_deref(), None | Some("") | Some("core"))
        && reference.kind.as_deref().is_none_or(|k| k == "Service");
    match reference.port {
        None if service => issues.add(at, "Must have port for Service reference"),
        Some(port) if !(1..=65535).contains(&port) => {
            issues.add(&at.field("port"), "must be between 1 and 65535")
        }
        _ => {}
    }
}

/// The Gateway API's `Duration`: up to four number-unit pairs of h, m, s, ms.
fn gateway_duration(
    text: &str,
    at: &FieldPath,
    issues: &mut Issues,
) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut pairs = 0;
    let mut valid = !text.is_empty();
    while valid && !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit = &rest[digits..];
        let unit_len = if unit.starts_with("ms") {
            2
        } else if unit.starts_with(['h', 'm', 's']) {
            1
        } else {
            0
        };
        valid = (1..=5).contains(&digits) && unit_len > 0;
        rest = &unit[unit_len.min(unit.len())..];
        pairs += 1;
    }
    if !valid || pairs > 4 {
        issues.add(
            at,
            format!("{text:?} is not a Gateway API duration (up to four of <number><h|m|s|ms>, e.g. \"1h30m\" or \"500ms\")"),
        );
        return None;
    }
    crate::duration::parse(text).ok()
}

fn timeouts_issues(timeouts: &HttpRouteTimeouts, at: &FieldPath, issues: &mut Issues) {
    let request = timeouts
        .request
        .as_deref()
        .and_then(|t| gateway_duration(t, &at.field("request"), issues));
    let backend = timeouts
        .backend_request
        .as_deref()
        .and_then(|t| gateway_duration(t, &at.field("backendRequest"), issues));
    if let (Some(request), Some(backend)) = (request, backend)
        && !request.is_zero()
        && backend > request
    {
        issues.add(
            &at.field("backendRequest"),
            "backendRequest timeout cannot be longer than request timeout",
        );
    }
}

/// `package.Service` (the package optional, a leading dot allowed), as the CRD's pattern.
fn grpc_service_name(name: &str) -> bool {
    let name = name.strip_prefix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 1024
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn grpc_method_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 1024
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway_routes::{GrpcRoute, HttpRoute};

    fn http(yaml: &str) -> Vec<String> {
        let route: HttpRoute = serde_yaml::from_str(yaml).expect("route");
        http_route(&route.spec)
            .into_iter()
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect()
    }

    #[test]
    fn a_good_route_passes() {
        let found = http(
            r#"
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api/}
      headers: [{name: end-user, value: jason}]
      queryParams: [{type: RegularExpression, name: v, value: "\\d+"}]
      method: GET
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}], remove: [x-b]}
    backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
    timeouts: {request: 10s, backendRequest: 2s}
"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn what_the_crd_refuses_is_refused_with_its_path() {
        let found = http(
            r#"
spec:
  parentRefs: [{name: gw}, {name: gw}, {group: "", kind: Service, name: s, port: 0}]
  hostnames: ["Not_A_Host"]
  rules:
  - name: same
    matches:
    - path: {type: PathPrefix, value: "foo//bar"}
      headers: [{name: "bad header", value: x}, {name: A, value: y}, {name: a, value: z}]
      method: FETCH
    filters:
    - {type: RequestRedirect, requestRedirect: {statusCode: 305, scheme: ftp}}
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch}}}
    - {type: RequestHeaderModifier}
    backendRefs:
    - {name: a}
    - {name: b, port: 80, weight: -1}
    timeouts: {request: 1s, backendRequest: 2s}
  - name: same
    matches: [{path: {type: RegularExpression, value: "(unclosed"}}]
"#,
        );
        let fields: Vec<&str> = found
            .iter()
            .map(|l| l.split(": ").next().unwrap_or_default())
            .collect();
        for expected in [
            "spec.parentRefs[1]",
            "spec.parentRefs[2].port",
            "spec.hostnames[0]",
            "spec.rules[1].name",
            "spec.rules[0].matches[0].path.value",
            "spec.rules[0].matches[0].headers[0].name",
            "spec.rules[0].matches[0].headers[2].name",
            "spec.rules[0].matches[0].method",
            "spec.rules[0].filters[0].requestRedirect.scheme",
            "spec.rules[0].filters[0].requestRedirect.statusCode",
            "spec.rules[0].filters[1].urlRewrite.path.replacePrefixMatch",
            "spec.rules[0].filters[2].requestHeaderModifier",
            "spec.rules[0].filters",
            "spec.rules[0].backendRefs[0]",
            "spec.rules[0].backendRefs[1].weight",
            "spec.rules[0].timeouts.backendRequest",
            "spec.rules[1].matches[0].path.value",
        ] {
            assert!(fields.contains(&expected), "{expected} in {found:#?}");
        }
    }

    #[test]
    fn a_prefix_replacement_needs_one_prefix_match() {
        let found = http(
            r#"
spec:
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]
"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("exactly one PathPrefix match"),
            "{found:?}"
        );
        // Without matches, the default match is a PathPrefix.
        assert!(
            http("spec: {rules: [{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]}")
                .is_empty()
        );
    }

    #[test]
    fn durations_are_the_gateway_apis() {
        let mut issues = Issues::default();
        for good in ["1h", "500ms", "1h30m10s5ms", "0s"] {
            assert!(
                gateway_duration(good, &FieldPath::spec(), &mut issues).is_some(),
                "{good}"
            );
        }
        assert!(issues.0.is_empty());
        for bad in ["1.5s", "100us", "", "1d", "123456s", "1h1h1h1h1h"] {
            assert!(
                gateway_duration(bad, &FieldPath::spec(), &mut issues).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn grpc_methods_need_a_service_or_a_method() {
        let route: GrpcRoute = serde_yaml::from_str(
            "spec: {rules: [{matches: [{method: {type: Exact}}, {method: {service: 'my pkg'}}, {method: {service: helloworld.Greeter, method: SayHello}}]}]}",
        )
        .expect("route");
        let found: Vec<String> = grpc_route(&route.spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(
            found,
            [
                "spec.rules[0].matches[0].method",
                "spec.rules[0].matches[1].method.service"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused_when_parsed() {
        let parsed: Result<HttpRoute, _> =
            serde_yaml::from_str("spec: {rules: [{backendRef: [{name: a, port: 80}]}]}");
        assert!(parsed.is_err());
    }

    #[test]
    fn warnings_name_what_is_not_acted_on() {
        let route: HttpRoute = serde_yaml::from_str(
            r#"
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  hostnames: [reviews.example.com]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]
    sessionPersistence: {sessionName: s}
"#,
        )
        .expect("route");
        let fields: Vec<String> = http_route_warnings(&route.spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.hostnames",
                "spec.rules[0].sessionPersistence",
                "spec.rules[0].filters[0]"
            ]
        );
    }

    #[test]
    fn tls_and_tcp_routes_are_judged_as_their_crds_judge_them() {
        use crate::api::gateway_routes::{TcpRoute, TlsRoute};
        let parsed: Result<TcpRoute, _> =
            serde_yaml::from_str("spec: {rules: [{backendRef: [{name: a, port: 80}]}]}");
        assert!(parsed.is_err(), "a misspelt field is refused");
        let parsed: Result<TlsRoute, _> = serde_yaml::from_str(
            "spec: {hostnames: [a.example.com], rules: [{backendRefs: [{name: a, port: 443, filters: []}]}]}",
        );
        assert!(parsed.is_err(), "TLSRoute backendRefs have no filters");
        let good: TlsRoute = serde_yaml::from_str(
            "spec: {parentRefs: [{name: gw}], hostnames: [a.example.com], rules: [{backendRefs: [{name: a, port: 443}]}]}",
        )
        .expect("route");
        assert!(tls_route(&good.spec).is_empty());
        let bad: TlsRoute = serde_yaml::from_str(
            "spec: {parentRefs: [{name: gw}], hostnames: [A.example.com], rules: [{backendRefs: [{name: a}, {name: b, port: 1, weight: -1}]}, {backendRefs: []}]}",
        )
        .expect("route");
        let fields: Vec<String> = tls_route(&bad.spec).into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "spec.hostnames[0]",
                "spec.rules[0].backendRefs[0]",
                "spec.rules[0].backendRefs[1].weight",
                "spec.rules[1].backendRefs"
            ]
        );
        let tcp: TcpRoute = serde_yaml::from_str(
            "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: a, port: 5000}]}, {backendRefs: [{name: b, port: 5000}]}]}",
        )
        .expect("route");
        assert!(tcp_route(&tcp.spec).is_empty());
        let warned: Vec<String> =
            stream_route_warnings(&tcp.spec.parent_refs, &tcp.spec.rules, false)
                .into_iter()
                .map(|i| i.field)
                .collect();
        assert_eq!(warned, ["spec.rules[1]"], "only the first rule routes");
        let empty: TcpRoute =
            serde_yaml::from_str("spec: {parentRefs: [{name: gw}]}").expect("route");
        let fields: Vec<String> = tcp_route(&empty.spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(fields, ["spec.rules"]);
    }
}
