//! How each HTTP/1 request on a connection was framed as the client wrote it, for what
//! hyper does not tell: a request with both `Content-Length` and `Transfer-Encoding` (the
//! CL.TE and TE.CL request smuggling patterns). hyper frames such a request by its
//! `Transfer-Encoding`, drops the `Content-Length` from the headers it hands over and closes
//! the connection after the response; RFC 9112 §6.3 says such a message "ought to be
//! handled as an error", and Envoy (as Istio configures it) answers it 400. So the bytes the
//! client sends are watched on their way to hyper ([`Watched`]): [`FramingWatch`] follows
//! the requests' heads and bodies (Content-Length, chunked) and records, per request head, in
//! order, whether it had both headers; the request handler takes one verdict per HTTP/1
//! request ([`FramingWatch::next_is_ambiguous`]).
//!
//! What hyper refuses itself (Content-Lengths that differ, a Transfer-Encoding not ending in
//! chunked, one in HTTP/1.0, a malformed chunk) ends the watch: hyper answers 400 and closes
//! the connection. So does what is no HTTP/1 request stream: the HTTP/2 preface, the bytes
//! after a request asking for an upgrade or a CONNECT (they may be another protocol).
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request head longer than this is not followed (hyper refuses far shorter ones).
const MAX_HEAD: usize = 1024 * 1024;
/// A chunk-size or trailer line longer than this is not followed.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Default)]
enum State {
    /// Reading a request head (leading empty lines skipped, as hyper skips them).
    #[default]
    Head,
    /// `n` body bytes left (Content-Length).
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// `n` chunk data bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: bytes of it left.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty one.
    Trailers,
    /// Not following any more.
    Off,
}

/// The framing verdicts of one connection's HTTP/1 requests, in order.
#[derive(Debug, Default)]
pub struct FramingWatch {
    state: State,
    /// The current head, or chunk-size or trailer line.
    line: Vec<u8>,
    /// Per request head seen and not yet taken: whether it had both a Content-Length and a
    /// Transfer-Encoding.
    verdicts: VecDeque<bool>,
}

/// What a request head says of its framing.
struct Head {
    ambiguous: bool,
    /// What follows the head; `None`: not followed any more.
    next: Option<State>,
}

fn read_head(head: &[u8]) -> Head {
    let off = Head {
        ambiguous: false,
        next: None,
    };
    let Ok(text) = std::str::from_utf8(head) else {
        return off;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let version = parts.next_back().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        // The HTTP/2 preface, or no HTTP/1 at all.
        return off;
    }
    let mut content_length: Option<u64> = None;
    let mut has_content_length = false;
    let mut transfer_encoding: Option<&str> = None;
    let mut upgrade = method.eq_ignore_ascii_case("CONNECT");
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return off;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            has_content_length = true;
            match value.parse::<u64>() {
                Ok(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                _ => return off,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let ambiguous = has_content_length && transfer_encoding.is_some();
    let next = if upgrade {
        None
    } else {
        match transfer_encoding {
            Some(te) => te
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                .then_some(State::ChunkSize),
            None => Some(match content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }),
        }
    };
    Head { ambiguous, next }
}

/// The size of a chunk-size line (`1a;ext=x`), `None` when it is none.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

impl FramingWatch {
    /// Follows the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head => {
                    let Some((&byte, rest)) = bytes.split_first() else {
                        return;
                    };
                    bytes = rest;
                    if self.line.is_empty() && (byte == b'\r' || byte == b'\n') {
                        continue;
                    }
                    self.line.push(byte);
                    if self.line.ends_with(b"\r\n\r\n") {
                        let head = read_head(&self.line[..self.line.len() - 4]);
                        self.line.clear();
                        self.verdicts.push_back(head.ambiguous);
                        self.state = head.next.unwrap_or(State::Off);
                    } else if self.line.len() > MAX_HEAD {
                        self.state = State::Off;
                    }
                }
                State::Body(left) | State::ChunkData(left) => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    bytes = &bytes[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = match self.state {
                            State::ChunkData(_) => State::ChunkEnd(2),
                            _ => State::Head,
                        };
                    }
                }
                State::ChunkEnd(left) => {
                    let take = usize::from(*left).min(bytes.len());
                    bytes = &bytes[take..];
                    *left -= take as u8;
                    if *left == 0 {
                        self.state = State::ChunkSize;
                    }
                }
                State::ChunkSize | State::Trailers => {
                    let Some((&byte, rest)) = bytes.split_first() else {
                        return;
                    };
                    bytes = rest;
                    if byte != b'\n' {
                        self.line.push(byte);
                        if self.line.len() > MAX_LINE {
                            self.state = State::Off;
                        }
                        continue;
                    }
                    let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                    self.state = match self.state {
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Off,
                        },
                    };
                    self.line.clear();
                }
            }
        }
    }

    /// Whether the next request (in the order the client sent them) had both a
    /// Content-Length and a Transfer-Encoding; `false` when its head was not followed.
    pub fn next_is_ambiguous(&mut self) -> bool {
        self.verdicts.pop_front().unwrap_or(false)
    }
}

/// A connection whose incoming bytes a [`FramingWatch`] follows on their way.
pub struct Watched<I> {
    io: I,
    watch: Arc<Mutex<FramingWatch>>,
}

impl<I> Watched<I> {
    pub fn new(io: I, watch: Arc<Mutex<FramingWatch>>) -> Self {
        Self { io, watch }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.watch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .feed(new);
            }
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts of `stream` fed `piece` bytes at a time.
    fn verdicts(stream: &str, piece: usize) -> Vec<bool> {
        let mut watch = FramingWatch::default();
        for chunk in stream.as_bytes().chunks(piece) {
            watch.feed(chunk);
        }
        watch.verdicts.into_iter().collect()
    }

    #[test]
    fn requests_are_followed_through_their_bodies_in_pieces_of_any_size() {
        // A body that looks like a request head is not one: the bodies are skipped by
        // their framing.
        let inner = "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "\r\nPOST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{inner}\
             POST /b HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n{:x}\r\n{inner}\r\n0\r\nx-trailer: 1\r\n\r\n\
             POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
             GET /d HTTP/1.1\r\nHost: h\r\n\r\n",
            inner.len(),
            inner.len(),
        );
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                verdicts(&stream, piece),
                [false, false, true, false],
                "in pieces of {piece}"
            );
        }
    }

    #[test]
    fn both_orders_of_the_two_headers_are_ambiguous() {
        assert_eq!(
            verdicts(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
                5
            ),
            [true]
        );
        assert_eq!(
            verdicts(
                "POST / HTTP/1.1\r\nCONTENT-LENGTH: 3\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                5
            ),
            [true]
        );
    }

    #[test]
    fn what_is_no_http1_request_stream_ends_the_watch() {
        // The HTTP/2 preface.
        assert_eq!(
            verdicts(
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                4
            ),
            [false]
        );
        // After an upgrade, the bytes are the other protocol's.
        assert_eq!(
            verdicts(
                "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                4
            ),
            [false]
        );
        // A malformed chunk size: hyper refuses it and closes.
        assert_eq!(
            verdicts(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                4
            ),
            [false]
        );
        let mut watch = FramingWatch::default();
        assert!(!watch.next_is_ambiguous(), "no head seen: not ambiguous");
    }
}
