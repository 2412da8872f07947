//! HTTP on a CONNECT stream: each request is authorized, routed by the VirtualService of
//! the service it was sent to, and forwarded with the route's retries and timeouts.
pub mod access_log;
pub mod authn;
pub mod authz;
pub mod body;
pub(crate) mod forward;
pub mod framing;
pub mod local;
pub mod metered;
pub mod normalize;
mod request_id;
pub mod telemetry_api;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use weft_core::hardening::{NO_REQUEST_GRACE, Quiet, StreamActivity};
use weft_core::metrics::ResponseFlags;
use weft_core::telemetry::{Span, SpanKind, SpanStatus, TraceContext};

use self::body::RequestBody;
use self::forward::{Forward, send};
use self::local::ResponseBody;
use self::request_id::{X_FORWARDED_PROTO, X_REQUEST_ID, request_id};
use crate::context::WaypointContext;
use crate::downstream::{Downstream, GatewayRoutes, Target};
use crate::forward::cluster::ClusterKey;
use crate::forward::connections::{Protocol, Transport};
use crate::forward::endpoints::destination_port;
use crate::route::{
    FaultAbort, HeaderVars, MirrorPlan, RequestFacts, RouteAction, RouteDestination,
};

pub async fn serve<I>(io: I, downstream: Downstream, ctx: Arc<WaypointContext>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let downstream = Arc::new(downstream);
    // How the client framed each HTTP/1 request, for what hyper does not tell.
    let watch = Arc::new(std::sync::Mutex::new(framing::FramingWatch::default()));
    let io = framing::Watched::new(io, watch.clone());
    let draining = ctx.draining.started();
    let limits = ctx.http_limits;
    // Set by every request; a permit is kept, so once set the wait below ends at once.
    let requested = Arc::new(tokio::sync::Notify::new());
    // Requests being answered, for the first-request and idle timeouts.
    let activity = StreamActivity::new();
    let service = service_fn({
        let requested = requested.clone();
        let activity = activity.clone();
        move |request: Request<Incoming>| {
            requested.notify_one();
            let open = activity.opened();
            let downstream = downstream.clone();
            let ctx = ctx.clone();
            let http1 = request.version() < Version::HTTP_2;
            let ambiguous = http1
                && watch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .next_is_ambiguous();
            async move {
                if ambiguous {
                    debug!(
                        "HTTP/1 request with a Content-Length beside a Transfer-Encoding refused"
                    );
                    drop(open);
                    return Ok::<_, Infallible>(bad_framing());
                }
                let response = traced(request, &downstream, &ctx).await;
                drop(open);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    limits.apply_auto(&mut builder);
    // HTTP/2 clients may open WebSockets with extended CONNECT (RFC 8441, upgrade.rs).
    builder.http2().enable_connect_protocol();
    // With upgrades: a WebSocket request answered `101` (over HTTP/2, a CONNECT answered
    // `200`) leaves hyper's HTTP and is spliced to the endpoint (upgrade.rs).
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    // While draining, a connection is asked to close once it has carried a request: one
    // opened during the drain delay still gets its first answer.
    let asked_to_close = async {
        draining.await;
        requested.notified().await;
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = asked_to_close => {
            // HTTP/1.1: the request in flight is answered with `Connection: close`, an idle
            // connection closes now; HTTP/2: GOAWAY, open streams finish.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        quiet = activity.quiet_for_too_long(limits.timeouts) => {
            debug!(?quiet, "downstream HTTP connection quiet for too long: closing");
            connection.as_mut().graceful_shutdown();
            match quiet {
                // Nothing legitimate to wait for: a client that does not close is cut off.
                Quiet::NoFirstRequest(_) => {
                    tokio::time::timeout(NO_REQUEST_GRACE, connection.as_mut()).await.unwrap_or(Ok(()))
                }
                // Responses still streaming their bodies finish.
                Quiet::Idle(_) => connection.await,
            }
        }
    };
    if let Err(error) = ended {
        debug!(%error, "downstream HTTP connection ended");
    }
}

/// One request with its span and metrics around it. The waypoint's span continues the
/// client's trace (the request's own context, else its CONNECT's), and the endpoint sees it
/// as its parent. The request's metrics are
/// recorded when its response ends (`metered::Recorded`).
async fn traced(
    request: Request<Incoming>,
    downstream: &Downstream,
    ctx: &Arc<WaypointContext>,
) -> Response<ResponseBody> {
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let request_headers = metered::request_headers_size(&parts);
    let (body, request_body) = metered::Incoming::counted(body);
    let mut request = Request::from_parts(parts, body);
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Envoy gives a request its id as it arrives: policies, the upstream and the access
    // log see the same one.
    if !request.headers().contains_key(X_REQUEST_ID) {
        request.headers_mut().insert(X_REQUEST_ID, request_id());
    }
    // The sampling decision is made here when the request brings none, and goes on with
    // it; only sampled requests make a span.
    let (telemetry, tracing) = {
        let snapshot = ctx.registry.load();
        let telemetry = telemetry_api::for_request(ctx, &snapshot, downstream);
        let tracing = ctx.tracer.active_with(
            &snapshot,
            telemetry_api::tracing_spec(&telemetry, downstream),
        );
        (telemetry, tracing)
    };
    let settings = &tracing.settings;
    // A request without context of its own continues its CONNECT's (the client's agent's
    // connection): its access-log line and the agents' name the same trace.
    let mut incoming =
        TraceContext::from_request_in_tunnel(request.headers(), downstream.tunnel_trace.as_ref());
    if settings.trace_id_64_bit() {
        incoming = incoming.with_64_bit_root();
    }
    let trace = incoming.decide(settings.random_sampling_percentage).child();
    let mut span = (tracing.reports_spans() && trace.sampled())
        .then(|| request_span(&trace, &request, settings));
    let (parts, body) = request.into_parts();
    let mut logged = access_log::start(ctx, downstream, &parts, &trace, &telemetry.access_logging);
    // Tags set from the request are evaluated once its response is known.
    let head = telemetry_api::needs_facts(&telemetry.metrics).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
            parts.version,
        )
    });
    let mut request = Request::from_parts(parts, body);
    // The formats the request came in, and the provider's own (Envoy's Zipkin tracer
    // writes B3, its OpenTelemetry tracer `traceparent`).
    trace.inject_as(
        request.headers_mut(),
        trace.arrived_as().union(settings.propagation()),
    );
    // Headers an external authorization provider adds to whatever answer the client gets.
    let mut provider_headers = Vec::new();
    let mut decided = access_log::Decided::default();
    let mut response = handle(
        request,
        downstream,
        ctx,
        &mut provider_headers,
        &mut decided,
    )
    .await;
    authz::finish(&provider_headers, response.headers_mut());
    let endpoint = response
        .extensions()
        .get::<forward::Endpoint>()
        .map(|e| e.0);
    let routed = response
        .extensions()
        .get::<RoutedService>()
        .map(|s| s.0.clone());
    let flags = response
        .extensions()
        .get::<ResponseFlags>()
        .copied()
        .unwrap_or(ResponseFlags::NONE);
    let labels = request_labels(ctx, downstream, grpc, (endpoint, routed.as_deref()))
        .with_response_flags(flags);
    let status = response.status();
    let upstream_cluster = span.as_ref().and(decided.cluster.clone());
    let (parts, body) = response.into_parts();
    if let Some(logged) = &mut logged {
        logged.answered(
            ctx,
            access_log::Answer {
                status: status.as_u16(),
                headers: &parts.headers,
                upstream: endpoint,
                decided,
            },
        );
    }
    let overrides = match &head {
        Some((method, uri, headers, version)) => {
            let facts = telemetry_api::RequestFacts {
                method: method.as_str(),
                path: uri.path_and_query().map_or("/", |p| p.as_str()),
                authority: uri
                    .authority()
                    .map(|a| a.as_str())
                    .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
                    .unwrap_or_default(),
                scheme: if downstream.secure { "https" } else { "http" },
                version: *version,
                request_headers: headers,
                response_code: Some(status.as_u16()),
                response_headers: Some(&parts.headers),
                mtls: downstream.source.principal.is_some(),
                source: downstream
                    .source_ip
                    .map(|ip| std::net::SocketAddr::new(ip, 0)),
                destination: Some(downstream.destination),
            };
            telemetry_api::request_overrides(&telemetry.metrics, Some(&facts))
        }
        None => telemetry_api::request_overrides(&telemetry.metrics, None),
    };
    let pending = metered::Pending {
        metrics: ctx.metrics.clone(),
        labels,
        status: status.as_u16(),
        grpc,
        started,
        request_headers,
        request_body,
        access_log: logged,
        overrides,
    };
    let body =
        http_body_util::BodyExt::boxed(metered::Recorded::new(body, pending, &parts.headers));
    let response = Response::from_parts(parts, body);
    if let Some(mut span) = span.take() {
        let status = response.status();
        span.set_attribute("http.status_code", status.as_u16().to_string());
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        span.set_attribute("response_flags", flags.0);
        span.set_attribute("server.address", downstream.destination.to_string());
        if let Some(endpoint) = endpoint {
            span.set_attribute("upstream_host", endpoint.to_string());
        }
        if let Some(cluster) = upstream_cluster {
            span.set_attribute("upstream_cluster", cluster);
        }
        if let Some(service) = &routed {
            span.set_attribute("upstream_cluster.name", service.hostname.clone());
        }
        span.set_attribute("istio.canonical_service", ctx.name.clone());
        span.set_attribute("istio.namespace", ctx.namespace.clone());
        if status.is_server_error() {
            span.set_status(SpanStatus::Error(status.to_string()));
        }
        span.end();
        tracing.exporter.record(span);
    }
    response
}

/// The waypoint's span of a request, with Envoy's HTTP tags (`http.url` cut to the
/// provider's `maxTagLength`) and the mesh config's custom tags.
fn request_span<B>(
    trace: &TraceContext,
    request: &Request<B>,
    settings: &weft_config::trace_settings::TracingSettings,
) -> Span {
    let name = format!("{} {}", request.method(), request.uri().path());
    let mut span = Span::start(trace, name, SpanKind::Server);
    let headers = request.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = text(header::HOST.as_str())
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let max = settings
        .provider
        .as_ref()
        .map_or(weft_config::trace_settings::DEFAULT_MAX_TAG_LENGTH, |p| {
            p.max_tag_length
        });
    let url = format!("http://{host}{path}");
    span.set_attribute("http.url", weft_core::telemetry::truncate_tag(&url, max));
    span.set_attribute("http.method", request.method().as_str());
    span.set_attribute("http.protocol", format!("{:?}", request.version()));
    span.set_attribute("component", "proxy");
    if let Some(id) = text(X_REQUEST_ID.as_str()) {
        span.set_attribute("guid:x-request-id", id);
    }
    if let Some(agent) = text(header::USER_AGENT.as_str()) {
        span.set_attribute("user_agent", agent);
    }
    let header_value = |name: &str| text(name);
    for (key, value) in
        settings.custom_tag_values(&|name| std::env::var(name).ok(), Some(&header_value))
    {
        span.set_attribute(key, value);
    }
    span
}

/// The labels of a request's metrics as a waypoint reports them; an ingress gateway
/// reports as Istio's gateways do, as the source of what it sends (`reporter="source"`, its
/// own workload and identity). `connection_security_policy`: a waypoint's clients come
/// over HBONE, `mutual_tls` when they proved a mesh identity (`none` otherwise); what a
/// gateway sends goes over HBONE, `mutual_tls`.
pub(crate) fn request_labels(
    ctx: &WaypointContext,
    down: &Downstream,
    grpc: bool,
    (endpoint, routed): (
        Option<std::net::SocketAddr>,
        Option<&weft_config::registry::model::Service>,
    ),
) -> weft_core::metrics::RequestLabels {
    use weft_core::metrics::RequestProtocol;
    let protocol = if grpc {
        RequestProtocol::Grpc
    } else {
        RequestProtocol::Http
    };
    connection_labels(ctx, down, (endpoint, routed)).with_protocol(protocol)
}

/// The labels of what a client sent through the waypoint (a request, or a TCP stream with
/// `request_protocol="tcp"`), going to `endpoint`.
pub(crate) fn connection_labels(
    ctx: &WaypointContext,
    down: &Downstream,
    (endpoint, routed): (
        Option<std::net::SocketAddr>,
        Option<&weft_config::registry::model::Service>,
    ),
) -> weft_core::metrics::ConnectionLabels {
    use weft_core::metrics::{Reporter, SecurityPolicy};
    let snapshot = ctx.registry.load();
    let security = if down.source.principal.is_some() {
        SecurityPolicy::MutualTls
    } else {
        SecurityPolicy::None
    };
    if let Target::Gateway(gateway) = &down.target {
        let own = ctx.identity.to_string();
        return weft_config::telemetry::Connection {
            reporter: Reporter::Source,
            source: gateway.workload.as_deref(),
            source_principal: Some(own.as_str()),
            destination: endpoint
                .and_then(|e| snapshot.workload_by_ip(e.ip()))
                .map(|w| &**w),
            service: routed,
            security: SecurityPolicy::MutualTls,
            cluster: weft_core::metrics::DEFAULT_CLUSTER_ID,
        }
        .labels();
    }
    let source = down
        .source_ip
        .and_then(|ip| snapshot.workload_by_ip(ip))
        .filter(|w| down.source.principal.as_deref() == Some(&*w.identity));
    let (service, destination) = match &down.target {
        Target::Service { service, .. } => (
            Some(&**service),
            endpoint
                .and_then(|e| snapshot.workload_by_ip(e.ip()))
                .map(|w| &**w),
        ),
        Target::Workload { workload, .. } => (None, Some(&**workload)),
        Target::EntryHost { .. } | Target::Gateway(_) => (routed, None),
    };
    let mut labels = weft_config::telemetry::Connection {
        reporter: Reporter::Waypoint,
        source: source.map(|w| &**w),
        source_principal: down.source.principal.as_deref(),
        destination,
        service,
        security,
        cluster: weft_core::metrics::DEFAULT_CLUSTER_ID,
    }
    .labels();
    if let Target::EntryHost { host, .. } = &down.target {
        // Istio's `destination_service` of a ServiceEntry host: the host.
        labels =
            labels.with_destination_service(Some(weft_config::telemetry::entry_host_labels(host)));
    }
    labels
}

/// The answer to an HTTP/1 request with both a `Content-Length` and a `Transfer-Encoding`
/// (`framing.rs`): 400, as Envoy answers it for Istio's proxies (`allow_chunked_length` is
/// not set), and the connection closed (its body, framed one way or the other, is never
/// read as a next request). It is never forwarded.
fn bad_framing() -> Response<ResponseBody> {
    let mut response = local::reply(StatusCode::BAD_REQUEST, "Bad Request");
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Headers that describe one hop's connection and must not be forwarded (RFC 9110 7.6.1);
/// HTTP/2 forbids them outright.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    // `te: trailers` is the one TE value HTTP/2 (and gRPC) allows.
    if headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

fn authority(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Normalizes the request's path as the mesh config says. `Err` when the path cannot be
/// normalized, or the rebuilt URI does not parse: Envoy answers those 400.
fn normalize_path(
    uri: &mut Uri,
    mesh: &weft_config::api::mesh::MeshConfig,
) -> Result<(), normalize::Unnormalizable> {
    let Some(path_and_query) = uri.path_and_query() else {
        return Ok(());
    };
    let normalized = match normalize::normalize(path_and_query.as_str(), mesh.path_normalization())?
    {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(normalized) => normalized,
    };
    let mut rebuilt = std::mem::take(uri).into_parts();
    rebuilt.path_and_query = Some(normalized.parse().map_err(|_| normalize::Unnormalizable)?);
    *uri = Uri::from_parts(rebuilt).map_err(|_| normalize::Unnormalizable)?;
    Ok(())
}

async fn handle(
    request: Request<metered::Incoming>,
    down: &Downstream,
    ctx: &Arc<WaypointContext>,
    provider_headers: &mut Vec<weft_core::ext_authz::HeaderMutation>,
    decided: &mut access_log::Decided,
) -> Response<ResponseBody> {
    let snapshot = ctx.registry.load();
    let (mut parts, body) = request.into_parts();
    // What `%VAR%` in the route's header values stand for.
    let vars = HeaderVars {
        remote_ip: down.source_ip,
        local: down.destination,
        version: parts.version,
        start: std::time::SystemTime::now(),
    };
    // A WebSocket upgrade: judged and routed as any request, then relayed (upgrade.rs).
    // An HTTP/2 extended CONNECT is put in its HTTP/1.1 form here, and goes on as one.
    let upgrade = match upgrade::requested(&mut parts) {
        Ok(upgrade) => upgrade,
        Err(refused) => {
            debug!(%refused, "upgrade refused");
            return refused.response();
        }
    };
    // Once, before authorization and routing; the upstream gets the normalized path.
    if let Err(error) = normalize_path(&mut parts.uri, snapshot.mesh_config()) {
        debug!(%error, path = parts.uri.path(), "path refused");
        return local::reply(StatusCode::BAD_REQUEST, "Bad Request");
    }
    let protocol = if parts.version == Version::HTTP_2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let authority = authority(&parts);

    // Request authentication (JWT): an invalid token is answered 401 here; a verified one
    // feeds authorization and claim-based routes below.
    let auth = match authn::authenticate(&snapshot, ctx, &down.target, &mut parts, &authority).await
    {
        Ok(auth) => auth,
        Err(unauthorized) => return unauthorized,
    };

    // AuthorizationPolicy: CUSTOM, AUDIT, DENY, ALLOW (authz.rs). An external
    // authorization provider may change the request.
    let authorized =
        match authz::authorize(ctx, &snapshot, down, &mut parts, auth.as_ref(), body).await {
            Ok(authorized) => authorized,
            Err(denied) => return denied,
        };
    *provider_headers = authorized.response_headers;
    let body = authorized.body;
    let routing = authorized.routing;

    let (routes, port) = match &down.target {
        Target::Service { service, port } => (ctx.routes(&snapshot, &service.hostname), *port),
        // Routed by the VirtualServices and DestinationRule of the entry's host.
        Target::EntryHost { host, port } => (ctx.routes(&snapshot, &host.host), *port),
        Target::Workload { workload, address } => {
            // Addressed to a pod: no routes (VirtualServices name hosts), straight there.
            let transport = match workload.identity.parse() {
                Ok(identity) if workload.in_mesh => Transport::Hbone { identity },
                _ => Transport::Plain,
            };
            strip_hop_by_hop(&mut parts.headers);
            if let Some(upgrade) = &upgrade {
                upgrade.restore(&mut parts.headers);
            }
            let body = match body.into_request_body().await {
                Ok(body) => body,
                Err(_) => return local::reply(StatusCode::BAD_REQUEST, "bad request body"),
            };
            let mut response =
                forward::direct(ctx, parts, body, *address, transport, protocol).await;
            strip_hop_by_hop(response.headers_mut());
            if let Some(upgrade) = upgrade {
                upgrade.finish(&mut response);
            }
            return response;
        }
        Target::Gateway(gateway) => {
            // The virtual host of the request's Host; none is Envoy's 404 (`NR`).
            let GatewayRoutes::Http(table) = &gateway.routes else {
                return local::no_route();
            };
            let Some(host) = table.select(&authority) else {
                return local::no_route();
            };
            if host.https_redirect && !down.secure {
                return local::https_redirect(&authority, &parts.uri);
            }
            (host.routes.clone(), gateway.port)
        }
    };
    // The request as it came, if the provider changed it but routes are not chosen again.
    let (route_uri, route_headers) = match &routing {
        Some((uri, headers)) => (uri, headers),
        None => (&parts.uri, &parts.headers),
    };
    let facts = RequestFacts {
        method: &parts.method,
        uri: route_uri,
        authority: &authority,
        headers: route_headers,
        port,
        source: &down.source,
        auth: auth.as_ref(),
    };
    let Some(route) = routes.http_route(&facts) else {
        return local::no_route();
    };
    decided.route_name = route.name().map(str::to_string);
    // Envoy's filter order in Istio's proxies: fault injection, then CORS.
    let mut delayed = false;
    if let Some(fault) = route.fault() {
        let decision = fault.decide(fastrand::f64() * 100.0, fastrand::f64() * 100.0);
        if let Some(delay) = decision.delay {
            tokio::time::sleep(delay).await;
            delayed = true;
        }
        match decision.abort {
            Some(FaultAbort::Http(status)) => return local::fault_abort(status),
            Some(FaultAbort::Grpc(code)) => return local::grpc_abort(code),
            None => {}
        }
    }
    if let Some(cors) = route.cors()
        && let Some(preflight) = cors.preflight(&facts)
    {
        let mut response = preflight.map(|()| local::full(bytes::Bytes::new()));
        route.apply_response_headers(None, response.headers_mut(), &vars);
        return response;
    }
    match route.action() {
        RouteAction::Redirect(_) => {
            let Some((status, location)) = route.redirect_location(&facts) else {
                return local::no_route();
            };
            let mut response = local::reply(status, "");
            response.headers_mut().insert(header::LOCATION, location);
            route.apply_response_headers(None, response.headers_mut(), &vars);
            return response;
        }
        RouteAction::DirectResponse { status, body } => {
            let mut response = Response::new(local::full(body.clone().unwrap_or_default()));
            *response.status_mut() = *status;
            if body.is_some() {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            route.apply_response_headers(None, response.headers_mut(), &vars);
            return response;
        }
        RouteAction::Forward(_) => {}
    }
    let Some(destination) = route.pick(fastrand::u32(..)) else {
        return local::no_healthy_upstream();
    };
    if destination.unresolved {
        // A Gateway API backendRef that cannot be used takes its share and answers 500.
        let mut response = local::reply(StatusCode::INTERNAL_SERVER_ERROR, "");
        route.apply_response_headers(None, response.headers_mut(), &vars);
        return response;
    }
    let rewrite = route.rewrite(&facts, Some(destination));
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let timeout = route.effective_timeout(&parts.headers);
    let retry = route.retry().clone();
    // An upgrade is not mirrored: the copy could not carry the stream that follows.
    let mirrors: Vec<MirrorPlan> = route
        .mirrors()
        .iter()
        .filter(|_| upgrade.is_none())
        .filter(|m| m.should_mirror(fastrand::f64() * 100.0))
        .cloned()
        .collect();

    if let Some(path_and_query) = rewrite.path_and_query
        && let Ok(uri) = Uri::builder().path_and_query(path_and_query).build()
    {
        parts.uri = uri;
    }
    let authority = match rewrite.authority {
        Some(value) => value,
        None => match HeaderValue::from_str(&authority) {
            Ok(value) => value,
            Err(_) => return local::reply(StatusCode::BAD_REQUEST, "bad authority"),
        },
    };
    parts.headers.insert(header::HOST, authority);
    route.apply_request_headers(destination, &mut parts.headers, &vars);
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = &upgrade {
        upgrade.restore(&mut parts.headers);
    }
    if !parts.headers.contains_key(X_REQUEST_ID) {
        parts.headers.insert(X_REQUEST_ID, request_id());
    }
    let scheme = if down.secure { "https" } else { "http" };
    parts
        .headers
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if let Target::Gateway(_) = &down.target {
        // An edge proxy appends the client's address (Envoy's `use_remote_address`).
        forwarded_for(&mut parts.headers, down.source_ip);
    }

    let body = match body.into_request_body().await {
        Ok(body) => body,
        Err(_) => return local::reply(StatusCode::BAD_REQUEST, "bad request body"),
    };
    for mirror in mirrors {
        mirror_request(
            ctx,
            &snapshot,
            &parts,
            &body,
            &mirror.destination,
            (port, down.destination),
            protocol,
        );
    }
    let request_port = port;
    let port = destination_port(&snapshot, &destination.host, destination.port, request_port);
    let key = ClusterKey {
        host: destination.host.clone(),
        subset: destination.subset.clone(),
        port,
    };
    decided.cluster = Some(format!(
        "outbound|{port}|{}|{}",
        key.subset.as_deref().unwrap_or_default(),
        key.host
    ));
    let attempts = send(
        ctx,
        &snapshot,
        Forward {
            key,
            parts,
            body,
            retry,
            protocol,
            source_ip: down.source_ip,
            original: down.destination,
        },
    );
    // The route's timeout ends with the response headers: an upgraded stream (spliced
    // after the `101`) outlives it.
    let mut response = match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, attempts).await {
            Ok(response) => response,
            Err(_) => local::upstream_timeout(),
        },
        None => attempts.await,
    };
    if delayed && response.extensions().get::<ResponseFlags>().is_none() {
        response
            .extensions_mut()
            .insert(ResponseFlags::DELAY_INJECTED);
    }
    strip_hop_by_hop(response.headers_mut());
    if let Some(upgrade) = upgrade {
        upgrade.finish(&mut response);
    }
    if let Target::Gateway(_) = &down.target
        && let Some(service) = snapshot.service_by_host(&destination.host)
    {
        response
            .extensions_mut()
            .insert(RoutedService(service.clone()));
    }
    route.apply_response_headers(Some(destination), response.headers_mut(), &vars);
    if let Some(cors) = route.cors() {
        cors.response_headers(origin.as_ref(), response.headers_mut());
    }
    response
}

/// The Service an ingress gateway routed a request to, carried on the response for its
/// metrics.
#[derive(Clone, Debug)]
struct RoutedService(std::sync::Arc<weft_config::registry::model::Service>);

/// `x-forwarded-for` with the client's address appended, as an edge Envoy sets it.
fn forwarded_for(headers: &mut http::HeaderMap, client: Option<std::net::IpAddr>) {
    let Some(client) = client else {
        return;
    };
    const XFF: &str = "x-forwarded-for";
    let value = match headers.get(XFF).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{client}"),
        _ => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(XFF, value);
    }
}

/// A copy of the request to the mirror's destination, fire and forget: its answer is
/// dropped, and a body that streams cannot be copied (Envoy mirrors only what it buffered).
fn mirror_request(
    ctx: &Arc<WaypointContext>,
    snapshot: &Arc<weft_config::registry::Snapshot>,
    parts: &http::request::Parts,
    body: &RequestBody,
    destination: &RouteDestination,
    (request_port, original): (u16, std::net::SocketAddr),
    protocol: Protocol,
) {
    let Some(replay) = body.replayable() else {
        return;
    };
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.headers_mut() = parts.headers.clone();
    let (mut copy_parts, ()) = copy.into_parts();
    let host = copy_parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(MirrorPlan::shadow_authority);
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        copy_parts.headers.insert(header::HOST, host);
    }
    let port = destination_port(snapshot, &destination.host, destination.port, request_port);
    let key = ClusterKey {
        host: destination.host.clone(),
        subset: destination.subset.clone(),
        port,
    };
    let forward = Forward {
        key,
        parts: copy_parts,
        body: RequestBody::Complete(replay.clone()),
        retry: crate::route::RetryPolicy::disabled(),
        protocol,
        source_ip: None,
        original,
    };
    let ctx = ctx.clone();
    let snapshot = snapshot.clone();
    tokio::spawn(async move {
        let response = send(&ctx, &snapshot, forward).await;
        // Read the answer to its end so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    });
}
