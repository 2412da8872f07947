//! Zipkin's JSON v2 span format (zipkin-api `zipkin2-api.yaml`, `ListOfSpans`), as Envoy's
//! Zipkin tracer POSTs it to `/api/v2/spans`.
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::span::{AttributeValue, Span, SpanKind, SpanStatus};

/// Zipkin's default collector path.
pub const DEFAULT_PATH: &str = "/api/v2/spans";

fn micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn tag_value(value: &AttributeValue) -> String {
    match value {
        AttributeValue::String(s) => s.clone(),
        AttributeValue::Bool(b) => b.to_string(),
        AttributeValue::Int(i) => i.to_string(),
        AttributeValue::Double(d) => d.to_string(),
    }
}

/// One span as Zipkin's `Span`: ids in lower hex (a 64-bit trace id in 16 digits),
/// timestamps and durations in microseconds, attributes as string tags, an error status as
/// the `error` tag.
pub fn span_json(span: &Span, service_name: &str) -> Value {
    let mut out = Map::new();
    out.insert("traceId".into(), span.trace_id.to_short_hex().into());
    out.insert("id".into(), span.span_id.to_string().into());
    if let Some(parent) = span.parent_span_id {
        out.insert("parentId".into(), parent.to_string().into());
    }
    out.insert("name".into(), span.name.to_lowercase().into());
    match span.kind {
        SpanKind::Server => {
            out.insert("kind".into(), "SERVER".into());
        }
        SpanKind::Client => {
            out.insert("kind".into(), "CLIENT".into());
        }
        SpanKind::Internal => {}
    }
    let start = micros(span.start);
    let end = span.end.map_or(start, micros);
    out.insert("timestamp".into(), start.into());
    // The schema's minimum: a span takes at least a microsecond.
    out.insert("duration".into(), end.saturating_sub(start).max(1).into());
    out.insert(
        "localEndpoint".into(),
        json!({ "serviceName": service_name }),
    );
    let mut tags = Map::new();
    for (key, value) in &span.attributes {
        tags.insert(key.clone(), tag_value(value).into());
    }
    if let SpanStatus::Error(message) = &span.status {
        let message = if message.is_empty() { "true" } else { message };
        tags.insert("error".into(), message.into());
    }
    if !tags.is_empty() {
        out.insert("tags".into(), tags.into());
    }
    Value::Object(out)
}

/// A batch, as the body of `POST /api/v2/spans`.
pub fn encode(spans: &[Span], service_name: &str) -> Vec<u8> {
    let list: Vec<Value> = spans.iter().map(|s| span_json(s, service_name)).collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::{TraceContext, b3};

    #[test]
    fn spans_are_written_as_zipkin_v2_says() {
        let caller = b3::parse_single("463ac35c9f6413ad-a2fb4a1d1a96d312-1").expect("valid");
        let context = caller.child();
        let mut span = Span::start(&context, "GET /Ratings", SpanKind::Server)
            .with_attribute("http.status_code", 503u16)
            .with_attribute("response_flags", "UF");
        span.set_status(SpanStatus::Error("503 Service Unavailable".into()));
        span.start = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001);
        span.end = Some(span.start + Duration::from_micros(250));
        let json = span_json(&span, "waypoint.shop");
        assert_eq!(
            json["traceId"], "463ac35c9f6413ad",
            "64-bit ids stay 16 digits"
        );
        assert_eq!(json["id"], context.span_id().to_string());
        assert_eq!(json["parentId"], "a2fb4a1d1a96d312");
        assert_eq!(json["name"], "get /ratings");
        assert_eq!(json["kind"], "SERVER");
        assert_eq!(json["timestamp"], 1_700_000_000_000_001u64);
        assert_eq!(json["duration"], 250);
        assert_eq!(json["localEndpoint"]["serviceName"], "waypoint.shop");
        assert_eq!(json["tags"]["http.status_code"], "503", "tags are strings");
        assert_eq!(json["tags"]["error"], "503 Service Unavailable");

        let root = TraceContext::new_root(true).child();
        let mut instant = Span::start(&root, "x", SpanKind::Internal);
        instant.end = Some(instant.start);
        let json = span_json(&instant, "a");
        assert_eq!(json["traceId"].as_str().map(str::len), Some(32));
        assert!(json.get("parentId").is_none() && json.get("kind").is_none());
        assert!(json.get("tags").is_none());
        assert_eq!(json["duration"], 1);
        let body: Value = serde_json::from_slice(&encode(&[span, instant], "s")).expect("JSON");
        assert_eq!(body.as_array().map(Vec::len), Some(2));
    }
}
