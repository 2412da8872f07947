//! The fields of the kinds weft reads, found by walking the JSON schemas generated from
//! weft's own types (the ones `weftctl crds` writes): a field added to a type shows up
//! here, and the conformance tests then ask for its line in the table.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::Value;

use crate::api::gateway::GatewaySpec;
use crate::api::gateway_api::KubernetesGatewaySpec;
use crate::api::gateway_routes::{
    GrpcRouteSpec, HttpRouteSpec, ReferenceGrantSpec, TcpRouteSpec, TlsRouteSpec,
};
use crate::api::networking::{DestinationRuleSpec, ServiceEntrySpec, VirtualServiceSpec};
use crate::api::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::api::telemetry::TelemetrySpec;

use crate::api::Kind;

/// Every field path of every kind weft reads (`spec.http[].route[].destination.host`:
/// `[]` stands for any index), objects and lists included, in kind then path order.
pub fn fields() -> Vec<(Kind, String)> {
    fields_with_samples()
        .into_iter()
        .map(|(kind, path, _)| (kind, path))
        .collect()
}

/// [`fields`], each with a value of its type (the first of an enum's values, `"1s"` for a
/// duration), to set it on a sample object.
pub fn fields_with_samples() -> Vec<(Kind, String, Value)> {
    let mut out = Vec::new();
    for (kind, schema) in schemas() {
        let mut found = BTreeMap::new();
        walk(&schema, &schema, "spec", &mut Vec::new(), &mut found);
        out.extend(found.into_iter().map(|(path, sample)| (kind, path, sample)));
    }
    out
}

/// Each kind's `spec` schema.
pub fn schemas() -> Vec<(Kind, Value)> {
    fn of<T: JsonSchema>() -> Value {
        serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
    }
    use Kind::*;
    vec![
        (VirtualService, of::<VirtualServiceSpec>()),
        (DestinationRule, of::<DestinationRuleSpec>()),
        (ServiceEntry, of::<ServiceEntrySpec>()),
        (Gateway, of::<GatewaySpec>()),
        (AuthorizationPolicy, of::<AuthorizationPolicySpec>()),
        (PeerAuthentication, of::<PeerAuthenticationSpec>()),
        (RequestAuthentication, of::<RequestAuthenticationSpec>()),
        (KubernetesGateway, of::<KubernetesGatewaySpec>()),
        (HttpRoute, of::<HttpRouteSpec>()),
        (GrpcRoute, of::<GrpcRouteSpec>()),
        (TlsRoute, of::<TlsRouteSpec>()),
        (TcpRoute, of::<TcpRouteSpec>()),
        (ReferenceGrant, of::<ReferenceGrantSpec>()),
        (Telemetry, of::<TelemetrySpec>()),
    ]
}

/// The schema `node` stands for, its `$ref` followed (`#/$defs/Name`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> (&'a Value, Option<&'a str>) {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            (
                root.pointer(pointer).unwrap_or(&Value::Null),
                Some(reference),
            )
        }
        None => (node, None),
    }
}

/// Records `path` and the fields under it. `stack` holds the definitions being walked, so a
/// type that contains itself is walked once.
fn walk<'a>(
    root: &'a Value,
    node: &'a Value,
    path: &str,
    stack: &mut Vec<&'a str>,
    found: &mut BTreeMap<String, Value>,
) {
    let (node, reference) = resolve(root, node);
    if let Some(reference) = reference {
        if stack.contains(&reference) {
            return;
        }
        stack.push(reference);
    }
    // Optional values and one-of shapes: every alternative's fields.
    for key in ["anyOf", "oneOf", "allOf"] {
        for alternative in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, alternative, path, stack, found);
        }
    }
    if let Some(items) = node.get("items") {
        walk(root, items, &format!("{path}[]"), stack, found);
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let at = format!("{path}.{name}");
            found
                .entry(at.clone())
                .or_insert_with(|| sample(root, property, name, &mut Vec::new()));
            walk(root, property, &at, stack, found);
        }
    }
    if reference.is_some() {
        stack.pop();
    }
}

/// A value `node` accepts: a duration for a field named like one, an enum's first value,
/// one item for a list, `{}` for an object.
fn sample<'a>(root: &'a Value, node: &'a Value, name: &str, stack: &mut Vec<&'a str>) -> Value {
    let (node, reference) = resolve(root, node);
    if let Some(reference) = reference {
        if stack.contains(&reference) {
            return Value::Object(Default::default());
        }
        stack.push(reference);
    }
    let lower = name.to_ascii_lowercase();
    let value = if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.iter().find(|v| !v.is_null()))
    {
        first.clone()
    } else if let Some(constant) = node.get("const") {
        constant.clone()
    } else if let Some(alternative) = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|key| node.get(*key).and_then(Value::as_array))
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
    {
        sample(root, alternative, name, stack)
    } else {
        let types: Vec<&str> = match node.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if types.contains(&"array") {
            let item = node
                .get("items")
                .map(|items| sample(root, items, name, stack))
                .unwrap_or(Value::Null);
            Value::Array(vec![item])
        } else if types.contains(&"object") || node.get("properties").is_some() {
            Value::Object(Default::default())
        } else if types.contains(&"boolean") {
            Value::Bool(true)
        } else if types.contains(&"integer") || types.contains(&"number") {
            Value::from(1)
        } else if [
            "timeout", "duration", "interval", "delay", "time", "maxage", "secs",
        ]
        .iter()
        .any(|end| lower.ends_with(end))
        {
            Value::from("1s")
        } else {
            Value::from("x")
        }
    };
    if reference.is_some() {
        stack.pop();
    }
    value
}
