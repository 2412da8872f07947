//! W3C trace context from requests: `traceparent` (`TraceContext::parse`) and `tracestate`
//! (`normalize_tracestate`).
//! - a parsed context's outgoing header parses back to the same trace, span and sampling,
//!   and so does the header an HBONE CONNECT carries it in;
//! - a normalized `tracestate` normalizes to itself and stays within 512 characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
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
        let (_, connect) = context.connect_header();
        let sent = TraceContext::parse(&connect)
            .unwrap_or_else(|e| panic!("{text:?} gave a CONNECT's {connect:?}: {e}"));
        assert_eq!(sent.trace_id(), context.trace_id());
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
