//! Handing the agent's listening sockets from an old process to its replacement.
//!
//! An upgrade must not lose a connection. The new agent starts while the old one still runs,
//! connects to the old one's handoff socket and receives the old one's *listening sockets* —
//! the same kernel sockets, so connections waiting in their accept queues stay there and the
//! eBPF sockmap entries that point at them stay valid. Once the new agent serves them it
//! acknowledges; only then does the old agent stop accepting and drain its open connections.
//!
//! ```text
//! old agent                                   new agent
//! HandoffListener::bind(path)
//! listener.next() ───────── accept ◄───────── request(path, timeout)
//! pending.offer(sockets, timeout)
//!        ◄──────────── request ─────────────
//!        ──── sockets (names + fds) × n ───►  Inherited (take_tcp, serve them)
//!        ◄────────────── ack ───────────────  acknowledge.ack()
//! Ok(true): stop accepting, drain
//! ```
//!
//! # Wire format (version 1)
//!
//! A Unix stream socket. Both directions carry *frames*: a `u32` big-endian length followed by
//! that many bytes of one JSON object (at most [`MAX_FRAME`] bytes). Every object has a numeric
//! `version` and a string `type`:
//!
//! - new → old `{"version":1,"type":"request"}`, once, right after connecting.
//! - old → new `{"version":1,"type":"sockets","names":[...],"last":false|true}`, one or more
//!   times. The frame's bytes are written with one `sendmsg` whose `SCM_RIGHTS` ancillary data
//!   holds exactly one file descriptor per name, in the order of `names` (at most
//!   [`FDS_PER_FRAME`] per frame; the kernel allows 253 per message). The last frame has
//!   `"last":true`; an offer of no sockets is a single frame with no names.
//! - new → old `{"version":1,"type":"ack"}` once the new process serves the sockets.
//! - either way `{"version":1,"type":"refused","reason":"..."}` instead of the next expected
//!   frame when a peer will not go on (for example an unsupported version); the connection is
//!   then closed.
//!
//! Peers of a different `version` refuse each other with a clear error. A future version must
//! keep the framing, the `version` and `type` fields and the shape of `refused`, so that this
//! version can still read why it is refused.
//!
//! On a stream socket the kernel hands over a message's descriptors with the first byte of its
//! data, and a `recvmsg` may span frame boundaries, so the receiver queues descriptors in
//! arrival order and gives each frame, once complete, the first `names.len()` of the queue.
//! Descriptors are received with `MSG_CMSG_CLOEXEC`.
//!
//! # Security
//!
//! Whoever connects to the handoff socket gets every socket the agent serves. The socket's
//! directory is created with mode 0700 and the socket with mode 0600, and both sides check the
//! peer's credentials (`SO_PEERCRED`): uid 0 or our own uid.
//!
//! # Notes for callers
//!
//! - The descriptors share their *open file description* with the old process: status flags
//!   such as `O_NONBLOCK` (which [`Inherited::take_tcp`] sets) apply to both processes.
//!   tokio's listeners are non-blocking anyway.
//! - Until the old process receives the ack, both processes may accept on the same sockets;
//!   each connection goes to exactly one of them.
//! - The new process should bind its own [`HandoffListener`] (for the next upgrade) only after
//!   [`request`] returned: [`HandoffListener::bind`] replaces the socket file at the path.
use std::collections::{HashMap, VecDeque};
use std::ffi::c_int;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

/// The protocol version this code speaks.
pub const VERSION: u32 = 1;
/// The largest frame (JSON bytes, without the length prefix) either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Sockets sent per frame (the kernel's limit per message, `SCM_MAX_FD`, is 253).
pub const FDS_PER_FRAME: usize = 64;
/// The longest name that can be offered, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// `SCM_MAX_FD` in the kernel: the most descriptors one message can carry.
const SCM_MAX_FD: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff socket {path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("handoff socket {path}: {step}: no answer within {timeout:?}")]
    Timeout {
        path: PathBuf,
        step: &'static str,
        timeout: Duration,
    },
    #[error(
        "handoff socket {path}: the peer speaks handoff protocol version {theirs}, \
         this process speaks version {ours}"
    )]
    Version {
        path: PathBuf,
        ours: u32,
        theirs: u32,
    },
    #[error("handoff socket {path}: {step}: protocol error: {detail}")]
    Protocol {
        path: PathBuf,
        step: &'static str,
        detail: String,
    },
    #[error("handoff socket {path}: the peer refused the handoff: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("handoff socket {path}: the peer runs as uid {uid}, neither root nor our uid {ours}")]
    Peer { path: PathBuf, uid: u32, ours: u32 },
    #[error("handoff socket {path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("handoff socket {path}: invalid offer: {detail}")]
    Offer { path: PathBuf, detail: String },
}

impl HandoffError {
    fn io(path: &Path, step: &'static str, source: io::Error) -> Self {
        HandoffError::Io {
            path: path.to_owned(),
            step,
            source,
        }
    }

    fn protocol(path: &Path, step: &'static str, detail: impl Into<String>) -> Self {
        HandoffError::Protocol {
            path: path.to_owned(),
            step,
            detail: detail.into(),
        }
    }
}

/// A listening socket offered for handoff, by a stable name (e.g. "admin",
/// "pod/<uid>/10.0.0.5:15008").
#[derive(Debug, Clone)]
pub struct Offered<'a> {
    pub name: String,
    pub fd: BorrowedFd<'a>,
}

/// What a new process received: sockets by name. Sockets not taken are closed on drop.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: HashMap<String, OwnedFd>,
}

impl Inherited {
    /// Nothing inherited (a first start).
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The names of the sockets not taken yet, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sockets.keys().map(String::as_str)
    }

    /// Removes and returns the socket of that name, whatever it is.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        self.sockets.remove(name)
    }

    /// Removes and returns the TCP listener of that name, set non-blocking, ready for
    /// `tokio::net::TcpListener::from_std`. `None` when there is no socket of that name, or
    /// when it is not a listening TCP socket (it then stays, for [`Inherited::take`]).
    pub fn take_tcp(&mut self, name: &str) -> Option<std::net::TcpListener> {
        let fd = self.sockets.get(name)?;
        if !is_tcp_listener(fd.as_fd()) {
            tracing::warn!(name, "an inherited socket is not a listening TCP socket");
            return None;
        }
        let fd = self.sockets.remove(name)?;
        let listener = std::net::TcpListener::from(fd);
        if let Err(error) = listener.set_nonblocking(true) {
            tracing::warn!(name, %error, "cannot make an inherited listener non-blocking");
            self.sockets
                .insert(name.to_owned(), OwnedFd::from(listener));
            return None;
        }
        Some(listener)
    }

    /// Removes and returns the UDP socket of that name, set non-blocking (the DNS proxy's).
    /// `None` when there is none, or when it is not a UDP socket (it then stays).
    pub fn take_udp(&mut self, name: &str) -> Option<std::net::UdpSocket> {
        let fd = self.sockets.get(name)?;
        if !is_udp_socket(fd.as_fd()) {
            tracing::warn!(name, "an inherited socket is not a UDP socket");
            return None;
        }
        let socket = std::net::UdpSocket::from(self.sockets.remove(name)?);
        if let Err(error) = socket.set_nonblocking(true) {
            tracing::warn!(name, %error, "cannot make an inherited UDP socket non-blocking");
            self.sockets.insert(name.to_owned(), OwnedFd::from(socket));
            return None;
        }
        Some(socket)
    }
}

/// Sent by the new side once it serves the inherited sockets; the old side stops accepting
/// on receipt. Dropping it without [`Acknowledge::ack`] tells the old side to keep serving.
#[derive(Debug)]
pub struct Acknowledge {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Acknowledge {
    pub async fn ack(self) -> Result<(), HandoffError> {
        let deadline = Instant::now() + self.timeout;
        let step = "sending the ack";
        within(deadline, &self.path, step, self.timeout, async {
            send_frame(&self.stream, &Message::Ack, &[])
                .await
                .map_err(|e| HandoffError::io(&self.path, step, e))
        })
        .await
    }
}

/// New side. Connects to the old process's handoff socket at `path` and receives its
/// sockets. `Ok(None)` when nobody listens there (no file, or a stale one: a first start, or
/// the old agent died). The whole exchange is bounded by `timeout`; the returned
/// [`Acknowledge`] has the same bound for sending the ack.
pub async fn request(
    path: &Path,
    timeout: Duration,
) -> Result<Option<(Inherited, Acknowledge)>, HandoffError> {
    let deadline = Instant::now() + timeout;
    let step = "connecting";
    let connected = within(deadline, path, step, timeout, async {
        match UnixStream::connect(path).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                Ok(None)
            }
            Err(e) => Err(HandoffError::io(path, step, e)),
        }
    })
    .await?;
    let Some(stream) = connected else {
        return Ok(None);
    };
    check_peer(&stream, path)?;

    let step = "sending the request";
    within(deadline, path, step, timeout, async {
        send_frame(&stream, &Message::Request, &[])
            .await
            .map_err(|e| HandoffError::io(path, step, e))
    })
    .await?;

    let step = "receiving the sockets";
    let inherited = within(deadline, path, step, timeout, async {
        let mut reader = FrameReader::default();
        let mut sockets = HashMap::new();
        loop {
            let message = reader.next(&stream, path, step).await?.ok_or_else(|| {
                HandoffError::protocol(
                    path,
                    step,
                    "the old process closed the connection before the last sockets",
                )
            })?;
            let (names, last) = match message {
                Message::Sockets { names, last } => (names, last),
                other => {
                    return Err(HandoffError::protocol(
                        path,
                        step,
                        format!("expected sockets, got {}", other.kind()),
                    ));
                }
            };
            if reader.fds.len() < names.len() {
                return Err(HandoffError::protocol(
                    path,
                    step,
                    format!(
                        "a frame names {} sockets but only {} file descriptors arrived",
                        names.len(),
                        reader.fds.len()
                    ),
                ));
            }
            for name in names {
                let Some(fd) = reader.fds.pop_front() else {
                    // Checked above; kept for the absence of an unwrap.
                    return Err(HandoffError::protocol(path, step, "missing descriptor"));
                };
                if sockets.insert(name.clone(), fd).is_some() {
                    return Err(HandoffError::protocol(
                        path,
                        step,
                        format!("the socket {name:?} was sent twice"),
                    ));
                }
            }
            if last {
                break;
            }
        }
        if !reader.fds.is_empty() {
            return Err(HandoffError::protocol(
                path,
                step,
                format!(
                    "{} file descriptors arrived that no name accounts for",
                    reader.fds.len()
                ),
            ));
        }
        Ok(Inherited { sockets })
    })
    .await?;

    tracing::info!(path = %path.display(), sockets = inherited.len(), "inherited listening sockets");
    Ok(Some((
        inherited,
        Acknowledge {
            stream,
            path: path.to_owned(),
            timeout,
        },
    )))
}

/// Old side: where a new process asks for this process's sockets.
#[derive(Debug)]
pub struct HandoffListener {
    listener: UnixListener,
    path: PathBuf,
}

impl HandoffListener {
    /// Listens at `path`: creates the parent directory (mode 0700) if missing, removes a stale
    /// socket file (never anything else), binds and makes the socket file mode 0600. The file
    /// is not removed on drop: a successor may already have bound the same path.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, HandoffError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| HandoffError::io(path, "creating the directory", e))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
                .map_err(|e| HandoffError::io(path, "removing the stale socket file", e))?,
            Ok(_) => {
                return Err(HandoffError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HandoffError::io(path, "inspecting the socket file", e)),
        }
        let listener =
            UnixListener::bind(path).map_err(|e| HandoffError::io(path, "binding", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HandoffError::io(path, "setting the socket file mode", e))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for one request from a new process (a connection from root or our own uid;
    /// others are logged and dropped) and returns it, pending.
    pub async fn next(&self) -> Result<Pending, HandoffError> {
        loop {
            let (stream, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| HandoffError::io(&self.path, "accepting", e))?;
            match check_peer(&stream, &self.path) {
                Ok(pid) => {
                    return Ok(Pending {
                        stream,
                        path: self.path.clone(),
                        peer_pid: pid,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "refused a handoff request");
                }
            }
        }
    }
}

/// A connection from a new process, not served yet.
#[derive(Debug)]
pub struct Pending {
    stream: UnixStream,
    path: PathBuf,
    peer_pid: Option<i32>,
}

impl Pending {
    /// The process id of the requesting process, when the kernel knows it.
    pub fn peer_pid(&self) -> Option<i32> {
        self.peer_pid
    }

    /// Reads the new process's request, sends every offered socket (in frames of at most
    /// [`FDS_PER_FRAME`]), then waits for its ack; each of the three steps is bounded by
    /// `timeout`.
    ///
    /// `Ok(true)`: acknowledged, the caller stops accepting and drains. `Ok(false)`: the new
    /// process went away or was too slow at some step; the caller keeps serving as before.
    /// `Err`: the offer is invalid or the peer broke the protocol; also keep serving.
    pub async fn offer(
        self,
        offered: &[Offered<'_>],
        timeout: Duration,
    ) -> Result<bool, HandoffError> {
        let Pending {
            stream,
            path,
            peer_pid,
        } = self;
        let path = path.as_path();

        if let Err(detail) = validate(offered) {
            let reason = format!("the old process offered an invalid set of sockets: {detail}");
            refuse(&stream, reason, timeout).await;
            return Err(HandoffError::Offer {
                path: path.to_owned(),
                detail,
            });
        }

        let mut reader = FrameReader::default();
        let step = "reading the request";
        let request = tokio::time::timeout(timeout, reader.next(&stream, path, step)).await;
        match request {
            Err(_) => {
                tracing::warn!(path = %path.display(), ?peer_pid, ?timeout, "no handoff request in time");
                return Ok(false);
            }
            Ok(Ok(None)) => return Ok(false),
            Ok(Err(HandoffError::Io { source, .. })) if peer_gone(&source) => return Ok(false),
            Ok(Ok(Some(Message::Request))) => {}
            Ok(Ok(Some(other))) => {
                return Err(HandoffError::protocol(
                    path,
                    step,
                    format!("expected a request, got {}", other.kind()),
                ));
            }
            Ok(Err(error)) => {
                if let HandoffError::Version { theirs, .. } = &error {
                    let reason = format!(
                        "handoff protocol version {theirs} is not supported; this process speaks \
                         version {VERSION}"
                    );
                    refuse(&stream, reason, timeout).await;
                }
                return Err(error);
            }
        }

        let step = "sending the sockets";
        let sending = tokio::time::timeout(timeout, async {
            let mut batches = offered.chunks(FDS_PER_FRAME).peekable();
            if batches.peek().is_none() {
                let empty = Message::Sockets {
                    names: Vec::new(),
                    last: true,
                };
                return send_frame(&stream, &empty, &[]).await;
            }
            while let Some(batch) = batches.next() {
                let message = Message::Sockets {
                    names: batch.iter().map(|o| o.name.clone()).collect(),
                    last: batches.peek().is_none(),
                };
                let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|o| o.fd).collect();
                send_frame(&stream, &message, &fds).await?;
            }
            Ok(())
        })
        .await;
        match sending {
            Err(_) => {
                tracing::warn!(path = %path.display(), ?peer_pid, ?timeout, "handoff: sending the sockets timed out");
                return Ok(false);
            }
            Ok(Err(e)) if peer_gone(&e) => return Ok(false),
            Ok(Err(e)) => return Err(HandoffError::io(path, step, e)),
            Ok(Ok(())) => {}
        }

        let step = "waiting for the ack";
        match tokio::time::timeout(timeout, reader.next(&stream, path, step)).await {
            Err(_) => {
                tracing::warn!(path = %path.display(), ?peer_pid, ?timeout, "handoff not acknowledged in time");
                Ok(false)
            }
            Ok(Ok(Some(Message::Ack))) => {
                tracing::info!(path = %path.display(), ?peer_pid, sockets = offered.len(), "handoff acknowledged");
                Ok(true)
            }
            Ok(Ok(None)) => {
                tracing::warn!(path = %path.display(), ?peer_pid, "the new process closed the handoff without an ack");
                Ok(false)
            }
            Ok(Err(HandoffError::Io { source, .. })) if peer_gone(&source) => Ok(false),
            Ok(Ok(Some(other))) => Err(HandoffError::protocol(
                path,
                step,
                format!("expected an ack, got {}", other.kind()),
            )),
            Ok(Err(error)) => Err(error),
        }
    }
}

fn validate(offered: &[Offered<'_>]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for o in offered {
        if o.name.len() > MAX_NAME_LEN {
            return Err(format!(
                "a name is {} bytes long, more than {MAX_NAME_LEN}",
                o.name.len()
            ));
        }
        if !seen.insert(o.name.as_str()) {
            return Err(format!("the name {:?} is offered twice", o.name));
        }
    }
    Ok(())
}

/// Tells the peer why we stop, best effort.
async fn refuse(stream: &UnixStream, reason: String, timeout: Duration) {
    let message = Message::Refused { reason };
    let _ = tokio::time::timeout(timeout, send_frame(stream, &message, &[])).await;
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Runs `fut` until `deadline`; past it, a [`HandoffError::Timeout`] for `step`.
async fn within<T>(
    deadline: Instant,
    path: &Path,
    step: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, HandoffError>>,
) -> Result<T, HandoffError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(HandoffError::Timeout {
                path: path.to_owned(),
                step,
                timeout,
            })
        })
}

/// Checks that the peer runs as root or as our uid; returns its pid.
fn check_peer(stream: &UnixStream, path: &Path) -> Result<Option<i32>, HandoffError> {
    let cred = stream
        .peer_cred()
        .map_err(|e| HandoffError::io(path, "reading the peer's credentials", e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    if cred.uid() != 0 && cred.uid() != ours {
        return Err(HandoffError::Peer {
            path: path.to_owned(),
            uid: cred.uid(),
            ours,
        });
    }
    Ok(cred.pid())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Request,
    Sockets { names: Vec<String>, last: bool },
    Ack,
    Refused { reason: String },
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Request => "a request",
            Message::Sockets { .. } => "sockets",
            Message::Ack => "an ack",
            Message::Refused { .. } => "a refusal",
        }
    }
}

#[derive(Serialize)]
struct OutFrame<'a> {
    version: u32,
    #[serde(flatten)]
    message: &'a Message,
}

/// What every version must keep: read before the rest to refuse an incompatible peer clearly.
#[derive(Deserialize)]
struct Header {
    version: u32,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
}

fn encode(message: &Message) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(&OutFrame {
        version: VERSION,
        message,
    })
    .map_err(io::Error::other)?;
    if json.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {} bytes is larger than {MAX_FRAME}",
            json.len()
        )));
    }
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(4 + json.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

fn decode(json: &[u8], path: &Path, step: &'static str) -> Result<Message, HandoffError> {
    let header: Header = serde_json::from_slice(json)
        .map_err(|e| HandoffError::protocol(path, step, format!("unreadable frame: {e}")))?;
    if header.kind == "refused" {
        return Err(HandoffError::Refused {
            path: path.to_owned(),
            reason: header.reason.unwrap_or_default(),
        });
    }
    if header.version != VERSION {
        return Err(HandoffError::Version {
            path: path.to_owned(),
            ours: VERSION,
            theirs: header.version,
        });
    }
    serde_json::from_slice(json)
        .map_err(|e| HandoffError::protocol(path, step, format!("unreadable frame: {e}")))
}

/// Sends one frame; `fds` go with its first byte.
async fn send_frame(
    stream: &UnixStream,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let bytes = encode(message)?;
    let mut sent = 0;
    while sent < bytes.len() {
        let (data, fds) = if sent == 0 {
            (&bytes[..], fds)
        } else {
            (&bytes[sent..], &[][..])
        };
        let n = stream
            .async_io(Interest::WRITABLE, || {
                send_with_fds(stream.as_fd(), data, fds)
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// Reassembles frames from a stream, queueing the descriptors that arrive.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl FrameReader {
    /// The next frame; `None` when the peer closed the connection between frames.
    async fn next(
        &mut self,
        stream: &UnixStream,
        path: &Path,
        step: &'static str,
    ) -> Result<Option<Message>, HandoffError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(message) = self.take_frame(path, step)? {
                return Ok(Some(message));
            }
            let fds = &mut self.fds;
            let n = stream
                .async_io(Interest::READABLE, || {
                    recv_with_fds(stream.as_fd(), &mut chunk, fds)
                })
                .await
                .map_err(|e| HandoffError::io(path, step, e))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(HandoffError::protocol(
                    path,
                    step,
                    "the connection closed in the middle of a frame",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl FrameReader {
    /// The first frame of the bytes received so far, taken from them; `None` while it is
    /// incomplete.
    fn take_frame(
        &mut self,
        path: &Path,
        step: &'static str,
    ) -> Result<Option<Message>, HandoffError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return Err(HandoffError::protocol(
                path,
                step,
                format!(
                    "a frame of {len} bytes announced, more than {MAX_FRAME} (not a \
                     weft handoff peer?)"
                ),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = decode(&self.buf[4..4 + len], path, step);
        self.buf.drain(..4 + len);
        message.map(Some)
    }
}

/// For the fuzz target (`fuzz/fuzz_targets/handoff_frames.rs`): reads `bytes` as they could
/// arrive from a peer, in pieces of `piece` bytes, as [`request`] and [`Pending::offer`]
/// read frames, until the first error. Every frame read is encoded again and must read back
/// the same; returns how many frames were read.
#[doc(hidden)]
pub fn fuzz_frames(bytes: &[u8], piece: usize) -> usize {
    let path = Path::new("fuzz");
    let mut reader = FrameReader::default();
    let mut frames = 0;
    for chunk in bytes.chunks(piece.max(1)) {
        reader.buf.extend_from_slice(chunk);
        loop {
            match reader.take_frame(path, "fuzzing") {
                Ok(Some(message)) => {
                    frames += 1;
                    let encoded = encode(&message);
                    let again = encoded
                        .as_ref()
                        .ok()
                        .and_then(|e| decode(&e[4..], path, "fuzzing").ok());
                    assert_eq!(
                        again.as_ref(),
                        Some(&message),
                        "{message:?} did not round-trip"
                    );
                }
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

/// Room for a control message of `fds` descriptors, as 8-byte aligned storage.
fn cmsg_buffer(fds: usize) -> Vec<u64> {
    let payload = (fds * size_of::<c_int>()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    vec![0u64; space.div_ceil(size_of::<u64>())]
}

/// One non-blocking `sendmsg` of `data` with `fds` as `SCM_RIGHTS`.
fn send_with_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > SCM_MAX_FD {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut control = Vec::new();
    if !fds.is_empty() {
        let payload = (fds.len() * size_of::<c_int>()) as u32;
        control = cmsg_buffer(fds.len());
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size; `control` holds at least that many bytes.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as _;
        // SAFETY: msg_control points at a zeroed, aligned buffer large enough for one header
        // and `payload` bytes of data, so the first header and its data are in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(io::Error::other("no room for the control message"));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points at live buffers (iov, control) for the duration of the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    drop(control);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One non-blocking `recvmsg` into `buf`; descriptors that arrive are appended to `fds`
/// (close-on-exec).
fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = cmsg_buffer(SCM_MAX_FD);
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * size_of::<u64>()) as _;
    // SAFETY: msg points at live, writable buffers of the sizes it states.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Take ownership of every descriptor first, so that none leaks on an error below.
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed control
    // messages; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them, and an SCM_RIGHTS message's data
    // is an array of descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                for i in 0..len / size_of::<c_int>() {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "control data was truncated: file descriptors were lost",
        ));
    }
    Ok(n as usize)
}

fn getsockopt_int(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn is_udp_socket(fd: BorrowedFd<'_>) -> bool {
    let opt = |name| getsockopt_int(fd, libc::SOL_SOCKET, name).ok();
    matches!(opt(libc::SO_DOMAIN), Some(libc::AF_INET | libc::AF_INET6))
        && opt(libc::SO_TYPE) == Some(libc::SOCK_DGRAM)
        && opt(libc::SO_PROTOCOL) == Some(libc::IPPROTO_UDP)
}

fn is_tcp_listener(fd: BorrowedFd<'_>) -> bool {
    let opt = |name| getsockopt_int(fd, libc::SOL_SOCKET, name).ok();
    matches!(opt(libc::SO_DOMAIN), Some(libc::AF_INET | libc::AF_INET6))
        && opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && opt(libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
        && opt(libc::SO_ACCEPTCONN) == Some(1)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A unique directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "weft-handoff-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).expect("creating a temp dir");
            Self(path)
        }

        fn socket(&self) -> PathBuf {
            self.0.join("run").join("handoff.sock")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LONG: Duration = Duration::from_secs(10);

    fn tcp_listeners(n: usize) -> io::Result<Vec<std::net::TcpListener>> {
        (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect()
    }

    fn offers<'a>(
        listeners: &'a [std::net::TcpListener],
        name: impl Fn(usize) -> String,
    ) -> Vec<Offered<'a>> {
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Offered {
                name: name(i),
                fd: l.as_fd(),
            })
            .collect()
    }

    fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFD on a valid descriptor.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    /// The old side: serves one request with `offered`.
    async fn serve_one(
        handoff: &HandoffListener,
        offered: &[Offered<'_>],
        timeout: Duration,
    ) -> Result<bool, HandoffError> {
        handoff.next().await?.offer(offered, timeout).await
    }

    async fn write_frame(stream: &mut UnixStream, json: &[u8]) -> io::Result<()> {
        let len = u32::try_from(json.len()).map_err(io::Error::other)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(json).await
    }

    async fn read_frame(stream: &mut UnixStream) -> io::Result<String> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let mut json = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut json).await?;
        String::from_utf8(json).map_err(io::Error::other)
    }

    #[tokio::test]
    async fn nobody_listening_is_none() -> TestResult {
        let dir = TempDir::new("none");
        let path = dir.socket();

        let started = std::time::Instant::now();
        assert!(request(&path, LONG).await?.is_none(), "missing file");

        // A stale socket file: bound once, nobody listens any more.
        std::fs::create_dir_all(dir.0.join("run"))?;
        drop(std::os::unix::net::UnixListener::bind(&path)?);
        assert!(path.exists());
        assert!(request(&path, LONG).await?.is_none(), "stale socket");
        assert!(started.elapsed() < Duration::from_secs(1));
        Ok(())
    }

    #[tokio::test]
    async fn bind_makes_private_files_and_replaces_only_sockets() -> TestResult {
        let dir = TempDir::new("bind");
        let path = dir.socket();
        let first = HandoffListener::bind(&path)?;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir.0.join("run"))?, 0o700);
        assert_eq!(mode(&path)?, 0o600);

        // A successor replaces the socket file of its predecessor.
        let second = HandoffListener::bind(&path)?;
        assert_eq!(mode(&path)?, 0o600);
        drop((first, second));

        let file = dir.0.join("run").join("not-a-socket");
        std::fs::write(&file, b"keep me")?;
        let err = HandoffListener::bind(&file)
            .err()
            .ok_or("bound over a file")?;
        assert!(matches!(err, HandoffError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&file)?, b"keep me");
        Ok(())
    }

    #[tokio::test]
    async fn hands_over_tcp_listeners_with_their_queued_connections() -> TestResult {
        let dir = TempDir::new("tcp");
        let path = dir.socket();
        let listeners = tcp_listeners(3)?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<io::Result<_>>()?;

        // Queued on listener 1 before the handoff; the old side never accepts it.
        let mut client = std::net::TcpStream::connect(addrs[1])?;
        client.write_all(b"queued")?;

        let handoff = HandoffListener::bind(&path)?;
        let offered = offers(&listeners, |i| format!("pod/uid-{i}/127.0.0.1:15008"));
        let old = serve_one(&handoff, &offered, LONG);
        let new = async {
            let (mut inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            assert_eq!(inherited.len(), 3);
            let mut names: Vec<&str> = inherited.names().collect();
            names.sort();
            assert_eq!(
                names,
                [0, 1, 2].map(|i| format!("pod/uid-{i}/127.0.0.1:15008"))
            );
            let mut taken = Vec::new();
            for (i, addr) in addrs.iter().enumerate() {
                let listener = inherited
                    .take_tcp(&format!("pod/uid-{i}/127.0.0.1:15008"))
                    .ok_or("not a TCP listener")?;
                assert_eq!(listener.local_addr()?, *addr, "socket {i}");
                assert!(is_cloexec(listener.as_fd()), "socket {i} is not CLOEXEC");
                taken.push(listener);
            }
            assert!(inherited.is_empty());
            assert!(inherited.take_tcp("pod/uid-1/127.0.0.1:15008").is_none());

            let listener = tokio::net::TcpListener::from_std(taken.swap_remove(1))?;
            let (mut conn, _) = tokio::time::timeout(LONG, listener.accept()).await??;
            let mut got = [0u8; 6];
            conn.read_exact(&mut got).await?;
            assert_eq!(&got, b"queued");
            conn.write_all(b"served").await?;
            ack.ack().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(old, new);
        new?;
        assert!(old?, "acknowledged");

        client.set_read_timeout(Some(LONG))?;
        let mut got = [0u8; 6];
        client.read_exact(&mut got)?;
        assert_eq!(&got, b"served");
        Ok(())
    }

    #[tokio::test]
    async fn offer_is_true_only_after_an_ack() -> TestResult {
        let dir = TempDir::new("ack");
        let path = dir.socket();
        let listeners = tcp_listeners(1)?;
        let offered = offers(&listeners, |_| "admin".to_owned());
        let handoff = HandoffListener::bind(&path)?;

        // Acknowledged.
        let new = async {
            let (_inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            ack.ack().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(serve_one(&handoff, &offered, LONG), new);
        new?;
        assert!(old?);

        // The new process drops the Acknowledge (it died): false, right away.
        let started = std::time::Instant::now();
        let new = async {
            let (inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            assert_eq!(inherited.len(), 1);
            drop(ack);
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(serve_one(&handoff, &offered, LONG), new);
        new?;
        assert!(!old?);
        assert!(started.elapsed() < Duration::from_secs(5));

        // The new process holds the Acknowledge too long: false after the timeout.
        let short = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let new = async {
            let (_inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Too late: the old side no longer listens for it, which is not an error here.
            let _ = ack.ack().await;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let old = async {
            let result = serve_one(&handoff, &offered, short).await;
            (result, started.elapsed())
        };
        let ((old, elapsed), new) = tokio::join!(old, new);
        new?;
        assert!(!old?);
        assert!(
            elapsed >= short && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn many_listeners_arrive_in_several_frames() -> TestResult {
        let dir = TempDir::new("many");
        let path = dir.socket();
        let listeners = tcp_listeners(300)?;
        let offered = offers(&listeners, |i| format!("pod/{i}"));
        let handoff = HandoffListener::bind(&path)?;
        let new = async {
            let (mut inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            assert_eq!(inherited.len(), 300);
            for (i, original) in listeners.iter().enumerate() {
                let listener = inherited
                    .take_tcp(&format!("pod/{i}"))
                    .ok_or("missing or not a TCP listener")?;
                assert_eq!(listener.local_addr()?, original.local_addr()?, "pod/{i}");
            }
            ack.ack().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(serve_one(&handoff, &offered, LONG), new);
        new?;
        assert!(old?);
        Ok(())
    }

    #[tokio::test]
    async fn nothing_offered_is_an_empty_handoff() -> TestResult {
        let dir = TempDir::new("empty");
        let path = dir.socket();
        let handoff = HandoffListener::bind(&path)?;
        let new = async {
            let (inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            assert!(inherited.is_empty());
            ack.ack().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(serve_one(&handoff, &[], LONG), new);
        new?;
        assert!(old?);
        Ok(())
    }

    #[tokio::test]
    async fn invalid_offers_are_refused() -> TestResult {
        let dir = TempDir::new("invalid");
        let path = dir.socket();
        let listeners = tcp_listeners(2)?;
        let offered = offers(&listeners, |_| "same".to_owned());
        let handoff = HandoffListener::bind(&path)?;
        let (old, new) = tokio::join!(serve_one(&handoff, &offered, LONG), request(&path, LONG));
        assert!(matches!(old, Err(HandoffError::Offer { .. })), "{old:?}");
        match new {
            Err(HandoffError::Refused { reason, .. }) => assert!(reason.contains("twice")),
            other => return Err(format!("expected a refusal, got {other:?}").into()),
        }
        Ok(())
    }

    #[tokio::test]
    async fn old_side_rejects_garbage_and_other_versions() -> TestResult {
        let dir = TempDir::new("old-garbage");
        let path = dir.socket();
        let listeners = tcp_listeners(1)?;
        let offered = offers(&listeners, |_| "admin".to_owned());
        let handoff = HandoffListener::bind(&path)?;

        // Not our protocol at all: the length prefix is absurd.
        let peer = async {
            let mut stream = UnixStream::connect(&path).await?;
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
            Ok::<_, io::Error>(stream)
        };
        let (old, peer) = tokio::join!(serve_one(&handoff, &offered, LONG), peer);
        drop(peer?);
        let err = old.err().ok_or("garbage accepted")?;
        assert!(matches!(err, HandoffError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("not a weft handoff peer"), "{err}");

        // Framed, but not JSON.
        let peer = async {
            let mut stream = UnixStream::connect(&path).await?;
            write_frame(&mut stream, b"\x00\xffnot json").await?;
            Ok::<_, io::Error>(stream)
        };
        let (old, peer) = tokio::join!(serve_one(&handoff, &offered, LONG), peer);
        drop(peer?);
        let err = old.err().ok_or("garbage accepted")?;
        assert!(err.to_string().contains("unreadable frame"), "{err}");

        // A future version: refused on both ends, with a reason.
        let peer = async {
            let mut stream = UnixStream::connect(&path).await?;
            write_frame(&mut stream, br#"{"version":99,"type":"request","new":1}"#).await?;
            read_frame(&mut stream).await
        };
        let (old, refusal) = tokio::join!(serve_one(&handoff, &offered, LONG), peer);
        match old {
            Err(HandoffError::Version { ours, theirs, .. }) => {
                assert_eq!((ours, theirs), (VERSION, 99));
            }
            other => return Err(format!("expected a version error, got {other:?}").into()),
        }
        let refusal = refusal?;
        assert!(refusal.contains(r#""type":"refused""#), "{refusal}");
        assert!(refusal.contains("version 99"), "{refusal}");

        // Connected, said nothing, left: no handoff, no error.
        let peer = async { UnixStream::connect(&path).await.map(drop) };
        let (old, peer) = tokio::join!(serve_one(&handoff, &offered, LONG), peer);
        peer?;
        assert!(!old?);
        Ok(())
    }

    /// A fake old process at `path` that reads the request and answers with `answer`.
    async fn fake_old(
        listener: &UnixListener,
        answer: impl AsyncFnOnce(&mut UnixStream) -> io::Result<()>,
    ) -> io::Result<UnixStream> {
        let (mut stream, _) = listener.accept().await?;
        let request = read_frame(&mut stream).await?;
        assert_eq!(request, r#"{"version":1,"type":"request"}"#);
        answer(&mut stream).await?;
        Ok(stream)
    }

    #[tokio::test]
    async fn new_side_rejects_garbage_and_other_versions() -> TestResult {
        let dir = TempDir::new("new-garbage");
        let path = dir.socket();
        std::fs::create_dir_all(dir.0.join("run"))?;
        let listener = UnixListener::bind(&path)?;

        async fn answer_with(
            listener: &UnixListener,
            path: &Path,
            json: &'static [u8],
        ) -> Result<HandoffError, Box<dyn std::error::Error>> {
            let old = fake_old(listener, async |s| write_frame(s, json).await);
            let (old, new) = tokio::join!(old, request(path, LONG));
            let _stream = old?;
            Ok(new.err().ok_or("garbage accepted")?)
        }

        let err = answer_with(&listener, &path, br#"{"version":2,"type":"sockets"}"#).await?;
        match err {
            HandoffError::Version { ours, theirs, .. } => assert_eq!((ours, theirs), (1, 2)),
            other => return Err(format!("expected a version error, got {other}").into()),
        }

        let err = answer_with(&listener, &path, b"{not json").await?;
        assert!(err.to_string().contains("unreadable frame"), "{err}");

        let err = answer_with(&listener, &path, br#"{"version":1,"type":"ack"}"#).await?;
        assert!(
            err.to_string().contains("expected sockets, got an ack"),
            "{err}"
        );

        let err = answer_with(
            &listener,
            &path,
            br#"{"version":7,"type":"refused","reason":"too old"}"#,
        )
        .await?;
        assert!(
            matches!(&err, HandoffError::Refused { reason, .. } if reason == "too old"),
            "{err}"
        );

        // Names without descriptors.
        let err = answer_with(
            &listener,
            &path,
            br#"{"version":1,"type":"sockets","names":["a","b"],"last":true}"#,
        )
        .await?;
        assert!(
            err.to_string().contains("only 0 file descriptors arrived"),
            "{err}"
        );

        // The old process closes before the last frame.
        let old = async {
            let frame = br#"{"version":1,"type":"sockets","names":[],"last":false}"#;
            fake_old(&listener, async |s| write_frame(s, frame).await)
                .await
                .map(drop)
        };
        let (old, new) = tokio::join!(old, request(&path, LONG));
        old?;
        let err = new.err().ok_or("a truncated handoff was accepted")?;
        assert!(err.to_string().contains("before the last sockets"), "{err}");

        // The old process accepts but never answers: bounded by the timeout.
        let short = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let (old, new) = tokio::join!(listener.accept(), request(&path, short));
        let _stream = old?;
        assert!(matches!(new, Err(HandoffError::Timeout { .. })), "{new:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        Ok(())
    }
}

#[cfg(test)]
mod peer_tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    /// A process of another uid that reaches the handoff socket is dropped without a word,
    /// and the listener goes on to serve the next, legitimate, request.
    #[tokio::test]
    async fn other_uids_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to run a client as another uid");
            return Ok(());
        }
        let dir = std::env::temp_dir().join(format!("weft-handoff-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        let path = dir.join("run").join("handoff.sock");
        let handoff = HandoffListener::bind(&path)?;
        // Open the file modes so that only SO_PEERCRED stands in the way.
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;

        // SAFETY: an all-zero sockaddr_un is valid; the path fits (checked).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }

        // SAFETY: the child makes raw system calls only, then _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: async-signal-safe calls on memory prepared before the fork.
            unsafe {
                if libc::syscall(libc::SYS_setgid, 65534) != 0
                    || libc::syscall(libc::SYS_setuid, 65534) != 0
                {
                    libc::_exit(2);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    libc::_exit(3);
                }
                let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                    libc::_exit(4);
                }
                let tv = libc::timeval {
                    tv_sec: 5,
                    tv_usec: 0,
                };
                let tv_len = size_of::<libc::timeval>() as libc::socklen_t;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    tv_len,
                );
                let mut byte = 0u8;
                let n = libc::recv(fd, (&raw mut byte).cast(), 1, 0);
                // 0: the agent closed the connection, as it should.
                libc::_exit(if n == 0 { 0 } else { 5 });
            }
        }
        assert!(child > 0, "fork failed");

        let old = async {
            let pending = handoff.next().await?;
            assert_eq!(pending.peer_pid(), Some(std::process::id() as i32));
            pending.offer(&[], LONG).await
        };
        let new = async {
            let status = tokio::task::spawn_blocking(move || {
                let mut status = 0;
                // SAFETY: waits for our own child.
                let rc = unsafe { libc::waitpid(child, &mut status, 0) };
                (rc, status)
            })
            .await?;
            match status {
                (rc, status) if rc == child && libc::WIFEXITED(status) => {
                    assert_eq!(
                        libc::WEXITSTATUS(status),
                        0,
                        "the other uid was not dropped"
                    );
                }
                other => return Err(format!("waitpid: {other:?}").into()),
            }
            let (_inherited, ack) = request(&path, LONG).await?.ok_or("nobody listening")?;
            ack.ack().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let (old, new) = tokio::join!(old, new);
        new?;
        assert!(old?);
        Ok(())
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn peer_error_names_both_uids() {
        let err = HandoffError::Peer {
            path: PathBuf::from("/run/weft/handoff.sock"),
            uid: 1000,
            ours: 0,
        };
        assert_eq!(
            err.to_string(),
            "handoff socket /run/weft/handoff.sock: the peer runs as uid 1000, neither root nor \
             our uid 0"
        );
    }
}
