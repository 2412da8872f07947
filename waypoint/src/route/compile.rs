//! From a VirtualService to matchers and plans, once per snapshot.
use std::sync::Arc;

use bytes::Bytes;
use weft_config::api::DEFAULT_NAMESPACE;
use weft_config::api::networking::{
    Destination, Headers, HttpDirectResponse, HttpRoute, VirtualService,
};
use weft_config::duration;
use weft_config::translate::hosts::{MeshSettings, qualify};

use super::cors::CorsPlan;
use super::fault::{FaultPlan, PerMillion};
use super::headers;
use super::matcher::{Gate, RequestMatcher, Scope, UriMatch, warn_once};
use super::plan::{HttpRoutePlan, MirrorPlan, RouteAction, RouteDestination, RulePlan};
use super::retry::RetryPolicy;
use super::rewrite::{RedirectPlan, UriRewrite};

/// One match block of one rule, in evaluation order.
#[derive(Debug)]
pub(crate) struct HttpEntry {
    pub(crate) gate: Gate,
    pub(crate) matcher: RequestMatcher,
    pub(crate) plan: HttpRoutePlan,
}

/// What compiling needs to know about the VirtualService at hand.
pub(crate) struct VsContext<'a> {
    pub(crate) namespace: &'a str,
    settings: &'a MeshSettings,
    /// "VirtualService <namespace>/<name>", for warnings.
    pub(crate) origin: String,
}

impl<'a> VsContext<'a> {
    pub(crate) fn named(namespace: &'a str, settings: &'a MeshSettings, origin: String) -> Self {
        Self {
            namespace,
            settings,
            origin,
        }
    }

    pub(crate) fn new(vs: &'a VirtualService, settings: &'a MeshSettings) -> Self {
        let namespace = vs
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let name = vs.metadata.name.as_deref().unwrap_or_default();
        Self {
            namespace,
            settings,
            origin: format!("VirtualService {namespace}/{name}"),
        }
    }
}

/// A destination of a rule, or `None` when it takes no traffic or cannot be used. In a
/// split (`weighted`) pilot leaves zero-weight destinations out; a lone destination takes
/// all traffic whatever its weight.
pub(crate) fn destination(
    context: &VsContext<'_>,
    destination: &Destination,
    weight: Option<i32>,
    weighted: bool,
    headers: Option<&Headers>,
    at: &str,
) -> Option<RouteDestination> {
    let weight = if weighted {
        u32::try_from(weight.unwrap_or(0)).ok().filter(|w| *w > 0)?
    } else {
        100
    };
    if destination.host.is_empty() {
        warn_once(format!("{at}.destination.host: empty; destination skipped"));
        return None;
    }
    let port = destination
        .port
        .as_ref()
        .map(|p| p.number)
        .filter(|n| *n != 0)
        .and_then(|n| match u16::try_from(n) {
            Ok(port) => Some(port),
            Err(_) => {
                warn_once(format!(
                    "{at}.destination.port: {n} is not a port; the dialed port is used"
                ));
                None
            }
        });
    let compiled = headers::compile(
        headers,
        &format!("{at}.headers"),
        headers::Values::Formatted,
    );
    Some(RouteDestination {
        // Istio resolves short names in the namespace of the rule, not of the service.
        host: qualify(&destination.host, context.namespace, context.settings),
        subset: destination.subset.clone().filter(|s| !s.is_empty()),
        port,
        weight,
        request_ops: compiled.request,
        response_ops: compiled.response,
        authority: compiled.authority,
        unresolved: false,
    })
}

pub(crate) fn http_entries(
    vs: &VirtualService,
    settings: &MeshSettings,
    gateway: Option<&weft_config::translate::gateway::GatewayRef>,
) -> Vec<HttpEntry> {
    let context = VsContext::new(vs, settings);
    let scope = match gateway {
        Some(gateway) => Scope::Gateway {
            gateway,
            vs_namespace: context.namespace,
        },
        None => Scope::Mesh,
    };
    let mut entries = Vec::new();
    for (i, rule) in vs.spec.http.iter().enumerate() {
        let at = format!("{}: http[{i}]", context.origin);
        let Some(plan) = rule_plan(&context, rule, &at) else {
            continue;
        };
        let rule_plan = Arc::new(plan);
        if rule.matches.is_empty() {
            entries.push(HttpEntry {
                gate: Gate::default(),
                matcher: RequestMatcher::any(),
                plan: HttpRoutePlan {
                    name: route_name(rule.name.as_deref(), None),
                    matched: UriMatch::any().matched(),
                    rule: rule_plan,
                },
            });
            continue;
        }
        for (m, block) in rule.matches.iter().enumerate() {
            let matcher = RequestMatcher::compile(block, &format!("{at}.match[{m}]"));
            entries.push(HttpEntry {
                gate: Gate::http(block, scope),
                plan: HttpRoutePlan {
                    name: route_name(rule.name.as_deref(), block.name.as_deref()),
                    matched: matcher.uri().matched(),
                    rule: Arc::clone(&rule_plan),
                },
                matcher,
            });
        }
    }
    entries
}

/// pilot: the rule's name, then "." and the match block's name when it has one.
fn route_name(rule: Option<&str>, block: Option<&str>) -> Option<Box<str>> {
    match (rule.unwrap_or_default(), block.filter(|b| !b.is_empty())) {
        ("", None) => None,
        (rule, None) => Some(rule.into()),
        (rule, Some(block)) => Some(format!("{rule}.{block}").into()),
    }
}

/// `None` for a rule the waypoint cannot serve; pilot's order decides the action:
/// redirect, then direct response, then destinations.
fn rule_plan(context: &VsContext<'_>, rule: &HttpRoute, at: &str) -> Option<RulePlan> {
    let route_headers = headers::compile(
        rule.headers.as_ref(),
        &format!("{at}.headers"),
        headers::Values::Formatted,
    );
    let mut plan = RulePlan {
        action: RouteAction::Forward(Vec::new()),
        weighted: false,
        uri_rewrite: UriRewrite::None,
        authority: None,
        request_ops: route_headers.request,
        response_ops: route_headers.response,
        timeout: None,
        retry: RetryPolicy::disabled(),
        // Envoy's fault and CORS filters run before the router, whatever the action.
        fault: rule
            .fault
            .as_ref()
            .and_then(|fault| FaultPlan::compile(fault, &format!("{at}.fault"))),
        mirrors: Vec::new(),
        cors: rule
            .cors_policy
            .as_ref()
            .map(|cors| CorsPlan::compile(cors, &format!("{at}.corsPolicy"))),
    };
    if let Some(redirect) = &rule.redirect {
        plan.action =
            RouteAction::Redirect(RedirectPlan::compile(redirect, &format!("{at}.redirect"))?);
        return Some(plan);
    }
    if let Some(response) = &rule.direct_response {
        plan.action = direct_response(response, &format!("{at}.directResponse"))?;
        return Some(plan);
    }
    if rule.route.is_empty() {
        if rule.delegate.is_some() {
            warn_once(format!(
                "{at}: delegate not merged (the registry merges usable delegates, \
                 weft_config::translate::delegate); the rule never matches"
            ));
        } else {
            warn_once(format!(
                "{at}: no route, redirect or directResponse; rule skipped"
            ));
        }
        return None;
    }
    plan.weighted = rule.route.len() > 1;
    let destinations: Vec<_> = rule
        .route
        .iter()
        .enumerate()
        .filter_map(|(j, d)| {
            destination(
                context,
                &d.destination,
                d.weight,
                plan.weighted,
                d.headers.as_ref(),
                &format!("{at}.route[{j}]"),
            )
        })
        .collect();
    if destinations.is_empty() {
        warn_once(format!("{at}: no usable destination; rule skipped"));
        return None;
    }
    plan.action = RouteAction::Forward(destinations);
    plan.uri_rewrite = UriRewrite::compile(rule.rewrite.as_ref(), &format!("{at}.rewrite"));
    plan.authority = rule
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.as_deref())
        .filter(|a| !a.is_empty())
        .and_then(|a| match http::HeaderValue::from_str(a) {
            Ok(authority) => Some(authority),
            Err(_) => {
                warn_once(format!(
                    "{at}.rewrite.authority: {a:?} is not a valid authority; ignored"
                ));
                None
            }
        })
        .or(route_headers.authority);
    if let Some(timeout) = &rule.timeout {
        match duration::parse(timeout) {
            // "0s" is Envoy's "no timeout", which is also Istio's default for HTTP.
            Ok(timeout) => plan.timeout = Some(timeout).filter(|t| !t.is_zero()),
            Err(error) => warn_once(format!("{at}.timeout: {error}; no timeout")),
        }
    }
    plan.retry = RetryPolicy::from_istio(rule.retries.as_ref(), &format!("{at}.retries"));
    plan.mirrors = mirrors(context, rule, at);
    Some(plan)
}

/// `mirror` (with `mirrorPercentage`, or the deprecated `mirrorPercent`) and `mirrors[]`.
/// An unset percentage mirrors everything; an explicit 0 mirrors nothing.
fn mirrors(context: &VsContext<'_>, rule: &HttpRoute, at: &str) -> Vec<MirrorPlan> {
    let share = |percent: f64| (percent > 0.0).then(|| PerMillion::from_percent(percent));
    let mut mirrors = Vec::new();
    if let Some(mirror) = &rule.mirror {
        let share = match (&rule.mirror_percentage, rule.mirror_percent) {
            (Some(percentage), _) => share(percentage.value),
            (None, Some(percent)) => share(f64::from(percent)),
            (None, None) => share(100.0),
        };
        if let Some(share) = share
            && let Some(mirror) =
                destination(context, mirror, None, false, None, &format!("{at}.mirror"))
        {
            mirrors.push(MirrorPlan::new(mirror, share));
        }
    }
    for (i, policy) in rule.mirrors.iter().enumerate() {
        let share = share(policy.percentage.as_ref().map_or(100.0, |p| p.value));
        if let Some(share) = share
            && let Some(mirror) = destination(
                context,
                &policy.destination,
                None,
                false,
                None,
                &format!("{at}.mirrors[{i}]"),
            )
        {
            mirrors.push(MirrorPlan::new(mirror, share));
        }
    }
    mirrors
}

fn direct_response(response: &HttpDirectResponse, at: &str) -> Option<RouteAction> {
    let status = u16::try_from(response.status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        warn_once(format!(
            "{at}.status: {} is not an HTTP status; rule skipped",
            response.status
        ));
        return None;
    };
    let body = response.body.as_ref().and_then(|body| {
        if let Some(text) = &body.string {
            Some(Bytes::from(text.clone()))
        } else if let Some(encoded) = &body.bytes {
            let decoded = base64_decode(encoded).map(Bytes::from);
            if decoded.is_none() {
                warn_once(format!(
                    "{at}.body.bytes: not base64; the response has no body"
                ));
            }
            decoded
        } else {
            None
        }
    });
    Some(RouteAction::DirectResponse { status, body })
}

/// Protobuf's JSON form of `bytes`: standard or URL-safe base64, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies() {
        assert_eq!(
            base64_decode("dW5rbm93biBlcnJvcg==").as_deref(),
            Some(&b"unknown error"[..])
        );
        assert_eq!(
            base64_decode("dW5rbm93biBlcnJvcg").as_deref(),
            Some(&b"unknown error"[..])
        );
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn names_join_rule_and_block() {
        assert_eq!(route_name(Some("r"), Some("m")).as_deref(), Some("r.m"));
        assert_eq!(route_name(Some("r"), None).as_deref(), Some("r"));
        assert_eq!(route_name(None, Some("m")).as_deref(), Some(".m"));
        assert_eq!(route_name(None, Some("")), None);
    }
}
