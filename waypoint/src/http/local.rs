//! Replies the waypoint makes itself, worded as Envoy words them so clients and
//! dashboards that know Istio recognise them.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use weft_core::metrics::ResponseFlags;

use crate::forward::connections::{BoxError, UpstreamBody};

pub type ResponseBody = UpstreamBody;

/// Marks a reply with the Envoy response flag its metrics report (carried as an
/// extension; a reply without one reports `-`).
pub fn flagged(
    mut response: Response<ResponseBody>,
    flags: ResponseFlags,
) -> Response<ResponseBody> {
    response.extensions_mut().insert(flags);
    response
}

pub fn reply(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    if !body.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}

pub fn no_route() -> Response<ResponseBody> {
    flagged(reply(StatusCode::NOT_FOUND, ""), ResponseFlags::NO_ROUTE)
}

/// Envoy's answer for a virtual host that requires TLS (Istio's `httpsRedirect`): 301 to
/// the same host and path over `https`.
pub fn https_redirect(authority: &str, uri: &http::Uri) -> Response<ResponseBody> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut response = reply(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{authority}{path}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub fn forbidden() -> Response<ResponseBody> {
    reply(StatusCode::FORBIDDEN, "RBAC: access denied")
}

pub fn no_healthy_upstream() -> Response<ResponseBody> {
    flagged(
        reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        ResponseFlags::NO_HEALTHY_UPSTREAM,
    )
}

pub fn upstream_timeout() -> Response<ResponseBody> {
    flagged(
        reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
    )
}

pub fn connect_failure() -> Response<ResponseBody> {
    flagged(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
    )
}

pub fn reset() -> Response<ResponseBody> {
    flagged(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
    )
}

pub fn fault_abort(status: StatusCode) -> Response<ResponseBody> {
    flagged(
        reply(status, "fault filter abort"),
        ResponseFlags::FAULT_INJECTED,
    )
}

/// A gRPC fault abort: HTTP 200 with the status in the headers (trailers-only).
pub fn grpc_abort(code: u32) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("fault filter abort"),
    );
    flagged(response, ResponseFlags::FAULT_INJECTED)
}
