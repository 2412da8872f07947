//! The DNS proxy's metrics, as ztunnel names them: `istio_dns_requests_total` (every query
//! a pod sent the proxy), `istio_dns_upstream_requests_total` (those forwarded to the
//! upstream resolver) and `istio_dns_upstream_failures_total` (forwarded and not answered),
//! by query type, transport and the source's canonical service and revision.
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use super::labels::{UNKNOWN, label};

/// ztunnel's `DnsLabels`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsLabels {
    /// Lower case: `a`, `aaaa`, `srv`, …
    pub query_type: Arc<str>,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    pub source_canonical_service: Arc<str>,
    pub source_canonical_revision: Arc<str>,
}

impl DnsLabels {
    pub fn new(query_type: &str, protocol: &'static str) -> Self {
        Self {
            query_type: Arc::from(query_type.to_ascii_lowercase()),
            protocol,
            source_canonical_service: Arc::from(UNKNOWN),
            source_canonical_revision: Arc::from(UNKNOWN),
        }
    }

    pub fn with_source(mut self, canonical_service: &str, canonical_revision: &str) -> Self {
        self.source_canonical_service = Arc::from(canonical_service);
        self.source_canonical_revision = Arc::from(canonical_revision);
        self
    }
}

impl EncodeLabelSet for DnsLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        label(encoder, "request_query_type", &self.query_type)?;
        label(encoder, "request_protocol", self.protocol)?;
        label(
            encoder,
            "source_canonical_service",
            &self.source_canonical_service,
        )?;
        label(
            encoder,
            "source_canonical_revision",
            &self.source_canonical_revision,
        )
    }
}

/// How one query was handled, for [`super::Metrics::dns_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsOutcome {
    /// Answered by the proxy from the registry.
    Answered,
    /// Forwarded upstream and answered.
    Forwarded,
    /// Forwarded upstream without an answer.
    ForwardFailed,
}
