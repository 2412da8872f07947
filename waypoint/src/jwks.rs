//! The key sets a RequestAuthentication's `jwksUri` names, fetched by the waypoint over
//! HTTP or HTTPS (rustls, TLS 1.3, the system's trust roots), cached and refreshed.
//!
//! - The first request that needs a URI's keys fetches them (one fetch at a time per URI;
//!   others wait for it), within the rule's `timeout` (Istio's default: 5 s).
//! - Keys are refetched every `--jwks-refresh-interval` (Istio's
//!   `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 min): the first request after that serves
//!   the keys it has and starts the refetch in the background.
//! - A failed fetch keeps the last good keys; the next attempt comes after 1 s, doubling
//!   up to a minute. A URI never fetched has no keys, so its tokens fail (401), as with
//!   the placeholder key istiod inlines when it cannot fetch. Failures are logged with the URI.
//! - Inline `jwks` are parsed once per distinct text.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{info, warn};
use weft_config::authn::jwks::{self, JwkSet, JwksError};

/// Istio's default refresh interval.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// Istio's default `timeout` of a JWKS fetch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A larger JWKS document is refused.
const MAX_BODY: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Bound on remembered inline sets; the cache starts over past it.
const MAX_INLINE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL")]
    BadUri,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connecting to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange")]
    Http(#[source] hyper::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("reading the body (at most {MAX_BODY} bytes)")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the document")]
    Jwks(#[source] JwksError),
}

#[derive(Default)]
struct State {
    keys: Option<Arc<JwkSet>>,
    /// When to fetch next (`None`: now).
    next: Option<Instant>,
    failures: u32,
}

#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// Held while fetching: one fetch per URI at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Entry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        weft_core::sync::lock(&self.state)
    }

    /// The keys held, and whether a fetch is due.
    fn status(&self) -> (Option<Arc<JwkSet>>, bool) {
        let state = self.state();
        let due = state.next.is_none_or(|next| Instant::now() >= next);
        (state.keys.clone(), due)
    }

    async fn fetch(&self, uri: &str, timeout: Duration, refresh: Duration) -> Option<Arc<JwkSet>> {
        let _one_at_a_time = self.fetching.lock().await;
        // Another fetch may have finished while this one waited.
        let (keys, due) = self.status();
        if !due {
            return keys;
        }
        let result = fetch(uri, timeout).await;
        let mut state = self.state();
        match result {
            Ok(set) => {
                if state.failures > 0 || state.keys.is_none() {
                    info!(uri, keys = set.keys.len(), "JWKS fetched");
                }
                state.keys = Some(Arc::new(set));
                state.failures = 0;
                state.next = Some(Instant::now() + refresh);
            }
            Err(error) => {
                let retry = FIRST_RETRY
                    .saturating_mul(1 << state.failures.min(6))
                    .min(MAX_RETRY);
                state.failures = state.failures.saturating_add(1);
                state.next = Some(Instant::now() + retry);
                warn!(
                    uri,
                    error = %chain(&error),
                    kept_last_good = state.keys.is_some(),
                    retry_in_s = retry.as_secs(),
                    "fetching the JWKS failed"
                );
            }
        }
        state.keys.clone()
    }
}

pub struct JwksCache {
    refresh: Duration,
    remote: Mutex<HashMap<String, Arc<Entry>>>,
    inline: Mutex<HashMap<String, Result<Arc<JwkSet>, JwksError>>>,
}

impl Default for JwksCache {
    fn default() -> Self {
        Self::new(DEFAULT_REFRESH)
    }
}

impl JwksCache {
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            remote: Mutex::new(HashMap::new()),
            inline: Mutex::new(HashMap::new()),
        }
    }

    /// The keys at `uri`: cached, fetched now (first use, or after failures), or cached
    /// while a refresh runs in the background. `None` when none could ever be fetched.
    pub async fn remote(&self, uri: &str, timeout: Duration) -> Option<Arc<JwkSet>> {
        let entry = {
            let mut remote = weft_core::sync::lock(&self.remote);
            remote.entry(uri.to_string()).or_default().clone()
        };
        match entry.status() {
            (keys, false) => keys,
            (None, true) => entry.fetch(uri, timeout, self.refresh).await,
            (Some(keys), true) => {
                if entry.fetching.try_lock().is_ok() {
                    let uri = uri.to_string();
                    let refresh = self.refresh;
                    tokio::spawn(async move {
                        entry.fetch(&uri, timeout, refresh).await;
                    });
                }
                Some(keys)
            }
        }
    }

    /// An inline `jwks`, parsed once.
    pub fn inline(&self, text: &str) -> Result<Arc<JwkSet>, JwksError> {
        let mut inline = weft_core::sync::lock(&self.inline);
        if let Some(parsed) = inline.get(text) {
            return parsed.clone();
        }
        if inline.len() >= MAX_INLINE {
            inline.clear();
        }
        let parsed = jwks::parse(text).map(Arc::new);
        inline.insert(text.to_string(), parsed.clone());
        parsed
    }
}

/// An error with its causes, `a: b: c`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One GET of `uri` within `timeout`.
pub async fn fetch(uri: &str, timeout: Duration) -> Result<JwkSet, FetchError> {
    tokio::time::timeout(timeout, fetch_once(uri))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn fetch_once(text: &str) -> Result<JwkSet, FetchError> {
    let uri: Uri = text.parse().map_err(|_| FetchError::BadUri)?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::BadUri),
    };
    let host = uri.host().ok_or(FetchError::BadUri)?;
    // `[::1]` in a URL is `::1` to connect to.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_string();
    let address = format!("{host}:{port}");
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|source| FetchError::Connect {
            address: address.clone(),
            source,
        })?;
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "weft-waypoint")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::BadUri)?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_string())
            .map_err(|_| FetchError::BadUri)?;
        let config = tls_config().map_err(|e| FetchError::Tls {
            host: host.to_string(),
            source: std::io::Error::other(e),
        })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                host: host.to_string(),
                source,
            })?;
        send(tls, request).await?
    } else {
        send(tcp, request).await?
    };
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(FetchError::Body)?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    jwks::parse(&text).map_err(FetchError::Jwks)
}

async fn send<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(FetchError::Http)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(FetchError::Http)
}

/// TLS 1.3 with the system's trust roots (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = crate::upstream::tls::system_roots();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| e.to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const SET: &str = r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;

    /// A loopback HTTP server answering each request with what `answer` says for its count.
    fn serve(
        answer: impl Fn(usize) -> (u16, String) + Send + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer(n);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn fetched_cached_refreshed_and_kept_on_failure() {
        // 1st: keys; 2nd (refresh): 500; then keys again.
        let (url, count) = serve(|n| match n {
            1 => (500, "oops".into()),
            _ => (200, SET.into()),
        });
        let cache = JwksCache::new(Duration::from_millis(100));
        let keys = cache.remote(&url, DEFAULT_TIMEOUT).await.expect("fetched");
        assert_eq!(keys.keys.len(), 1);
        assert!(cache.remote(&url, DEFAULT_TIMEOUT).await.is_some());
        assert_eq!(count.load(Ordering::SeqCst), 1, "cached");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Due: the cached keys serve while the refresh (which fails) runs.
        assert!(cache.remote(&url, DEFAULT_TIMEOUT).await.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "refreshed once");
        assert!(
            cache.remote(&url, DEFAULT_TIMEOUT).await.is_some(),
            "last good keys kept"
        );
    }

    #[tokio::test]
    async fn never_fetched_means_no_keys() {
        let (url, _) = serve(|_| (200, "not json".into()));
        let cache = JwksCache::default();
        assert!(cache.remote(&url, DEFAULT_TIMEOUT).await.is_none());
        // Nothing listens on port 1 of loopback.
        assert!(matches!(
            fetch("http://127.0.0.1:1/jwks", DEFAULT_TIMEOUT).await,
            Err(FetchError::Connect { .. })
        ));
        assert!(matches!(
            fetch("ftp://127.0.0.1/jwks", DEFAULT_TIMEOUT).await,
            Err(FetchError::BadUri)
        ));
    }

    #[test]
    fn inline_sets_are_parsed_once() {
        let cache = JwksCache::default();
        let a = cache.inline(SET).expect("parses");
        let b = cache.inline(SET).expect("parses");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cache.inline("{}").is_err());
    }
}
