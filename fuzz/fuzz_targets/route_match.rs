//! The waypoint's VirtualService route matching (`weft_waypoint::route`): an arbitrary
//! `http[].match` block (uri, method, a header and a query parameter, each `exact`,
//! `prefix` or `regex` as the first byte chooses, `ignoreUriCase`) compiled as the
//! waypoint compiles a host's VirtualServices, and an arbitrary request (method, path and
//! query, a header) routed through it. The input's text is split at newlines into the
//! match's values and the request's parts. Checked:
//! - compiling and matching never panic, whatever the strings (invalid regexes included);
//! - a request always gets a route: the fuzzed rule, or the next rule, whose `exact` uri is
//!   the request's own path — an exact match on a request's own path matches it, so the
//!   host's default route is never reached.
#![no_main]
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use weft_config::api::networking::VirtualService;
use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;
use weft_waypoint::route::{CompiledRoutes, RequestFacts, Source};

const SERVICE: &str = "reviews.bookinfo.svc.cluster.local";
const KINDS: [&str; 3] = ["exact", "prefix", "regex"];

/// A string match of the kind the two bits of `selector` at `shift` choose (the fourth
/// value leaves the field out).
fn string_match(selector: u8, shift: u8, value: &str) -> Option<Value> {
    let kind = KINDS.get(usize::from((selector >> shift) & 3))?;
    Some(json!({ *kind: value }))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\n');
    let mut next = || parts.next().unwrap_or_default();
    let (uri_value, method_value, header_name, header_value) = (next(), next(), next(), next());
    let (query_name, query_value) = (next(), next());
    let (method, path, sent_header) = (next(), next(), next());
    // The request, as hyper would hand it over: a parsed origin-form path, a valid method.
    let Ok(uri) = Uri::try_from(format!("/{path}")) else {
        return;
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    if let Ok(name) = HeaderName::from_bytes(header_name.as_bytes())
        && let Ok(value) = HeaderValue::from_str(sent_header)
    {
        headers.insert(name, value);
    }
    let mut block = serde_json::Map::new();
    block.insert("name".into(), json!("m"));
    if let Some(m) = string_match(selector, 0, uri_value) {
        block.insert("uri".into(), m);
    }
    if let Some(m) = string_match(selector, 2, method_value) {
        block.insert("method".into(), m);
    }
    if let Some(m) = string_match(selector, 4, header_value) {
        block.insert("headers".into(), json!({ header_name: m }));
    }
    if let Some(m) = string_match(selector, 6, query_value) {
        block.insert("queryParams".into(), json!({ query_name: m }));
    }
    if selector & 0x40 != 0 {
        block.insert("ignoreUriCase".into(), json!(true));
    }
    let own_path = uri.path().to_string();
    let virtual_service = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fuzz", "namespace": "bookinfo"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {"name": "fuzzed", "match": [Value::Object(block)],
                 "route": [{"destination": {"host": "fuzzed"}}]},
                {"name": "own-path", "match": [{"uri": {"exact": own_path}}],
                 "route": [{"destination": {"host": "own-path"}}]},
            ],
        },
    });
    // What the API server would refuse (a header name that is no string key, …) is not
    // the matcher's to see.
    let Ok(virtual_service) = serde_json::from_value::<VirtualService>(virtual_service) else {
        return;
    };
    let routes = CompiledRoutes::compile(
        &HostRoutes {
            virtual_services: vec![Arc::new(virtual_service)],
            gateway_routes: Vec::new(),
            destination_rule: None,
        },
        SERVICE,
        &MeshSettings::default(),
    );
    let source = Source::default();
    let facts = RequestFacts {
        method: &method,
        uri: &uri,
        authority: "reviews:9080",
        headers: &headers,
        port: 9080,
        source: &source,
        auth: None,
    };
    let plan = routes.http_route(&facts);
    let name = plan.and_then(|p| p.name()).unwrap_or_default();
    assert!(
        name.starts_with("fuzzed") || name.starts_with("own-path"),
        "{method} {uri}: routed by {name:?}, not by the rule matching its own path exactly"
    );
});
