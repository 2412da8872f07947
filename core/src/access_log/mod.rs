//! Access logs as Istio's meshConfig turns them on (`accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`): one line per request at a waypoint or gateway, in Envoy's format
//! language ([`format`]), and one line per connection at a node agent, with ztunnel's
//! fields ([`connection`]). Lines go through a bounded queue to a writer thread
//! ([`writer`]): the data path never waits on the file, and lines that do not fit are
//! dropped and counted.
pub mod connection;
pub mod format;
pub mod writer;

pub use connection::ConnectionEntry;
pub use format::{Format, FormatError, HttpEntry};
pub use writer::{AccessLog, ActiveLog};

/// meshConfig `accessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    #[default]
    Text,
    Json,
}
