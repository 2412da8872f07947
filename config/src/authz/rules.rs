//! Istio's AuthorizationPolicy semantics, shared by the L4 and L7 evaluators.
//!
//! Istio compiles each rule into Envoy RBAC matchers. A value it cannot compile — an HTTP
//! attribute for a TCP proxy, a malformed address, a JWT attribute that can't be known
//! here — does not fail open: in an ALLOW policy the whole rule is dropped (it matches
//! nothing), in a DENY or AUDIT policy only that value is dropped (the rule matches more;
//! a field left without values constrains nothing). [`Test::Unknown`] carries that case.
//!
//! Request principals and `request.auth.*` come from the waypoint's request authentication
//! ([`Http::auth`]): known at L7 (absent without a verified token), unknown at L4.
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use super::decision::Decision;
use crate::api::security::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};
use crate::authn::{self, Authenticated};
use crate::validate::cidr;

/// The attributes of a request, as far as the evaluating proxy knows them.
pub(crate) struct Subject<'a> {
    /// Istio's principal form: the SPIFFE id without `spiffe://`.
    pub principal: Option<&'a str>,
    /// `source.ip`: the address the connection (or HBONE tunnel) came from.
    pub source_ip: Option<IpAddr>,
    /// `remote.ip`: the original client address (X-Forwarded-For, PROXY protocol).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    /// `None` for an L4 proxy: everything HTTP is unknown.
    pub http: Option<Http<'a>>,
}

pub(crate) struct Http<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub sni: Option<&'a str>,
    /// The request's verified JWT, `None` when it carried none.
    pub auth: Option<&'a Authenticated>,
}

impl Subject<'_> {
    /// The `<ns>` of a `<trust-domain>/ns/<ns>/sa/<sa>` principal.
    fn namespace(&self) -> Option<&str> {
        let (_, rest) = self.principal?.split_once("/ns/")?;
        rest.split('/').next()
    }

    fn service_account(&self) -> Option<&str> {
        let (_, rest) = self.principal?.split_once("/sa/")?;
        rest.split('/').next()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Test {
    Yes,
    No,
    /// The value can't be evaluated here; see the module comment.
    Unknown,
}

impl From<bool> for Test {
    fn from(matched: bool) -> Self {
        if matched { Self::Yes } else { Self::No }
    }
}

/// An ALLOW rule holding a value that can't be evaluated: it matches nothing.
struct Unevaluable;

pub(crate) fn policy_name(policy: &AuthorizationPolicy) -> String {
    format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap_or_default(),
        policy.metadata.name.as_deref().unwrap_or_default()
    )
}

fn action(policy: &AuthorizationPolicy) -> Action {
    policy.spec.action.unwrap_or_default()
}

fn rules(policy: &AuthorizationPolicy) -> &[Rule] {
    policy.spec.rules.as_deref().unwrap_or_default()
}

/// What the CUSTOM policies that apply ask of a request. Istio evaluates CUSTOM first:
/// its rules only decide *whether* the provider is asked (matched as a DENY rule's are),
/// the provider decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Custom {
    /// No CUSTOM policy's rules match: no provider is asked.
    Skip,
    /// Ask `provider`; `policies` are those whose rules matched (`namespace/name`).
    Check {
        provider: String,
        policies: Vec<String>,
    },
    /// Denied without asking (fail closed), with the reason.
    Deny(String),
}

fn provider(policy: &AuthorizationPolicy) -> &str {
    policy
        .spec
        .provider
        .as_ref()
        .map(|p| p.name.as_str())
        .unwrap_or_default()
}

fn any_rule_matches(policy: &AuthorizationPolicy, subject: &Subject<'_>) -> bool {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    rules(policy)
        .iter()
        .any(|rule| matches!(rule_matches(rule, subject, false, namespace), Ok(true)))
}

/// The CUSTOM step. Policies naming different providers on one workload are, as Istio
/// has them by default, a configuration it cannot honour: whatever any of their rules
/// match is denied.
pub(crate) fn custom(policies: &[&Arc<AuthorizationPolicy>], subject: &Subject<'_>) -> Custom {
    let customs: Vec<_> = policies
        .iter()
        .filter(|p| action(p) == Action::Custom)
        .collect();
    let matched: Vec<String> = customs
        .iter()
        .filter(|p| any_rule_matches(p, subject))
        .map(|p| policy_name(p))
        .collect();
    if matched.is_empty() {
        return Custom::Skip;
    }
    let mut providers: Vec<&str> = customs.iter().map(|p| provider(p)).collect();
    providers.sort_unstable();
    providers.dedup();
    match providers.as_slice() {
        [one] => Custom::Check {
            provider: (*one).to_string(),
            policies: matched,
        },
        several => Custom::Deny(format!(
            "CUSTOM AuthorizationPolicies {} name different providers ({}); Istio allows one \
             provider per workload",
            matched.join(", "),
            several.join(", ")
        )),
    }
}

/// The AUDIT policies with a rule matching the request (`namespace/name`), matched as a
/// DENY rule's are. AUDIT never allows or denies.
pub(crate) fn audited(
    policies: &[&Arc<AuthorizationPolicy>],
    subject: &Subject<'_>,
) -> Vec<String> {
    policies
        .iter()
        .filter(|p| action(p) == Action::Audit && any_rule_matches(p, subject))
        .map(|p| policy_name(p))
        .collect()
}

/// Istio's order after CUSTOM: a matching DENY denies; then, if any ALLOW policy applies,
/// one of its rules must match. AUDIT decides nothing.
pub(crate) fn evaluate(policies: &[&Arc<AuthorizationPolicy>], subject: &Subject<'_>) -> Decision {
    for policy in policies.iter().filter(|p| action(p) == Action::Deny) {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        if rules(policy)
            .iter()
            .any(|rule| matches!(rule_matches(rule, subject, false, namespace), Ok(true)))
        {
            return Decision::Deny(format!(
                "denied by AuthorizationPolicy {}",
                policy_name(policy)
            ));
        }
    }
    let allows: Vec<_> = policies
        .iter()
        .filter(|p| action(p) == Action::Allow)
        .collect();
    if allows.is_empty() {
        return Decision::Allow;
    }
    let allowed = allows.iter().any(|policy| {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        rules(policy)
            .iter()
            .any(|rule| matches!(rule_matches(rule, subject, true, namespace), Ok(true)))
    });
    if allowed {
        Decision::Allow
    } else {
        let names: Vec<String> = allows.iter().map(|p| policy_name(p)).collect();
        Decision::Deny(format!(
            "no ALLOW rule matches (AuthorizationPolicy {})",
            names.join(", ")
        ))
    }
}

/// `from` entries are alternatives, `to` entries are alternatives, every `when` must
/// hold, and the three combine with AND. `strict` is true for ALLOW.
fn rule_matches(
    rule: &Rule,
    subject: &Subject<'_>,
    strict: bool,
    namespace: &str,
) -> Result<bool, Unevaluable> {
    // Every entry is evaluated even after a match: an unevaluable value anywhere in an
    // ALLOW rule drops the whole rule.
    let mut from = rule.from.is_empty();
    for entry in &rule.from {
        let matched = match &entry.source {
            Some(source) => source_matches(source, subject, strict, namespace)?,
            None => true,
        };
        from |= matched;
    }
    let mut to = rule.to.is_empty();
    for entry in &rule.to {
        let matched = match &entry.operation {
            Some(operation) => operation_matches(operation, subject, strict)?,
            None => true,
        };
        to |= matched;
    }
    let mut when = true;
    for condition in &rule.when {
        when &= condition_matches(condition, subject, strict, namespace)?;
    }
    Ok(from && to && when)
}

/// One field: any of `values` (if there are any) and none of `not_values`.
fn field(
    values: &[String],
    not_values: &[String],
    strict: bool,
    test: impl Fn(&str) -> Test,
) -> Result<bool, Unevaluable> {
    // `None` until a usable value is seen: a field whose values all dropped out
    // constrains nothing.
    let mut positive: Option<bool> = None;
    for value in values {
        match test(value) {
            Test::Yes => positive = Some(true),
            Test::No => {
                positive.get_or_insert(false);
            }
            Test::Unknown if strict => return Err(Unevaluable),
            Test::Unknown => {}
        }
    }
    let mut negative = false;
    for value in not_values {
        match test(value) {
            Test::Yes => negative = true,
            Test::No => {}
            Test::Unknown if strict => return Err(Unevaluable),
            Test::Unknown => {}
        }
    }
    Ok(positive.unwrap_or(true) && !negative)
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` for any non-empty value.
pub(crate) fn string_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

fn optional(pattern: &str, value: Option<&str>) -> Test {
    value.is_some_and(|v| string_matches(pattern, v)).into()
}

/// Envoy's header matcher as Istio generates it: `*` means present (even empty),
/// otherwise exact, prefix or suffix; case-sensitive unless `ignore_case`.
fn header_matches(pattern: &str, value: Option<&str>, ignore_case: bool) -> bool {
    let Some(value) = value else { return false };
    if pattern == "*" {
        return true;
    }
    let (value, pattern) = if ignore_case {
        (value.to_ascii_lowercase(), pattern.to_ascii_lowercase())
    } else {
        (value.to_string(), pattern.to_string())
    };
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

fn ip_matches(block: &str, ip: Option<IpAddr>) -> Test {
    match cidr::parse(block) {
        Ok((network, len)) => ip.is_some_and(|ip| in_network(ip, network, len)).into(),
        Err(_) => Test::Unknown,
    }
}

fn in_network(ip: IpAddr, network: IpAddr, len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn port_matches(pattern: &str, port: u16) -> Test {
    match pattern.parse::<u16>() {
        Ok(p) => (p == port).into(),
        Err(_) => Test::Unknown,
    }
}

/// `serviceAccounts`: `<ns>/<sa>`, or `<sa>` in the policy's namespace; no wildcards.
fn service_account_matches(pattern: &str, subject: &Subject<'_>, namespace: &str) -> Test {
    let (ns, sa) = pattern.split_once('/').unwrap_or((namespace, pattern));
    (subject.namespace() == Some(ns) && subject.service_account() == Some(sa)).into()
}

fn source_matches(
    source: &Source,
    subject: &Subject<'_>,
    strict: bool,
    namespace: &str,
) -> Result<bool, Unevaluable> {
    let principal = subject.principal;
    let ns = subject.namespace();
    Ok(
        field(&source.principals, &source.not_principals, strict, |p| {
            optional(p, principal)
        })? && field(&source.namespaces, &source.not_namespaces, strict, |p| {
            optional(p, ns)
        })? && field(
            &source.service_accounts,
            &source.not_service_accounts,
            strict,
            |p| service_account_matches(p, subject, namespace),
        )? && field(&source.ip_blocks, &source.not_ip_blocks, strict, |b| {
            ip_matches(b, subject.source_ip)
        })? && field(
            &source.remote_ip_blocks,
            &source.not_remote_ip_blocks,
            strict,
            |b| ip_matches(b, subject.remote_ip),
        )? && field(
            &source.request_principals,
            &source.not_request_principals,
            strict,
            // Known where HTTP is (the waypoint authenticates requests), not at L4.
            |p| match &subject.http {
                Some(http) => optional(p, http.auth.and_then(|a| a.principal.as_deref())),
                None => Test::Unknown,
            },
        )?,
    )
}

fn operation_matches(
    operation: &Operation,
    subject: &Subject<'_>,
    strict: bool,
) -> Result<bool, Unevaluable> {
    let http = subject.http.as_ref();
    Ok(field(&operation.ports, &operation.not_ports, strict, |p| {
        port_matches(p, subject.destination_port)
    })? && field(&operation.hosts, &operation.not_hosts, strict, |p| {
        http.map_or(Test::Unknown, |h| {
            header_matches(p, Some(h.host), true).into()
        })
    })? && field(&operation.methods, &operation.not_methods, strict, |p| {
        http.map_or(Test::Unknown, |h| {
            header_matches(p, Some(h.method), false).into()
        })
    })? && field(&operation.paths, &operation.not_paths, strict, |p| {
        http.map_or(Test::Unknown, |h| path_matches(p, h.path).into())
    })?)
}

fn condition_matches(
    condition: &Condition,
    subject: &Subject<'_>,
    strict: bool,
    namespace: &str,
) -> Result<bool, Unevaluable> {
    let key = condition.key.as_str();
    let http = subject.http.as_ref();
    let test = |value: &str| -> Test {
        match key {
            "source.ip" => ip_matches(value, subject.source_ip),
            "remote.ip" => ip_matches(value, subject.remote_ip),
            "destination.ip" => ip_matches(value, subject.destination_ip),
            "destination.port" => port_matches(value, subject.destination_port),
            "source.namespace" => optional(value, subject.namespace()),
            "source.principal" => optional(value, subject.principal),
            // The rest need the HTTP view (the L4 evaluator has always treated them as
            // unknown, and keeps doing so).
            _ if http.is_none() => Test::Unknown,
            "source.serviceAccount" => service_account_matches(value, subject, namespace),
            "connection.sni" => optional(value, http.and_then(|h| h.sni)),
            "request.auth.principal" => {
                optional(value, http.and_then(|h| h.auth?.principal.as_deref()))
            }
            "request.auth.presenter" => {
                optional(value, http.and_then(|h| h.auth?.presenter.as_deref()))
            }
            "request.auth.audiences" => http
                .and_then(|h| h.auth)
                .is_some_and(|a| a.audiences.iter().any(|aud| string_matches(value, aud)))
                .into(),
            _ if key.starts_with("request.auth.claims") => {
                match (authn::condition_claim_path(key), http) {
                    // A string claim, or any string of a list claim.
                    (Some(path), Some(http)) => http
                        .auth
                        .is_some_and(|a| {
                            a.claim_strings(&path)
                                .into_iter()
                                .any(|claim| string_matches(value, claim))
                        })
                        .into(),
                    _ => Test::Unknown,
                }
            }
            _ => match (header_name(key), http) {
                (Some(name), Some(http)) => {
                    header_matches(value, header_value(http, name).as_deref(), false).into()
                }
                // experimental.*, unknown keys.
                _ => Test::Unknown,
            },
        }
    };
    field(&condition.values, &condition.not_values, strict, test)
}

/// `request.headers[<name>]` → `<name>`.
fn header_name(key: &str) -> Option<&str> {
    key.strip_prefix("request.headers[")?
        .strip_suffix(']')
        .filter(|name| !name.is_empty())
}

/// A header's value as Envoy's matcher sees it: all values joined by `,`. Envoy keeps the
/// host in `:authority` and matches `host` against it; the pseudo-headers map to the
/// request's parts.
fn header_value(http: &Http<'_>, name: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("host") || name == ":authority" {
        return Some(http.host.to_string());
    }
    match name {
        ":method" => return Some(http.method.to_string()),
        ":path" => return Some(http.path.to_string()),
        _ => {}
    }
    let values: Vec<String> = http
        .headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// `paths`: Istio's string match, or an Envoy URI template when the value holds `{*}` (one
/// path segment) or `{**}` (anything, `/` included).
fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern.contains("{*}") || pattern.contains("{**}") {
        glob(&template(pattern), path)
    } else {
        string_matches(pattern, path)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Literal(&'a str),
    Segment,
    Any,
}

fn template(pattern: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let next = [("{**}", Token::Any), ("{*}", Token::Segment)]
            .into_iter()
            .filter_map(|(operator, token)| rest.find(operator).map(|at| (at, operator, token)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, operator, token)) => {
                if at > 0 {
                    tokens.push(Token::Literal(&rest[..at]));
                }
                tokens.push(token);
                rest = &rest[at + operator.len()..];
            }
            None => {
                tokens.push(Token::Literal(rest));
                rest = "";
            }
        }
    }
    tokens
}

fn glob(tokens: &[Token<'_>], path: &str) -> bool {
    match tokens.split_first() {
        None => path.is_empty(),
        Some((Token::Literal(literal), rest)) => path
            .strip_prefix(literal)
            .is_some_and(|after| glob(rest, after)),
        Some((Token::Segment, rest)) => {
            let segment = path.find('/').unwrap_or(path.len());
            (1..=segment)
                .filter(|end| path.is_char_boundary(*end))
                .any(|end| glob(rest, &path[end..]))
        }
        Some((Token::Any, rest)) => (0..=path.len())
            .filter(|end| path.is_char_boundary(*end))
            .any(|end| glob(rest, &path[end..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        assert!(string_matches("*", "x"));
        assert!(!string_matches("*", ""));
        assert!(string_matches("/admin*", "/admin/users"));
        assert!(string_matches("*.png", "/a/b.png"));
        assert!(!string_matches("/admin", "/admin/"));
        assert!(header_matches("*", Some(""), false), "presence");
        assert!(!header_matches("*", None, false));
        assert!(header_matches(
            "*.Example.com",
            Some("API.example.COM"),
            true
        ));
        assert!(!header_matches("get", Some("GET"), false));
    }

    #[test]
    fn path_templates() {
        assert!(path_matches("/foo/{*}", "/foo/bar"));
        assert!(!path_matches("/foo/{*}", "/foo/bar/baz"));
        assert!(!path_matches("/foo/{*}", "/foo/"));
        assert!(path_matches("/foo/{**}/", "/foo/bar/"));
        assert!(path_matches("/foo/{**}/", "/foo/bar/baz/"));
        assert!(path_matches("/foo/{**}/", "/foo//"));
        assert!(!path_matches("/foo/{**}/", "/foo/bar"));
        assert!(path_matches("/foo/{*}/bar/{**}", "/foo/buzz/bar/"));
        assert!(path_matches("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz"));
        assert!(!path_matches("/foo/{*}/bar/{**}", "/foo/a/b/bar/baz"));
    }

    #[test]
    fn networks() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert_eq!(ip_matches("10.0.0.0/8", ip("10.1.2.3")), Test::Yes);
        assert_eq!(ip_matches("0.0.0.0/0", ip("1.2.3.4")), Test::Yes);
        assert_eq!(ip_matches("10.1.2.3", ip("10.1.2.4")), Test::No);
        assert_eq!(ip_matches("2001:db8::/32", ip("2001:db8::1")), Test::Yes);
        assert_eq!(ip_matches("10.0.0.0/8", ip("2001:db8::1")), Test::No);
        assert_eq!(ip_matches("10.0.0.0/8", None), Test::No);
        assert_eq!(ip_matches("bogus", ip("10.1.2.3")), Test::Unknown);
    }
}
