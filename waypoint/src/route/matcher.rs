//! `HTTPMatchRequest` as Envoy evaluates the route match pilot generates from it.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};

use http::{HeaderMap, HeaderName};
use regex::bytes::Regex;
use weft_config::api::common::StringMatch;
use weft_config::api::networking::HttpMatchRequest;

use super::facts::{RequestFacts, Source};

/// Logs a configuration problem once per process rather than once per compilation: routes
/// are recompiled on every snapshot, and a bad regex would otherwise repeat forever.
pub(crate) fn warn_once(message: String) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = weft_core::sync::lock(SEEN.get_or_init(Default::default));
    // Bounded, so configuration churn cannot grow it without limit.
    if seen.len() >= 4096 {
        seen.clear();
    }
    if seen.insert(message.clone()) {
        tracing::warn!("{message}");
    }
}

/// Istio's regexes are RE2 and Envoy runs them with full-match semantics (`safe_regex`):
/// `regex: "\d+"` matches "123" but not "a123". The `regex` crate implements RE2's syntax;
/// one difference remains: `\d`, `\w`, `\s` are Unicode-aware here and ASCII in RE2, which
/// only matters for non-ASCII input.
pub(crate) fn full_match_regex(pattern: &str, at: &str) -> Option<Regex> {
    // Checked alone first: wrapping it could balance a stray parenthesis.
    let anchored = Regex::new(pattern).and_then(|_| Regex::new(&format!("^(?:{pattern})$")));
    match anchored {
        Ok(regex) => Some(regex),
        Err(error) => {
            warn_once(format!(
                "{at}: regex {pattern:?} does not compile, so it never matches: {}",
                one_line(&error.to_string())
            ));
            None
        }
    }
}

pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Envoy's `StringMatcher`. Exact and prefix are case-sensitive.
#[derive(Clone, Debug)]
pub(crate) enum StrMatch {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
    /// A regex that did not compile.
    Never,
}

impl StrMatch {
    /// `None` for a StringMatch with nothing set. Validation allows only one field; should
    /// several be set anyway, the first of exact, prefix, regex counts.
    pub(crate) fn compile(m: &StringMatch, at: &str) -> Option<Self> {
        if let Some(exact) = &m.exact {
            Some(Self::Exact(exact.as_bytes().into()))
        } else if let Some(prefix) = &m.prefix {
            Some(Self::Prefix(prefix.as_bytes().into()))
        } else {
            m.regex
                .as_deref()
                .map(|pattern| full_match_regex(pattern, at).map_or(Self::Never, Self::Regex))
        }
    }

    pub(crate) fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(exact) => value == &**exact,
            Self::Prefix(prefix) => value.starts_with(prefix),
            Self::Regex(regex) => regex.is_match(value),
            Self::Never => false,
        }
    }
}

/// A header or query parameter condition.
#[derive(Clone, Debug)]
pub(crate) enum Condition {
    /// Envoy's `present_match`: any value, even empty.
    Present,
    Value(StrMatch),
}

impl Condition {
    pub(crate) fn compile(m: &StringMatch, at: &str) -> Self {
        // Istio turns an empty StringMatch into a presence test, and also `regex: "*"`,
        // which is not a valid RE2 pattern but what users write for "anything"
        // (istio/istio#20629).
        if m.exact.is_none() && m.prefix.is_none() && m.regex.as_deref() == Some("*") {
            return Self::Present;
        }
        StrMatch::compile(m, at).map_or(Self::Present, Self::Value)
    }
}

/// Where a header condition reads its value.
#[derive(Clone, Debug)]
pub(crate) enum Field {
    Method,
    Authority,
    Scheme,
    Path,
    Header(HeaderName),
    /// `@request.auth.claims.<name>[.<nested>]` (or `[<name>]`): a claim of the verified
    /// JWT, matched as Istio's generated metadata matcher does — a string claim, or any
    /// string of a list claim. Without a verified token the claim is absent.
    Claim(Box<[String]>),
    /// A name no request can carry: not a valid header name, or a malformed claim path.
    Absent,
}

impl Field {
    pub(crate) fn compile(name: &str, at: &str) -> Self {
        match name {
            ":method" => return Self::Method,
            ":authority" => return Self::Authority,
            ":scheme" => return Self::Scheme,
            ":path" => return Self::Path,
            _ => {}
        }
        if name.starts_with("@request.auth.claims") {
            return match weft_config::authn::route_claim_path(name) {
                Some(path) => Self::Claim(path.into()),
                None => {
                    warn_once(format!(
                        "{at}: {name:?} is not a claim path (@request.auth.claims.<name>[.<nested>]); it is treated as absent"
                    ));
                    Self::Absent
                }
            };
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => Self::Header(header),
            Err(_) => {
                warn_once(format!(
                    "{at}: {name:?} is not a valid header name; it is treated as absent"
                ));
                Self::Absent
            }
        }
    }

    fn value<'f>(&self, facts: &RequestFacts<'f>) -> Option<Cow<'f, [u8]>> {
        match self {
            Self::Method => Some(Cow::Borrowed(facts.method.as_str().as_bytes())),
            Self::Authority => Some(Cow::Borrowed(facts.authority.as_bytes())),
            Self::Scheme => Some(Cow::Borrowed(facts.scheme().as_bytes())),
            Self::Path => Some(Cow::Borrowed(facts.path_and_query().as_bytes())),
            Self::Header(name) => joined_values(facts.headers, name),
            // Claims can hold several values; `HeaderCheck::passes` reads them.
            Self::Claim(_) | Self::Absent => None,
        }
    }
}

/// All values of a header as Envoy matches them: joined with ",". Allocates only when the
/// header is repeated.
pub(crate) fn joined_values<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Option<Cow<'h, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(joined))
}

#[derive(Clone, Debug)]
struct HeaderCheck {
    field: Field,
    condition: Condition,
    /// From `withoutHeaders`: pilot sets Envoy's `invert_match`, and for value matches
    /// also `treat_missing_header_as_empty`, so a missing header is "" and passes unless
    /// the condition matches "" (`prefix: ""` never passes, for instance).
    invert: bool,
}

impl HeaderCheck {
    fn passes(&self, facts: &RequestFacts<'_>) -> bool {
        if let Field::Claim(path) = &self.field {
            return self.claim_passes(facts, path);
        }
        let value = self.field.value(facts);
        match (&self.condition, self.invert) {
            (Condition::Present, false) => value.is_some(),
            (Condition::Present, true) => value.is_none(),
            (Condition::Value(m), false) => value.is_some_and(|v| m.matches(&v)),
            (Condition::Value(m), true) => !m.matches(value.as_deref().unwrap_or_default()),
        }
    }
}

impl HeaderCheck {
    /// A claim matches when any of its strings does; `withoutHeaders` inverts that, and
    /// an absent claim then passes (Envoy's inverted metadata matcher).
    fn claim_passes(&self, facts: &RequestFacts<'_>, path: &[String]) -> bool {
        let values = facts
            .auth
            .map(|auth| auth.claim_strings(path))
            .unwrap_or_default();
        let matched = match &self.condition {
            Condition::Present => facts.auth.and_then(|auth| auth.claim(path)).is_some(),
            Condition::Value(m) => values.iter().any(|v| m.matches(v.as_bytes())),
        };
        matched != self.invert
    }
}

#[derive(Clone, Debug)]
struct QueryCheck {
    name: Box<str>,
    condition: Condition,
}

impl QueryCheck {
    fn passes(&self, query: Option<&str>) -> bool {
        let value = query.and_then(|q| first_query_value(q, &self.name));
        match (&self.condition, value) {
            (Condition::Present, value) => value.is_some(),
            (Condition::Value(m), Some(value)) => m.matches(value.as_bytes()),
            (Condition::Value(_), None) => false,
        }
    }
}

/// The first value of `name` in a query string, as Envoy's route matcher reads it: split on
/// `&` and the first `=`, not percent-decoded (`parseQueryString`); `?key` has the value "".
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The path half of a route match. Envoy compares paths without their query.
#[derive(Clone, Debug)]
pub(crate) enum UriMatch {
    Exact {
        value: Box<str>,
        ignore_case: bool,
    },
    Prefix {
        value: Box<str>,
        ignore_case: bool,
    },
    /// `ignoreUriCase` does not apply to regexes (Envoy ignores `case_sensitive` for
    /// `safe_regex`); use `(?i)`.
    Regex(Regex),
    /// Envoy's `path_separated_prefix`, which pilot emits for a Gateway API `PathPrefix`
    /// other than `/`: the path is the prefix, or continues it with `/` (`/foo` matches
    /// `/foo` and `/foo/bar`, not `/foobar`). The prefix has no trailing `/`.
    SeparatedPrefix(Box<str>),
    Never,
}

impl UriMatch {
    /// Without a `uri` match pilot still emits `prefix: "/"`, which a rewrite replaces.
    pub(crate) fn any() -> Self {
        Self::Prefix {
            value: "/".into(),
            ignore_case: false,
        }
    }

    fn compile(m: Option<&StringMatch>, ignore_case: bool, at: &str) -> Self {
        let Some(m) = m else {
            return Self::any();
        };
        if let Some(exact) = &m.exact {
            Self::Exact {
                value: exact.as_str().into(),
                ignore_case,
            }
        } else if let Some(prefix) = &m.prefix {
            Self::Prefix {
                value: prefix.as_str().into(),
                ignore_case,
            }
        } else if let Some(pattern) = &m.regex {
            full_match_regex(pattern, at).map_or(Self::Never, Self::Regex)
        } else {
            // An empty StringMatch sets no path specifier, leaving pilot's "/".
            Self::Prefix {
                value: "/".into(),
                ignore_case,
            }
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact { value, ignore_case } => {
                if *ignore_case {
                    path.eq_ignore_ascii_case(value)
                } else {
                    path == &**value
                }
            }
            Self::Prefix { value, ignore_case } => {
                let Some(head) = path.as_bytes().get(..value.len()) else {
                    return false;
                };
                if *ignore_case {
                    head.eq_ignore_ascii_case(value.as_bytes())
                } else {
                    head == value.as_bytes()
                }
            }
            Self::Regex(regex) => regex.is_match(path.as_bytes()),
            Self::SeparatedPrefix(prefix) => path
                .strip_prefix(&**prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Never => false,
        }
    }

    /// How much of the path a prefix rewrite replaces (Envoy's `matched_path`): the
    /// configured prefix or exact path, or the whole path for a regex.
    pub(crate) fn matched(&self) -> MatchedPath {
        match self {
            Self::Exact { value, .. } | Self::Prefix { value, .. } => MatchedPath::Len(value.len()),
            Self::SeparatedPrefix(value) => MatchedPath::Len(value.len()),
            Self::Regex(_) | Self::Never => MatchedPath::WholePath,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchedPath {
    Len(usize),
    WholePath,
}

/// The runtime half of one match block: uri, method, authority, scheme, headers,
/// withoutHeaders, queryParams — all ANDed.
#[derive(Clone, Debug)]
pub(crate) struct RequestMatcher {
    uri: UriMatch,
    headers: Vec<HeaderCheck>,
    query: Vec<QueryCheck>,
}

impl RequestMatcher {
    pub(crate) fn any() -> Self {
        Self {
            uri: UriMatch::any(),
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    /// A matcher made of its parts (the Gateway API's routes, `gateway_api.rs`): every
    /// header condition and every query condition must pass.
    pub(crate) fn from_parts(
        uri: UriMatch,
        headers: Vec<(Field, Condition)>,
        query: Vec<(String, Condition)>,
    ) -> Self {
        Self {
            uri,
            headers: headers
                .into_iter()
                .map(|(field, condition)| HeaderCheck {
                    field,
                    condition,
                    invert: false,
                })
                .collect(),
            query: query
                .into_iter()
                .map(|(name, condition)| QueryCheck {
                    name: name.into(),
                    condition,
                })
                .collect(),
        }
    }

    pub(crate) fn compile(m: &HttpMatchRequest, at: &str) -> Self {
        let ignore_case = m.ignore_uri_case.unwrap_or(false);
        let uri = UriMatch::compile(m.uri.as_ref(), ignore_case, &format!("{at}.uri"));
        let mut headers = Vec::new();
        for (field, invert, map) in [
            ("headers", false, &m.headers),
            ("withoutHeaders", true, &m.without_headers),
        ] {
            for (name, condition) in map {
                let at = format!("{at}.{field}.{name}");
                headers.push(HeaderCheck {
                    field: Field::compile(name, &at),
                    condition: Condition::compile(condition, &at),
                    invert,
                });
            }
        }
        for (field, pseudo, condition) in [
            ("method", Field::Method, &m.method),
            ("authority", Field::Authority, &m.authority),
            ("scheme", Field::Scheme, &m.scheme),
        ] {
            if let Some(condition) = condition {
                headers.push(HeaderCheck {
                    field: pseudo,
                    condition: Condition::compile(condition, &format!("{at}.{field}")),
                    invert: false,
                });
            }
        }
        let query = m
            .query_params
            .iter()
            .map(|(name, condition)| QueryCheck {
                name: name.as_str().into(),
                condition: Condition::compile(condition, &format!("{at}.queryParams.{name}")),
            })
            .collect();
        Self {
            uri,
            headers,
            query,
        }
    }

    pub(crate) fn uri(&self) -> &UriMatch {
        &self.uri
    }

    /// Matches every request (Istio's `IsCatchAllRoute`: a `/` prefix or `.*` path, no
    /// header or query condition); such routes go last when VirtualServices merge.
    pub(crate) fn is_catch_all(&self) -> bool {
        let any_path = match &self.uri {
            UriMatch::Prefix { value, .. } => &**value == "/",
            UriMatch::Regex(regex) => regex.as_str() == "^(?:.*)$",
            _ => false,
        };
        any_path && self.headers.is_empty() && self.query.is_empty()
    }

    pub(crate) fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        if !self.uri.matches(facts.path()) {
            return false;
        }
        if !self.headers.iter().all(|check| check.passes(facts)) {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let query = facts.query();
        self.query.iter().all(|check| check.passes(query))
    }
}

/// The part of a match block pilot evaluates when it builds a proxy's configuration rather
/// than per request: port, gateways, source labels and namespace.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gate {
    port: Option<u32>,
    gateways: Gateways,
    source_labels: Vec<(String, String)>,
    source_namespace: Option<String>,
    /// HTTP: a match block naming gateways ignores `sourceLabels` and `sourceNamespace`
    /// ("the gateway match is independent of sourceLabels", `sourceMatchHTTP`). TCP
    /// (`matchTCP`) requires all of them.
    gateways_replace_source: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Gateways {
    #[default]
    Unlisted,
    /// Lists the proxy compiling it: the reserved gateway `mesh` for a waypoint, the
    /// Gateway being served for an ingress gateway.
    IncludesMesh,
    /// Names only other gateways: the block does not exist on this proxy.
    Elsewhere,
}

/// Which proxy routes are compiled for: the mesh's (a waypoint), or an ingress gateway
/// serving one Istio Gateway, whose match blocks' `gateways` name it in the
/// VirtualService's namespace (`name`) or qualified (`namespace/name`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Scope<'a> {
    #[default]
    Mesh,
    Gateway {
        gateway: &'a weft_config::translate::gateway::GatewayRef,
        vs_namespace: &'a str,
    },
}

impl Scope<'_> {
    fn listed_in(self, gateways: &[String]) -> bool {
        match self {
            Scope::Mesh => gateways.iter().any(|g| g == "mesh"),
            Scope::Gateway {
                gateway,
                vs_namespace,
            } => gateways.iter().any(|g| {
                weft_config::translate::gateway::resolve_gateway_name(g, vs_namespace).as_ref()
                    == Some(gateway)
            }),
        }
    }
}

impl Gate {
    pub(crate) fn http(m: &HttpMatchRequest, scope: Scope<'_>) -> Self {
        Self::new(
            m.port,
            &m.gateways,
            &m.source_labels,
            m.source_namespace.as_deref(),
            true,
            scope,
        )
    }

    pub(crate) fn new(
        port: Option<u32>,
        gateways: &[String],
        source_labels: &BTreeMap<String, String>,
        source_namespace: Option<&str>,
        gateways_replace_source: bool,
        scope: Scope<'_>,
    ) -> Self {
        let gateways = if gateways.is_empty() {
            Gateways::Unlisted
        } else if scope.listed_in(gateways) {
            Gateways::IncludesMesh
        } else {
            Gateways::Elsewhere
        };
        Self {
            // Proto3: 0 and "" mean unset.
            port: port.filter(|p| *p != 0),
            gateways,
            source_labels: source_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source_namespace: source_namespace.filter(|ns| !ns.is_empty()).map(Into::into),
            gateways_replace_source,
        }
    }

    pub(crate) fn admits(&self, port: u16, source: &Source) -> bool {
        if self.port.is_some_and(|p| p != u32::from(port)) {
            return false;
        }
        match self.gateways {
            Gateways::Elsewhere => return false,
            Gateways::IncludesMesh if self.gateways_replace_source => return true,
            Gateways::IncludesMesh | Gateways::Unlisted => {}
        }
        let labels_match = self
            .source_labels
            .iter()
            .all(|(k, v)| source.labels.get(k) == Some(v));
        let namespace_match = self
            .source_namespace
            .as_deref()
            .is_none_or(|ns| source.namespace.as_deref() == Some(ns));
        labels_match && namespace_match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(value: &str) -> StringMatch {
        StringMatch {
            exact: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn regexes_must_match_the_whole_value() {
        let m = StrMatch::compile(
            &StringMatch {
                regex: Some(r"\d+".into()),
                ..Default::default()
            },
            "t",
        )
        .expect("set");
        assert!(m.matches(b"123"));
        assert!(!m.matches(b"a123"));
        assert!(!m.matches(b"123a"));
        // An alternation stays inside the anchors.
        let m = StrMatch::compile(
            &StringMatch {
                regex: Some("a|b".into()),
                ..Default::default()
            },
            "t",
        )
        .expect("set");
        assert!(m.matches(b"a") && m.matches(b"b") && !m.matches(b"ab"));
    }

    #[test]
    fn a_bad_regex_never_matches_and_stray_parentheses_stay_bad() {
        for pattern in ["(unclosed", "a)(b"] {
            let m = StrMatch::compile(
                &StringMatch {
                    regex: Some(pattern.into()),
                    ..Default::default()
                },
                "t",
            )
            .expect("set");
            assert!(matches!(m, StrMatch::Never), "{pattern}");
            assert!(!m.matches(b"a)(b"));
        }
    }

    #[test]
    fn empty_matches_and_star_test_presence() {
        assert!(matches!(
            Condition::compile(&StringMatch::default(), "t"),
            Condition::Present
        ));
        assert!(matches!(
            Condition::compile(
                &StringMatch {
                    regex: Some("*".into()),
                    ..Default::default()
                },
                "t"
            ),
            Condition::Present
        ));
        assert!(matches!(
            Condition::compile(&exact(""), "t"),
            Condition::Value(StrMatch::Exact(_))
        ));
    }

    #[test]
    fn separated_prefixes_match_whole_segments() {
        let m = UriMatch::SeparatedPrefix("/api".into());
        assert!(m.matches("/api"));
        assert!(m.matches("/api/v1"));
        assert!(!m.matches("/apiv1"));
        assert!(!m.matches("/ap"));
        assert_eq!(m.matched(), MatchedPath::Len(4));
    }

    #[test]
    fn query_values_are_raw_and_first_wins() {
        assert_eq!(first_query_value("a=1&b=2&a=3", "a"), Some("1"));
        assert_eq!(first_query_value("flag&b=2", "flag"), Some(""));
        assert_eq!(first_query_value("q=a%20b", "q"), Some("a%20b"));
        assert_eq!(first_query_value("x=1=2", "x"), Some("1=2"));
        assert_eq!(first_query_value("ab=1", "a"), None);
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("x-v");
        headers.append(&name, http::HeaderValue::from_static("a"));
        assert_eq!(joined_values(&headers, &name).as_deref(), Some(&b"a"[..]));
        headers.append(&name, http::HeaderValue::from_static("b"));
        assert_eq!(joined_values(&headers, &name).as_deref(), Some(&b"a,b"[..]));
    }

    #[test]
    fn gates_follow_pilot() {
        let source = Source {
            namespace: Some("shop".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let other: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        assert!(
            Gate::new(Some(80), &[], &labels, Some("shop"), true, Scope::Mesh).admits(80, &source)
        );
        assert!(!Gate::new(Some(80), &[], &labels, None, true, Scope::Mesh).admits(8080, &source));
        assert!(!Gate::new(None, &[], &other, None, true, Scope::Mesh).admits(80, &source));
        assert!(!Gate::new(None, &[], &labels, Some("web"), true, Scope::Mesh).admits(80, &source));
        let gw = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            !Gate::new(None, &gw(&["ingress"]), &labels, None, true, Scope::Mesh)
                .admits(80, &source)
        );
        // HTTP: naming mesh makes source labels irrelevant; TCP still wants them.
        assert!(
            Gate::new(None, &gw(&["mesh"]), &other, None, true, Scope::Mesh).admits(80, &source)
        );
        assert!(
            !Gate::new(None, &gw(&["mesh"]), &other, None, false, Scope::Mesh).admits(80, &source)
        );
        // At an ingress gateway, `gateways` name the Gateway being served.
        let me = weft_config::translate::gateway::GatewayRef::new("shop", "ingress");
        let scope = Scope::Gateway {
            gateway: &me,
            vs_namespace: "shop",
        };
        for names in [&["ingress"][..], &["shop/ingress", "mesh"]] {
            assert!(Gate::new(None, &gw(names), &other, None, true, scope).admits(80, &source));
        }
        assert!(!Gate::new(None, &gw(&["mesh"]), &labels, None, true, scope).admits(80, &source));
        assert!(
            !Gate::new(None, &gw(&["other/ingress"]), &labels, None, true, scope)
                .admits(80, &source)
        );
    }
}
