//! One HTTP/1.1 POST of a batch of spans to a collector (Zipkin, OTLP/HTTP), on its own
//! connection: batches leave every few seconds at most, so nothing is kept open.
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

/// The collector's answer is read (and dropped) up to this size.
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs `body` to `http://{authority}{path}`; `Err` says why it did not get a 2xx.
pub async fn post(
    authority: &str,
    path: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(
        timeout,
        post_now(authority, path, content_type, headers, body),
    )
    .await
    .map_err(|_| format!("no answer from {authority} within {timeout:?}"))?
}

async fn post_now(
    authority: &str,
    path: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "span collector connection ended");
        }
    });
    let mut request = http::Request::post(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, content_type);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("the request to {authority}{path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("POST {authority}{path}: {e}"))?;
    let status = response.status();
    let answer = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "POST {authority}{path}: {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        ))
    }
}
