//! Access logs as Istio's meshConfig turns them on (`accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`): one line per request at a waypoint or gateway, in Envoy's format
//! language ([`format`]), and one line per connection at a node agent, with ztunnel's
//! fields ([`connection`]). Lines go through a bounded queue to a writer thread
//! ([`writer`]): the data path never waits on the file, and lines that do not fit are
//! dropped and counted.
pub mod connection;
mod encoding;
pub mod format;
pub mod writer;

pub use connection::ConnectionEntry;
pub use encoding::Encoding;
pub use format::{Format, FormatError, HttpEntry};
pub use writer::{AccessLog, ActiveLog};
