//! Prometheus metrics with Istio's standard names and labels, shared by the agent and the
//! waypoint so that dashboards written for Istio work unchanged.
//!
//! - TCP: `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//!   `istio_tcp_sent_bytes_total` (server → client), `istio_tcp_received_bytes_total`
//!   (client → server), per [`ConnectionLabels`]. [`Metrics::tcp_opened`] counts the opening
//!   and returns a [`TcpConnectionRecorder`] holding the connection's byte counters, so a
//!   byte costs one atomic add; dropping it counts the close.
//! - HTTP: `istio_requests_total`, `istio_request_duration_milliseconds`,
//!   `istio_request_bytes`, `istio_response_bytes` (headers and body, as Envoy's
//!   `request.total_size` and `response.total_size`), per [`RequestLabels`],
//!   `response_code` and `grpc_response_status`, with Envoy's (so Istio's) default buckets
//!   ([`Metrics::http_request`], [`HttpRequestRecord`]).
//!   The Telemetry API's overrides of a request's metrics (disabled, tags removed,
//!   replaced or added) are [`RequestOverrides`] ([`Metrics::http_request_with`]).
//! - `istio_build{component, tag}`, 1 ([`Metrics::set_build`]).
//!
//! - DNS (the agent's DNS proxy, ztunnel's names): `istio_dns_requests_total`,
//!   `istio_dns_upstream_requests_total`, `istio_dns_upstream_failures_total`
//!   ([`DnsLabels`], [`Metrics::dns_request`]).
//!
//! [`Metrics::encode`] renders the OpenMetrics text a Prometheus scrape accepts;
//! [`serve_metrics`] serves it on `/metrics` and `/stats/prometheus`.
mod dns;
mod labels;
mod overrides;
mod recorder;
mod registry;
mod server;

pub use dns::{DnsLabels, DnsOutcome};
pub use labels::{
    ConnectionLabels, DEFAULT_CLUSTER_ID, DEFAULT_REVISION, Reporter, RequestLabels,
    RequestProtocol, ResponseFlags, SecurityPolicy, ServiceLabels, UNKNOWN, WorkloadLabels,
    canonical_revision, canonical_service,
};
pub use overrides::{MetricChange, RequestOverrides, TagChanges};
pub use recorder::{Metered, Side, TcpConnectionRecorder};
pub use registry::{HttpRequestRecord, ISTIO_BUCKETS, Metrics};
pub use server::{CONTENT_TYPE, serve_metrics, serve_metrics_on};
