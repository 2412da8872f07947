//! `serve`: the HTTP/1.1 + h2c server that answers every request with who it is and what it
//! saw, plus the TCP echo and sink listeners and the gRPC health service (tonic-health's
//! `grpc.health.v1.Health`, what a kubelet's `grpc` probe asks).
//!
//! Health can be made to fail on demand, for probes: `POST /control/health?state=failing`
//! makes `/healthz` answer 503 and gRPC health NOT_SERVING, `state=serving` undoes it
//! (`--unhealthy` starts failing). Tests send it on the pod's loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue, TRAILER};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::body::{FillerBody, WithTrailers};
use crate::controls::{self, Defaults};
use crate::message::header_map;
use crate::{echo, net, out, sink};

type RespBody = BoxBody<Bytes, Infallible>;

pub struct Config {
    pub http_ports: Vec<u16>,
    pub echo_ports: Vec<u16>,
    pub sink_ports: Vec<u16>,
    pub grpc_health_ports: Vec<u16>,
    /// Health at start (see the module's comment).
    pub healthy: bool,
    pub defaults: Defaults,
    /// URLs called for every request answered (`--call`).
    pub calls: Vec<String>,
}

/// Who this pod is, read once from the env the lab sets on the container.
#[derive(Debug, Clone, Default)]
struct Identity {
    pod: String,
    namespace: String,
    version: String,
    service_account: String,
    node: String,
}

impl Identity {
    fn from_env() -> Self {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self {
            pod: var("POD_NAME"),
            namespace: var("POD_NAMESPACE"),
            version: var("POD_VERSION"),
            service_account: var("POD_SERVICE_ACCOUNT"),
            node: var("NODE_NAME"),
        }
    }
}

struct App {
    identity: Identity,
    defaults: Defaults,
    // Precomputed: an identity that is not a valid header value just omits the header.
    pod_header: Option<HeaderValue>,
    version_header: Option<HeaderValue>,
    stats: Mutex<Stats>,
    calls: Vec<String>,
    healthy: AtomicBool,
    health: tonic_health::server::HealthReporter,
}

/// `GET /stats`: requests answered since start (all but `/healthz` and `/stats`), in total and
/// per Host / :authority exactly as received. Tests use it to count retries and mirror copies.
#[derive(Debug, Clone, Default, Serialize)]
struct Stats {
    requests: u64,
    by_host: BTreeMap<String, u64>,
}

impl App {
    fn new(identity: Identity, defaults: Defaults, calls: Vec<String>) -> Self {
        Self {
            calls,
            healthy: AtomicBool::new(true),
            health: tonic_health::server::HealthReporter::new(),
            pod_header: HeaderValue::from_str(&identity.pod).ok(),
            version_header: HeaderValue::from_str(&identity.version).ok(),
            identity,
            defaults,
            stats: Mutex::default(),
        }
    }

    fn count(&self, host: String) {
        // A panic elsewhere while holding the lock leaves the counts valid: keep counting.
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.requests += 1;
        *stats.by_host.entry(host).or_default() += 1;
    }

    fn stats(&self) -> Stats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Per-connection facts every response reports.
struct Conn {
    app: Arc<App>,
    peer: SocketAddr,
    local: SocketAddr,
}

#[derive(Serialize)]
struct Report<'a> {
    pod: &'a str,
    namespace: &'a str,
    version: &'a str,
    service_account: &'a str,
    node: &'a str,
    method: &'a str,
    path: &'a str,
    http_version: String,
    headers: BTreeMap<String, Vec<String>>,
    peer: String,
    local: String,
    status: u16,
    body_bytes: u64,
    /// The request's trailers (echoed back as the response's).
    trailers: BTreeMap<String, Vec<String>>,
    /// What the calls made for this request returned (`--call`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    calls: Vec<crate::calls::Call>,
}

pub async fn run(config: Config) -> Result<()> {
    let app = Arc::new(App::new(
        Identity::from_env(),
        config.defaults,
        config.calls,
    ));
    app.set_health(config.healthy).await;

    // Bind everything before announcing, so the "listening" line means every port is ready.
    let mut http = Vec::new();
    let mut http_ports = Vec::new();
    for &port in &config.http_ports {
        let listeners = net::bind_all(port).with_context(|| format!("http port {port}"))?;
        http_ports.push(bound_port(&listeners)?);
        http.extend(listeners);
    }
    let mut echo = Vec::new();
    let mut echo_ports = Vec::new();
    for &port in &config.echo_ports {
        let listeners = net::bind_all(port).with_context(|| format!("tcp echo port {port}"))?;
        echo_ports.push(bound_port(&listeners)?);
        echo.extend(listeners);
    }
    let mut grpc = Vec::new();
    let mut grpc_ports = Vec::new();
    for &port in &config.grpc_health_ports {
        let listeners = net::bind_all(port).with_context(|| format!("grpc health port {port}"))?;
        grpc_ports.push(bound_port(&listeners)?);
        grpc.extend(listeners);
    }
    let mut sinks = Vec::new();
    let mut sink_ports = Vec::new();
    for &port in &config.sink_ports {
        let listeners = net::bind_all(port).with_context(|| format!("tcp sink port {port}"))?;
        sink_ports.push(bound_port(&listeners)?);
        sinks.extend(listeners);
    }

    // Registered before announcing too: a SIGTERM right after the line must not kill us
    // with the default disposition.
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;

    let builder = server_builder();
    for listener in http {
        tokio::spawn(serve_http(listener, builder.clone(), app.clone()));
    }
    for listener in echo {
        tokio::spawn(echo::serve(listener));
    }
    for listener in sinks {
        tokio::spawn(sink::serve(listener));
    }
    for listener in grpc {
        tokio::spawn(serve_grpc_health(listener, app.clone()));
    }

    // `grpc=[…]` only when asked for: readers of the line predate it.
    let grpc = if grpc_ports.is_empty() {
        String::new()
    } else {
        format!(" grpc=[{}]", join(&grpc_ports))
    };
    out::line(&format!(
        "listening http=[{}] echo=[{}] sink=[{}]{grpc}",
        join(&http_ports),
        join(&echo_ports),
        join(&sink_ports)
    ))?;

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    // Returning drops the runtime, which cancels the accept loops and open connections: tests
    // want the pod gone promptly, not a drain.
    Ok(())
}

/// `grpc.health.v1.Health` (Check and Watch) on `listener`, reporting the app's health for
/// the server as a whole (service "").
async fn serve_grpc_health(listener: TcpListener, app: Arc<App>) {
    let service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(app.health.clone()),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
    {
        eprintln!("weft-testapp: gRPC health server stopped: {e}");
    }
}

impl App {
    async fn set_health(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
        let status = if healthy {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }
}

fn bound_port(listeners: &[TcpListener]) -> Result<u16> {
    let first = listeners.first().context("no listener bound")?;
    Ok(first.local_addr().context("listener address")?.port())
}

/// `[8080,8081]` without spaces, so the line splits on whitespace into key=value fields.
fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn server_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 header-read timeout needs a timer; without one it can't be enforced.
    builder.http1().keep_alive(true).timer(TokioTimer::new());
    // Throughput tests over h2 would otherwise be bound by the 64 KiB default window.
    builder
        .http2()
        .adaptive_window(true)
        .timer(TokioTimer::new());
    builder
}

async fn serve_http(listener: TcpListener, builder: auto::Builder<TokioExecutor>, app: Arc<App>) {
    net::accept_loop(listener, |stream| {
        let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            // The peer already left between accept and here: nothing to serve.
            return;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            app: app.clone(),
            peer: net::canonical(peer),
            local: net::canonical(local),
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, conn.clone()));
            // Errors here are clients going away mid-request; logging them would be noise.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    })
    .await;
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<RespBody>, hyper::Error> {
    let app = &conn.app;
    // Health checks stay green whatever the chaos settings are; only the health control
    // makes them fail.
    if req.uri().path() == "/control/health" {
        return Ok(health_control(app, &req).await);
    }
    if req.uri().path() == "/healthz" {
        if !app.healthy.load(Ordering::SeqCst) {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"failing")).boxed());
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            identity_headers(app, resp.headers_mut());
            return Ok(resp);
        }
        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        identity_headers(app, resp.headers_mut());
        return Ok(resp);
    }
    if req.uri().path() == "/stats" {
        return Ok(json_response(app, 200, &app.stats()));
    }
    // Counted on arrival: a request that then fails (--fail-rate) or times out was received.
    app.count(authority(&req));

    let (parts, mut body) = req.into_parts();
    // Read (and count) the whole upload before answering, so upload tests measure the transfer.
    let mut body_bytes = 0u64;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => body_bytes += data.len() as u64,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    for (name, value) in &t {
                        trailers.append(name, value.clone());
                    }
                }
            }
        }
    }

    let resp = answer(&conn, &parts, body_bytes, &trailers).await;
    if trailers.is_empty() {
        return Ok(resp);
    }
    // Echo the request's trailers at the end of the response. HTTP/1.1 sends them only when
    // the response announces them and the request said `TE: trailers`.
    let (mut head, body) = resp.into_parts();
    if parts.version < Version::HTTP_2 {
        let names: Vec<&str> = trailers.keys().map(|n| n.as_str()).collect();
        if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
            head.headers.insert(TRAILER, v);
        }
    }
    Ok(Response::from_parts(
        head,
        WithTrailers::new(body, trailers).boxed(),
    ))
}

/// `POST /control/health?state=failing|serving` sets the app's health; any method without
/// `state` reads it. Answers `{"health": "serving"|"failing"}`.
async fn health_control(app: &App, req: &Request<Incoming>) -> Response<RespBody> {
    let state = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("state="));
    match (req.method().as_str(), state) {
        (_, None) => {}
        ("POST", Some("failing")) => app.set_health(false).await,
        ("POST", Some("serving")) => app.set_health(true).await,
        ("POST", Some(other)) => {
            return json_response(
                app,
                400,
                &serde_json::json!({"error": format!("state {other:?} is neither failing nor serving")}),
            );
        }
        (method, Some(_)) => {
            return json_response(
                app,
                405,
                &serde_json::json!({"error": format!("{method} cannot change health: POST")}),
            );
        }
    }
    let health = if app.healthy.load(Ordering::SeqCst) {
        "serving"
    } else {
        "failing"
    };
    json_response(app, 200, &serde_json::json!({ "health": health }))
}

/// The request's Host as sent: h2's :authority (hyper puts it in the URI), else the Host
/// header; empty when neither.
fn authority<B>(req: &Request<B>) -> String {
    if let Some(a) = req.uri().authority() {
        return a.as_str().to_owned();
    }
    req.headers()
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

async fn answer(
    conn: &Conn,
    parts: &hyper::http::request::Parts,
    body_bytes: u64,
    trailers: &HeaderMap,
) -> Response<RespBody> {
    let app = &conn.app;

    let query = parts.uri.query();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let controls = match controls::parse(query, header, app.defaults) {
        Ok(c) => c,
        Err(e) => return error_response(app, &e),
    };
    let bytes_n = if parts.uri.path() == "/bytes" {
        match controls::parse_bytes_n(query) {
            Ok(n) => Some(n),
            Err(e) => return error_response(app, &e),
        }
    } else {
        None
    };

    if controls.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(controls.delay_ms)).await;
    }
    let failed = crate::rng::chance(controls.fail_rate);
    let status = if failed { 500 } else { controls.status };

    if let (Some(n), false) = (bytes_n, failed) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut resp = Response::new(FillerBody::new(n).boxed());
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        identity_headers(app, resp.headers_mut());
        return resp;
    }

    let calls = crate::calls::call_all(&app.calls, &parts.headers).await;
    let id = &app.identity;
    let report = Report {
        pod: &id.pod,
        namespace: &id.namespace,
        version: &id.version,
        service_account: &id.service_account,
        node: &id.node,
        method: parts.method.as_str(),
        path: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        http_version: format!("{:?}", parts.version),
        headers: header_map(&parts.headers),
        peer: conn.peer.to_string(),
        local: conn.local.to_string(),
        status,
        body_bytes,
        trailers: header_map(trailers),
        calls,
    };
    json_response(app, status, &report)
}

/// An in-process server on 127.0.0.1 (ephemeral port) for the unit tests.
#[cfg(test)]
pub async fn spawn_local() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind 127.0.0.1:0")?;
    let addr = listener.local_addr().context("listener address")?;
    let app = Arc::new(App::new(
        Identity::default(),
        Defaults::default(),
        Vec::new(),
    ));
    tokio::spawn(serve_http(listener, server_builder(), app));
    Ok(addr)
}

fn error_response(app: &App, err: &controls::ControlError) -> Response<RespBody> {
    json_response(app, 400, &serde_json::json!({ "error": err.to_string() }))
}

fn json_response(app: &App, status: u16, value: &impl Serialize) -> Response<RespBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // 204 and 304 may not carry a body; sending one would break HTTP/1 framing.
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        let mut json = serde_json::to_vec(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"serialize: {e}\"}}").into_bytes());
        json.push(b'\n');
        Bytes::from(json)
    };
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    identity_headers(app, resp.headers_mut());
    resp
}

fn identity_headers(app: &App, headers: &mut HeaderMap) {
    if let Some(v) = &app.pod_header {
        headers.insert("x-testapp-pod", v.clone());
    }
    if let Some(v) = &app.version_header {
        headers.insert("x-testapp-version", v.clone());
    }
}
