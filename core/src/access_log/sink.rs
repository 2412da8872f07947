//! Where access log lines go, as plain data: what the mesh config's providers (or a
//! Telemetry resource naming them) resolve to, and what a proxy builds its writers from
//! ([`super::AccessLog::active_for`]).
use super::encoding::Encoding;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AccessLogSink {
    /// Lines appended to a file (`/dev/stdout` included): meshConfig `accessLogFile`, the
    /// built-in `envoy` provider, an `envoyFileAccessLog` provider.
    File {
        path: String,
        encoding: Encoding,
        /// Envoy command operators (a JSON object of them for JSON); empty is Istio's
        /// default for the encoding.
        format: String,
    },
    /// OTLP log records over gRPC: an `envoyOtelAls` provider.
    Otlp(OtlpSink),
}

/// An `envoyOtelAls` provider's settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OtlpSink {
    /// `[<namespace>/]<hostname>` of the collector's Service or ServiceEntry.
    pub service: String,
    pub port: u16,
    /// Istio's default is `otel_envoy_accesslog`.
    pub log_name: String,
    /// The record's body: Envoy command operators (Istio's default text line when empty).
    pub format: String,
    /// The record's attributes: name, Envoy command operators.
    pub labels: Vec<(String, String)>,
}
