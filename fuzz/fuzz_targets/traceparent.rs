//! W3C trace context from requests: `traceparent` (`TraceContext::parse`, and the HBONE
//! client's `is_valid_traceparent`) and `tracestate` (`normalize_tracestate`).
//! - a parsed context's outgoing header parses back to the same trace, span and sampling,
//!   and is valid for the HBONE client;
//! - what the HBONE client passes on as valid, the telemetry side can parse;
//! - a normalized `tracestate` normalizes to itself and stays within 512 characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_core::hbone::headers::is_valid_traceparent;
use weft_core::telemetry::{TraceContext, normalize_tracestate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(context) = TraceContext::parse(text) {
        let header = context.to_header();
        let again = TraceContext::parse(&header)
            .unwrap_or_else(|e| panic!("{text:?} gave {header:?}, which does not parse: {e}"));
        assert_eq!(again.trace_id(), context.trace_id());
        assert_eq!(again.span_id(), context.span_id());
        assert_eq!(again.sampled(), context.sampled());
        assert!(is_valid_traceparent(&header), "{header:?} sent but invalid");
    }
    if is_valid_traceparent(text) {
        assert!(
            TraceContext::parse(text).is_ok(),
            "{text:?} passed on as valid but does not parse"
        );
    }
    if let Some(state) = normalize_tracestate(text) {
        assert!(state.len() <= 512, "{state:?} longer than 512");
        assert_eq!(
            normalize_tracestate(&state).as_deref(),
            Some(state.as_str()),
            "{text:?} normalized to {state:?}, which normalizes differently"
        );
    }
});
