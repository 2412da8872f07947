//! What a matched HTTP rule asks for.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::cors::CorsPlan;
use super::facts::RequestFacts;
use super::fault::{FaultPlan, PerMillion};
use super::headers::{HeaderOps, HeaderVars};
use super::matcher::MatchedPath;
use super::retry::RetryPolicy;
use super::rewrite::{RedirectPlan, UriRewrite};

/// Where a request (or connection) goes.
#[derive(Clone, Debug)]
pub struct RouteDestination {
    /// Fully qualified: short names were qualified with the VirtualService's namespace.
    pub host: String,
    pub subset: Option<String>,
    /// `None`: the port the client dialed (pilot also picks the service's only port when it
    /// has just one; that is the caller's call, it knows the service).
    pub port: Option<u16>,
    /// The share of traffic; a rule's only destination has 100.
    pub weight: u32,
    pub(crate) request_ops: HeaderOps,
    pub(crate) response_ops: HeaderOps,
    /// From `:authority`/`host` in this destination's `headers.request`.
    pub(crate) authority: Option<HeaderValue>,
    /// A Gateway API backendRef that cannot be used (no such Service, a reference no
    /// ReferenceGrant allows): the requests it takes are answered 500, as the Gateway API
    /// says and pilot configures Envoy (`cluster_not_found_response_code`).
    pub unresolved: bool,
}

impl RouteDestination {
    pub(crate) fn to_service(host: &str) -> Self {
        Self {
            host: host.to_string(),
            subset: None,
            port: None,
            weight: 100,
            request_ops: HeaderOps::default(),
            response_ops: HeaderOps::default(),
            authority: None,
            unresolved: false,
        }
    }
}

/// Envoy's weighted cluster pick: `roll % total`, then the destination whose cumulative
/// range holds it, in order. A lone destination takes everything whatever its weight.
pub(crate) fn pick_weighted(
    destinations: &[RouteDestination],
    roll: u32,
) -> Option<&RouteDestination> {
    if let [only] = destinations {
        return Some(only);
    }
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = u64::from(roll) % total;
    for destination in destinations {
        let weight = u64::from(destination.weight);
        if point < weight {
            return Some(destination);
        }
        point -= weight;
    }
    None
}

#[derive(Clone, Debug)]
pub enum RouteAction {
    /// Weighted destinations; zero-weight ones of a split are already left out, as pilot
    /// does.
    Forward(Vec<RouteDestination>),
    Redirect(RedirectPlan),
    /// Envoy adds `content-type: text/plain` to a local reply with a body when the route
    /// sets none; the route's response headers apply.
    DirectResponse {
        status: StatusCode,
        body: Option<Bytes>,
    },
}

/// `mirror` / `mirrors[]`: a copy of the request, sent without waiting for its answer.
#[derive(Clone, Debug)]
pub struct MirrorPlan {
    pub destination: RouteDestination,
    /// Share of requests mirrored, 0–100 (100 when unset).
    pub percentage: f64,
    pub(crate) share: PerMillion,
}

impl MirrorPlan {
    pub(crate) fn new(destination: RouteDestination, share: PerMillion) -> Self {
        Self {
            destination,
            percentage: share.percent(),
            share,
        }
    }

    /// `roll` is uniform in [0, 100).
    pub fn should_mirror(&self, roll: f64) -> bool {
        self.share.hit(roll)
    }

    /// The authority of the mirrored copy: Envoy appends `-shadow` to the host (before
    /// any port), which is how upstreams tell mirrored traffic apart.
    pub fn shadow_authority(authority: &str) -> String {
        let port_start = if authority.starts_with('[') {
            authority.rfind("]:").map(|i| i + 1)
        } else {
            authority.rfind(':')
        };
        match port_start {
            Some(i) => format!("{}-shadow{}", &authority[..i], &authority[i..]),
            None => format!("{authority}-shadow"),
        }
    }
}

/// The request's new path and authority, where they change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub path_and_query: Option<String>,
    pub authority: Option<HeaderValue>,
}

/// What one HTTP rule (with all its match blocks) asks for.
#[derive(Debug)]
pub(crate) struct RulePlan {
    pub(crate) action: RouteAction,
    /// The rule listed more than one destination: their header operations run before the
    /// route's (see [`HeaderOps::apply_route_and_destination`]).
    pub(crate) weighted: bool,
    pub(crate) uri_rewrite: UriRewrite,
    /// `rewrite.authority`, else `:authority`/`host` in the route's `headers.request`.
    pub(crate) authority: Option<HeaderValue>,
    pub(crate) request_ops: HeaderOps,
    pub(crate) response_ops: HeaderOps,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) fault: Option<FaultPlan>,
    pub(crate) mirrors: Vec<MirrorPlan>,
    pub(crate) cors: Option<CorsPlan>,
}

/// The plan of the matched rule, as seen through the match block that matched (its name
/// and what a prefix rewrite replaces depend on the block).
#[derive(Clone, Debug)]
pub struct HttpRoutePlan {
    pub(crate) name: Option<Box<str>>,
    pub(crate) matched: MatchedPath,
    pub(crate) rule: Arc<RulePlan>,
}

impl HttpRoutePlan {
    /// Istio's default outbound route ("default"): the service, Istio's default retries, no
    /// timeout.
    pub(crate) fn default_route(service_host: &str) -> Self {
        Self {
            name: Some("default".into()),
            matched: MatchedPath::Len(1),
            rule: Arc::new(RulePlan {
                action: RouteAction::Forward(vec![RouteDestination::to_service(service_host)]),
                weighted: false,
                uri_rewrite: UriRewrite::None,
                authority: None,
                request_ops: HeaderOps::default(),
                response_ops: HeaderOps::default(),
                timeout: None,
                retry: RetryPolicy::istio_default(),
                fault: None,
                mirrors: Vec::new(),
                cors: None,
            }),
        }
    }

    /// The rule's name, with the match block's appended after a "." as Istio names Envoy
    /// routes (and access logs show them).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn action(&self) -> &RouteAction {
        &self.rule.action
    }

    /// The destination for a request; `roll` is a uniform random number. `None` for
    /// redirects and direct responses.
    pub fn pick(&self, roll: u32) -> Option<&RouteDestination> {
        match &self.rule.action {
            RouteAction::Forward(destinations) => pick_weighted(destinations, roll),
            _ => None,
        }
    }

    /// For a redirect rule: its status and `Location`.
    pub fn redirect_location(&self, facts: &RequestFacts<'_>) -> Option<(StatusCode, HeaderValue)> {
        match &self.rule.action {
            RouteAction::Redirect(redirect) => Some((
                redirect.status(),
                redirect.location_after(facts, self.matched)?,
            )),
            _ => None,
        }
    }

    /// The path and authority to send upstream. Rewrites apply to forwarded requests only;
    /// a route-level authority wins over the destination's.
    pub fn rewrite(
        &self,
        facts: &RequestFacts<'_>,
        destination: Option<&RouteDestination>,
    ) -> Rewrite {
        if !matches!(self.rule.action, RouteAction::Forward(_)) {
            return Rewrite::default();
        }
        Rewrite {
            path_and_query: self
                .rule
                .uri_rewrite
                .apply(self.matched, facts.path_and_query()),
            authority: self
                .rule
                .authority
                .clone()
                .or_else(|| destination.and_then(|d| d.authority.clone())),
        }
    }

    /// `headers.request` of the route and of `destination`, in Envoy's order.
    pub fn apply_request_headers(
        &self,
        destination: &RouteDestination,
        headers: &mut HeaderMap,
        vars: &HeaderVars,
    ) {
        HeaderOps::apply_route_and_destination(
            &self.rule.request_ops,
            Some(&destination.request_ops),
            self.rule.weighted,
            headers,
            vars,
        );
    }

    /// `headers.response` of the route and, when the response came from one, of
    /// `destination`. Also for redirects and direct responses (with `None`).
    pub fn apply_response_headers(
        &self,
        destination: Option<&RouteDestination>,
        headers: &mut HeaderMap,
        vars: &HeaderVars,
    ) {
        HeaderOps::apply_route_and_destination(
            &self.rule.response_ops,
            destination.map(|d| &d.response_ops),
            self.rule.weighted,
            headers,
            vars,
        );
    }

    /// The route's `timeout`; `None` (Istio's default for HTTP) means none. Use
    /// [`HttpRoutePlan::effective_timeout`] to account for gRPC.
    pub fn timeout(&self) -> Option<Duration> {
        self.rule.timeout
    }

    /// The timeout Envoy applies to this request. pilot always sets `max_grpc_timeout` to
    /// the route's timeout, so a gRPC request (content-type `application/grpc*`) is bounded
    /// by its own `grpc-timeout` header, capped by the route's timeout; a gRPC request
    /// without the header gets the route's timeout.
    pub fn effective_timeout(&self, request_headers: &HeaderMap) -> Option<Duration> {
        let route = self.rule.timeout;
        if !is_grpc(request_headers) {
            return route;
        }
        let requested = request_headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .filter(|t| !t.is_zero());
        match (requested, route) {
            (Some(requested), Some(max)) => Some(requested.min(max)),
            (requested, max) => requested.or(max),
        }
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.rule.retry
    }

    pub fn fault(&self) -> Option<&FaultPlan> {
        self.rule.fault.as_ref()
    }

    pub fn mirrors(&self) -> &[MirrorPlan] {
        &self.rule.mirrors
    }

    pub fn cors(&self) -> Option<&CorsPlan> {
        self.rule.cors.as_ref()
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

/// gRPC's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n), rounded up to a
/// millisecond as Envoy does.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let exact = match value.as_bytes().last()? {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    };
    let millis = exact.as_nanos().div_ceil(1_000_000);
    Some(Duration::from_millis(u64::try_from(millis).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(host: &str, weight: u32) -> RouteDestination {
        RouteDestination {
            weight,
            ..RouteDestination::to_service(host)
        }
    }

    #[test]
    fn weighted_picks_follow_cumulative_ranges() {
        let split = [
            destination("a", 80),
            destination("b", 0),
            destination("c", 20),
        ];
        let picked = |roll| pick_weighted(&split, roll).map(|d| d.host.as_str());
        assert_eq!(picked(0), Some("a"));
        assert_eq!(picked(79), Some("a"));
        assert_eq!(picked(80), Some("c"));
        assert_eq!(picked(199), Some("c"));
        assert_eq!(picked(100), Some("a"));
        assert_eq!(picked(180), Some("c"));
        assert!(pick_weighted(&[destination("a", 0), destination("b", 0)], 5).is_none());
        assert_eq!(
            pick_weighted(&[destination("solo", 0)], 5).map(|d| d.weight),
            Some(0)
        );
    }

    #[test]
    fn shadow_hosts() {
        assert_eq!(MirrorPlan::shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(
            MirrorPlan::shadow_authority("reviews:9080"),
            "reviews-shadow:9080"
        );
        assert_eq!(MirrorPlan::shadow_authority("[::1]:80"), "[::1]-shadow:80");
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/grpc-web"),
        );
        assert!(!is_grpc(&headers));
    }
}
