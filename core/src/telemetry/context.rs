//! Where a request is in a trace, read from and written to its headers: W3C Trace Context
//! (level 1: `traceparent`, `tracestate`) and B3 (`b3`, `x-b3-*`, see `b3.rs`), with the
//! sampling decision they carry.
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

pub(super) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Lowercase hex only, as the specification requires.
pub(super) fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
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

    /// A 64-bit id (B3's short form, Zipkin's `enable64bitTraceId`): the high half zero.
    pub fn random_64() -> Self {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&random_bytes::<8>());
        bytes[15] |= 1;
        Self(bytes)
    }

    /// Whether only the low 64 bits are set, so that the id can be written in 16 hex digits.
    pub fn is_64_bit(self) -> bool {
        self.0[..8] == [0; 8]
    }

    /// The id in 16 hex digits when it is 64-bit, else 32.
    pub fn to_short_hex(self) -> String {
        if self.is_64_bit() {
            let mut low = String::with_capacity(16);
            for b in &self.0[8..] {
                low.push_str(&format!("{b:02x}"));
            }
            low
        } else {
            self.to_string()
        }
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

/// Whether a trace is recorded. The first proxy to see a request without a decision makes
/// it ([`TraceContext::decide`]); everyone after honours and passes it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Nobody has decided yet (B3 without a sampling state, or no context at all).
    Undecided,
    Sampled,
    NotSampled,
    /// B3's debug flag (`x-b3-flags: 1`, `b3: …-d`): sampled, and said so onwards.
    Debug,
}

impl Sampling {
    pub fn is_sampled(self) -> bool {
        matches!(self, Self::Sampled | Self::Debug)
    }
}

/// The header formats a context is read from or written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Propagation {
    /// `traceparent` and `tracestate`.
    pub w3c: bool,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`.
    pub b3_multi: bool,
    /// The single `b3` header.
    pub b3_single: bool,
}

impl Propagation {
    pub const W3C: Self = Self {
        w3c: true,
        b3_multi: false,
        b3_single: false,
    };
    /// What Envoy's Zipkin tracer writes.
    pub const B3_MULTI: Self = Self {
        w3c: false,
        b3_multi: true,
        b3_single: false,
    };

    pub fn union(self, other: Self) -> Self {
        Self {
            w3c: self.w3c || other.w3c,
            b3_multi: self.b3_multi || other.b3_multi,
            b3_single: self.b3_single || other.b3_single,
        }
    }

    pub fn is_empty(self) -> bool {
        self == Self::default()
    }
}

/// Where a request is in a trace. A context parsed from a request's headers describes the
/// caller's span; [`TraceContext::child`] makes the span of whoever handles it, whose id is
/// what goes to the next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub(super) trace_id: TraceId,
    /// `None` at the root of a new trace: nobody's span yet.
    pub(super) span_id: Option<SpanId>,
    pub(super) parent_span_id: Option<SpanId>,
    pub(super) sampling: Sampling,
    pub(super) tracestate: Option<String>,
    /// The formats the context arrived in (none for a new root).
    pub(super) arrived_as: Propagation,
}

impl TraceContext {
    /// A new trace, for a request that arrived without (valid) context, with the decision
    /// made (`Some`) or left to [`TraceContext::decide`].
    pub fn new_root(sampled: impl Into<Option<bool>>) -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: None,
            parent_span_id: None,
            sampling: match sampled.into() {
                Some(true) => Sampling::Sampled,
                Some(false) => Sampling::NotSampled,
                None => Sampling::Undecided,
            },
            tracestate: None,
            arrived_as: Propagation::default(),
        }
    }

    /// Makes the sampling decision if nobody has: sampled with probability
    /// `percentage`/100 (Istio's `randomSamplingPercentage`). A decision that came with the
    /// request is kept.
    pub fn decide(self, percentage: f64) -> Self {
        let draw = f64::from(u32::from_le_bytes(random_bytes::<4>())) / (f64::from(u32::MAX) + 1.0);
        self.decide_with(percentage, draw * 100.0)
    }

    /// [`TraceContext::decide`] with the random draw given, in `[0, 100)`.
    pub fn decide_with(mut self, percentage: f64, draw: f64) -> Self {
        if self.sampling == Sampling::Undecided {
            self.sampling = if sample(percentage, draw) {
                Sampling::Sampled
            } else {
                Sampling::NotSampled
            };
        }
        self
    }

    /// Uses 64-bit trace ids for a new trace (Zipkin's `enable64bitTraceId`); a continued
    /// trace keeps its id.
    pub fn with_64_bit_root(mut self) -> Self {
        if self.span_id.is_none() && !self.trace_id.is_64_bit() {
            self.trace_id = TraceId::random_64();
        }
        self
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
            // The sampled flag is a decision either way.
            sampling: if flags[0] & SAMPLED != 0 {
                Sampling::Sampled
            } else {
                Sampling::NotSampled
            },
            tracestate: None,
            arrived_as: Propagation::W3C,
        })
    }

    /// The context of a valid `traceparent` (with its `tracestate`).
    pub(super) fn from_w3c(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let parsed = match (values.next(), values.next()) {
            (Some(one), None) => one.to_str().ok().and_then(|v| Self::parse(v).ok()),
            // Several traceparents cannot be told apart: start afresh.
            _ => None,
        };
        let context = parsed?;
        let combined: Vec<&str> = headers
            .get_all(TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let tracestate = (!combined.is_empty()).then(|| normalize_tracestate(&combined.join(",")));
        Some(context.with_tracestate(tracestate.flatten()))
    }

    /// The context of a new span under this one: same trace, flags and state, a new span
    /// id, this span as its parent.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: Some(SpanId::random()),
            parent_span_id: self.span_id,
            sampling: self.sampling,
            tracestate: self.tracestate.clone(),
            arrived_as: self.arrived_as,
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

    /// Whether this trace is recorded (an undecided one is not, until decided).
    pub fn sampled(&self) -> bool {
        self.sampling.is_sampled()
    }

    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// The formats the context arrived in; none for a new trace.
    pub fn arrived_as(&self) -> Propagation {
        self.arrived_as
    }

    /// W3C `trace-flags` as sent onwards.
    pub fn flags(&self) -> u8 {
        u8::from(self.sampled())
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
            self.flags()
        )
    }

    /// Sets `traceparent` and `tracestate`, replacing what was there.
    pub(super) fn inject_w3c(&self, headers: &mut HeaderMap) {
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

/// Whether a trace is sampled at `percentage` (0 to 100; outside, clamped) when the random
/// draw, uniform in `[0, 100)`, is `draw`.
pub fn sample(percentage: f64, draw: f64) -> bool {
    let percentage = if percentage.is_nan() {
        0.0
    } else {
        percentage.clamp(0.0, 100.0)
    };
    draw < percentage
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
        assert_eq!(
            child.sampling(),
            Sampling::Undecided,
            "left to the first proxy"
        );
        assert!(!child.sampled());
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
    fn the_first_proxy_decides_and_later_ones_honour_the_decision() {
        assert!(sample(10.0, 9.99));
        assert!(!sample(10.0, 10.0));
        assert!(!sample(0.0, 0.0), "0% samples nothing");
        assert!(sample(100.0, 99.999), "100% samples everything");
        assert!(!sample(f64::NAN, 0.0));
        assert!(sample(250.0, 99.0), "clamped to 100");

        let undecided = TraceContext::new_root(None);
        assert!(undecided.clone().decide_with(10.0, 5.0).sampled());
        assert!(!undecided.clone().decide_with(10.0, 50.0).sampled());
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let unsampled = TraceContext::from_headers(&headers).decide_with(100.0, 0.0);
        assert!(!unsampled.sampled(), "an unsampled caller stays unsampled");
        let mut out = HeaderMap::new();
        unsampled.child().inject(&mut out);
        assert!(
            out.get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.ends_with("-00")),
            "and is propagated as such"
        );
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(
            TraceContext::from_headers(&headers)
                .decide_with(0.0, 50.0)
                .sampled()
        );
        // The draw is uniform: about 10% of undecided traces are sampled at 10%.
        let sampled = (0..10_000)
            .filter(|_| TraceContext::new_root(None).decide(10.0).sampled())
            .count();
        assert!((700..1300).contains(&sampled), "{sampled}");
    }

    #[test]
    fn random_ids_are_never_zero() {
        for _ in 0..100 {
            assert!(TraceId::from_bytes(TraceId::random().to_bytes()).is_some());
            assert!(SpanId::from_bytes(SpanId::random().to_bytes()).is_some());
        }
    }
}
