//! Distributed tracing: W3C Trace Context (level 1) and B3 propagation, the sampling
//! decision, and export over OTLP/gRPC or as Zipkin JSON v2.
//!
//! A proxy handling a request continues the caller's trace and passes its own span on:
//!
//! ```ignore
//! let ctx = TraceContext::from_headers(request.headers()).child();
//! ctx.inject(upstream_request.headers_mut()); // traceparent (+ tracestate) for the next hop
//! let mut span = Span::start(&ctx, "ingress", SpanKind::Server);
//! span.set_attribute("http.response.status_code", 200u16);
//! exporter.record(span); // ends it; queued, batched, exported if an endpoint is set
//! ```
pub mod b3;
mod context;
mod exporter;
mod post;
mod propagation;
pub mod proto;
mod span;
pub mod zipkin;

pub use context::{
    Propagation, Sampling, SpanId, TRACEPARENT, TRACESTATE, TraceContext, TraceContextError,
    TraceId, normalize_tracestate, sample,
};
pub use exporter::{ExporterConfig, ExporterError, ExporterStats, Protocol, SpanExporter};
pub use span::{AttributeValue, Span, SpanKind, SpanStatus, truncate_tag};
