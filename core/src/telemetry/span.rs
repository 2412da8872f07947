//! A finished (or running) span, as recorded by a proxy and exported over OTLP.
use std::time::SystemTime;

use super::context::{SpanId, TraceContext, TraceId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    /// Handling a request that came in.
    Server,
    /// Making a request to the next hop.
    Client,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl From<&str> for AttributeValue {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<u16> for AttributeValue {
    fn from(value: u16) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<u64> for AttributeValue {
    fn from(value: u64) -> Self {
        Self::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<f64> for AttributeValue {
    fn from(value: f64) -> Self {
        Self::Double(value)
    }
}

/// OTLP's span status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub tracestate: Option<String>,
    pub sampled: bool,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    /// `None` while running; [`Span::end`] sets it (the exporter ends a running span when
    /// it takes it).
    pub end: Option<SystemTime>,
    pub attributes: Vec<(String, AttributeValue)>,
    pub status: SpanStatus,
}

impl Span {
    /// Starts the span that `context` identifies (typically a `child()` of the incoming
    /// request's context), now.
    pub fn start(context: &TraceContext, name: impl Into<String>, kind: SpanKind) -> Self {
        Self {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            parent_span_id: context.parent_span_id(),
            tracestate: context.tracestate().map(str::to_owned),
            sampled: context.sampled(),
            name: name.into(),
            kind,
            start: SystemTime::now(),
            end: None,
            attributes: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    pub fn set_attribute(&mut self, key: impl Into<String>, value: impl Into<AttributeValue>) {
        self.attributes.push((key.into(), value.into()));
    }

    pub fn with_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<AttributeValue>,
    ) -> Self {
        self.set_attribute(key, value);
        self
    }

    pub fn set_status(&mut self, status: SpanStatus) {
        self.status = status;
    }

    /// The `traceparent` naming this span as the parent of the next hop's.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Ends the span now (a second call keeps the first end).
    pub fn end(&mut self) {
        self.end.get_or_insert_with(SystemTime::now);
    }
}

/// `value` cut to at most `max` bytes (at a character boundary), as Envoy cuts the path
/// tag to `max_path_tag_length`.
pub fn truncate_tag(value: &str, max: u32) -> String {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::truncate_tag;

    #[test]
    fn tags_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_tag("http://a/b", 256), "http://a/b");
        assert_eq!(truncate_tag("http://a/b", 8), "http://a");
        assert_eq!(truncate_tag("/é", 2), "/");
    }
}
