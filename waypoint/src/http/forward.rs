//! Sending a routed request to its cluster: endpoint choice (outlier detection, load
//! balancing, other hosts first on a retry), attempts under the circuit breaker, retries
//! with back-off, per-try timeouts.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use weft_config::registry::Snapshot;
use weft_core::telemetry::TraceContext;

use super::body::RequestBody;
use super::local::{self, ResponseBody};
use crate::context::WaypointContext;
use crate::forward::cluster::{Cluster, ClusterKey, Here};
use crate::forward::connections::{
    BoxError, CheckoutError, ConnectionLimits, EndpointKey, Protocol, Transport, UpstreamBody,
};
use crate::forward::endpoints::{declares_http, resolve};
use crate::route::{AttemptOutcome, RetryPolicy};
use crate::upstream::balance::HashInput;
use crate::upstream::limits::Overflow;
use crate::upstream::outlier::Outcome;
use crate::upstream::policy::{PoolLimits, UpstreamProtocol};

/// The endpoint that answered, carried on the response for metrics.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint(pub SocketAddr);

pub struct Forward {
    pub key: ClusterKey,
    pub parts: http::request::Parts,
    pub body: RequestBody,
    pub retry: RetryPolicy,
    pub protocol: Protocol,
    pub source_ip: Option<IpAddr>,
    /// Where the client addressed the connection (a ServiceEntry host of resolution NONE
    /// goes there).
    pub original: SocketAddr,
}

/// Sends the request, retrying as the route's policy allows when its body can be replayed.
pub async fn send(
    ctx: &Arc<WaypointContext>,
    snapshot: &Arc<Snapshot>,
    forward: Forward,
) -> Response<ResponseBody> {
    let Forward {
        key,
        parts,
        mut body,
        retry,
        protocol,
        source_ip,
        original,
    } = forward;
    let found = match resolve(
        snapshot,
        &ctx.dns,
        &ctx.namespace,
        (&key.host, key.subset.as_deref(), key.port),
        original,
        ctx.reach,
    )
    .await
    {
        Ok(found) => found,
        Err(reason) => {
            tracing::debug!(%reason, "no endpoint");
            return local::no_healthy_upstream();
        }
    };
    let cluster = ctx.clusters.get(snapshot, &key);
    // TLS the DestinationRule originates; a setting that cannot be applied fails the
    // request (never plain text instead).
    let mut found = match cluster.originate(found, snapshot, &ctx.namespace) {
        Ok(found) => found,
        Err(_) => return local::no_healthy_upstream(),
    };
    // Istio's auto SNI: the request's Host, unless the rule names the SNI.
    if let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        for candidate in &mut found {
            if let Transport::Tls(origination) = &candidate.transport {
                candidate.transport = Transport::Tls(origination.for_authority(host));
            }
        }
    }
    let mesh_upgrades =
        snapshot.mesh_config().upgrades_to_h2() && declares_http(snapshot, &key.host, key.port);
    let protocol = upstream_protocol(
        cluster.policy.connection_pool.upstream_protocol,
        mesh_upgrades,
        protocol,
        &parts,
    );
    // A body that cannot be sent again ends the loop after the first attempt.
    let tries = retry.attempts.saturating_add(1);
    let here = Here {
        snapshot,
        proxy: &ctx.whereabouts,
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut _retry_permit = None;
    // One more try, outside the route's retries, for an idempotent request that met a
    // kept-alive connection the server was closing (RFC 9110 9.2.2 lets a client repeat
    // it; browsers and nginx's `proxy_next_upstream` do).
    let mut stale_retry = is_idempotent(&parts.method);
    let mut attempt = 0;
    while attempt < tries {
        let input = HashInput::from_request(&parts, source_ip);
        let Some((candidate, pick)) =
            cluster.choose(&found, &tried, retry.prefer_other_hosts, &input, &here)
        else {
            return local::no_healthy_upstream();
        };
        tried.push(candidate.address);
        let Some(attempt_body) = body.for_attempt() else {
            return local::reset();
        };
        let mut request = upstream_request(&parts, attempt_body, protocol);
        if protocol == Protocol::Http2 && matches!(candidate.transport, Transport::Tls(_)) {
            https_scheme(&mut request);
        }
        let endpoint = EndpointKey {
            address: candidate.address,
            transport: candidate.transport.clone(),
            protocol,
        };
        let set_cookie = pick.set_cookie.clone();
        let (outcome, mut response) = attempt_once(
            ctx,
            &cluster,
            &endpoint,
            request,
            Box::new(pick.in_flight),
            retry.per_try_timeout,
        )
        .await;
        if outcome == AttemptOutcome::StaleConnection && stale_retry && body.can_resend() {
            stale_retry = false;
            // The endpoint is fine: it may take the request again, on a new connection.
            tried.pop();
            drop(response);
            continue;
        }
        if let Some(outlier) = &cluster.outlier
            && let Some(observed) = outlier_outcome(&outcome)
            && let Some(ejection) = outlier.record(candidate.address, observed, Instant::now())
        {
            tracing::info!(endpoint = %candidate.address, reason = ?ejection.reason, duration = ?ejection.duration, "endpoint ejected");
        }
        let last = attempt + 1 == tries;
        // A streaming body, or a recorded one that outgrew the retry buffer, cannot be
        // sent again.
        if !last
            && body.can_resend()
            && retry.should_retry(&outcome)
            && let Some(permit) = cluster.breaker.try_retry()
        {
            _retry_permit = Some(permit);
            // An answer not passed on is dropped; its HTTP/1.1 connection closes.
            drop(response);
            tokio::time::sleep(retry.backoff(attempt, fastrand::u64(..))).await;
            attempt += 1;
            continue;
        }
        if last && attempt > 0 && retry.should_retry(&outcome) {
            // Retried until the policy's attempts ran out, and this one failed too.
            let flags = response
                .extensions()
                .get::<weft_core::metrics::ResponseFlags>()
                .copied()
                .unwrap_or(weft_core::metrics::ResponseFlags::NONE);
            response
                .extensions_mut()
                .insert(flags.with_retry_limit_exceeded());
        }
        if let Some(cookie) = set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
            .extensions_mut()
            .insert(Endpoint(candidate.address));
        return response;
    }
    local::no_healthy_upstream()
}

/// A request addressed to one pod, sent once.
pub async fn direct(
    ctx: &Arc<WaypointContext>,
    parts: http::request::Parts,
    mut body: RequestBody,
    address: SocketAddr,
    transport: Transport,
    protocol: Protocol,
) -> Response<ResponseBody> {
    let Some(body) = body.for_attempt() else {
        return local::reset();
    };
    let request = upstream_request(&parts, body, protocol);
    let endpoint = EndpointKey {
        address,
        transport,
        protocol,
    };
    let trace = TraceContext::extract(request.headers());
    match ctx
        .connections
        .checkout(
            &endpoint,
            &ctx.unclustered,
            ConnectionLimits::of(&PoolLimits::default()),
            trace.as_ref(),
        )
        .await
    {
        Ok(checkout) => match checkout.send(request, None).await {
            Ok(response) => response.map(box_body),
            Err(_) => local::reset(),
        },
        Err(CheckoutError::Overflow(overflow)) => overflow_reply(&overflow),
        Err(CheckoutError::Connect(_)) => local::connect_failure(),
    }
}

/// The HTTP version a request the client sent in `client` goes upstream in: the client's,
/// or HTTP/2 for an HTTP/1.1 request under `h2UpgradePolicy: UPGRADE` (the rule's, or the
/// mesh's for a port declared HTTP: `mesh_upgrades`) unless `useClientProtocol` is set; a
/// connection upgrade such as WebSocket stays HTTP/1.1, as in Envoy.
fn upstream_protocol(
    policy: UpstreamProtocol,
    mesh_upgrades: bool,
    client: Protocol,
    parts: &http::request::Parts,
) -> Protocol {
    let upgrade =
        parts.headers.contains_key(header::UPGRADE) || parts.method == http::Method::CONNECT;
    if client == Protocol::Http1 && policy.upgrades_http1(mesh_upgrades) && !upgrade {
        Protocol::Http2
    } else {
        client
    }
}

/// The request as the endpoint's connection needs it: HTTP/1.1 in origin form with
/// `Host`, HTTP/2 with the authority in the URI.
fn upstream_request(
    parts: &http::request::Parts,
    body: UpstreamBody,
    protocol: Protocol,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.headers_mut() = parts.headers.clone();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match protocol {
        Protocol::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
        }
        Protocol::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let authority = request
                .headers_mut()
                .remove(header::HOST)
                .and_then(|h| h.to_str().ok().map(str::to_string))
                .unwrap_or_default();
            *request.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
        }
    }
    request
}

/// An HTTP/2 request the waypoint sends in TLS it originates says `https`.
fn https_scheme(request: &mut Request<UpstreamBody>) {
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

async fn attempt_once(
    ctx: &Arc<WaypointContext>,
    cluster: &Cluster,
    endpoint: &EndpointKey,
    request: Request<UpstreamBody>,
    hold: Box<dyn Send + Sync>,
    per_try_timeout: Option<std::time::Duration>,
) -> (AttemptOutcome, Response<ResponseBody>) {
    let limits = ConnectionLimits::of(&cluster.policy.connection_pool);
    // A connection opened for this request carries the context it goes upstream with: the
    // destination's agent names the request's trace in its line.
    let trace = TraceContext::extract(request.headers());
    let attempt = async {
        let checkout = match ctx
            .connections
            .checkout(endpoint, &cluster.breaker, limits, trace.as_ref())
            .await
        {
            Ok(checkout) => checkout,
            Err(CheckoutError::Overflow(overflow)) => {
                return (AttemptOutcome::Overflow, overflow_reply(&overflow));
            }
            Err(CheckoutError::Connect(error)) => {
                tracing::debug!(%error, "connecting upstream failed");
                return (AttemptOutcome::ConnectFailure, local::connect_failure());
            }
        };
        let reused_http1 = checkout.reused_http1();
        match checkout.send(request, Some(hold)).await {
            Ok(response) => (
                AttemptOutcome::response(response.status(), response.headers()),
                response.map(box_body),
            ),
            Err(error) if reused_http1 && closed_before_response(&error) => {
                tracing::debug!(%error, "kept-alive upstream connection closed before the response");
                (AttemptOutcome::StaleConnection, local::reset())
            }
            Err(error) => {
                tracing::debug!(%error, "upstream request failed");
                (failure_outcome(&error), local::reset())
            }
        }
    };
    match per_try_timeout {
        Some(timeout) => match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => (AttemptOutcome::PerTryTimeout, local::upstream_timeout()),
        },
        None => attempt.await,
    }
}

/// The HTTP/1.1 connection ended before a response began: hyper saw the peer close
/// before the response's head, never got to send the request, or the connection (through
/// the tunnel, reset by the destination's agent when the pod's socket was gone) failed.
/// Not a malformed response, nor a failure of the request's own body.
fn closed_before_response(error: &hyper::Error) -> bool {
    if error.is_parse() || error.is_user() || error.is_body_write_aborted() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    let mut io = false;
    while let Some(cause) = source {
        io |= cause.is::<std::io::Error>();
        source = cause.source();
    }
    error.is_incomplete_message() || error.is_canceled() || error.is_closed() || io
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 9.2.2): sending one twice does what
/// sending it once does.
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// How a request that got no answer failed. An HTTP/2 stream the endpoint reset with
/// REFUSED_STREAM was never processed (RFC 9113 8.7): `refused-stream`, which Istio's
/// default retry policy retries. Anything else, a GOAWAY included (h2 does not say whether
/// the stream was above its last stream id), is a reset.
fn failure_outcome(error: &hyper::Error) -> AttemptOutcome {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return if h2.reason() == Some(h2::Reason::REFUSED_STREAM) && !h2.is_go_away() {
                AttemptOutcome::RefusedStream
            } else {
                AttemptOutcome::Reset
            };
        }
        source = cause.source();
    }
    AttemptOutcome::Reset
}

fn overflow_reply(overflow: &Overflow) -> Response<ResponseBody> {
    let mut response = overflow.response(local::full(bytes::Bytes::from_static(
        Overflow::BODY.as_bytes(),
    )));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    local::flagged(
        response,
        weft_core::metrics::ResponseFlags::UPSTREAM_OVERFLOW,
    )
}

fn box_body(body: crate::forward::connections::ResponseBody) -> ResponseBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

fn outlier_outcome(outcome: &AttemptOutcome) -> Option<Outcome> {
    match outcome {
        AttemptOutcome::Response { status, .. } => Some(Outcome::Response(status.as_u16())),
        AttemptOutcome::ConnectFailure
        | AttemptOutcome::ResetBeforeRequest
        | AttemptOutcome::Reset
        | AttemptOutcome::RefusedStream => Some(Outcome::ConnectFailed),
        AttemptOutcome::PerTryTimeout => Some(Outcome::Timeout),
        // The server closed an idle connection, as servers do: not the endpoint failing.
        AttemptOutcome::StaleConnection | AttemptOutcome::Overflow => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 endpoint on loopback that resets every stream with `reason`.
    async fn resetting_endpoint(reason: h2::Reason) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut connection) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((_request, mut respond))) = connection.accept().await {
                respond.send_reset(reason);
            }
        });
        address
    }

    async fn outcome_of_request_to(address: SocketAddr) -> AttemptOutcome {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connecting");
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("an HTTP/2 connection");
        tokio::spawn(connection);
        let request = Request::builder()
            .uri(format!("http://{address}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a request");
        let error = sender
            .send_request(request)
            .await
            .expect_err("the stream is reset");
        failure_outcome(&error)
    }

    #[tokio::test]
    async fn a_refused_stream_is_told_apart_from_other_resets() {
        let refused = resetting_endpoint(h2::Reason::REFUSED_STREAM).await;
        assert_eq!(
            outcome_of_request_to(refused).await,
            AttemptOutcome::RefusedStream
        );
        let reset = resetting_endpoint(h2::Reason::INTERNAL_ERROR).await;
        assert_eq!(outcome_of_request_to(reset).await, AttemptOutcome::Reset);
    }
}
