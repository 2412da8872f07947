//! A request's trace context in whichever formats it comes and goes in: W3C Trace Context
//! first, then B3 (`b3.rs`), as a proxy reads and writes them.
use http::HeaderMap;

use super::b3;
use super::context::{Propagation, TRACEPARENT, TraceContext};

impl TraceContext {
    /// The context of an incoming request: its `traceparent` (with its `tracestate`) when
    /// valid, else its B3 headers (the single `b3` first, as B3 says), else a new trace
    /// whose sampling is undecided (see [`TraceContext::decide`]).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut context = Self::from_w3c(headers)
            .or_else(|| b3::extract(headers))
            .unwrap_or_else(|| Self::new_root(None));
        // Both formats: say both onwards, each kept in step with the other.
        context.arrived_as = context.arrived_as.union(b3::present(headers));
        if headers.contains_key(TRACEPARENT) {
            context.arrived_as.w3c = true;
        }
        context
    }

    /// Sets `traceparent` and `tracestate` on outgoing headers, replacing what was there.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.inject_as(headers, Propagation::W3C);
    }

    /// Writes this context in the formats of `propagation` (`traceparent` when none is
    /// asked for), replacing what the headers had in them.
    pub fn inject_as(&self, headers: &mut HeaderMap, propagation: Propagation) {
        let propagation = if propagation.is_empty() {
            Propagation::W3C
        } else {
            propagation
        };
        if propagation.b3_multi || propagation.b3_single {
            b3::inject(self, headers, propagation);
        }
        if propagation.w3c {
            self.inject_w3c(headers);
        }
    }
}
