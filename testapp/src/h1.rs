//! Just enough HTTP/1.1 client for the load generators: a request built once and written with
//! one syscall, and a response parsed in one reused buffer. hyper's client allocates a request,
//! a header map and a response per exchange and hops through a connection task; at tens of
//! thousands of requests per second on a 2-core lab that would measure the generator, not the
//! path under test. Responses are read by their framing (content-length, chunked, or until
//! close), so a keep-alive connection is reusable afterwards.

use std::fmt;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::body::CHUNK;

/// Large enough for any sane response head and for body reads that take few syscalls.
const BUFFER_LEN: usize = 32 * 1024;

/// Trailer lines after a chunked body: a bound against a peer that never ends them.
const MAX_TRAILERS: usize = 64;

/// A request's bytes, built once per run.
pub struct Request {
    /// Head plus the body when it fits one chunk, so a small request is one write.
    bytes: Vec<u8>,
    /// Body bytes written after `bytes`, in CHUNK slices.
    streamed: u64,
}

impl Request {
    /// `GET path` with a `body_bytes` filler body (like `get --body-bytes`); `close` asks the
    /// server to close after answering.
    pub fn get(authority: &str, path: &str, body_bytes: u64, close: bool) -> Self {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
        if body_bytes > 0 {
            head.push_str(&format!("Content-Length: {body_bytes}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        let inline = body_bytes.min(CHUNK.len() as u64);
        // The min above makes the cast lossless.
        bytes.extend_from_slice(&CHUNK[..inline as usize]);
        Self {
            bytes,
            streamed: body_bytes - inline,
        }
    }
}

/// What the generators need from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// False when the server closes after this response (or delimited the body by closing).
    pub keep_alive: bool,
    pub body_bytes: u64,
}

/// The peer closed a connection before sending any byte of the response: on a reused
/// keep-alive connection that is the server's idle close racing the request, which a client
/// retries once on a fresh connection.
#[derive(Debug)]
pub struct ClosedEarly;

impl fmt::Display for ClosedEarly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed before the response")
    }
}

impl std::error::Error for ClosedEarly {}

/// Read buffer, kept across exchanges and connections so nothing is allocated per request.
pub struct Buffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    pub fn new() -> Self {
        Self {
            buf: vec![0; BUFFER_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Forgets leftover bytes: for a new connection.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more; 0 is EOF. Makes room by moving pending bytes to the front if needed.
    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<usize> {
        if self.start == self.end {
            self.clear();
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                bail!("response line or head larger than {BUFFER_LEN} bytes");
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = stream
            .read(&mut self.buf[self.end..])
            .await
            .context("read response")?;
        self.end += n;
        Ok(n)
    }

    /// The response head (status line and headers, without the blank line), consumed.
    async fn head<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Head> {
        // Bounded: each pass reads at least one byte into a finite buffer, or fails.
        loop {
            if let Some(at) = find(self.pending(), b"\r\n\r\n") {
                let head = parse_head(&self.pending()[..at])?;
                self.start += at + 4;
                return Ok(head);
            }
            let had = self.end - self.start;
            if self.fill(stream).await? == 0 {
                if had == 0 {
                    return Err(ClosedEarly.into());
                }
                bail!("connection closed in the response head");
            }
        }
    }

    /// One CRLF-terminated line, consumed; returns its start and end in `buf`.
    async fn line<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<(usize, usize)> {
        loop {
            if let Some(at) = find(self.pending(), b"\r\n") {
                let line = (self.start, self.start + at);
                self.start += at + 2;
                return Ok(line);
            }
            if self.fill(stream).await? == 0 {
                bail!("connection closed in a chunked body");
            }
        }
    }

    /// Discards exactly `n` body bytes.
    async fn skip<S: AsyncRead + Unpin>(&mut self, stream: &mut S, mut n: u64) -> Result<()> {
        while n > 0 {
            if self.start == self.end && self.fill(stream).await? == 0 {
                bail!("connection closed with {n} body bytes missing");
            }
            // The min with the pending length makes the cast lossless.
            let k = n.min((self.end - self.start) as u64);
            self.start += k as usize;
            n -= k;
        }
        Ok(())
    }

    async fn chunked<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let (from, to) = self.line(stream).await?;
            let size = parse_chunk_size(&self.buf[from..to])?;
            if size == 0 {
                for _ in 0..MAX_TRAILERS {
                    let (from, to) = self.line(stream).await?;
                    if from == to {
                        return Ok(total);
                    }
                }
                bail!("more than {MAX_TRAILERS} trailer lines");
            }
            // Data, then its CRLF.
            self.skip(stream, size.saturating_add(2)).await?;
            total = total.saturating_add(size);
        }
    }

    async fn until_eof<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<u64> {
        let mut total = (self.end - self.start) as u64;
        self.clear();
        while self.fill(stream).await? > 0 {
            total += (self.end - self.start) as u64;
            self.clear();
        }
        Ok(total)
    }
}

/// Sends `req` and reads its whole response.
pub async fn exchange<S>(stream: &mut S, buf: &mut Buffer, req: &Request) -> Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&req.bytes).await.context("send request")?;
    let mut left = req.streamed;
    while left > 0 {
        // The min with CHUNK's length makes the cast lossless.
        let n = left.min(CHUNK.len() as u64) as usize;
        stream
            .write_all(&CHUNK[..n])
            .await
            .context("send request body")?;
        left -= n as u64;
    }
    read_response(stream, buf).await
}

async fn read_response<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Buffer) -> Result<Response> {
    // Interim 1xx responses precede the real one; a few at most.
    for _ in 0..8 {
        let head = buf.head(stream).await?;
        if head.status == 101 {
            bail!("unexpected 101 Switching Protocols");
        }
        if head.status < 200 {
            continue;
        }
        let (body_bytes, keep_alive) = if head.status == 204 || head.status == 304 {
            (0, head.keep_alive)
        } else if head.chunked {
            (buf.chunked(stream).await?, head.keep_alive)
        } else if let Some(n) = head.content_length {
            buf.skip(stream, n).await?;
            (n, head.keep_alive)
        } else {
            // No framing: the body ends when the server closes.
            (buf.until_eof(stream).await?, false)
        };
        return Ok(Response {
            status: head.status,
            keep_alive,
            body_bytes,
        });
    }
    bail!("too many interim (1xx) responses")
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    keep_alive: bool,
    chunked: bool,
    content_length: Option<u64>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (version, rest) = status_line
        .split_once(' ')
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => bail!("bad status line {status_line:?}"),
    };
    let code = rest.get(..3).unwrap_or_default();
    let status: u16 = code
        .parse()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .with_context(|| format!("bad status line {status_line:?}"))?;

    let mut head = Head {
        status,
        keep_alive: !http10,
        chunked: false,
        content_length: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .with_context(|| format!("bad content-length {value:?}"))?;
            if head.content_length.is_some_and(|m| m != n) {
                bail!("conflicting content-length headers");
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides the framing.
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    head.keep_alive = true;
                }
            }
        }
    }
    Ok(head)
}

fn parse_chunk_size(line: &[u8]) -> Result<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let text = std::str::from_utf8(digits).unwrap_or_default();
    u64::from_str_radix(text, 16)
        .with_context(|| format!("bad chunk size line {:?}", String::from_utf8_lossy(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Feeds `reply` (in small pieces, to exercise refills) as the server's answer to one
    /// request, then closes; returns what the client made of it and what it sent.
    async fn against(reply: &'static [u8], req: &Request) -> (Result<Response>, Vec<u8>) {
        let (mut client, mut server) = duplex(1 << 20);
        let mut buf = Buffer::new();
        let server_side = async move {
            for piece in reply.chunks(7) {
                server.write_all(piece).await.expect("write reply");
            }
            server.shutdown().await.expect("shutdown");
            let mut sent = Vec::new();
            server.read_to_end(&mut sent).await.expect("read request");
            sent
        };
        let client_side = async {
            let r = exchange(&mut client, &mut buf, req).await;
            drop(client);
            r
        };
        tokio::join!(client_side, server_side)
    }

    #[tokio::test]
    async fn request_bytes() {
        let req = Request::get("svc:80", "/bytes?n=1", 3, true);
        let (_, sent) = against(b"HTTP/1.1 204 No Content\r\n\r\n", &req).await;
        assert_eq!(
            sent,
            b"GET /bytes?n=1 HTTP/1.1\r\nHost: svc:80\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxxx"
        );
        let req = Request::get("h", "/", 200_000, false);
        let (_, sent) = against(b"HTTP/1.1 204 No Content\r\n\r\n", &req).await;
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n";
        assert_eq!(sent.len(), head.len() + 200_000);
    }

    #[tokio::test]
    async fn framings() {
        let req = Request::get("h", "/", 0, false);
        let cases: [(&[u8], Response); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Response { status: 200, keep_alive: true, body_bytes: 5 },
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\ncontent-length:  2 \r\nConnection: close\r\n\r\nno",
                Response { status: 503, keep_alive: false, body_bytes: 2 },
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\na;ext=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
                Response { status: 200, keep_alive: true, body_bytes: 13 },
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                Response { status: 200, keep_alive: true, body_bytes: 0 },
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
                Response { status: 200, keep_alive: false, body_bytes: 13 },
            ),
        ];
        for (reply, want) in cases {
            let (got, _) = against(reply, &req).await;
            let got = got.unwrap_or_else(|e| panic!("{:?}: {e:#}", String::from_utf8_lossy(reply)));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(reply));
        }
    }

    #[tokio::test]
    async fn broken_responses_are_errors() {
        let req = Request::get("h", "/", 0, false);
        let (got, _) = against(b"", &req).await;
        assert!(got.is_err_and(|e| e.is::<ClosedEarly>()));
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (got, _) = against(reply, &req).await;
            assert!(
                got.as_ref().is_err_and(|e| !e.is::<ClosedEarly>()),
                "{:?}: {got:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[tokio::test]
    async fn keep_alive_reuses_buffer() {
        // Two responses on one stream, read one after the other.
        let (mut client, mut server) = duplex(1 << 16);
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Buffer::new();
        let first = read_response(&mut client, &mut buf).await.expect("first");
        let second = read_response(&mut client, &mut buf).await.expect("second");
        assert_eq!((first.status, second.status), (200, 201));
    }
}
