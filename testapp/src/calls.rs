//! `serve --call URL`: the server calls other services for every request it answers, as
//! Bookinfo's productpage calls details and reviews, passing on the headers that carry the
//! user and the trace. What each call returned is part of the server's report.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HOST, HeaderMap};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::message::url_parts;

/// Headers an application propagates so that routing by user and tracing work across
/// hops (the ones Istio's Bookinfo forwards).
const PROPAGATED: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One call's outcome, with the callee's own report (and so its calls) when it answered
/// with JSON.
#[derive(Debug, Serialize)]
pub struct Call {
    pub url: String,
    pub status: Option<u16>,
    pub pod: Option<String>,
    pub version: Option<String>,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<serde_json::Value>,
}

/// Calls every URL in turn.
pub async fn call_all(urls: &[String], incoming: &HeaderMap) -> Vec<Call> {
    let mut calls = Vec::with_capacity(urls.len());
    for url in urls {
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, call(url, incoming))
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out after {CALL_TIMEOUT:?}")));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        calls.push(match result {
            Ok((status, report)) => Call {
                url: url.clone(),
                status: Some(status.as_u16()),
                pod: text(&report, "pod"),
                version: text(&report, "version"),
                elapsed_ms,
                error: None,
                calls: report
                    .get("calls")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default(),
            },
            Err(e) => Call {
                url: url.clone(),
                status: None,
                pod: None,
                version: None,
                elapsed_ms,
                error: Some(format!("{e:#}")),
                calls: Vec::new(),
            },
        });
    }
    calls
}

fn text(report: &serde_json::Value, key: &str) -> Option<String> {
    report.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

async fn call(url: &str, incoming: &HeaderMap) -> Result<(StatusCode, serde_json::Value)> {
    let parts = url_parts(url)?;
    let stream = TcpStream::connect(&parts.connect)
        .await
        .with_context(|| format!("connecting to {}", parts.connect))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let mut request = Request::get(parts.path_and_query.as_str())
        .header(HOST, parts.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    for name in PROPAGATED {
        for value in incoming.get_all(*name) {
            request.headers_mut().append(*name, value.clone());
        }
    }
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("response body")?
        .to_bytes();
    let report = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, report))
}
