//! `headers.request` / `headers.response` as Envoy's header parsers apply them.
use http::{HeaderMap, HeaderName, HeaderValue};
use weft_config::api::networking::{HeaderOperations, Headers};

use super::matcher::warn_once;

/// One Envoy header parser: removals first, then overwrites (`set`), then appends (`add`),
/// whatever order the configuration lists them in (`HeaderParser::evaluateHeaders`).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies `parsers` as one parser, which is how pilot emits a route's operations
    /// together with those of its only destination.
    pub(crate) fn apply_merged(parsers: &[&HeaderOps], headers: &mut HeaderMap) {
        for ops in parsers {
            for name in &ops.remove {
                headers.remove(name);
            }
        }
        for ops in parsers {
            for (name, value) in &ops.set {
                headers.insert(name.clone(), value.clone());
            }
        }
        for ops in parsers {
            for (name, value) in &ops.add {
                headers.append(name.clone(), value.clone());
            }
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
    ) {
        match destination {
            Some(destination) if destination.is_empty() => Self::apply_merged(&[route], headers),
            Some(destination) if weighted => {
                Self::apply_merged(&[destination], headers);
                Self::apply_merged(&[route], headers);
            }
            Some(destination) => Self::apply_merged(&[route, destination], headers),
            None => Self::apply_merged(&[route], headers),
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

pub(crate) fn compile(headers: Option<&Headers>, at: &str) -> CompiledHeaders {
    let Some(headers) = headers else {
        return CompiledHeaders::default();
    };
    let (request, authority) = operations(headers.request.as_ref(), &format!("{at}.request"));
    let (response, _) = operations(headers.response.as_ref(), &format!("{at}.response"));
    CompiledHeaders {
        request,
        response,
        authority,
    }
}

fn operations(ops: Option<&HeaderOperations>, at: &str) -> (HeaderOps, Option<HeaderValue>) {
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
            let Some(entry) = header(name, value, &at) else {
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

/// Values are taken literally. Envoy would interpret `%...%` in them as its access-log
/// command operators (e.g. `%DOWNSTREAM_REMOTE_ADDRESS%`), which the waypoint does not.
fn header(name: &str, value: &str, at: &str) -> Option<(HeaderName, HeaderValue)> {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        warn_once(format!("{at}: not a valid header name; ignored"));
        return None;
    };
    let Ok(value) = HeaderValue::from_str(value) else {
        warn_once(format!(
            "{at}: {value:?} is not a valid header value; ignored"
        ));
        return None;
    };
    Some((name, value))
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
        compile(Some(&headers), "t")
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
        HeaderOps::apply_merged(&[&compiled.request], &mut headers);
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
        HeaderOps::apply_merged(&[&compiled.request], &mut headers);
        assert_eq!(values(&headers, "x-ok"), ["yes"]);
        assert_eq!(values(&headers, "x-empty"), ["stays"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn destination_order_depends_on_weighting() {
        let route = ops("request:\n  set: {x-v: route}\n  remove: [x-d]\n").request;
        let destination = ops("request:\n  set: {x-v: destination, x-d: destination}\n").request;
        let mut single = HeaderMap::new();
        HeaderOps::apply_route_and_destination(&route, Some(&destination), false, &mut single);
        assert_eq!(values(&single, "x-v"), ["destination"]);
        assert_eq!(values(&single, "x-d"), ["destination"]);
        let mut weighted = HeaderMap::new();
        HeaderOps::apply_route_and_destination(&route, Some(&destination), true, &mut weighted);
        assert_eq!(values(&weighted, "x-v"), ["route"]);
        assert!(weighted.get("x-d").is_none());
    }
}
