//! Access logs as Istio turns them on: meshConfig `accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`, and the access-log extension providers (`envoyFileAccessLog`,
//! `envoyOtelAls`) the mesh's `defaultProviders.accessLogging` names, resolved by the
//! config crate into [`AccessLogSink`]s. One line per request (or TCP stream) at a waypoint
//! or gateway, in Envoy's format language ([`format`]), and one line per connection at a
//! node agent, with ztunnel's fields ([`connection`]). Lines go to files through a bounded
//! queue to a writer thread ([`writer`]) and to OTLP collectors through a batching
//! exporter ([`otlp`]): the data path never waits, and lines that do not fit are dropped
//! and counted.
pub mod connection;
mod encoding;
pub mod format;
pub mod otlp;
pub mod otlp_proto;
mod sink;
pub mod writer;

pub use connection::ConnectionEntry;
pub use encoding::Encoding;
pub use format::{Format, FormatError, HttpEntry};
pub use sink::{AccessLogSink, OtlpSink};
pub use writer::{AccessLog, ActiveLog};
