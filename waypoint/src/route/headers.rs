//! `headers.request` / `headers.response` as Envoy's header parsers apply them, with the
//! variables of Envoy's header formatters that weft evaluates
//! (`weft_config::translate::header_format`) filled in per request from [`HeaderVars`].
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Version};
use weft_config::api::networking::{HeaderOperations, Headers};
use weft_config::translate::header_format::{self, Part, Side, Var};

use super::matcher::warn_once;

/// What the variables of header values are evaluated against: one request's.
#[derive(Clone, Debug)]
pub struct HeaderVars {
    /// The client's address (`DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT`).
    pub remote_ip: Option<IpAddr>,
    /// The address the client dialed (`DOWNSTREAM_LOCAL_ADDRESS`).
    pub local: SocketAddr,
    pub version: Version,
    /// When the request arrived (`START_TIME`).
    pub start: SystemTime,
}

impl HeaderVars {
    /// The value of `parts`; `request` is the request's headers for `REQ`. `None` when
    /// it is empty (Envoy then skips the operation) or not a valid header value.
    fn render(&self, parts: &[Part], request: &HeaderMap) -> Option<HeaderValue> {
        let mut out: Vec<u8> = Vec::new();
        for part in parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Var(var) => match var {
                    Var::DownstreamRemoteAddressWithoutPort => {
                        if let Some(ip) = self.remote_ip {
                            out.extend_from_slice(ip.to_string().as_bytes());
                        }
                    }
                    Var::DownstreamLocalAddress => {
                        out.extend_from_slice(self.local.to_string().as_bytes())
                    }
                    Var::DownstreamLocalAddressWithoutPort => {
                        out.extend_from_slice(self.local.ip().to_string().as_bytes())
                    }
                    Var::DownstreamLocalPort => {
                        out.extend_from_slice(self.local.port().to_string().as_bytes())
                    }
                    Var::Protocol => out.extend_from_slice(protocol(self.version).as_bytes()),
                    Var::StartTime => out
                        .extend_from_slice(weft_core::audit::rfc3339_millis(self.start).as_bytes()),
                    Var::Req(names) => {
                        let value = names.iter().find_map(|name| {
                            let name = if name == ":authority" { "host" } else { name };
                            request.get(name)
                        });
                        if let Some(value) = value {
                            out.extend_from_slice(value.as_bytes());
                        }
                    }
                },
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_bytes(&out).ok()
    }
}

#[cfg(test)]
impl HeaderVars {
    /// A request from 10.0.0.1 to 10.96.0.10:9080 over HTTP/1.1 at 2026-12-07T10:00:00Z.
    pub(crate) fn for_tests() -> Self {
        Self {
            remote_ip: Some(IpAddr::from([10, 0, 0, 1])),
            local: SocketAddr::from(([10, 96, 0, 10], 9080)),
            version: Version::HTTP_11,
            start: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_637_600),
        }
    }
}

/// Envoy's `%PROTOCOL%`.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A header operation's value: text, or parts with variables.
#[derive(Clone, Debug)]
enum Value {
    Fixed(HeaderValue),
    Formatted(Vec<Part>),
}

/// One Envoy header parser: removals first, then overwrites (`set`), then appends (`add`),
/// whatever order the configuration lists them in (`HeaderParser::evaluateHeaders`).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
}

impl HeaderOps {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies `parsers` as one parser, which is how pilot emits a route's operations
    /// together with those of its only destination. Variables are evaluated against the
    /// headers as they were before any operation (`REQ` reads the request's).
    pub(crate) fn apply_merged(parsers: &[&HeaderOps], headers: &mut HeaderMap, vars: &HeaderVars) {
        let resolve = |list: &dyn Fn(&HeaderOps) -> &Vec<(HeaderName, Value)>,
                       headers: &HeaderMap| {
            parsers
                .iter()
                .flat_map(|ops| list(ops).iter())
                .filter_map(|(name, value)| {
                    let value = match value {
                        Value::Fixed(value) => value.clone(),
                        Value::Formatted(parts) => vars.render(parts, headers)?,
                    };
                    Some((name.clone(), value))
                })
                .collect::<Vec<_>>()
        };
        let set = resolve(&|ops| &ops.set, headers);
        let add = resolve(&|ops| &ops.add, headers);
        for ops in parsers {
            for name in &ops.remove {
                headers.remove(name);
            }
        }
        for (name, value) in set {
            headers.insert(name, value);
        }
        for (name, value) in add {
            headers.append(name, value);
        }
    }

    /// Route-level and destination-level operations in Envoy's order. With one destination
    /// pilot appends the destination's operations to the route's parser, so they apply
    /// together and the destination's `set` wins. With weighted destinations they go on
    /// the weighted cluster, whose parser Envoy runs *before* the route's, so the route's
    /// `set` wins and a route-level `remove` also removes what the destination added.
    pub(crate) fn apply_route_and_destination(
        route: &HeaderOps,
        destination: Option<&HeaderOps>,
        weighted: bool,
        headers: &mut HeaderMap,
        vars: &HeaderVars,
    ) {
        match destination {
            Some(destination) if destination.is_empty() => {
                Self::apply_merged(&[route], headers, vars)
            }
            Some(destination) if weighted => {
                Self::apply_merged(&[destination], headers, vars);
                Self::apply_merged(&[route], headers, vars);
            }
            Some(destination) => Self::apply_merged(&[route, destination], headers, vars),
            None => Self::apply_merged(&[route], headers, vars),
        }
    }
}

/// A `Headers` block compiled.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledHeaders {
    pub(crate) request: HeaderOps,
    pub(crate) response: HeaderOps,
    /// `:authority` or `host` in `request.set` / `request.add`: pilot turns it into a host
    /// rewrite instead of a header operation (`set` wins over `add`).
    pub(crate) authority: Option<HeaderValue>,
}

/// How a block's values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Values {
    /// A VirtualService's: Envoy's header formatters (`%VAR%`, `%%`).
    Formatted,
    /// The Gateway API's: text.
    Literal,
}

pub(crate) fn compile(headers: Option<&Headers>, at: &str, values: Values) -> CompiledHeaders {
    let Some(headers) = headers else {
        return CompiledHeaders::default();
    };
    let (request, authority) = operations(
        headers.request.as_ref(),
        &format!("{at}.request"),
        values.then(Side::Request),
    );
    let (response, _) = operations(
        headers.response.as_ref(),
        &format!("{at}.response"),
        values.then(Side::Response),
    );
    CompiledHeaders {
        request,
        response,
        authority,
    }
}

impl Values {
    /// The side a formatted value is parsed for; `None` for literal values.
    fn then(self, side: Side) -> Option<Side> {
        (self == Values::Formatted).then_some(side)
    }
}

fn operations(
    ops: Option<&HeaderOperations>,
    at: &str,
    formatted: Option<Side>,
) -> (HeaderOps, Option<HeaderValue>) {
    let Some(ops) = ops else {
        return (HeaderOps::default(), None);
    };
    let mut authority = None;
    let mut compiled = HeaderOps::default();
    // `add` first so that an authority in `set` overrides one in `add`.
    for (list, field, target) in [
        (&ops.add, "add", &mut compiled.add),
        (&ops.set, "set", &mut compiled.set),
    ] {
        // BTreeMap order is the key order pilot sorts these lists into.
        for (name, value) in list {
            let at = format!("{at}.{field}.{name}");
            if is_authority(name) {
                match HeaderValue::from_str(value) {
                    Ok(value) if !value.is_empty() => authority = Some(value),
                    Ok(_) => {}
                    Err(_) => {
                        warn_once(format!("{at}: {value:?} is not a valid authority; ignored"))
                    }
                }
                continue;
            }
            if is_internal(name) {
                continue;
            }
            // Envoy skips an operation whose value is empty (`add_if_empty` is false in
            // what pilot emits): `set: {x: ""}` neither sets nor clears `x`.
            if value.is_empty() {
                continue;
            }
            let Some(entry) = header(name, value, &at, formatted) else {
                continue;
            };
            target.push(entry);
        }
    }
    for name in &ops.remove {
        if is_internal(name) {
            continue;
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => compiled.remove.push(name),
            Err(_) => warn_once(format!(
                "{at}.remove: {name:?} is not a valid header name; ignored"
            )),
        }
    }
    (compiled, authority)
}

/// One operation: its name and value; `None` (warned) when either is unusable, or the value
/// names a variable weft does not evaluate (validation warns about those too).
fn header(
    name: &str,
    value: &str,
    at: &str,
    formatted: Option<Side>,
) -> Option<(HeaderName, Value)> {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        warn_once(format!("{at}: not a valid header name; ignored"));
        return None;
    };
    let parts = match formatted {
        Some(side) => match header_format::parse(value, side) {
            Ok(parts) => parts,
            Err(error) => {
                warn_once(format!("{at}: {value:?}: {error}"));
                return None;
            }
        },
        None => vec![Part::Literal(value.to_string())],
    };
    if header_format::is_literal(&parts) {
        let text: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.as_str(),
                Part::Var(_) => "",
            })
            .collect();
        let Ok(value) = HeaderValue::from_str(&text) else {
            warn_once(format!(
                "{at}: {value:?} is not a valid header value; ignored"
            ));
            return None;
        };
        return Some((name, Value::Fixed(value)));
    }
    Some((name, Value::Formatted(parts)))
}

/// Pseudo-headers and `host` cannot be modified by Envoy's header operations; pilot drops
/// them (`isInternalHeader`).
fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(yaml: &str) -> CompiledHeaders {
        let headers: Headers = serde_yaml::from_str(yaml).expect("headers yaml");
        compile(Some(&headers), "t", Values::Formatted)
    }

    fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    #[test]
    fn removals_then_sets_then_adds() {
        let compiled = ops(
            "request:\n  add: {x-a: added}\n  set: {x-a: set, x-b: kept}\n  remove: [x-a, x-c]\n",
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-c", HeaderValue::from_static("gone"));
        HeaderOps::apply_merged(&[&compiled.request], &mut headers, &HeaderVars::for_tests());
        assert_eq!(values(&headers, "x-a"), ["set", "added"]);
        assert_eq!(values(&headers, "x-b"), ["kept"]);
        assert!(headers.get("x-c").is_none());
    }

    #[test]
    fn authority_becomes_a_rewrite_and_internal_names_are_dropped() {
        let compiled = ops(
            "request:\n  set: {':authority': from-set, ':path': /x, x-ok: 'yes', x-empty: ''}\n  add: {host: from-add}\n  remove: [host, ':method']\n",
        );
        assert_eq!(
            compiled.authority,
            Some(HeaderValue::from_static("from-set"))
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-empty", HeaderValue::from_static("stays"));
        HeaderOps::apply_merged(&[&compiled.request], &mut headers, &HeaderVars::for_tests());
        assert_eq!(values(&headers, "x-ok"), ["yes"]);
        assert_eq!(values(&headers, "x-empty"), ["stays"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn destination_order_depends_on_weighting() {
        let route = ops("request:\n  set: {x-v: route}\n  remove: [x-d]\n").request;
        let destination = ops("request:\n  set: {x-v: destination, x-d: destination}\n").request;
        let mut single = HeaderMap::new();
        HeaderOps::apply_route_and_destination(
            &route,
            Some(&destination),
            false,
            &mut single,
            &HeaderVars::for_tests(),
        );
        assert_eq!(values(&single, "x-v"), ["destination"]);
        assert_eq!(values(&single, "x-d"), ["destination"]);
        let mut weighted = HeaderMap::new();
        HeaderOps::apply_route_and_destination(
            &route,
            Some(&destination),
            true,
            &mut weighted,
            &HeaderVars::for_tests(),
        );
        assert_eq!(values(&weighted, "x-v"), ["route"]);
        assert!(weighted.get("x-d").is_none());
    }

    #[test]
    fn envoy_variables_are_filled_in_and_unsupported_ones_skip_their_operation() {
        let compiled = ops(concat!(
            "request:\n  set:\n",
            "    x-client: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'\n",
            "    x-dialed: 'to %DOWNSTREAM_LOCAL_ADDRESS% (%DOWNSTREAM_LOCAL_PORT%)'\n",
            "    x-proto: '%PROTOCOL%'\n",
            "    x-start: '%START_TIME%'\n",
            "    x-user-copy: '%REQ(x-user)%'\n",
            "    x-missing: '%REQ(x-none)%'\n",
            "    x-share: '100%%'\n",
            "    x-cluster: '%UPSTREAM_CLUSTER%'\n",
            "    x-open: '50% off'\n",
        ));
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("jason"));
        headers.insert("x-cluster", HeaderValue::from_static("untouched"));
        HeaderOps::apply_merged(&[&compiled.request], &mut headers, &HeaderVars::for_tests());
        assert_eq!(values(&headers, "x-client"), ["10.0.0.1"]);
        assert_eq!(values(&headers, "x-dialed"), ["to 10.96.0.10:9080 (9080)"]);
        assert_eq!(values(&headers, "x-proto"), ["HTTP/1.1"]);
        assert_eq!(values(&headers, "x-start"), ["2026-12-07T10:00:00.000Z"]);
        assert_eq!(values(&headers, "x-user-copy"), ["jason"]);
        assert!(
            headers.get("x-missing").is_none(),
            "empty: not set, as Envoy"
        );
        assert_eq!(values(&headers, "x-share"), ["100%"]);
        assert_eq!(
            values(&headers, "x-cluster"),
            ["untouched"],
            "never the literal %UPSTREAM_CLUSTER%"
        );
        assert!(headers.get("x-open").is_none());
        // The Gateway API's values are text.
        let headers_yaml: Headers =
            serde_yaml::from_str("request:\n  set: {x-a: '%PROTOCOL%'}\n").expect("yaml");
        let literal = compile(Some(&headers_yaml), "t", Values::Literal);
        let mut headers = HeaderMap::new();
        HeaderOps::apply_merged(&[&literal.request], &mut headers, &HeaderVars::for_tests());
        assert_eq!(values(&headers, "x-a"), ["%PROTOCOL%"]);
    }
}
