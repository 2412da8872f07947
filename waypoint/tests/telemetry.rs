//! The Telemetry API at the waypoint, in process and unprivileged: Telemetry resources of
//! the waypoints' namespaces turning access logs off, or on with a CEL filter, and changing
//! metrics, for requests from a client in `shop` to ServiceEntry hosts of five namespaces,
//! each bound to its own namespace's waypoint, and of two more bound to another namespace's
//! waypoint (carried in as the agent's CONNECT streams would be), answered by a real server
//! on 127.0.0.1. As istiod, a waypoint applies the Telemetry of its own namespace
//! (`applicableTelemetries`: the proxy's config namespace), not the destination's.
mod common;

use common::{context_of, entry_downstream};

use std::collections::BTreeMap;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_waypoint::context::WaypointContext;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `hello` to `/ok` and 503 to anything else.
async fn http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<_>| async move {
                    let ok = request.uri().path() == "/ok";
                    let _ = BodyExt::collect(request.into_body()).await;
                    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
                    if !ok {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

/// A namespace with a ServiceEntry host `<ns>.external.test` bound to the waypoint of
/// namespace `waypoint_ns`, and a waypoint Gateway of its own.
fn namespace(ns: &str, waypoint_ns: &str, port: u16) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: {ns}, labels: {{istio.io/waypoint-for: service}}}}
spec: {{gatewayClassName: istio-waypoint, listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
  namespace: {ns}
  labels: {{istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: {waypoint_ns}}}
spec:
  hosts: [{ns}.external.test]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
"#
    )
}

/// The namespaces whose ServiceEntry uses their own namespace's waypoint.
const OWN: [&str; 5] = ["plain", "quiet", "errors", "tagged", "targeted"];
/// Namespaces whose ServiceEntry uses another namespace's waypoint: `remote` (its own
/// Telemetry turns access logs off) uses `plain`'s, `guest` (no Telemetry) uses `quiet`'s.
const BORROWED: [(&str, &str); 2] = [("remote", "plain"), ("guest", "quiet")];

/// Access logs to `log` by default (meshConfig `defaultProviders`, the file provider
/// `file`); in `quiet` they are off, in `errors` only 4xx and 5xx are logged and
/// `istio_requests_total` is not recorded; in `tagged` `request_protocol` is removed from
/// every request metric and `user` (the `x-user` header) added; in `targeted` a Telemetry
/// attached to its ServiceEntry (`targetRefs`) turns access logs off; `remote`'s Telemetry
/// turns them off too, but a waypoint of another namespace serves it.
fn fixture(http: SocketAddr, log: &Path) -> String {
    let mut yaml = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: file
      envoyFileAccessLog: {{path: {log}}}
    defaultProviders: {{accessLogging: [file]}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: no-logs, namespace: quiet}}
spec:
  accessLogging: [{{disabled: true}}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {{name: errors-only, namespace: errors}}
spec:
  accessLogging:
  - providers: [{{name: file}}]
    filter: {{expression: response.code >= 400}}
  metrics:
  - providers: [{{name: prometheus}}]
    overrides:
    - match: {{metric: REQUEST_COUNT}}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: entry-quiet, namespace: targeted}}
spec:
  targetRefs: [{{group: networking.istio.io, kind: ServiceEntry, name: api}}]
  accessLogging: [{{disabled: true}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: tags, namespace: tagged}}
spec:
  metrics:
  - overrides:
    - tagOverrides:
        request_protocol: {{operation: REMOVE}}
        user: {{value: "request.headers['x-user']"}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: no-logs, namespace: remote}}
spec:
  accessLogging: [{{disabled: true}}]
"#,
        log = log.display()
    );
    for ns in OWN {
        yaml.push_str(&namespace(ns, ns, http.port()));
    }
    for (ns, waypoint_ns) in BORROWED {
        yaml.push_str(&namespace(ns, waypoint_ns, http.port()));
    }
    yaml
}

/// Each namespace's waypoint, by namespace.
async fn setup(log: &Path) -> BTreeMap<&'static str, Arc<WaypointContext>> {
    let yaml = fixture(http_server().await, log);
    OWN.iter()
        .map(|ns| (*ns, context_of(&yaml, "waypoint", ns)))
        .collect()
}

/// The waypoint that serves namespace `ns`'s ServiceEntry.
fn serving<'a>(
    waypoints: &'a BTreeMap<&'static str, Arc<WaypointContext>>,
    ns: &str,
) -> &'a Arc<WaypointContext> {
    let at = BORROWED
        .iter()
        .find(|(borrower, _)| *borrower == ns)
        .map_or(ns, |(_, owner)| owner);
    &waypoints[at]
}

/// One HTTP/1.1 request to `<ns>.external.test<path>` through the waypoint, answered in
/// full.
async fn send(ctx: &Arc<WaypointContext>, ns: &str, path: &str) -> StatusCode {
    let host = format!("{ns}.external.test");
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(weft_waypoint::http::serve(
        server,
        entry_downstream(ctx, &host, 80),
        ctx.clone(),
    ));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("HTTP/1.1 to the waypoint");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", &host)
        .header("x-user", "ann")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    let status = response.status();
    let _ = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await;
    status
}

/// The file's lines once it has `want` of them (or after the timeout), and a moment more
/// so a line too many would show.
async fn lines(path: &Path, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= want || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            return text.lines().map(str::to_string).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_turns_access_logs_off_for_one_namespace_and_filters_another() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let waypoints = setup(&log).await;
    for (ns, path, code) in [
        ("plain", "/ok", StatusCode::OK),
        ("quiet", "/ok", StatusCode::OK),
        ("quiet", "/fail", StatusCode::SERVICE_UNAVAILABLE),
        ("errors", "/ok", StatusCode::OK),
        ("errors", "/fail", StatusCode::SERVICE_UNAVAILABLE),
        ("targeted", "/fail", StatusCode::SERVICE_UNAVAILABLE),
        ("guest", "/ok", StatusCode::OK),
        ("remote", "/ok", StatusCode::OK),
    ] {
        let ctx = serving(&waypoints, ns);
        assert_eq!(send(ctx, ns, path).await, code, "{ns}{path}");
    }
    let lines = lines(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // Each waypoint writes its own lines: found by host, not by order.
    let of = |host: &str| -> Vec<&String> { lines.iter().filter(|l| l.contains(host)).collect() };
    let plain = of("plain.external.test");
    assert!(
        plain.len() == 1 && plain[0].contains("\"GET /ok HTTP/1.1\" 200 "),
        "the namespace without a Telemetry logs by the default provider: {lines:#?}"
    );
    let errors = of("errors.external.test");
    assert!(
        errors.len() == 1 && errors[0].contains("\"GET /fail HTTP/1.1\" 503 "),
        "only the 5xx of the filtered namespace: {lines:#?}"
    );
    assert!(
        of("quiet.external.test").is_empty(),
        "nothing from the namespace whose Telemetry disables access logs: {lines:#?}"
    );
    assert!(
        of("targeted.external.test").is_empty(),
        "nothing for the ServiceEntry a Telemetry's targetRefs turns access logs off for: {lines:#?}"
    );
    assert!(
        of("guest.external.test").is_empty(),
        "nothing through the waypoint of the namespace whose Telemetry disables access logs, \
         whatever the destination's namespace: {lines:#?}"
    );
    let remote = of("remote.external.test");
    assert!(
        remote.len() == 1 && remote[0].contains("\"GET /ok HTTP/1.1\" 200 "),
        "the destination namespace's Telemetry does not apply at another namespace's waypoint \
         (as in Istio), which logs by the default provider: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_metric_overrides_show_on_metrics() {
    let dir = tempfile::tempdir().expect("dir");
    let waypoints = setup(&dir.path().join("access.log")).await;
    for ns in ["plain", "errors", "tagged"] {
        assert_eq!(
            send(&waypoints[ns], ns, "/ok").await,
            StatusCode::OK,
            "{ns}"
        );
    }
    let text: String = ["plain", "errors", "tagged"]
        .iter()
        .map(|ns| waypoints[ns].metrics.encode())
        .collect();
    let series = |metric: &str, host: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .filter(|l| l.contains(&format!("destination_service=\"{host}\"")))
            .map(str::to_string)
            .collect()
    };
    let plain = series("istio_requests_total", "plain.external.test");
    assert_eq!(plain.len(), 1, "{text}");
    assert!(
        plain[0].contains("request_protocol=\"http\""),
        "{}",
        plain[0]
    );
    assert!(!plain[0].contains("user="), "{}", plain[0]);
    assert!(
        series("istio_requests_total", "errors.external.test").is_empty(),
        "REQUEST_COUNT disabled for errors: {text}"
    );
    assert_eq!(
        series(
            "istio_request_duration_milliseconds_count",
            "errors.external.test"
        )
        .len(),
        1,
        "other metrics stay: {text}"
    );
    let tagged = series("istio_requests_total", "tagged.external.test");
    assert_eq!(tagged.len(), 1, "{text}");
    assert!(!tagged[0].contains("request_protocol="), "{}", tagged[0]);
    assert!(tagged[0].contains("user=\"ann\""), "{}", tagged[0]);
}
