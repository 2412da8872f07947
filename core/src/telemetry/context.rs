//! W3C Trace Context (level 1): the `traceparent` and `tracestate` headers.
use std::fmt;

use http::HeaderMap;
use http::header::HeaderValue;

use crate::identity::crypto_provider;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The sampled bit of `trace-flags`, the only flag level 1 defines.
const SAMPLED: u8 = 0x01;
/// Members a `tracestate` may hold.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// What a proxy must be able to pass on; longer lists are cut, large members first.
const MAX_TRACESTATE_LEN: usize = 512;
const LARGE_TRACESTATE_MEMBER: usize = 128;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if crypto_provider().secure_random.fill(&mut bytes).is_err() {
        // Trace ids need uniqueness, not secrecy: the clock and a counter will do.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = nanos ^ (u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 64);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = mixed.to_le_bytes()[i % 16];
        }
    }
    bytes
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Lowercase hex only, as the specification requires.
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A 16-byte trace id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    pub fn random() -> Self {
        let mut bytes = random_bytes::<16>();
        bytes[15] |= 1;
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        Self::from_bytes(parse_hex(text)?)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// An 8-byte span id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    pub fn random() -> Self {
        let mut bytes = random_bytes::<8>();
        bytes[7] |= 1;
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        Self::from_bytes(parse_hex(text)?)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceContextError {
    #[error("traceparent {0:?} is not version-traceid-parentid-flags")]
    Malformed(String),
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    #[error("traceparent has an all-zero trace id or parent id")]
    ZeroId,
}

/// Where a request is in a trace. A context parsed from a request's headers describes the
/// caller's span; [`TraceContext::child`] makes the span of whoever handles it, whose id is
/// what goes to the next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    /// `None` at the root of a new trace: nobody's span yet.
    span_id: Option<SpanId>,
    parent_span_id: Option<SpanId>,
    flags: u8,
    tracestate: Option<String>,
}

impl TraceContext {
    /// A new trace, for a request that arrived without (valid) context.
    pub fn new_root(sampled: bool) -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: None,
            parent_span_id: None,
            flags: if sampled { SAMPLED } else { 0 },
            tracestate: None,
        }
    }

    /// Parses a `traceparent` value. Versions above 00 are read as 00 (the specification's
    /// forward compatibility); fields past the flags are ignored for them.
    pub fn parse(traceparent: &str) -> Result<Self, TraceContextError> {
        let text = traceparent.trim_matches([' ', '\t']);
        let malformed = || TraceContextError::Malformed(traceparent.to_owned());
        // ASCII first, so that slicing at fixed offsets below cannot split a character.
        if !text.is_ascii() {
            return Err(malformed());
        }
        let head = text.get(..55).ok_or_else(malformed)?;
        let version: [u8; 1] =
            parse_hex(head.get(..2).ok_or_else(malformed)?).ok_or_else(malformed)?;
        if version[0] == 0xff {
            return Err(TraceContextError::ForbiddenVersion);
        }
        let exact = text.len() == 55;
        if !(exact || version[0] > 0 && text.as_bytes()[55] == b'-') {
            return Err(malformed());
        }
        let bytes = head.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(malformed());
        }
        let trace: [u8; 16] = parse_hex(&head[3..35]).ok_or_else(malformed)?;
        let parent: [u8; 8] = parse_hex(&head[36..52]).ok_or_else(malformed)?;
        let flags: [u8; 1] = parse_hex(&head[53..55]).ok_or_else(malformed)?;
        let trace_id = TraceId::from_bytes(trace).ok_or(TraceContextError::ZeroId)?;
        let span_id = SpanId::from_bytes(parent).ok_or(TraceContextError::ZeroId)?;
        Ok(Self {
            trace_id,
            span_id: Some(span_id),
            parent_span_id: None,
            flags: flags[0],
            tracestate: None,
        })
    }

    /// The context of an incoming request: its `traceparent` (with its `tracestate`) when
    /// valid, else a new sampled trace. The caller is the first to see such a request, and
    /// exporting is opt-in anyway.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let parsed = match (values.next(), values.next()) {
            (Some(one), None) => one.to_str().ok().and_then(|v| Self::parse(v).ok()),
            // Several traceparents cannot be told apart: start afresh.
            _ => None,
        };
        match parsed {
            Some(context) => {
                let combined: Vec<&str> = headers
                    .get_all(TRACESTATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let tracestate =
                    (!combined.is_empty()).then(|| normalize_tracestate(&combined.join(",")));
                context.with_tracestate(tracestate.flatten())
            }
            None => Self::new_root(true),
        }
    }

    /// The context of a new span under this one: same trace, flags and state, a new span
    /// id, this span as its parent.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: Some(SpanId::random()),
            parent_span_id: self.span_id,
            flags: self.flags,
            tracestate: self.tracestate.clone(),
        }
    }

    /// Replaces the `tracestate` (already validated, see [`normalize_tracestate`]).
    pub fn with_tracestate(mut self, tracestate: Option<String>) -> Self {
        self.tracestate = tracestate.filter(|s| !s.is_empty());
        self
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This context's span; a new root has none until [`TraceContext::child`], and one is
    /// made up if asked for.
    pub fn span_id(&self) -> SpanId {
        self.span_id.unwrap_or_else(SpanId::random)
    }

    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `traceparent` to send onwards (version 00; flags level 1 does not define are
    /// cleared).
    pub fn to_header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id(),
            self.flags & SAMPLED
        )
    }

    /// Sets `traceparent` and `tracestate` on outgoing headers, replacing what was there.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.to_header()) {
            headers.insert(TRACEPARENT, value);
        }
        headers.remove(TRACESTATE);
        if let Some(value) = self
            .tracestate
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(TRACESTATE, value);
        }
    }
}

fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => {
            let mut chars = key.bytes();
            matches!(chars.next(), Some(c) if c.is_ascii_lowercase()) && rest_ok(&key[1..], 255)
        }
        Some((tenant, system)) => {
            matches!(tenant.bytes().next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
                && rest_ok(&tenant[1..], 240)
                && matches!(system.bytes().next(), Some(c) if c.is_ascii_lowercase())
                && rest_ok(&system[1..], 13)
        }
    }
}

fn valid_value(value: &str) -> bool {
    let nonblank = |c: u8| matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|c| c == b' ' || nonblank(c))
        && value.bytes().last().is_some_and(nonblank)
}

/// A `tracestate` as it may be passed on: its list members trimmed, `None` when it breaks
/// the grammar (a proxy may drop what it cannot parse, never alter it), cut to 512
/// characters by dropping members over 128 characters first, then from the end.
pub fn normalize_tracestate(value: &str) -> Option<String> {
    let mut members = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for member in value.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(val) || !keys.insert(key) {
            return None;
        }
        members.push(member);
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let length = |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    if length(&members) > MAX_TRACESTATE_LEN {
        members.retain(|m| m.len() <= LARGE_TRACESTATE_MEMBER);
        while length(&members) > MAX_TRACESTATE_LEN {
            members.pop();
        }
    }
    (!members.is_empty()).then(|| members.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specifications_example() {
        let context = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.to_header(), EXAMPLE);
    }

    #[test]
    fn rejects_what_level_1_forbids() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-011",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\u{e9}-01",
        ] {
            assert!(
                matches!(
                    TraceContext::parse(bad),
                    Err(TraceContextError::Malformed(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            TraceContext::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceContextError::ForbiddenVersion)
        );
        assert_eq!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(TraceContextError::ZeroId)
        );
        assert_eq!(
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Err(TraceContextError::ZeroId)
        );
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        let context = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-ever",
        )
        .expect("forward compatible");
        assert_eq!(
            context.to_header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "version 00 out, undefined flags cleared"
        );
    }

    #[test]
    fn a_child_continues_the_trace_under_the_callers_span() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        headers.append(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        headers.append(
            TRACESTATE,
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        let child = TraceContext::from_headers(&headers).child();
        assert_eq!(
            child.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            child.parent_span_id().map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(child.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(
            child.tracestate(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let mut out = HeaderMap::new();
        out.insert(TRACESTATE, HeaderValue::from_static("stale=1"));
        child.inject(&mut out);
        let sent = out
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .expect("set");
        assert_eq!(sent, child.to_header());
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(sent.ends_with("-01"));
        assert_eq!(
            out.get(TRACESTATE).and_then(|v| v.to_str().ok()),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
    }

    #[test]
    fn without_valid_context_a_new_trace_starts_with_no_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let child = TraceContext::from_headers(&headers).child();
        assert_eq!(child.parent_span_id(), None);
        assert!(child.sampled());
        assert_eq!(
            child.tracestate(),
            None,
            "state belongs to the discarded parent"
        );
        assert!(TraceContext::parse(&child.to_header()).is_ok());
        let other = TraceContext::from_headers(&HeaderMap::new()).child();
        assert_ne!(child.trace_id(), other.trace_id());
    }

    #[test]
    fn two_traceparents_are_not_trusted() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        headers.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        let context = TraceContext::from_headers(&headers);
        assert_ne!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn tracestate_is_validated_and_cut_as_the_specification_says() {
        assert_eq!(
            normalize_tracestate(" a=1 ,, tenant@sys=x y ").as_deref(),
            Some("a=1,tenant@sys=x y")
        );
        assert_eq!(normalize_tracestate("a=x,").as_deref(), Some("a=x"));
        for bad in [
            "A=1",
            "a",
            "a=",
            "a=1,a=2",
            "1a=1",
            "a=x=y",
            "a=1 ,b=\u{7f}",
            ",",
        ] {
            assert_eq!(normalize_tracestate(bad), None, "{bad:?} accepted");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(normalize_tracestate(&many.join(",")), None);
        let big = format!("big={},small=1", "x".repeat(200));
        let long: Vec<String> = (0..20)
            .map(|i| format!("k{i}={}", "v".repeat(30)))
            .collect();
        let cut = normalize_tracestate(&format!("{big},{}", long.join(","))).expect("kept");
        assert!(cut.len() <= 512, "{}", cut.len());
        assert!(
            cut.starts_with("small=1,k0="),
            "large members go first: {cut}"
        );
    }

    #[test]
    fn random_ids_are_never_zero() {
        for _ in 0..100 {
            assert!(TraceId::from_bytes(TraceId::random().to_bytes()).is_some());
            assert!(SpanId::from_bytes(SpanId::random().to_bytes()).is_some());
        }
    }
}
