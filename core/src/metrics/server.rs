//! The scrape endpoint both binaries serve: `/metrics`, and `/stats/prometheus` where
//! Istio's proxies serve theirs (so scrape configs written for Istio find it).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use super::registry::Metrics;

/// OpenMetrics text, which Prometheus negotiates and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` on `addr` until the task is dropped; fails only if `addr` cannot be
/// bound.
pub async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {addr}: {e}"),
        )
    })?;
    serve_metrics_on(listener, metrics).await;
    Ok(())
}

/// Serves `metrics` on an already bound listener (tests bind port 0).
pub async fn serve_metrics_on(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "metrics endpoint: accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&request, &metrics)) }
            });
            if let Err(e) = crate::hardening::Http1Limits::HTTP
                .http1_builder()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

fn answer<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics" | "/stats/prometheus") => {
            (StatusCode::OK, CONTENT_TYPE, metrics.encode())
        }
        (_, "/metrics" | "/stats/prometheus") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::{ConnectionLabels, Reporter};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_openmetrics_where_prometheus_and_istio_scrape() {
        let metrics = Metrics::new();
        let _open = metrics.tcp_opened(&ConnectionLabels::new(Reporter::Destination));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_metrics_on(listener, metrics));
        for path in ["/metrics", "/stats/prometheus"] {
            let response = get(addr, path).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(
                response.contains("content-type: application/openmetrics-text"),
                "{response}"
            );
            assert!(
                response.contains("istio_tcp_connections_opened_total{reporter=\"destination\""),
                "{response}"
            );
        }
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
