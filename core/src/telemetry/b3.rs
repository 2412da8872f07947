//! B3 propagation (openzipkin/b3-propagation): the single `b3` header and the
//! `x-b3-*` multi headers, with 64- or 128-bit trace ids and the debug flag.
use http::HeaderMap;
use http::header::HeaderValue;

use super::context::{Propagation, Sampling, SpanId, TraceContext, TraceId, parse_hex};

pub const B3: &str = "b3";
pub const X_B3_TRACEID: &str = "x-b3-traceid";
pub const X_B3_SPANID: &str = "x-b3-spanid";
pub const X_B3_PARENTSPANID: &str = "x-b3-parentspanid";
pub const X_B3_SAMPLED: &str = "x-b3-sampled";
pub const X_B3_FLAGS: &str = "x-b3-flags";

const MULTI: [&str; 5] = [
    X_B3_TRACEID,
    X_B3_SPANID,
    X_B3_PARENTSPANID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
];

/// A header's value when it is there exactly once (several cannot be told apart).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(one), None) => one.to_str().ok().map(|v| v.trim_matches([' ', '\t'])),
        _ => None,
    }
}

/// A trace id of 16 or 32 hex digits (upper case is read too: B3 says lower-hex, and
/// tolerant readers are the norm). A 64-bit id fills the low half.
fn trace_id(text: &str) -> Option<TraceId> {
    let lower = text.to_ascii_lowercase();
    match lower.len() {
        32 => TraceId::from_hex(&lower),
        16 => {
            let low: [u8; 8] = parse_hex(&lower)?;
            let mut bytes = [0u8; 16];
            bytes[8..].copy_from_slice(&low);
            TraceId::from_bytes(bytes)
        }
        _ => None,
    }
}

fn span_id(text: &str) -> Option<SpanId> {
    SpanId::from_hex(&text.to_ascii_lowercase())
}

/// The formats of B3 present in `headers`, valid or not.
pub(super) fn present(headers: &HeaderMap) -> Propagation {
    Propagation {
        w3c: false,
        b3_multi: MULTI.iter().any(|h| headers.contains_key(*h)),
        b3_single: headers.contains_key(B3),
    }
}

/// A context from B3: the single header when it parses, else the multi headers. A
/// sampling state without ids (`b3: 0`, a lone `x-b3-sampled`) is a decision for a new
/// trace.
pub(super) fn extract(headers: &HeaderMap) -> Option<TraceContext> {
    single(headers, B3)
        .and_then(parse_single)
        .or_else(|| parse_multi(headers))
}

fn root_with(sampling: Sampling, arrived_as: Propagation) -> TraceContext {
    let mut context = TraceContext::new_root(None);
    context.sampling = sampling;
    context.arrived_as = arrived_as;
    context
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a lone sampling state.
pub fn parse_single(value: &str) -> Option<TraceContext> {
    let state = |text: &str| match text {
        "1" => Some(Sampling::Sampled),
        "0" => Some(Sampling::NotSampled),
        "d" => Some(Sampling::Debug),
        _ => None,
    };
    let fields: Vec<&str> = value.split('-').collect();
    let arrived_as = Propagation {
        b3_single: true,
        ..Propagation::default()
    };
    match fields.as_slice() {
        [alone] => Some(root_with(state(alone)?, arrived_as)),
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let sampling = match rest.first() {
                Some(text) => state(text)?,
                None => Sampling::Undecided,
            };
            if let Some(parent) = rest.get(1) {
                span_id(parent)?;
            }
            Some(TraceContext {
                trace_id: trace_id(trace)?,
                span_id: Some(span_id(span)?),
                parent_span_id: None,
                sampling,
                tracestate: None,
                arrived_as,
            })
        }
        _ => None,
    }
}

/// The multi headers. `x-b3-flags: 1` (debug) wins over `x-b3-sampled`, which is `1`/`0`
/// (or `true`/`false`, as old tracers wrote it).
pub fn parse_multi(headers: &HeaderMap) -> Option<TraceContext> {
    let arrived_as = Propagation {
        b3_multi: true,
        ..Propagation::default()
    };
    let sampling = if single(headers, X_B3_FLAGS) == Some("1") {
        Sampling::Debug
    } else {
        match single(headers, X_B3_SAMPLED) {
            Some("1" | "true") => Sampling::Sampled,
            Some("0" | "false") => Sampling::NotSampled,
            _ => Sampling::Undecided,
        }
    };
    let ids = single(headers, X_B3_TRACEID)
        .and_then(trace_id)
        .zip(single(headers, X_B3_SPANID).and_then(span_id));
    match ids {
        Some((trace_id, span_id)) => Some(TraceContext {
            trace_id,
            span_id: Some(span_id),
            parent_span_id: None,
            sampling,
            tracestate: None,
            arrived_as,
        }),
        None if sampling != Sampling::Undecided => Some(root_with(sampling, arrived_as)),
        None => None,
    }
}

/// Writes `context` as B3, in the forms `propagation` asks for, after removing every B3
/// header the request had (stale ids must not reach the next hop).
pub(super) fn inject(context: &TraceContext, headers: &mut HeaderMap, propagation: Propagation) {
    headers.remove(B3);
    for name in MULTI {
        headers.remove(name);
    }
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    if propagation.b3_multi {
        for (name, value) in multi_headers(context) {
            put(name, value);
        }
    }
    if propagation.b3_single {
        put(B3, single_header(context));
    }
}

/// The multi headers for `context` (its span, under its parent).
pub fn multi_headers(context: &TraceContext) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (X_B3_TRACEID, context.trace_id().to_short_hex()),
        (X_B3_SPANID, context.span_id().to_string()),
    ];
    if let Some(parent) = context.parent_span_id() {
        out.push((X_B3_PARENTSPANID, parent.to_string()));
    }
    match context.sampling() {
        Sampling::Debug => out.push((X_B3_FLAGS, "1".to_owned())),
        Sampling::Sampled => out.push((X_B3_SAMPLED, "1".to_owned())),
        Sampling::NotSampled => out.push((X_B3_SAMPLED, "0".to_owned())),
        Sampling::Undecided => {}
    }
    out
}

/// The single header for `context`.
pub fn single_header(context: &TraceContext) -> String {
    let ids = format!(
        "{}-{}",
        context.trace_id().to_short_hex(),
        context.span_id()
    );
    let state = match context.sampling() {
        Sampling::Debug => "d",
        Sampling::Sampled => "1",
        Sampling::NotSampled => "0",
        Sampling::Undecided => return ids,
    };
    match context.parent_span_id() {
        Some(parent) => format!("{ids}-{state}-{parent}"),
        None => format!("{ids}-{state}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::TRACEPARENT;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_specifications_single_header_examples() {
        // openzipkin/b3-propagation README, "Single Header".
        let full =
            parse_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .expect("valid");
        assert_eq!(
            full.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(full.span_id().to_string(), "e457b5a2e4d86bd1");
        assert_eq!(full.sampling(), Sampling::Sampled);
        let short = parse_single("a3ce929d0e0e4736-00f067aa0ba902b7-d").expect("valid");
        assert!(short.trace_id().is_64_bit());
        assert_eq!(short.trace_id().to_short_hex(), "a3ce929d0e0e4736");
        assert_eq!(short.sampling(), Sampling::Debug);
        let undecided = parse_single("a3ce929d0e0e4736-00f067aa0ba902b7").expect("valid");
        assert_eq!(undecided.sampling(), Sampling::Undecided);
        let deny = parse_single("0").expect("a decision alone");
        assert_eq!(deny.sampling(), Sampling::NotSampled);
        assert_eq!(deny.parent_span_id(), None);
        for bad in [
            "",
            "x",
            "a3ce929d0e0e4736",
            "a3ce929d0e0e4736-00f067aa0ba902b7-2",
            "a3ce929d0e0e47-00f067aa0ba902b7-1",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-xyz",
            "a3ce929d0e0e4736-0000000000000000-1",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90-extra",
        ] {
            assert!(parse_single(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn multi_headers_with_64_bit_ids_continue_and_come_back_alike() {
        fn value(map: &HeaderMap, name: &str) -> Option<String> {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
        let incoming = headers(&[
            (X_B3_TRACEID, "463ac35c9f6413ad"),
            (X_B3_SPANID, "a2fb4a1d1a96d312"),
            (X_B3_PARENTSPANID, "0020000000000001"),
            (X_B3_SAMPLED, "1"),
        ]);
        let context = TraceContext::from_headers(&incoming);
        assert_eq!(context.trace_id().to_short_hex(), "463ac35c9f6413ad");
        assert_eq!(context.sampling(), Sampling::Sampled);
        assert!(context.arrived_as().b3_multi && !context.arrived_as().w3c);
        let child = context.child();
        let mut out = incoming.clone();
        child.inject_as(&mut out, child.arrived_as());

        assert_eq!(
            value(&out, X_B3_TRACEID).as_deref(),
            Some("463ac35c9f6413ad")
        );
        assert_eq!(
            value(&out, X_B3_PARENTSPANID).as_deref(),
            Some("a2fb4a1d1a96d312")
        );
        assert_eq!(value(&out, X_B3_SPANID), Some(child.span_id().to_string()));
        assert_eq!(value(&out, X_B3_SAMPLED).as_deref(), Some("1"));
        assert!(out.get(TRACEPARENT).is_none(), "B3 in, B3 out");
        // W3C needs 128 bits: the 64-bit id is padded with zeros, as OpenTelemetry does.
        child.inject_as(&mut out, Propagation::W3C);
        assert_eq!(
            value(&out, TRACEPARENT),
            Some(format!(
                "00-0000000000000000463ac35c9f6413ad-{}-01",
                child.span_id()
            ))
        );
    }

    #[test]
    fn the_debug_flag_wins_and_travels_as_a_flag() {
        let context = TraceContext::from_headers(&headers(&[
            (X_B3_TRACEID, "80f198ee56343ba864fe8b2a57d3eff7"),
            (X_B3_SPANID, "e457b5a2e4d86bd1"),
            (X_B3_SAMPLED, "0"),
            (X_B3_FLAGS, "1"),
        ]));
        assert_eq!(context.sampling(), Sampling::Debug);
        assert!(context.sampled());
        let sent = multi_headers(&context.child());
        assert!(sent.contains(&(X_B3_FLAGS, "1".to_owned())));
        assert!(!sent.iter().any(|(name, _)| *name == X_B3_SAMPLED));
        assert!(single_header(&context.child()).contains("-d-e457b5a2e4d86bd1"));
    }

    #[test]
    fn a_lone_sampling_decision_starts_a_trace_that_keeps_it() {
        let context = TraceContext::from_headers(&headers(&[(X_B3_SAMPLED, "0")]));
        assert_eq!(context.sampling(), Sampling::NotSampled);
        let decided = context.decide_with(100.0, 0.0);
        assert!(!decided.sampled(), "the caller's decision is honoured");
        let mut out = HeaderMap::new();
        decided.child().inject_as(&mut out, decided.arrived_as());
        assert_eq!(
            out.get(X_B3_SAMPLED).and_then(|v| v.to_str().ok()),
            Some("0")
        );
        // Neither ids nor a decision: nothing to continue.
        assert!(parse_multi(&headers(&[(X_B3_TRACEID, "463ac35c9f6413ad")])).is_none());
    }

    #[test]
    fn the_single_header_comes_first_and_stale_headers_are_replaced() {
        let incoming = headers(&[
            (B3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            (X_B3_TRACEID, "463ac35c9f6413ad"),
            (X_B3_SPANID, "a2fb4a1d1a96d312"),
        ]);
        let context = TraceContext::from_headers(&incoming);
        assert_eq!(
            context.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(context.arrived_as().b3_single && context.arrived_as().b3_multi);
        let child = context.child();
        let mut out = incoming.clone();
        child.inject_as(&mut out, Propagation::B3_MULTI);
        assert!(
            out.get(B3).is_none(),
            "not asked for: removed, not left stale"
        );
        assert_eq!(
            out.get(X_B3_TRACEID).and_then(|v| v.to_str().ok()),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        child.inject_as(&mut out, context.arrived_as());
        assert_eq!(
            out.get(B3).and_then(|v| v.to_str().ok()).map(str::to_owned),
            Some(format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{}-1-e457b5a2e4d86bd1",
                child.span_id()
            ))
        );
    }

    #[test]
    fn w3c_is_preferred_when_both_are_valid() {
        let context = TraceContext::from_headers(&headers(&[
            (
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
            (X_B3_TRACEID, "463ac35c9f6413ad"),
            (X_B3_SPANID, "a2fb4a1d1a96d312"),
            (X_B3_SAMPLED, "1"),
        ]));
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.sampling(), Sampling::NotSampled);
        assert!(context.arrived_as().w3c && context.arrived_as().b3_multi);
    }
}
