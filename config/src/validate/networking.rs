//! Istio's networking rules: VirtualService, DestinationRule, ServiceEntry (Gateway:
//! `gateway.rs`).
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::cidr;
use super::paths::{FieldPath, Issues};
use crate::api::common::{Percent, StringMatch};
use crate::api::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, Destination,
    DestinationRuleSpec, Headers, HttpRoute, LoadBalancerSettings, LocalityLbSetting,
    OutlierDetection, Resolution, RouteDestination, ServiceEntrySpec, SimpleLb, TrafficPolicy,
    VirtualService, VirtualServiceSpec,
};
use crate::api::{DEFAULT_NAMESPACE, Kind, ObjectRef};
use crate::duration;
use crate::refusal::{FieldIssue, Refusal};
use crate::translate::delegate::Delegates;
use crate::translate::header_format::{self, Side};

/// Retry conditions Envoy (and so Istio) understands in `retryOn`, besides status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) fn virtual_service(spec: &VirtualServiceSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    let hosts = root.field("hosts");
    // Without hosts, a VirtualService is a delegate: only other VirtualServices' `http`
    // rules use it (Istio's `ValidateVirtualService` checks).
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            issues.add(
                &root.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !spec.tls.is_empty() {
            issues.add(
                &root.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !spec.tcp.is_empty() {
            issues.add(
                &root.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        issues.add(
            &root,
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let bound_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.is_empty() {
            issues.add(&hosts.index(i), "must not be empty");
        } else if host == "*" && bound_to_mesh {
            issues.add(
                &hosts.index(i),
                "the wildcard host \"*\" is not allowed for routes bound to the mesh",
            );
        }
    }
    for (i, route) in spec.http.iter().enumerate() {
        let at = root.field("http").index(i);
        if route.delegate.is_some() {
            if delegate {
                issues.add(
                    &at.field("delegate"),
                    "delegate HTTP route cannot contain delegate",
                );
            }
            if !route.route.is_empty() {
                issues.add(&at.field("route"), "root HTTP route must not specify route");
            }
            if route.redirect.is_some() {
                issues.add(
                    &at.field("redirect"),
                    "root HTTP route must not specify redirect",
                );
            }
        }
        http_route(route, &at, &mut issues);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let path = root.field("tcp").index(i);
        for (m, attributes) in route.matches.iter().enumerate() {
            let at = path.field("match").index(m);
            port(attributes.port, &at.field("port"), &mut issues);
            subnets(
                &attributes.destination_subnets,
                &at.field("destinationSubnets"),
                &mut issues,
            );
        }
        route_destinations(&route.route, &path.field("route"), &mut issues);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let path = root.field("tls").index(i);
        if route.matches.is_empty() {
            issues.add(&path.field("match"), "a TLS route needs at least one match");
        }
        for (m, attributes) in route.matches.iter().enumerate() {
            let at = path.field("match").index(m);
            if attributes.sni_hosts.is_empty() {
                issues.add(&at.field("sniHosts"), "at least one SNI host is required");
            }
            port(attributes.port, &at.field("port"), &mut issues);
            subnets(
                &attributes.destination_subnets,
                &at.field("destinationSubnets"),
                &mut issues,
            );
        }
        route_destinations(&route.route, &path.field("route"), &mut issues);
    }
    issues.into_vec()
}

fn http_route(route: &HttpRoute, path: &FieldPath, issues: &mut Issues) {
    let acts = !route.route.is_empty()
        || route.redirect.is_some()
        || route.direct_response.is_some()
        || route.delegate.is_some();
    if !acts {
        issues.add(
            path,
            "one of route, redirect, directResponse or delegate is required",
        );
    }
    if !route.route.is_empty() && (route.redirect.is_some() || route.direct_response.is_some()) {
        issues.add(
            path,
            "route cannot be combined with redirect or directResponse",
        );
    }
    for (m, request) in route.matches.iter().enumerate() {
        let at = path.field("match").index(m);
        for (name, matcher) in [
            ("uri", &request.uri),
            ("scheme", &request.scheme),
            ("method", &request.method),
            ("authority", &request.authority),
        ] {
            if let Some(matcher) = matcher {
                string_match(matcher, &at.field(name), false, issues);
            }
        }
        for (field, map) in [
            ("headers", &request.headers),
            ("withoutHeaders", &request.without_headers),
        ] {
            for (name, matcher) in map {
                let key = at.field(field).key(name);
                if name.is_empty() {
                    issues.add(&key, "header names must not be empty");
                } else if name.chars().any(|c| c.is_ascii_uppercase()) {
                    issues.add(&key, "header names must be lowercase");
                }
                // An empty match on a header tests for its presence, as in Istio.
                string_match(matcher, &key, true, issues);
            }
        }
        for (name, matcher) in &request.query_params {
            string_match(matcher, &at.field("queryParams").key(name), true, issues);
        }
        port(request.port, &at.field("port"), issues);
    }
    http_destinations(route, path, issues);
    if let Some(timeout) = &route.timeout {
        duration_field(timeout, &path.field("timeout"), issues);
    }
    if let Some(retries) = &route.retries {
        let at = path.field("retries");
        if retries.attempts < 0 {
            issues.add(
                &at.field("attempts"),
                format!("{} is negative; use 0 or more", retries.attempts),
            );
        }
        if let Some(per_try) = &retries.per_try_timeout {
            duration_field(per_try, &at.field("perTryTimeout"), issues);
        }
        if let Some(retry_on) = &retries.retry_on {
            for condition in retry_on.split(',').map(str::trim) {
                let status_code = condition
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c));
                if !status_code && !RETRY_ON.contains(&condition) {
                    issues.add(
                        &at.field("retryOn"),
                        format!("{condition:?} is not a retry condition or an HTTP status code"),
                    );
                }
            }
        }
    }
    if let Some(fault) = &route.fault {
        let at = path.field("fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            issues.add(&at, "one of delay or abort is required");
        }
        if let Some(delay) = &fault.delay {
            let d = at.field("delay");
            match (&delay.fixed_delay, &delay.exponential_delay) {
                (Some(fixed), _) => duration_field(fixed, &d.field("fixedDelay"), issues),
                (None, Some(exponential)) => {
                    duration_field(exponential, &d.field("exponentialDelay"), issues)
                }
                (None, None) => issues.add(&d.field("fixedDelay"), "required"),
            }
            percentage(delay.percentage.as_ref(), &d.field("percentage"), issues);
            if let Some(percent) = delay.percent {
                percent_int(i64::from(percent), &d.field("percent"), issues);
            }
        }
        if let Some(abort) = &fault.abort {
            let a = at.field("abort");
            match abort.http_status {
                Some(status) if !(200..=599).contains(&status) => issues.add(
                    &a.field("httpStatus"),
                    format!("{status} is not an HTTP status between 200 and 599"),
                ),
                Some(_) => {}
                None if abort.grpc_status.is_none() && abort.http2_error.is_none() => issues.add(
                    &a.field("httpStatus"),
                    "one of httpStatus, grpcStatus or http2Error is required",
                ),
                None => {}
            }
            percentage(abort.percentage.as_ref(), &a.field("percentage"), issues);
        }
    }
    if let Some(mirror) = &route.mirror {
        destination(mirror, &path.field("mirror"), issues);
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let at = path.field("mirrors").index(i);
        destination(&mirror.destination, &at.field("destination"), issues);
        percentage(mirror.percentage.as_ref(), &at.field("percentage"), issues);
    }
    percentage(
        route.mirror_percentage.as_ref(),
        &path.field("mirrorPercentage"),
        issues,
    );
    if let Some(percent) = route.mirror_percent {
        percent_int(i64::from(percent), &path.field("mirrorPercent"), issues);
    }
    if let Some(rewrite) = &route.rewrite {
        let at = path.field("rewrite");
        if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
            issues.add(&at, "uri and uriRegexRewrite cannot both be set");
        }
        if let Some(regex_rewrite) = &rewrite.uri_regex_rewrite {
            regex(
                &regex_rewrite.pattern,
                &at.field("uriRegexRewrite").field("match"),
                issues,
            );
        }
    }
    if let Some(redirect) = &route.redirect {
        let at = path.field("redirect");
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            issues.add(
                &at.field("redirectCode"),
                format!("{code} is not one of 301, 302, 303, 307, 308"),
            );
        }
        if let Some(derive) = &redirect.derive_port {
            if !["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"].contains(&derive.as_str()) {
                issues.add(
                    &at.field("derivePort"),
                    format!("{derive:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                );
            }
            if redirect.port.is_some() {
                issues.add(&at, "port and derivePort cannot both be set");
            }
        }
        port(redirect.port, &at.field("port"), issues);
    }
    if let Some(response) = &route.direct_response
        && !(200..=599).contains(&response.status)
    {
        issues.add(
            &path.field("directResponse").field("status"),
            format!(
                "{} is not an HTTP status between 200 and 599",
                response.status
            ),
        );
    }
    if let Some(cors) = &route.cors_policy {
        let at = path.field("corsPolicy");
        for (i, origin) in cors.allow_origins.iter().enumerate() {
            string_match(origin, &at.field("allowOrigins").index(i), false, issues);
        }
        if let Some(max_age) = &cors.max_age {
            duration_field(max_age, &at.field("maxAge"), issues);
        }
    }
}

/// Weights of a route's destinations: with more than one, they must add up to 100 (Istio's
/// rule); a single destination may leave its weight out.
fn http_destinations(route: &HttpRoute, path: &FieldPath, issues: &mut Issues) {
    let at = path.field("route");
    for (i, dest) in route.route.iter().enumerate() {
        destination(&dest.destination, &at.index(i).field("destination"), issues);
    }
    weights(route.route.iter().map(|d| d.weight), &at, issues);
}

fn route_destinations(route: &[RouteDestination], at: &FieldPath, issues: &mut Issues) {
    if route.is_empty() {
        issues.add(at, "at least one destination is required");
    }
    for (i, dest) in route.iter().enumerate() {
        destination(&dest.destination, &at.index(i).field("destination"), issues);
    }
    weights(route.iter().map(|d| d.weight), at, issues);
}

fn weights(
    weights: impl Iterator<Item = Option<i32>> + Clone,
    at: &FieldPath,
    issues: &mut Issues,
) {
    let mut negative = false;
    for (i, weight) in weights.clone().enumerate() {
        if let Some(w) = weight
            && !(0..=100).contains(&w)
        {
            negative = true;
            issues.add(
                &at.index(i).field("weight"),
                format!("{w} is not between 0 and 100"),
            );
        }
    }
    let count = weights.clone().count();
    if count > 1 && !negative {
        let sum: i64 = weights.clone().map(|w| i64::from(w.unwrap_or(0))).sum();
        if sum != 100 {
            // Point at the last destination's weight: the one a user usually edits last.
            let last = count - 1;
            issues.add(
                &at.index(last).field("weight"),
                format!("the weights of the {count} destinations sum to {sum}, not 100"),
            );
        }
    }
}

fn destination(dest: &Destination, at: &FieldPath, issues: &mut Issues) {
    if dest.host.is_empty() {
        issues.add(&at.field("host"), "required");
    }
    if let Some(subset) = &dest.subset
        && subset.is_empty()
    {
        issues.add(&at.field("subset"), "must not be empty when set");
    }
    if let Some(p) = &dest.port {
        port(Some(p.number), &at.field("port").field("number"), issues);
    }
}

/// How a field weft reads but does not act on is warned about.
const IGNORED: &str = "accepted but not supported by weft: ignored";

/// Root rules whose `delegate` cannot be used (istioctl's IST0101 ReferencedResourceNotFound
/// for a missing one): the rule matches nothing, as pilot drops it, and the following
/// rules are tried.
pub fn delegate_warnings(
    virtual_services: &[&Arc<VirtualService>],
    export_default: &[String],
) -> BTreeMap<ObjectRef, Vec<Refusal>> {
    let delegates = Delegates::new(virtual_services.iter().copied(), export_default);
    let mut warnings: BTreeMap<ObjectRef, Vec<Refusal>> = BTreeMap::new();
    for vs in virtual_services {
        let namespace = vs
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let object = ObjectRef::new(
            Kind::VirtualService,
            namespace,
            vs.metadata.name.as_deref().unwrap_or_default(),
        );
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let Some(delegate) = &rule.delegate else {
                continue;
            };
            if let Err(unusable) = delegates.find(delegate, namespace) {
                let target = delegate
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(namespace);
                warnings
                    .entry(object.clone())
                    .or_default()
                    .push(Refusal::new(
                        object.clone(),
                        format!("spec.http[{i}].delegate"),
                        format!(
                            "VirtualService {target}/{} {unusable}: the rule matches nothing",
                            delegate.name
                        ),
                    ));
            }
        }
    }
    warnings
}

/// VirtualService fields weft accepts and does not act on (Istio's
/// `retryRemoteLocalities`, `exponentialDelay`, `http2Error`).
pub(super) fn virtual_service_ignored(spec: &VirtualServiceSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    for (i, rule) in spec.http.iter().enumerate() {
        let at = root.field("http").index(i);
        for (j, condition) in rule.matches.iter().enumerate() {
            if condition.stat_prefix.is_some() {
                issues.add(
                    &at.field("match").index(j).field("statPrefix"),
                    format!("{IGNORED} (weft's metrics have no per-match stat prefix)"),
                );
            }
        }
        header_values(rule.headers.as_ref(), &at.field("headers"), &mut issues);
        for (j, destination) in rule.route.iter().enumerate() {
            header_values(
                destination.headers.as_ref(),
                &at.field("route").index(j).field("headers"),
                &mut issues,
            );
        }
        if rule
            .retries
            .as_ref()
            .is_some_and(|r| r.retry_remote_localities.is_some())
        {
            issues.add(&at.field("retries").field("retryRemoteLocalities"), IGNORED);
        }
        if let Some(fault) = &rule.fault {
            if fault
                .delay
                .as_ref()
                .is_some_and(|d| d.exponential_delay.is_some())
            {
                issues.add(
                    &at.field("fault").field("delay").field("exponentialDelay"),
                    format!(
                        "{IGNORED} (no delay is injected by it); Istio does not implement it \
                         either: its validation refuses it (\"exponentialDelay not supported yet\")"
                    ),
                );
            }
            if fault
                .abort
                .as_ref()
                .is_some_and(|a| a.http2_error.is_some())
            {
                issues.add(
                    &at.field("fault").field("abort").field("http2Error"),
                    format!(
                        "{IGNORED} (no abort is injected by it); Istio does not implement it \
                         either: its validation refuses it (\"HTTP/2 abort fault injection not \
                         supported yet\")"
                    ),
                );
            }
        }
    }
    issues.into_vec()
}

/// `headers` values with Envoy variables weft does not evaluate (`header_format`): the
/// waypoint skips those operations. `:authority`/`host` values are a host rewrite, taken
/// literally.
fn header_values(headers: Option<&Headers>, at: &FieldPath, issues: &mut Issues) {
    let Some(headers) = headers else { return };
    for (side, ops, name) in [
        (Side::Request, headers.request.as_ref(), "request"),
        (Side::Response, headers.response.as_ref(), "response"),
    ] {
        let Some(ops) = ops else { continue };
        for (field, values) in [("set", &ops.set), ("add", &ops.add)] {
            for (header, value) in values {
                if header.eq_ignore_ascii_case(":authority") || header.eq_ignore_ascii_case("host")
                {
                    continue;
                }
                if let Err(error) = header_format::parse(value, side) {
                    issues.add(&at.field(name).field(field).key(header), error.to_string());
                }
            }
        }
    }
}

/// DestinationRule fields weft accepts and does not act on:
/// slow start with a policy other than ROUND_ROBIN or LEAST_REQUEST, locality failover
/// without outlier detection, `tunnel`, `proxyProtocol`, `retryBudget` and
/// `workloadSelector` (a rule applies to every client's
/// traffic through the waypoint).
pub(super) fn destination_rule_ignored(spec: &DestinationRuleSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if spec.workload_selector.is_some() {
        issues.add(
            &root.field("workloadSelector"),
            format!("{IGNORED} (the rule applies whichever workload sends)"),
        );
    }
    let mut levels: Vec<(FieldPath, Option<&LoadBalancerSettings>)> = Vec::new();
    let mut policies: Vec<(FieldPath, &TrafficPolicy)> = Vec::new();
    if let Some(policy) = &spec.traffic_policy {
        policies.push((root.field("trafficPolicy"), policy));
    }
    for (i, subset) in spec.subsets.iter().enumerate() {
        if let Some(policy) = &subset.traffic_policy {
            policies.push((
                root.field("subsets").index(i).field("trafficPolicy"),
                policy,
            ));
        }
    }
    for (at, policy) in policies {
        if policy.tunnel.is_some() {
            issues.add(
                &at.field("tunnel"),
                format!("{IGNORED} (connections are not tunnelled through a proxy)"),
            );
        }
        if policy.proxy_protocol.is_some() {
            issues.add(
                &at.field("proxyProtocol"),
                format!("{IGNORED} (no PROXY protocol header is sent upstream)"),
            );
        }
        if policy.retry_budget.is_some() {
            issues.add(
                &at.field("retryBudget"),
                format!("{IGNORED} (retries are bounded by each route's attempts only)"),
            );
        }
        levels.push((at.clone(), policy.load_balancer.as_ref()));
        for (i, level) in policy.port_level_settings.iter().enumerate() {
            levels.push((
                at.field("portLevelSettings").index(i),
                level.load_balancer.as_ref(),
            ));
        }
    }
    let outlier_detection = spec
        .traffic_policy
        .iter()
        .chain(
            spec.subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref()),
        )
        .any(|p| {
            p.outlier_detection.is_some()
                || p.port_level_settings
                    .iter()
                    .any(|l| l.outlier_detection.is_some())
        });
    for (at, balancer) in levels {
        if let Some(lb) = balancer {
            // Envoy's slow start exists for these two only.
            let weighted = lb.consistent_hash.is_none()
                && matches!(
                    lb.simple.unwrap_or_default(),
                    SimpleLb::Unspecified
                        | SimpleLb::RoundRobin
                        | SimpleLb::LeastRequest
                        | SimpleLb::LeastConn
                );
            if lb.warmup_duration_secs.is_some() && !weighted {
                issues.add(
                    &at.field("loadBalancer").field("warmupDurationSecs"),
                    "ignored: slow start applies to ROUND_ROBIN and LEAST_REQUEST only, as \
                     in Envoy",
                );
            }
            if let Some(locality) = &lb.locality_lb_setting
                && locality.enabled != Some(false)
                && locality.distribute.is_empty()
                && !outlier_detection
            {
                issues.add(
                    &at.field("loadBalancer").field("localityLbSetting"),
                    "ignored without outlierDetection, as in Istio (failover needs it): no \
                     locality is preferred, traffic is spread over every locality",
                );
            }
        }
    }
    issues.into_vec()
}

/// Envoy's bound on a Maglev table, which must be prime.
const MAGLEV_MAX_TABLE_SIZE: u64 = 5_000_011;

/// `ringHash` and `maglev` are a oneof; a Maglev table size must be a prime below 5000011
/// (Envoy refuses the cluster otherwise).
fn consistent_hash_algorithm(hash: &ConsistentHashLb, at: &FieldPath, issues: &mut Issues) {
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        issues.add(at, "only one of ringHash or maglev may be set");
    }
    if let Some(size) = hash.maglev.as_ref().and_then(|m| m.table_size)
        && size != 0
        && (size >= MAGLEV_MAX_TABLE_SIZE || !is_prime(size))
    {
        issues.add(
            &at.field("maglev").field("tableSize"),
            format!("{size} is not a prime number below {MAGLEV_MAX_TABLE_SIZE}"),
        );
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Destination hosts that resolve to nothing `is_known` recognises.
pub(super) fn unresolved_destinations(
    spec: &VirtualServiceSpec,
    is_known: impl Fn(&str) -> bool,
) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let mut check = |host: &str, at: FieldPath| {
        if !host.is_empty() && !host.starts_with('*') && !is_known(host) {
            issues.add(
                &at,
                format!("{host:?} names no known Service or ServiceEntry host"),
            );
        }
    };
    let root = FieldPath::spec();
    for (i, route) in spec.http.iter().enumerate() {
        let at = root.field("http").index(i);
        for (j, d) in route.route.iter().enumerate() {
            check(
                &d.destination.host,
                at.field("route")
                    .index(j)
                    .field("destination")
                    .field("host"),
            );
        }
        if let Some(mirror) = &route.mirror {
            check(&mirror.host, at.field("mirror").field("host"));
        }
    }
    for (field, routes) in [
        ("tcp", spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tls", spec.tls.iter().map(|r| &r.route).collect::<Vec<_>>()),
    ] {
        for (i, route) in routes.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                check(
                    &d.destination.host,
                    root.field(field)
                        .index(i)
                        .field("route")
                        .index(j)
                        .field("destination")
                        .field("host"),
                );
            }
        }
    }
    issues.into_vec()
}

fn string_match(matcher: &StringMatch, at: &FieldPath, empty_allowed: bool, issues: &mut Issues) {
    let set = [&matcher.exact, &matcher.prefix, &matcher.regex]
        .into_iter()
        .filter(|m| m.is_some())
        .count();
    if set > 1 {
        issues.add(at, "only one of exact, prefix or regex may be set");
    } else if set == 0 && !empty_allowed {
        issues.add(at, "one of exact, prefix or regex is required");
    }
    if let Some(pattern) = &matcher.regex {
        regex(pattern, &at.field("regex"), issues);
    }
}

/// Istio's regexes are RE2, which the `regex` crate implements (no backreferences or
/// look-around, linear-time matching).
fn regex(pattern: &str, at: &FieldPath, issues: &mut Issues) {
    if let Err(error) = regex::Regex::new(pattern) {
        issues.add(
            at,
            format!(
                "invalid regular expression: {}",
                one_line(&error.to_string())
            ),
        );
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Istio's checks of a `localityLbSetting` (also the mesh config's).
pub(crate) fn locality_lb_setting(
    setting: &LocalityLbSetting,
    at: &FieldPath,
    issues: &mut Issues,
) {
    if !setting.distribute.is_empty() && !setting.failover.is_empty() {
        issues.add(
            at,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
    }
    if !setting.distribute.is_empty() && !setting.failover_priority.is_empty() {
        issues.add(
            at,
            "can not simultaneously specify 'distribute' and 'failoverPriority'",
        );
    }
    for (i, rule) in setting.distribute.iter().enumerate() {
        let d = at.field("distribute").index(i);
        locality_pattern(&rule.from, &d.field("from"), issues);
        let mut total: u64 = 0;
        for (to, weight) in &rule.to {
            locality_pattern(to, &d.field("to"), issues);
            total += u64::from(*weight);
        }
        if total != 100 {
            issues.add(
                &d.field("to"),
                format!("total destination weight {total} != 100"),
            );
        }
    }
    for (i, rule) in setting.failover.iter().enumerate() {
        let f = at.field("failover").index(i);
        if rule.from == rule.to {
            issues.add(
                &f,
                "locality lb failover settings must specify different regions",
            );
        }
        for (name, region) in [("from", &rule.from), ("to", &rule.to)] {
            if region.is_empty() || region.contains('/') || region.contains('*') {
                issues.add(
                    &f.field(name),
                    "locality lb failover only specifies a region",
                );
            }
        }
    }
    for (i, label) in setting.failover_priority.iter().enumerate() {
        if label.is_empty() || label.starts_with('=') {
            issues.add(
                &at.field("failoverPriority").index(i),
                "a label key is required",
            );
        }
    }
}

/// `region/zone/subzone`, each part optional from the right; `*` only as a whole last part.
fn locality_pattern(text: &str, at: &FieldPath, issues: &mut Issues) {
    let parts: Vec<&str> = text.split('/').collect();
    let bad = text.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .enumerate()
            .any(|(i, p)| p.is_empty() || (p.contains('*') && (*p != "*" || i + 1 != parts.len())));
    if bad {
        issues.add(
            at,
            format!("{text:?}: a locality is region/zone/subzone, with * only as its last part"),
        );
    }
}

fn duration_field(text: &str, at: &FieldPath, issues: &mut Issues) {
    match duration::parse(text) {
        Ok(d) if d.is_zero() => {}
        Ok(d) if d < std::time::Duration::from_millis(1) => issues.add(
            at,
            format!("{text:?} is shorter than Istio's minimum of 1ms"),
        ),
        Ok(_) => {}
        Err(error) => issues.add(at, error.to_string()),
    }
}

fn percentage(percent: Option<&Percent>, at: &FieldPath, issues: &mut Issues) {
    if let Some(p) = percent
        && !(0.0..=100.0).contains(&p.value)
    {
        issues.add(
            &at.field("value"),
            format!("{} is not between 0 and 100", p.value),
        );
    }
}

fn percent_int(value: i64, at: &FieldPath, issues: &mut Issues) {
    if !(0..=100).contains(&value) {
        issues.add(at, format!("{value} is not between 0 and 100"));
    }
}

fn port(number: Option<u32>, at: &FieldPath, issues: &mut Issues) {
    if let Some(n) = number
        && !(1..=65535).contains(&n)
    {
        issues.add(at, format!("{n} is not a port number (1–65535)"));
    }
}

fn subnets(subnets: &[String], at: &FieldPath, issues: &mut Issues) {
    for (i, subnet) in subnets.iter().enumerate() {
        if let Err(reason) = cidr::parse(subnet) {
            issues.add(&at.index(i), reason);
        }
    }
}

pub(super) fn destination_rule(spec: &DestinationRuleSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if spec.host.is_empty() {
        issues.add(&root.field("host"), "required");
    }
    if let Some(policy) = &spec.traffic_policy {
        traffic_policy(policy, &root.field("trafficPolicy"), &mut issues);
    }
    let mut seen = HashSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = root.field("subsets").index(i);
        if subset.name.is_empty() {
            issues.add(&at.field("name"), "required");
        } else if !seen.insert(subset.name.as_str()) {
            issues.add(
                &at.field("name"),
                format!("duplicate subset name {:?}", subset.name),
            );
        }
        if subset.labels.is_empty() {
            issues.add(
                &at.field("labels"),
                "a subset needs labels to select its endpoints",
            );
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(policy, &at.field("trafficPolicy"), &mut issues);
        }
    }
    issues.into_vec()
}

fn traffic_policy(policy: &TrafficPolicy, at: &FieldPath, issues: &mut Issues) {
    settings(
        policy.load_balancer.as_ref(),
        policy.connection_pool.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.tls.as_ref(),
        at,
        issues,
    );
    for (i, level) in policy.port_level_settings.iter().enumerate() {
        let p = at.field("portLevelSettings").index(i);
        match &level.port {
            Some(selector) => port(
                Some(selector.number),
                &p.field("port").field("number"),
                issues,
            ),
            None => issues.add(&p.field("port"), "required"),
        }
        settings(
            level.load_balancer.as_ref(),
            level.connection_pool.as_ref(),
            level.outlier_detection.as_ref(),
            level.tls.as_ref(),
            &p,
            issues,
        );
    }
}

fn settings(
    load_balancer: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    at: &FieldPath,
    issues: &mut Issues,
) {
    if let Some(lb) = load_balancer {
        let l = at.field("loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            issues.add(&l, "only one of simple or consistentHash may be set");
        }
        if let Some(warmup) = &lb.warmup_duration_secs {
            duration_field(warmup, &l.field("warmupDurationSecs"), issues);
        }
        if let Some(locality) = &lb.locality_lb_setting {
            locality_lb_setting(locality, &l.field("localityLbSetting"), issues);
        }
        if let Some(cookie) = lb
            .consistent_hash
            .as_ref()
            .and_then(|h| h.http_cookie.as_ref())
            && let Some(ttl) = &cookie.ttl
        {
            duration_field(
                ttl,
                &l.field("consistentHash").field("httpCookie").field("ttl"),
                issues,
            );
        }
        if let Some(hash) = &lb.consistent_hash {
            consistent_hash_algorithm(hash, &l.field("consistentHash"), issues);
        }
    }
    if let Some(pool) = pool {
        let c = at.field("connectionPool");
        if let Some(tcp) = &pool.tcp {
            let t = c.field("tcp");
            for (name, value) in [
                ("connectTimeout", &tcp.connect_timeout),
                ("maxConnectionDuration", &tcp.max_connection_duration),
                ("idleTimeout", &tcp.idle_timeout),
            ] {
                if let Some(value) = value {
                    duration_field(value, &t.field(name), issues);
                }
            }
            non_negative(tcp.max_connections, &t.field("maxConnections"), issues);
            if let Some(keepalive) = &tcp.tcp_keepalive {
                let k = t.field("tcpKeepalive");
                for (name, value) in [("time", &keepalive.time), ("interval", &keepalive.interval)]
                {
                    if let Some(value) = value {
                        duration_field(value, &k.field(name), issues);
                    }
                }
            }
        }
        if let Some(http) = &pool.http {
            let h = c.field("http");
            if let Some(idle) = &http.idle_timeout {
                duration_field(idle, &h.field("idleTimeout"), issues);
            }
            for (name, value) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                non_negative(value, &h.field(name), issues);
            }
            if let Some(policy) = &http.h2_upgrade_policy
                && !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&policy.as_str())
            {
                issues.add(
                    &h.field("h2UpgradePolicy"),
                    format!("{policy:?} is not DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
                );
            }
        }
    }
    if let Some(outlier) = outlier {
        let o = at.field("outlierDetection");
        for (name, value) in [
            ("interval", &outlier.interval),
            ("baseEjectionTime", &outlier.base_ejection_time),
        ] {
            if let Some(value) = value {
                duration_field(value, &o.field(name), issues);
            }
        }
        for (name, value) in [
            ("maxEjectionPercent", outlier.max_ejection_percent),
            ("minHealthPercent", outlier.min_health_percent),
        ] {
            if let Some(value) = value {
                percent_int(i64::from(value), &o.field(name), issues);
            }
        }
    }
    if let Some(tls) = tls {
        client_tls(tls, &at.field("tls"), issues);
    }
}

/// A DestinationRule's `tls`, as istiod's `validateTLS` judges it: MUTUAL needs a client
/// certificate (files or `credentialName`), files come in pairs, `credentialName` replaces
/// the files, and ISTIO_MUTUAL (the mesh's own certificates) takes none of them.
fn client_tls(tls: &ClientTlsSettings, t: &FieldPath, issues: &mut Issues) {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    let (cert, key, ca, credential) = (
        set(&tls.client_certificate),
        set(&tls.private_key),
        set(&tls.ca_certificates),
        set(&tls.credential_name),
    );
    match tls.mode.unwrap_or_default() {
        ClientTlsMode::IstioMutual => {
            for (name, present) in [
                ("clientCertificate", cert),
                ("privateKey", key),
                ("caCertificates", ca),
                ("credentialName", credential),
            ] {
                if present {
                    issues.add(
                        &t.field(name),
                        "ISTIO_MUTUAL uses the mesh's own certificates: leave it unset",
                    );
                }
            }
            return;
        }
        ClientTlsMode::Mutual if !(credential || (cert && key)) => {
            issues.add(
                t,
                "MUTUAL needs clientCertificate and privateKey, or credentialName",
            );
        }
        _ => {}
    }
    if credential {
        for (name, present) in [
            ("clientCertificate", cert),
            ("privateKey", key),
            ("caCertificates", ca),
        ] {
            if present {
                issues.add(
                    &t.field(name),
                    "credentialName is set: the certificates come from its Secret",
                );
            }
        }
    } else if cert != key && tls.mode == Some(ClientTlsMode::Mutual) {
        let missing = if cert {
            "privateKey"
        } else {
            "clientCertificate"
        };
        issues.add(
            &t.field(missing),
            "clientCertificate and privateKey go together",
        );
    }
}

/// What a waypoint does not do with a DestinationRule's `tls` as written: a
/// `credentialName` is used only if the waypoint's registry holds that Secret, and waypoints
/// read no Secrets (requests fail 503; `caCertificates` files mounted into the waypoint
/// work); `insecureSkipVerify` drops the checks `caCertificates` and `subjectAltNames` ask
/// for.
pub(super) fn destination_rule_tls_warnings(spec: &DestinationRuleSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    let mut levels: Vec<(FieldPath, &TrafficPolicy)> = Vec::new();
    if let Some(policy) = &spec.traffic_policy {
        levels.push((root.field("trafficPolicy"), policy));
    }
    for (i, subset) in spec.subsets.iter().enumerate() {
        if let Some(policy) = &subset.traffic_policy {
            levels.push((
                root.field("subsets").index(i).field("trafficPolicy"),
                policy,
            ));
        }
    }
    for (at, policy) in levels {
        let mut all = vec![(at.field("tls"), policy.tls.as_ref())];
        for (i, level) in policy.port_level_settings.iter().enumerate() {
            all.push((
                at.field("portLevelSettings").index(i).field("tls"),
                level.tls.as_ref(),
            ));
        }
        for (t, tls) in all {
            let Some(tls) = tls else { continue };
            if tls
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty())
            {
                issues.add(
                    &t.field("credentialName"),
                    "waypoints do not read Secrets: requests a waypoint sends to this host \
                     fail with 503; use caCertificates (and clientCertificate/privateKey), \
                     files mounted into the waypoint",
                );
            }
            if tls.insecure_skip_verify == Some(true)
                && (tls.ca_certificates.is_some() || !tls.subject_alt_names.is_empty())
            {
                issues.add(
                    &t.field("insecureSkipVerify"),
                    "the server is not verified: caCertificates and subjectAltNames are ignored",
                );
            }
        }
    }
    issues.into_vec()
}

fn non_negative(value: Option<i32>, at: &FieldPath, issues: &mut Issues) {
    if let Some(v) = value
        && v < 0
    {
        issues.add(at, format!("{v} is negative"));
    }
}

/// A ServiceEntry, as istiod's `ValidateServiceEntry` judges it: hosts that are names
/// (a DNS-resolved entry without endpoints must name hosts it can resolve: no wildcards),
/// addresses that parse (CIDR blocks only for NONE and STATIC resolution), ports numbered
/// and named once each, endpoints only where the resolution uses them and addressed as it
/// needs (IPs for STATIC, IPs or names for DNS, one at most for DNS_ROUND_ROBIN) with ports
/// the entry names, several hosts only on HTTP or TLS ports unless resolution is NONE (a TCP
/// connection cannot tell them apart), and `exportTo` values.
/// ServiceEntry endpoint fields weft accepts and does not act on.
pub(super) fn service_entry_ignored(spec: &ServiceEntrySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let at = root.field("endpoints").index(i);
        if endpoint.network.is_some() {
            issues.add(
                &at.field("network"),
                format!("{IGNORED} (weft has one network: the endpoint is reached directly)"),
            );
        }
        if endpoint.locality.is_some() {
            issues.add(
                &at.field("locality"),
                format!("{IGNORED} (ServiceEntry endpoints have no locality in weft's balancing)"),
            );
        }
        if endpoint.weight.is_some() {
            issues.add(
                &at.field("weight"),
                format!("{IGNORED} (the endpoints are balanced evenly)"),
            );
        }
    }
    issues.into_vec()
}

pub(super) fn service_entry(spec: &ServiceEntrySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    let resolution = spec.resolution.unwrap_or_default();
    if spec.hosts.is_empty() {
        issues.add(&root.field("hosts"), "at least one host is required");
    }
    let dns = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    for (i, host) in spec.hosts.iter().enumerate() {
        let at = root.field("hosts").index(i);
        if host.is_empty() || host == "*" {
            issues.add(
                &at,
                "a ServiceEntry host must be a name, not empty or \"*\"",
            );
        } else if let Err(reason) = hostname(host, true) {
            issues.add(&at, reason);
        } else if dns && spec.endpoints.is_empty() && host.starts_with('*') {
            issues.add(
                &at,
                format!(
                    "resolution {} without endpoints resolves the hosts themselves: a wildcard \
                     cannot be resolved",
                    resolution_name(resolution)
                ),
            );
        }
    }
    for (i, address) in spec.addresses.iter().enumerate() {
        let at = root.field("addresses").index(i);
        match cidr::parse(address) {
            Err(reason) => issues.add(&at, reason),
            Ok(_)
                if address.contains('/')
                    && !matches!(resolution, Resolution::None | Resolution::Static) =>
            {
                issues.add(
                    &at,
                    "CIDR blocks are allowed only with resolution NONE or STATIC",
                );
            }
            Ok(_) => {}
        }
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let at = root.field("ports").index(i);
        port(Some(p.number), &at.field("number"), &mut issues);
        port(p.target_port, &at.field("targetPort"), &mut issues);
        if !p.name.is_empty() && !names.insert(p.name.as_str()) {
            issues.add(
                &at.field("name"),
                format!("duplicate port name {:?}", p.name),
            );
        }
        if !numbers.insert(p.number) {
            issues.add(
                &at.field("number"),
                format!("port {} is already defined", p.number),
            );
        }
        if let Some(protocol) = &p.protocol
            && !PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str())
        {
            issues.add(
                &at.field("protocol"),
                format!("{protocol:?} is not a protocol Istio knows"),
            );
        }
    }
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        issues.add(&root, "endpoints and workloadSelector cannot both be set");
    }
    // Identity fields weft cannot check: refused, never trusted unverified.
    if !spec.subject_alt_names.is_empty() {
        issues.add(
            &root.field("subjectAltNames"),
            "weft does not check the endpoints' certificates against a ServiceEntry's \
             subjectAltNames, so it refuses the entry rather than trust them unverified \
             (to verify an external server, originate TLS at an egress waypoint with a \
             DestinationRule's tls.subjectAltNames)",
        );
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        if endpoint.service_account.is_some() {
            issues.add(
                &root.field("endpoints").index(i).field("serviceAccount"),
                "weft does not check an endpoint's identity against its serviceAccount, so it \
                 refuses the entry rather than trust the endpoint unverified",
            );
        }
    }
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => {
            issues.add(
                &root.field("endpoints"),
                "resolution NONE takes no endpoints (connections go where they were addressed)",
            );
        }
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => {
            issues.add(
                &root.field("endpoints"),
                "resolution DNS_ROUND_ROBIN takes at most one endpoint",
            );
        }
        _ => {}
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let at = root.field("endpoints").index(i);
        match endpoint.address.as_deref() {
            None | Some("") => issues.add(&at.field("address"), "required"),
            Some(address) => {
                let is_ip = address.parse::<std::net::IpAddr>().is_ok();
                if resolution == Resolution::Static && !is_ip {
                    issues.add(
                        &at.field("address"),
                        format!("{address:?} is not an IP address (resolution STATIC)"),
                    );
                } else if !is_ip && hostname(address, false).is_err() {
                    issues.add(
                        &at.field("address"),
                        format!("{address:?} is neither an IP address nor a host name"),
                    );
                }
            }
        }
        for (name, number) in &endpoint.ports {
            port(Some(*number), &at.field("ports").key(name), &mut issues);
            if !names.contains(name.as_str()) {
                issues.add(
                    &at.field("ports").key(name),
                    format!("{name:?} is not the name of a port of this ServiceEntry"),
                );
            }
        }
    }
    if resolution != Resolution::None && spec.hosts.len() > 1 {
        let opaque = spec.ports.iter().position(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_uppercase();
            !matches!(
                protocol.as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTPS" | "TLS"
            )
        });
        if let Some(i) = opaque {
            issues.add(
                &root.field("ports").index(i).field("protocol"),
                "several hosts share a TCP port: a connection cannot tell which host it is for \
                 (use one ServiceEntry per host, HTTP or TLS ports, or resolution NONE)",
            );
        }
    }
    for (i, value) in spec.export_to.iter().enumerate() {
        if value != "." && value != "*" && value != "~" && hostname(value, false).is_err() {
            issues.add(
                &root.field("exportTo").index(i),
                format!("{value:?} is not \".\", \"*\", \"~\" or a namespace"),
            );
        }
    }
    if spec.export_to.len() > 1 && spec.export_to.iter().any(|v| v == "~") {
        issues.add(
            &root.field("exportTo"),
            "\"~\" (exported nowhere) cannot be combined with other values",
        );
    }
    issues.into_vec()
}

/// The protocols Istio's port validation accepts (case-insensitive).
const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "REDIS", "MYSQL", "UDP",
    "HBONE",
];

fn resolution_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
    }
}

/// A DNS name (RFC 1123 labels), with a leading `*.` when `wildcard` allows it.
fn hostname(name: &str, wildcard: bool) -> Result<(), String> {
    let bare = match name.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => name,
    };
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
        return Err(format!("{name:?} is not a valid host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::networking::HttpRouteDestination;

    #[test]
    fn header_values_with_variables_weft_does_not_evaluate_are_warned() {
        let spec: VirtualServiceSpec = serde_yaml::from_str(
            "hosts: [a]\nhttp:\n- headers:\n    request:\n      set: {x-ip: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%', x-c: '%UPSTREAM_CLUSTER%', ':authority': '50%'}\n    response:\n      add: {x-u: '%REQ(x-user)%'}\n  route:\n  - destination: {host: a}\n    headers: {request: {add: {x-p: '5% off'}}}\n",
        )
        .expect("spec");
        let fields: Vec<String> = virtual_service_ignored(&spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.http[0].headers.request.set.x-c",
                "spec.http[0].headers.response.add.x-u",
                "spec.http[0].route[0].headers.request.add.x-p",
            ]
        );
    }

    #[test]
    fn delegates_are_validated_as_istio_does_and_unusable_ones_warned() {
        let spec = |yaml: &str| -> VirtualServiceSpec { serde_yaml::from_str(yaml).expect("spec") };
        let found = |yaml: &str| {
            virtual_service(&spec(yaml))
                .into_iter()
                .map(|i| format!("{}: {}", i.field, i.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found("http: [{route: [{destination: {host: a}}]}]"),
            Vec::<String>::new(),
            "a delegate has no hosts"
        );
        assert_eq!(
            found(
                "gateways: [gw]\ntcp: [{route: [{destination: {host: a}}]}]\nhttp: [{delegate: {name: x}}]"
            ),
            [
                "spec.gateways: delegate virtual service must have no gateways specified",
                "spec.tcp: delegate virtual service must have no tcp route specified",
                "spec.http[0].delegate: delegate HTTP route cannot contain delegate",
            ]
        );
        assert_eq!(
            found("hosts: [a]\nhttp: [{delegate: {name: x}, route: [{destination: {host: a}}]}]"),
            ["spec.http[0].route: root HTTP route must not specify route"]
        );
        assert_eq!(
            found("hosts: [a]"),
            ["spec: http, tcp or tls must be provided in virtual service"]
        );

        let vs = |yaml: &str| -> Arc<VirtualService> {
            Arc::new(serde_yaml::from_str(yaml).expect("VirtualService"))
        };
        let root = vs(
            "metadata: {name: root, namespace: shop}\nspec: {hosts: [a], http: [{delegate: {name: api}}, {delegate: {name: gone, namespace: team}}]}",
        );
        let api = vs(
            "metadata: {name: api, namespace: shop}\nspec: {http: [{route: [{destination: {host: a}}]}]}",
        );
        let warned = delegate_warnings(&[&root, &api], &[]);
        let texts: Vec<String> = warned
            .values()
            .flatten()
            .map(|r| format!("{}: {}", r.field, r.reason))
            .collect();
        assert_eq!(
            texts,
            [
                "spec.http[1].delegate: VirtualService team/gone does not exist: the rule matches nothing"
            ]
        );
    }

    fn rule_issues(yaml: &str) -> (Vec<String>, Vec<String>) {
        let spec: DestinationRuleSpec = serde_yaml::from_str(yaml).expect("spec");
        let show =
            |issues: Vec<FieldIssue>| issues.into_iter().map(|i| i.field).collect::<Vec<String>>();
        (
            show(destination_rule(&spec)),
            show(destination_rule_tls_warnings(&spec)),
        )
    }

    #[test]
    fn locality_settings_are_checked_as_istio_does_and_warned_where_they_do_nothing() {
        let (errors, _) = rule_issues(
            "host: web\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: eu/*, to: {eu/a: 60, 'us/*/x': 30}}]\n      failover: [{from: eu, to: eu}, {from: eu/a, to: us}]\n",
        );
        let at = "spec.trafficPolicy.loadBalancer.localityLbSetting";
        assert_eq!(
            errors,
            [
                at.to_string(),
                format!("{at}.distribute[0].to"),
                format!("{at}.distribute[0].to"),
                format!("{at}.failover[0]"),
                format!("{at}.failover[1].from"),
            ]
        );
        let (errors, _) = rule_issues(
            "host: web\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: eu/a/*, to: {eu/a: 80, eu/*: 20}}]\n",
        );
        assert_eq!(errors, Vec::<String>::new());

        let ignored = |yaml: &str| {
            let spec: DestinationRuleSpec = serde_yaml::from_str(yaml).expect("spec");
            destination_rule_ignored(&spec)
                .into_iter()
                .map(|i| i.field)
                .collect::<Vec<_>>()
        };
        // Failover without outlier detection does nothing in Istio; with it, it works.
        let failover = "host: web\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: {failover: [{from: eu, to: us}]}\n";
        assert_eq!(ignored(failover), [at.to_string()]);
        assert_eq!(
            ignored(&format!(
                "{failover}  outlierDetection: {{consecutive5xxErrors: 1}}\n"
            )),
            Vec::<String>::new()
        );
        // Slow start: ROUND_ROBIN and LEAST_REQUEST (the default) only.
        assert_eq!(
            ignored(
                "host: web\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            ignored(
                "host: web\ntrafficPolicy:\n  loadBalancer: {simple: RANDOM, warmupDurationSecs: 30s}\n"
            ),
            ["spec.trafficPolicy.loadBalancer.warmupDurationSecs"]
        );
    }

    #[test]
    fn impossible_tls_settings_are_refused_by_field() {
        let (errors, _) = rule_issues(
            "host: api.example.com\ntrafficPolicy:\n  tls: {mode: MUTUAL}\n  portLevelSettings:\n  - port: {number: 443}\n    tls: {mode: MUTUAL, clientCertificate: /c.pem}\n  - port: {number: 8443}\n    tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}\n  - port: {number: 9443}\n    tls: {mode: SIMPLE, credentialName: api, caCertificates: /ca.pem}\n",
        );
        assert_eq!(
            errors,
            [
                "spec.trafficPolicy.tls",
                "spec.trafficPolicy.portLevelSettings[0].tls",
                "spec.trafficPolicy.portLevelSettings[0].tls.privateKey",
                "spec.trafficPolicy.portLevelSettings[1].tls.caCertificates",
                "spec.trafficPolicy.portLevelSettings[2].tls.caCertificates",
            ]
        );
        let (errors, warnings) = rule_issues(
            "host: api.example.com\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 443}\n    tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, sni: api.example.com, subjectAltNames: [api.example.com]}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn hash_algorithms_and_keepalive_durations_are_checked() {
        let (errors, _) = rule_issues(
            "host: h\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, ringHash: {}, maglev: {tableSize: 65536}}\n  connectionPool:\n    tcp: {tcpKeepalive: {time: soon, interval: 5s, probes: 3}}\n",
        );
        assert_eq!(
            errors,
            [
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            ]
        );
        for size in ["65537", "251", "5000011"] {
            let (errors, _) = rule_issues(&format!(
                "host: h\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {{useSourceIp: true, maglev: {{tableSize: {size}}}}}\n"
            ));
            assert_eq!(errors.is_empty(), size != "5000011", "{size}: {errors:?}");
        }
    }

    #[test]
    fn credential_names_and_skipped_verification_are_warned_about() {
        let (errors, warnings) = rule_issues(
            "host: api.example.com\ntrafficPolicy:\n  tls: {mode: SIMPLE, credentialName: api-ca}\nsubsets:\n- name: v1\n  labels: {v: \"1\"}\n  trafficPolicy:\n    tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [api.example.com]}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            [
                "spec.trafficPolicy.tls.credentialName",
                "spec.subsets[0].trafficPolicy.tls.insecureSkipVerify",
            ]
        );
    }

    fn dest(host: &str, weight: Option<i32>) -> HttpRouteDestination {
        HttpRouteDestination {
            destination: Destination {
                host: host.into(),
                ..Default::default()
            },
            weight,
            ..Default::default()
        }
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn single_destination_may_omit_weight_but_splits_must_sum_to_100() {
        let mut spec = VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            http: vec![HttpRoute {
                route: vec![dest("reviews", None)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(virtual_service(&spec).is_empty());
        spec.http[0].route = vec![dest("reviews", Some(50)), dest("reviews", Some(40))];
        let issues = virtual_service(&spec);
        assert_eq!(fields(&issues), ["spec.http[0].route[1].weight"]);
        assert!(issues[0].reason.contains("sum to 90"), "{issues:?}");
        spec.http[0].route = vec![dest("reviews", Some(50)), dest("reviews", Some(50))];
        assert!(virtual_service(&spec).is_empty());
    }

    #[test]
    fn regex_and_header_case_are_checked() {
        let mut matcher = crate::api::networking::HttpMatchRequest::default();
        matcher.headers.insert(
            "End-User".into(),
            StringMatch {
                regex: Some("(unclosed".into()),
                ..Default::default()
            },
        );
        let spec = VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            http: vec![HttpRoute {
                matches: vec![matcher],
                route: vec![dest("reviews", None)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let issues = virtual_service(&spec);
        assert_eq!(
            fields(&issues),
            [
                "spec.http[0].match[0].headers.End-User",
                "spec.http[0].match[0].headers.End-User.regex"
            ]
        );
    }

    fn entry(yaml: &str) -> Vec<FieldIssue> {
        let spec: ServiceEntrySpec = serde_yaml::from_str(yaml).expect("a ServiceEntry spec");
        service_entry(&spec)
    }

    #[test]
    fn service_entries_are_judged_as_istio_judges_them() {
        let tutorial = "hosts: [time.jsontest.com]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]\nresolution: DNS\nlocation: MESH_EXTERNAL\n";
        assert!(entry(tutorial).is_empty(), "{:?}", entry(tutorial));
        assert_eq!(
            fields(&entry(
                "hosts: [\"*.example.com\"]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS\n"
            )),
            ["spec.hosts[0]"],
            "a DNS-resolved wildcard without endpoints resolves nothing"
        );
        assert!(
            entry("hosts: [\"*.example.com\"]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: NONE\n").is_empty()
        );
        assert_eq!(
            fields(&entry(
                "hosts: [a.example.com]\naddresses: [10.1.0.0/16]\nports: [{number: 80, name: http}, {number: 80, name: web}]\nresolution: DNS\n"
            )),
            ["spec.addresses[0]", "spec.ports[1].number"]
        );
        assert_eq!(
            fields(&entry(
                "hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: db.example.com, ports: {grpc: 9000}}]\n"
            )),
            ["spec.endpoints[0].address", "spec.endpoints[0].ports.grpc"]
        );
        assert_eq!(
            fields(&entry(
                "hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: NONE\nendpoints: [{address: 10.0.0.1}]\n"
            )),
            ["spec.endpoints"]
        );
        assert_eq!(
            fields(&entry(
                "hosts: [a.example.com, b.example.com]\nports: [{number: 5432, name: pg, protocol: TCP}]\nresolution: DNS\n"
            )),
            ["spec.ports[0].protocol"],
            "two hosts on one TCP port"
        );
        assert_eq!(
            fields(&entry(
                "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nexportTo: [\"~\", \".\"]\n"
            )),
            ["spec.exportTo"]
        );
        assert_eq!(
            fields(&entry(
                "hosts: [\"bad host\"]\nports: [{number: 80, name: http}]\n"
            )),
            ["spec.hosts[0]"]
        );
    }

    #[test]
    fn retry_conditions_and_status_codes() {
        let spec = VirtualServiceSpec {
            hosts: vec!["a".into()],
            http: vec![HttpRoute {
                route: vec![dest("a", None)],
                retries: Some(crate::api::networking::HttpRetry {
                    attempts: 3,
                    per_try_timeout: Some("2s".into()),
                    retry_on: Some("gateway-error,connect-failure,503,bogus".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let issues = virtual_service(&spec);
        assert_eq!(fields(&issues), ["spec.http[0].retries.retryOn"]);
        assert!(issues[0].reason.contains("\"bogus\""));
    }
}
