//! `get`: a minimal HTTP client that reports, per response, what came back and which socket
//! carried it. It speaks over a plain TcpStream (no connection pool) so that `local`/`peer`
//! are exactly the kernel's view of that one socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;

use crate::body::{FillerBody, WithTrailers};
use crate::message::{UrlParts, header_map, url_parts};
use crate::{net, out};

/// Bodies above this are counted but not printed: `/bytes` throughput runs would otherwise
/// buffer (and print) up to a GiB.
const MAX_PRINTED_BODY: usize = 1 << 20;

/// The upload: `--body-bytes` of filler, then the `--trailer`s if any.
type ReqBody = WithTrailers<FillerBody>;

pub struct GetArgs {
    pub url: String,
    pub headers: Vec<String>,
    pub http2: bool,
    pub count: u32,
    pub timeout: Duration,
    pub body_bytes: u64,
    pub method: String,
    pub expect_status: Option<u16>,
    /// `name:value` request trailers (repeatable).
    pub trailers: Vec<String>,
}

#[derive(Serialize)]
struct Line {
    status: u16,
    http_version: String,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    body: serde_json::Value,
    body_bytes: u64,
    local: String,
    peer: String,
    elapsed_ms: u64,
    /// The response's trailers; empty when it had none.
    trailers: std::collections::BTreeMap<String, Vec<String>>,
}

/// What the request goes to, worked out once from the URL and `-H` flags.
struct Target {
    /// `host:port` for the resolver.
    connect: String,
    /// Host header (h1) / :authority (h2): the user's `Host:` if given, else the URL's.
    authority: String,
    path_and_query: String,
    method: Method,
    /// User headers except Host, which is carried by `authority`.
    headers: Vec<(HeaderName, HeaderValue)>,
    trailers: HeaderMap,
}

impl Target {
    fn parse(args: &GetArgs) -> Result<Self> {
        let UrlParts {
            connect,
            authority: mut host,
            path_and_query,
        } = url_parts(&args.url)?;
        let mut headers = Vec::new();
        for raw in &args.headers {
            let (name, value) = name_value(raw, "header")?;
            if name == HOST {
                host = value
                    .to_str()
                    .context("Host header must be ASCII")?
                    .to_owned();
            } else {
                headers.push((name, value));
            }
        }
        let mut trailers = HeaderMap::new();
        for raw in &args.trailers {
            let (name, value) = name_value(raw, "trailer")?;
            trailers.append(name, value);
        }
        let method = Method::from_bytes(args.method.as_bytes())
            .with_context(|| format!("invalid method {:?}", args.method))?;
        Ok(Self {
            connect,
            authority: host,
            path_and_query,
            method,
            headers,
            trailers,
        })
    }

    fn request(&self, http2: bool, body_bytes: u64) -> Result<Request<ReqBody>> {
        let mut builder = Request::builder().method(self.method.clone());
        builder = if http2 {
            // h2 carries the host as :authority, taken from an absolute URI.
            builder.uri(format!("http://{}{}", self.authority, self.path_and_query))
        } else {
            // Origin-form plus Host, as a client (not a proxy client) sends it.
            builder
                .uri(self.path_and_query.as_str())
                .header(HOST, self.authority.as_str())
        };
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if !http2 && !self.trailers.is_empty() {
            // HTTP/1.1 sends trailers only when announced, and the server echoes them only to
            // a client that says it accepts them.
            let names: Vec<&str> = self.trailers.keys().map(|n| n.as_str()).collect();
            builder = builder
                .header(TRAILER, names.join(", "))
                .header(TE, "trailers");
        }
        builder
            .body(WithTrailers::new(
                FillerBody::new(body_bytes),
                self.trailers.clone(),
            ))
            .context("build request")
    }
}

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

struct Conn {
    sender: Sender,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Conn {
    async fn open(target: &Target, http2: bool, timeout: Duration) -> Result<Self> {
        let stream = net::connect(&target.connect, timeout).await?;
        let _ = stream.set_nodelay(true);
        let (local, peer) = net::endpoints(&stream)?;
        let io = TokioIo::new(stream);
        let sender = if http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .handshake(io)
                .await
                .context("HTTP/2 handshake")?;
            // The connection task's errors surface through the request futures as well.
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            local,
            peer,
        })
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `req`; if the connection turned out to be closed before the request went out
    /// (the server closed a keep-alive connection), hands the request back for a retry.
    async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> std::result::Result<
        Response<hyper::body::Incoming>,
        (hyper::Error, Option<Request<ReqBody>>),
    > {
        let result = match &mut self.sender {
            Sender::H1(s) => match s.ready().await {
                Ok(()) => s.try_send_request(req).await,
                Err(e) => return Err((e, Some(req))),
            },
            Sender::H2(s) => match s.ready().await {
                Ok(()) => s.try_send_request(req).await,
                Err(e) => return Err((e, Some(req))),
            },
        };
        result.map_err(|mut e| {
            let req = e.take_message();
            (e.into_error(), req)
        })
    }
}

pub async fn run(args: GetArgs) -> Result<bool> {
    let target = Target::parse(&args)?;
    let mut conn: Option<Conn> = None;
    let mut all_expected = true;
    for i in 0..args.count {
        let started = Instant::now();
        let exchange = exchange(&target, &args, &mut conn);
        let line = match tokio::time::timeout(args.timeout, exchange).await {
            Ok(r) => r.with_context(|| format!("request {} to {}", i + 1, args.url))?,
            Err(_) => bail!(
                "request {} to {}: timed out after {} ms",
                i + 1,
                args.url,
                args.timeout.as_millis()
            ),
        };
        let line = Line {
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..line
        };
        out::json(&line)?;
        if let Some(want) = args.expect_status
            && want != line.status
        {
            eprintln!(
                "weft-testapp: request {}: status {} (expected {want})",
                i + 1,
                line.status
            );
            all_expected = false;
        }
    }
    Ok(all_expected)
}

/// One request and its full response, reusing the keep-alive connection when it is still up.
async fn exchange(target: &Target, args: &GetArgs, slot: &mut Option<Conn>) -> Result<Line> {
    let mut req = target.request(args.http2, args.body_bytes)?;
    // One retry on a fresh connection, only for a request that provably never left.
    for attempt in 0..2 {
        let conn = match slot {
            Some(c) if !c.is_closed() => c,
            _ => slot.insert(Conn::open(target, args.http2, args.timeout).await?),
        };
        match conn.send(req).await {
            Ok(resp) => {
                let (local, peer) = (conn.local, conn.peer);
                // RFC 9112 9.6: the server closes after a response saying so; a request
                // sent on the connection in the meantime would be lost.
                if asks_to_close(resp.headers()) {
                    *slot = None;
                }
                return read_response(resp, local, peer).await;
            }
            Err((_, Some(unsent))) if attempt == 0 => {
                *slot = None;
                req = unsent;
            }
            Err((e, _)) => {
                *slot = None;
                return Err(anyhow!(e).context("HTTP exchange"));
            }
        }
    }
    Err(anyhow!(
        "connection closed twice before the request could be sent"
    ))
}

fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("close"))
}

async fn read_response(
    resp: Response<hyper::body::Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<Line> {
    let (parts, mut body) = resp.into_parts();
    let mut kept = Vec::new();
    let mut body_bytes = 0u64;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("read response body")?;
        match frame.into_data() {
            Ok(data) => {
                body_bytes += data.len() as u64;
                if kept.len() + data.len() <= MAX_PRINTED_BODY {
                    kept.extend_from_slice(&data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    for (name, value) in &t {
                        trailers.append(name, value.clone());
                    }
                }
            }
        }
    }
    Ok(Line {
        status: parts.status.as_u16(),
        http_version: format!("{:?}", parts.version),
        headers: header_map(&parts.headers),
        body: body_value(&kept, body_bytes),
        body_bytes,
        local: local.to_string(),
        peer: peer.to_string(),
        elapsed_ms: 0,
        trailers: header_map(&trailers),
    })
}

/// `Name: value` (`-H`) or `name:value` (`--trailer`); `what` names the flag in errors.
fn name_value(raw: &str, what: &str) -> Result<(HeaderName, HeaderValue)> {
    let (name, value) = raw
        .split_once(':')
        .with_context(|| format!("{what} {raw:?}: expected 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("{what} {raw:?}: invalid name"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("{what} {raw:?}: invalid value"))?;
    Ok((name, value))
}

/// JSON when the body is JSON (the testapp's own reports), text otherwise, null when too big.
fn body_value(kept: &[u8], total: u64) -> serde_json::Value {
    if total > kept.len() as u64 {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(kept)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(kept).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, headers: &[&str]) -> GetArgs {
        GetArgs {
            url: url.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            http2: false,
            count: 1,
            timeout: Duration::from_secs(1),
            body_bytes: 0,
            method: "GET".to_owned(),
            expect_status: None,
            trailers: Vec::new(),
        }
    }

    /// One exchange on a fresh connection, as `get` makes it.
    async fn get(args: &GetArgs) -> Result<Line> {
        let target = Target::parse(args)?;
        let mut conn = None;
        tokio::time::timeout(args.timeout, exchange(&target, args, &mut conn))
            .await
            .context("timed out")?
    }

    #[tokio::test]
    async fn trailers_round_trip_over_h2c() -> Result<()> {
        let addr = crate::server::spawn_local().await?;
        let mut a = args(&format!("http://{addr}/up"), &[]);
        a.http2 = true;
        a.method = "POST".to_owned();
        a.body_bytes = 100_000;
        a.trailers = vec![
            "x-checksum:abc".to_owned(),
            "x-multi: 1".to_owned(),
            "x-multi:2".to_owned(),
        ];
        let line = get(&a).await?;
        assert_eq!(line.status, 200);
        assert_eq!(line.http_version, "HTTP/2.0");
        let want = serde_json::json!({"x-checksum": ["abc"], "x-multi": ["1", "2"]});
        assert_eq!(line.body["trailers"], want);
        assert_eq!(line.body["body_bytes"], 100_000);
        assert_eq!(serde_json::to_value(&line.trailers)?, want);

        // No trailers sent: none reported either way.
        a.trailers.clear();
        let line = get(&a).await?;
        assert_eq!(line.body["trailers"], serde_json::json!({}));
        assert!(line.trailers.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn trailers_round_trip_over_http1() -> Result<()> {
        let addr = crate::server::spawn_local().await?;
        let mut a = args(&format!("http://{addr}/up"), &[]);
        a.method = "POST".to_owned();
        a.body_bytes = 10;
        a.trailers = vec!["x-checksum:abc".to_owned()];
        let line = get(&a).await?;
        assert_eq!(line.http_version, "HTTP/1.1");
        let want = serde_json::json!({"x-checksum": ["abc"]});
        assert_eq!(line.body["trailers"], want);
        assert_eq!(line.body["body_bytes"], 10);
        assert_eq!(serde_json::to_value(&line.trailers)?, want);
        Ok(())
    }

    #[tokio::test]
    async fn stats_count_requests_per_host() -> Result<()> {
        let addr = crate::server::spawn_local().await?;
        let url = |path: &str| format!("http://{addr}{path}");
        let mut a = args(&url("/a"), &["Host: reviews.shop.svc.cluster.local"]);
        a.http2 = true;
        for _ in 0..3 {
            get(&a).await?;
        }
        // Failures injected per request are counted too; health checks are not.
        let mut shadow = args(&url("/b?fail_rate=1"), &["Host: reviews-shadow"]);
        assert_eq!(get(&shadow).await?.status, 500);
        shadow.url = url("/healthz");
        get(&shadow).await?;
        let h1 = args(&url("/c"), &[]);
        get(&h1).await?;

        let stats = get(&args(&url("/stats"), &[])).await?;
        assert_eq!(stats.status, 200);
        let want = serde_json::json!({
            "requests": 5,
            "by_host": {
                "reviews.shop.svc.cluster.local": 3,
                "reviews-shadow": 1,
                (addr.to_string()): 1,
            },
        });
        assert_eq!(stats.body, want);
        // /stats itself is not counted.
        assert_eq!(get(&args(&url("/stats"), &[])).await?.body, want);
        Ok(())
    }

    #[test]
    fn target_from_url() -> Result<()> {
        let t = Target::parse(&args(
            "http://svc.ns:8080/a?b=1",
            &["X-A: 1", "Host: other"],
        ))?;
        assert_eq!(t.connect, "svc.ns:8080");
        assert_eq!(t.authority, "other");
        assert_eq!(t.path_and_query, "/a?b=1");
        assert_eq!(t.headers.len(), 1);
        let t = Target::parse(&args("http://[::1]", &[]))?;
        assert_eq!(t.connect, "[::1]:80");
        assert_eq!(t.authority, "[::1]");
        assert_eq!(t.path_and_query, "/");
        Ok(())
    }

    #[test]
    fn bad_urls_and_headers_are_errors() {
        assert!(Target::parse(&args("https://x/", &[])).is_err());
        assert!(Target::parse(&args("/just/a/path", &[])).is_err());
        assert!(Target::parse(&args("http://x/", &["no colon"])).is_err());
        assert!(Target::parse(&args("http://x/", &["bad name: v"])).is_err());
    }

    #[test]
    fn body_values() {
        assert_eq!(body_value(br#"{"a":1}"#, 7), serde_json::json!({"a": 1}));
        assert_eq!(body_value(b"ok", 2), serde_json::json!("ok"));
        assert_eq!(body_value(b"", 5), serde_json::Value::Null);
    }
}
