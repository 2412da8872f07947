//! A blocking HTTP/1.1 GET against an agent's admin endpoint: one request per connection,
//! no TLS (the endpoint listens on the node's loopback), so std's TcpStream is enough.
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `/ebpf` walks the kernel's maps and a config dump of a large cluster is big: be patient.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Far above any real dump; stops a wrong address from filling memory.
const MAX_RESPONSE: u64 = 512 * 1024 * 1024;

#[derive(Debug)]
pub enum AdminError {
    /// Nothing answered: the message says where and what to check.
    Unreachable { admin: String, reason: String },
    /// `--admin` names nothing that can be connected to.
    BadAddress { admin: String, reason: String },
    /// Something answered, but not what an agent answers.
    Protocol {
        admin: String,
        path: String,
        reason: String,
    },
    Status {
        admin: String,
        path: String,
        status: u16,
        body: String,
    },
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Unreachable { admin, reason } => write!(
                f,
                "cannot reach agent admin at {admin}: {reason} (is weft-agent running on this \
                 node? its admin listens on loopback of the node)"
            ),
            AdminError::BadAddress { admin, reason } => {
                write!(f, "cannot reach agent admin at {admin}: {reason}")
            }
            AdminError::Protocol {
                admin,
                path,
                reason,
            } => write!(
                f,
                "the agent admin at {admin} answered GET {path} unexpectedly: {reason}"
            ),
            AdminError::Status {
                admin,
                path,
                status: 404,
                ..
            } => write!(
                f,
                "the agent admin at {admin} has no {path} (a weft-agent older than this weftctl?)"
            ),
            AdminError::Status {
                admin,
                path,
                status,
                body,
            } => write!(
                f,
                "the agent admin at {admin} answered GET {path} with {status}: {}",
                body.trim()
            ),
        }
    }
}

impl std::error::Error for AdminError {}

/// `127.0.0.1:15000`, `localhost:15000`, `[::1]:15000`, with or without `http://`.
fn host_port(admin: &str) -> &str {
    let bare = admin.strip_prefix("http://").unwrap_or(admin);
    bare.trim_end_matches('/')
}

fn unreachable(admin: &str, e: &std::io::Error) -> AdminError {
    let reason = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
        }
        _ => e.to_string(),
    };
    AdminError::Unreachable {
        admin: admin.to_string(),
        reason,
    }
}

fn connect(admin: &str) -> Result<TcpStream, AdminError> {
    let target = host_port(admin);
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| AdminError::BadAddress {
            admin: admin.to_string(),
            reason: format!("cannot resolve it as host:port ({e})"),
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => unreachable(admin, &e),
        None => AdminError::BadAddress {
            admin: admin.to_string(),
            reason: "it resolves to no address".into(),
        },
    })
}

/// `GET path`; the body of a 200 answer.
pub fn get(admin: &str, path: &str) -> Result<Vec<u8>, AdminError> {
    let protocol = |reason: String| AdminError::Protocol {
        admin: admin.to_string(),
        path: path.to_string(),
        reason,
    };
    let mut stream = connect(admin)?;
    let io = |e: std::io::Error| protocol(e.to_string());
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: weftctl/{}\r\nConnection: close\r\n\r\n",
        host_port(admin),
        env!("CARGO_PKG_VERSION")
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => protocol(format!(
                "no complete answer within {} s",
                READ_TIMEOUT.as_secs()
            )),
            _ => protocol(e.to_string()),
        })?;
    let response = parse_response(&raw).map_err(protocol)?;
    if response.status != 200 {
        return Err(AdminError::Status {
            admin: admin.to_string(),
            path: path.to_string(),
            status: response.status,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        });
    }
    Ok(response.body)
}

/// `GET path` as JSON.
pub fn get_json(admin: &str, path: &str) -> Result<serde_json::Value, AdminError> {
    let body = get(admin, path)?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Protocol {
        admin: admin.to_string(),
        path: path.to_string(),
        reason: format!("the body is not JSON ({e})"),
    })
}

#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses a whole HTTP/1.1 response read until the server closed the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in the answer (is this an agent's admin port?)")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "the HTTP header is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .ok_or_else(|| format!("the answer ended after {} of {length} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk is cut off")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk is cut off")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let plain =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(
            parse_response(plain),
            Ok(Response {
                status: 200,
                body: b"[]".to_vec()
            })
        );
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n found\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked),
            Ok(Response {
                status: 404,
                body: b"not found".to_vec()
            })
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").is_err());
    }

    #[test]
    fn a_refused_connection_says_where_and_what_to_check() {
        // Port 1 on loopback: nothing listens there on any machine that runs these tests.
        let e = get("127.0.0.1:1", "/status").expect_err("nothing listens on port 1");
        assert_eq!(
            e.to_string(),
            "cannot reach agent admin at 127.0.0.1:1: connection refused (is weft-agent \
             running on this node? its admin listens on loopback of the node)"
        );
    }

    #[test]
    fn gets_from_a_server_that_closes_after_answering() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            // The whole request head before answering: closing a socket with unread bytes
            // makes the kernel answer with a reset, which would race the response.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buffer).expect("read");
                assert!(n > 0, "the client closed before its request was complete");
                request.extend_from_slice(&buffer[..n]);
            }
            let request = String::from_utf8_lossy(&request).into_owned();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}")
                .expect("write");
            request
        });
        let value = get_json(&addr, "/status").expect("answered");
        assert_eq!(value["a"], true);
        let request = server.join().expect("server thread");
        assert!(request.starts_with("GET /status HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Connection: close\r\n"), "{request}");
    }
}
