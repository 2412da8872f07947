//! The plugin's end of the agent's socket: connect, check that root answers, send one
//! request (with the pod's network namespace), read one response, within a time limit.
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{self, ProtocolError, Request, Response};
use crate::wire;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent listens there: none runs on this node, or it is starting or restarting.
    #[error("nothing answers at {socket}: {source}")]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error("{socket} is served by uid {uid}, neither root nor this plugin's user")]
    Untrusted { socket: PathBuf, uid: u32 },
    #[error("the agent at {socket} did not answer within {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("talking to the agent at {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("the agent at {socket} answered in a way this plugin does not understand: {source}")]
    Protocol {
        socket: PathBuf,
        source: ProtocolError,
    },
}

/// The agent as the plugin reaches it; a trait so that the commands can be tested without
/// an agent.
pub trait AgentLink {
    fn call(
        &self,
        request: &Request,
        netns: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Response, ClientError>;

    /// Where the agent is, for messages.
    fn socket(&self) -> &Path;
}

/// The agent's unix socket.
pub struct SocketAgent {
    pub socket: PathBuf,
}

impl AgentLink for SocketAgent {
    fn call(
        &self,
        request: &Request,
        netns: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        call(&self.socket, request, netns, timeout)
    }

    fn socket(&self) -> &Path {
        &self.socket
    }
}

/// One exchange with the agent at `socket`.
pub fn call(
    socket: &Path,
    request: &Request,
    netns: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let io_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::TimedOut {
            ClientError::Timeout {
                socket: socket.to_owned(),
                timeout,
            }
        } else {
            ClientError::Io {
                socket: socket.to_owned(),
                source,
            }
        }
    };
    let stream = UnixStream::connect(socket).map_err(|source| {
        if matches!(
            source.raw_os_error(),
            Some(libc::ENOENT | libc::ECONNREFUSED)
        ) {
            ClientError::Unreachable {
                socket: socket.to_owned(),
                source,
            }
        } else {
            io_error(source)
        }
    })?;
    let server = wire::peer(&stream).map_err(io_error)?;
    if !wire::trusted(&server) {
        return Err(ClientError::Untrusted {
            socket: socket.to_owned(),
            uid: server.uid,
        });
    }
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_error)?;
    wire::send(&stream, &protocol::encode(request), netns).map_err(io_error)?;
    let (answer, _) = wire::receive(&stream).map_err(io_error)?;
    protocol::decode(&answer).map_err(|source| ClientError::Protocol {
        socket: socket.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn an_absent_agent_is_unreachable_and_a_silent_one_times_out() {
        let dir = tempfile::tempdir().expect("dir");
        let socket = dir.path().join("cni.sock");
        let absent = call(&socket, &Request::Status, None, Duration::from_secs(1));
        assert!(
            matches!(absent, Err(ClientError::Unreachable { .. })),
            "{absent:?}"
        );
        // A socket file left by an agent that died.
        drop(UnixListener::bind(&socket).expect("bind"));
        let stale = call(&socket, &Request::Status, None, Duration::from_secs(1));
        assert!(
            matches!(stale, Err(ClientError::Unreachable { .. })),
            "{stale:?}"
        );
        std::fs::remove_file(&socket).expect("remove");
        let _silent = UnixListener::bind(&socket).expect("bind");
        let waited = call(&socket, &Request::Status, None, Duration::from_millis(100));
        assert!(
            matches!(waited, Err(ClientError::Timeout { .. })),
            "{waited:?}"
        );
    }

    #[test]
    fn one_request_one_response() {
        let dir = tempfile::tempdir().expect("dir");
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let agent = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let (bytes, fd) = wire::receive(&stream).expect("request");
            let request: Request = protocol::decode(&bytes).expect("decodes");
            assert_eq!(request, Request::Status);
            assert!(fd.is_none());
            wire::send(&stream, &protocol::encode(&Response::Done), None).expect("answer");
        });
        let answer = call(&socket, &Request::Status, None, Duration::from_secs(5)).expect("ok");
        assert_eq!(answer, Response::Done);
        agent.join().expect("agent thread");
    }
}
