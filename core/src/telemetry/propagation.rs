//! A request's trace context in whichever formats it comes and goes in: W3C Trace Context
//! first, then B3 (`b3.rs`), as a proxy reads and writes them.
use http::HeaderMap;

use super::b3;
use super::context::{Propagation, Sampling, TRACEPARENT, TraceContext};

impl TraceContext {
    /// The context of an incoming request: its `traceparent` (with its `tracestate`) when
    /// valid, else its B3 headers (the single `b3` first, as B3 says), else a new trace
    /// whose sampling is undecided (see [`TraceContext::decide`]).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut context = Self::extract(headers).unwrap_or_else(|| Self::new_root(None));
        // Both formats: say both onwards, each kept in step with the other.
        context.arrived_as = context.arrived_as.union(formats_present(headers));
        context
    }

    /// The context `headers` carry, when they carry a valid one: `traceparent` (with its
    /// `tracestate`), else B3 (a lone B3 sampling state is a decision for a new trace).
    pub fn extract(headers: &HeaderMap) -> Option<Self> {
        Self::from_w3c(headers).or_else(|| b3::extract(headers))
    }

    /// The context of a request that arrived inside a tunnel (an HBONE CONNECT) whose
    /// CONNECT carried `tunnel`: the request's own when its headers carry one
    /// ([`TraceContext::from_headers`]); else the tunnel's trace, under the tunnel's span,
    /// with the sampling left to whoever handles the request ([`TraceContext::decide`]):
    /// a connection's decision is about the connection, and the requests a kept-alive
    /// connection carries are sampled one by one; else a new trace. A context taken from
    /// the tunnel goes onwards in the proxy's own formats (and replaces any invalid trace
    /// header the request had).
    pub fn from_request_in_tunnel(headers: &HeaderMap, tunnel: Option<&TraceContext>) -> Self {
        match tunnel {
            Some(tunnel) if Self::extract(headers).is_none() => Self {
                trace_id: tunnel.trace_id,
                span_id: Some(tunnel.span_id()),
                parent_span_id: None,
                sampling: Sampling::Undecided,
                tracestate: tunnel.tracestate.clone(),
                arrived_as: formats_present(headers),
            },
            _ => Self::from_headers(headers),
        }
    }

    /// The header an HBONE CONNECT carries this context in: `traceparent` when it carries a
    /// sampling decision, which the far side honours; B3's single `b3` header without a
    /// sampling state when nobody has decided (B3's "defer": the far side decides, where a
    /// W3C `traceparent` could only say "not sampled"). ztunnel reads a `traceparent` and
    /// makes up its own id without one.
    pub fn connect_header(&self) -> (&'static str, String) {
        match self.sampling {
            Sampling::Undecided => (b3::B3, b3::single_header(self)),
            _ => (TRACEPARENT, self.to_header()),
        }
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

/// The trace formats whose headers a request has, valid or not: they are written onwards,
/// so that none is passed on stale.
fn formats_present(headers: &HeaderMap) -> Propagation {
    let mut formats = b3::present(headers);
    formats.w3c = headers.contains_key(TRACEPARENT);
    formats
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    const CONNECT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// What a CONNECT carried: the connection's span, unsampled.
    fn tunnel() -> TraceContext {
        TraceContext::parse(&format!("00-{CONNECT_TRACE}-00f067aa0ba902b7-00")).expect("valid")
    }

    #[test]
    fn a_request_without_context_continues_its_tunnels_trace_and_decides_itself() {
        let tunnel = tunnel();
        let context = TraceContext::from_request_in_tunnel(&HeaderMap::new(), Some(&tunnel));
        assert_eq!(context.trace_id().to_string(), CONNECT_TRACE);
        assert_eq!(
            context.sampling(),
            Sampling::Undecided,
            "the connection's decision is not the request's"
        );
        let handled = context.decide_with(10.0, 5.0).child();
        assert_eq!(handled.trace_id().to_string(), CONNECT_TRACE);
        assert_eq!(
            handled.parent_span_id().map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7"),
            "the CONNECT's span is the parent"
        );
        assert!(handled.sampled());
        assert!(
            handled.arrived_as().is_empty(),
            "the request came in no format of its own"
        );
        let garbage = headers(&[(TRACEPARENT, "garbage")]);
        let context = TraceContext::from_request_in_tunnel(&garbage, Some(&tunnel));
        assert_eq!(context.trace_id().to_string(), CONNECT_TRACE);
        let mut out = garbage.clone();
        context.child().inject_as(&mut out, context.arrived_as());
        assert!(
            out.get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains(CONNECT_TRACE)),
            "an invalid traceparent is replaced, not passed on"
        );
    }

    #[test]
    fn a_requests_own_context_wins_over_its_tunnels() {
        let tunnel = tunnel();
        let own = headers(&[(
            TRACEPARENT,
            "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01",
        )]);
        let context = TraceContext::from_request_in_tunnel(&own, Some(&tunnel));
        assert_eq!(
            context.trace_id().to_string(),
            "5bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.sampled());
        let b3 = headers(&[("b3", "0")]);
        let context = TraceContext::from_request_in_tunnel(&b3, Some(&tunnel));
        assert_ne!(context.trace_id().to_string(), CONNECT_TRACE);
        assert_eq!(
            context.sampling(),
            Sampling::NotSampled,
            "B3's decision alone"
        );
        let none = TraceContext::from_request_in_tunnel(&HeaderMap::new(), None);
        assert_ne!(none.trace_id().to_string(), CONNECT_TRACE);
        assert_eq!(none.parent_span_id(), None);
    }

    #[test]
    fn a_connect_carries_a_decision_as_traceparent_and_none_as_b3_deferred() {
        let undecided = TraceContext::new_root(None).child();
        let (name, value) = undecided.connect_header();
        assert_eq!(name, "b3");
        let mut sent = HeaderMap::new();
        sent.insert(name, HeaderValue::from_str(&value).expect("ascii"));
        let read = TraceContext::from_headers(&sent);
        assert_eq!(read.trace_id(), undecided.trace_id());
        assert_eq!(read.span_id(), undecided.span_id());
        assert_eq!(
            read.sampling(),
            Sampling::Undecided,
            "the far side decides: {value}"
        );
        assert!(!sent.contains_key(TRACEPARENT));

        for (percentage, sampled) in [(100.0, true), (0.0, false)] {
            let decided = TraceContext::new_root(None).decide(percentage).child();
            let (name, value) = decided.connect_header();
            assert_eq!(name, TRACEPARENT);
            let read = TraceContext::parse(&value).expect("valid");
            assert_eq!(read.sampled(), sampled);
            assert_eq!(read.span_id(), decided.span_id());
        }
    }
}
