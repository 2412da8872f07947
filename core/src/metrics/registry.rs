//! The registry of Istio's standard metrics and the families behind each name.
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::dns::{DnsLabels, DnsOutcome};
use super::labels::{BuildLabels, ConnectionLabels, RequestLabels, RequestSeries, ResponseCode};
use super::overrides::{MetricChange, RequestOverrides};
use super::recorder::TcpConnectionRecorder;

/// Envoy's default histogram bounds, which Istio's request histograms use (milliseconds for
/// durations, bytes for sizes).
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

type RequestKey = RequestSeries;

/// One finished HTTP request, as Istio's request metrics describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRequestRecord {
    /// `response_code`.
    pub status: u16,
    /// `grpc_response_status`: the `grpc-status` of a gRPC response (header or trailer).
    pub grpc_status: Option<u32>,
    /// `istio_request_duration_milliseconds`: from the request's arrival to the end of the
    /// response.
    pub duration: Duration,
    /// `istio_request_bytes`: the request's headers and body, as Envoy's
    /// `request.total_size` counts them.
    pub request_bytes: u64,
    /// `istio_response_bytes`: the response's headers, body and trailers (Envoy's
    /// `response.total_size`).
    pub response_bytes: u64,
}
type HistogramFamily = Family<RequestKey, Histogram, fn() -> Histogram>;

/// The registry of Istio's standard metrics; one per process, shared behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tcp_opened: Family<ConnectionLabels, Counter>,
    tcp_closed: Family<ConnectionLabels, Counter>,
    tcp_sent: Family<ConnectionLabels, Counter>,
    tcp_received: Family<ConnectionLabels, Counter>,
    requests: Family<RequestKey, Counter>,
    request_duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    dns_requests: Family<DnsLabels, Counter>,
    dns_upstream_requests: Family<DnsLabels, Counter>,
    dns_upstream_failures: Family<DnsLabels, Counter>,
    build: Family<BuildLabels, Gauge>,
    access_log_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("istio");
        let tcp_opened = Family::default();
        registry.register(
            "tcp_connections_opened",
            "The total number of TCP connections opened",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::default();
        registry.register(
            "tcp_connections_closed",
            "The total number of TCP connections closed",
            tcp_closed.clone(),
        );
        let tcp_sent = Family::default();
        registry.register(
            "tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            tcp_sent.clone(),
        );
        let tcp_received = Family::default();
        registry.register(
            "tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            tcp_received.clone(),
        );
        let requests = Family::default();
        registry.register("requests", "The total number of requests", requests.clone());
        let request_duration: HistogramFamily = Family::new_with_constructor(istio_histogram);
        registry.register(
            "request_duration_milliseconds",
            "The duration of requests in milliseconds",
            request_duration.clone(),
        );
        let request_bytes: HistogramFamily = Family::new_with_constructor(istio_histogram);
        registry.register(
            "request_bytes",
            "The size of HTTP requests, headers and body",
            request_bytes.clone(),
        );
        let response_bytes: HistogramFamily = Family::new_with_constructor(istio_histogram);
        registry.register(
            "response_bytes",
            "The size of HTTP responses, headers, body and trailers",
            response_bytes.clone(),
        );
        let dns_requests = Family::default();
        registry.register(
            "dns_requests",
            "Total number of DNS requests (unstable)",
            dns_requests.clone(),
        );
        let dns_upstream_requests = Family::default();
        registry.register(
            "dns_upstream_requests",
            "Total number of DNS requests forwarded to upstream (unstable)",
            dns_upstream_requests.clone(),
        );
        let dns_upstream_failures = Family::default();
        registry.register(
            "dns_upstream_failures",
            "Total number of DNS requests that failed to forward upstream (unstable)",
            dns_upstream_failures.clone(),
        );
        let build = Family::default();
        registry.register("build", "Istio component build info", build.clone());
        let access_log_dropped = Counter::default();
        registry.register(
            "weft_access_log_lines_dropped",
            "Access log lines dropped because the writer's queue was full",
            access_log_dropped.clone(),
        );
        Arc::new(Self {
            registry,
            access_log_dropped,
            build,
            dns_requests,
            dns_upstream_requests,
            dns_upstream_failures,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            requests,
            request_duration,
            request_bytes,
            response_bytes,
        })
    }

    /// Counts a connection opened and returns what counts its bytes and its close. The
    /// label set is looked up once here, not per byte.
    pub fn tcp_opened(self: &Arc<Self>, labels: &ConnectionLabels) -> TcpConnectionRecorder {
        self.tcp_opened.get_or_create(labels).inc();
        TcpConnectionRecorder::new(
            self.tcp_closed.clone(),
            labels.clone(),
            self.tcp_sent.get_or_create_owned(labels),
            self.tcp_received.get_or_create_owned(labels),
        )
    }

    /// `istio_build{component, tag} 1`: which Istio component this process plays
    /// (`ztunnel` for the node agent, `proxy` for a waypoint or gateway, as Istio's
    /// dashboards select them) and its version.
    pub fn set_build(&self, component: &str, tag: &str) {
        self.build
            .get_or_create(&BuildLabels {
                component: component.to_string(),
                tag: tag.to_string(),
            })
            .set(1);
    }

    /// `istio_weft_access_log_lines_dropped_total`, for the access log's writer.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Counts a finished request: `istio_requests_total`, its duration and its sizes.
    pub fn http_request(&self, labels: &RequestLabels, request: &HttpRequestRecord) {
        self.http_request_with(labels, request, &RequestOverrides::default());
    }

    /// Counts a finished request with the Telemetry API's changes: a disabled metric is
    /// not recorded, the others with their tags changed.
    pub fn http_request_with(
        &self,
        labels: &RequestLabels,
        request: &HttpRequestRecord,
        overrides: &RequestOverrides,
    ) {
        let code = ResponseCode {
            status: request.status,
            grpc_status: request.grpc_status,
        };
        let mut shared: Option<RequestKey> = None;
        let mut key = |change: &MetricChange| -> RequestKey {
            match &shared {
                Some(key) if key.tags == change.tags => key.clone(),
                _ => {
                    let key = RequestSeries {
                        labels: labels.clone(),
                        code,
                        tags: change.tags.clone(),
                    };
                    shared = Some(key.clone());
                    key
                }
            }
        };
        if !overrides.count.disabled {
            self.requests.get_or_create(&key(&overrides.count)).inc();
        }
        if !overrides.duration.disabled {
            self.request_duration
                .get_or_create(&key(&overrides.duration))
                .observe(request.duration.as_secs_f64() * 1000.0);
        }
        if !overrides.request_size.disabled {
            self.request_bytes
                .get_or_create(&key(&overrides.request_size))
                .observe(request.request_bytes as f64);
        }
        if !overrides.response_size.disabled {
            self.response_bytes
                .get_or_create(&key(&overrides.response_size))
                .observe(request.response_bytes as f64);
        }
    }

    /// Counts a DNS query a pod sent the proxy, and how it was handled.
    pub fn dns_request(&self, labels: &DnsLabels, outcome: DnsOutcome) {
        self.dns_requests.get_or_create(labels).inc();
        if outcome != DnsOutcome::Answered {
            self.dns_upstream_requests.get_or_create(labels).inc();
        }
        if outcome == DnsOutcome::ForwardFailed {
            self.dns_upstream_failures.get_or_create(labels).inc();
        }
    }

    /// The OpenMetrics text exposition of every metric (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and our label sets never return errors.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metrics::*;

    fn peer(name: &str, ns: &str, sa: &str) -> WorkloadLabels {
        let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())]
            .into_iter()
            .collect();
        WorkloadLabels::new(name, ns, &labels, DEFAULT_CLUSTER_ID)
            .with_principal(Some(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")))
    }

    fn hbone(reporter: Reporter) -> ConnectionLabels {
        ConnectionLabels::new(reporter)
            .with_source(peer("client", "shop", "client"))
            .with_destination(peer("web", "shop", "web"))
            .with_destination_service(Some(ServiceLabels::new(
                "web.shop.svc.cluster.local",
                "web",
                "shop",
            )))
            .with_security_policy(SecurityPolicy::MutualTls)
    }

    const SOURCE_SERIES: &str = concat!(
        "{reporter=\"source\",source_workload=\"client\",source_canonical_service=\"client\",",
        "source_canonical_revision=\"latest\",source_workload_namespace=\"shop\",",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/client\",source_app=\"client\",",
        "source_version=\"latest\",source_cluster=\"Kubernetes\",",
        "destination_service=\"web.shop.svc.cluster.local\",destination_service_namespace=\"shop\",",
        "destination_service_name=\"web\",destination_workload=\"web\",",
        "destination_canonical_service=\"web\",destination_canonical_revision=\"latest\",",
        "destination_workload_namespace=\"shop\",",
        "destination_principal=\"spiffe://cluster.local/ns/shop/sa/web\",destination_app=\"web\",",
        "destination_version=\"latest\",destination_cluster=\"Kubernetes\",",
        "request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"}"
    );

    #[test]
    fn tcp_connections_are_encoded_with_istios_names_and_labels() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Source);
        for _ in 0..3 {
            let recorder = metrics.tcp_opened(&labels);
            recorder.received(100);
            recorder.sent(20);
            recorder.sent(5);
        }
        let text = metrics.encode();
        for (name, value) in [
            ("istio_tcp_connections_opened_total", 3),
            ("istio_tcp_connections_closed_total", 3),
            ("istio_tcp_received_bytes_total", 300),
            ("istio_tcp_sent_bytes_total", 75),
        ] {
            let line = format!("{name}{SOURCE_SERIES} {value}\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains("# TYPE istio_tcp_sent_bytes counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_connection_is_closed_once_its_recorder_is_dropped_with_its_final_flags() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Destination);
        let mut recorder = metrics.tcp_opened(&labels);
        assert!(
            !metrics
                .encode()
                .contains("istio_tcp_connections_closed_total{")
        );
        recorder.set_response_flags(ResponseFlags::DENY);
        drop(recorder);
        let text = metrics.encode();
        assert!(
            text.contains("istio_tcp_connections_opened_total{reporter=\"destination\""),
            "{text}"
        );
        let closed = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"))
            .expect("a closed series");
        assert!(closed.contains("response_flags=\"DENY\""), "{closed}");
        assert!(closed.ends_with(" 1"), "{closed}");
    }

    fn request(status: u16, millis: u64, sizes: (u64, u64)) -> HttpRequestRecord {
        HttpRequestRecord {
            status,
            grpc_status: None,
            duration: Duration::from_millis(millis),
            request_bytes: sizes.0,
            response_bytes: sizes.1,
        }
    }

    /// The value of the one line starting with `prefix` and containing every one of `has`.
    fn value(text: &str, prefix: &str, has: &[&str]) -> f64 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(prefix) && has.iter().all(|h| l.contains(h)))
            .collect();
        assert_eq!(lines.len(), 1, "{prefix} {has:?} in\n{text}");
        lines[0]
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value in {}", lines[0]))
    }

    #[test]
    fn requests_count_by_response_code_with_istios_buckets() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Waypoint).with_protocol(RequestProtocol::Http);
        metrics.http_request(&labels, &request(200, 3, (0, 0)));
        metrics.http_request(&labels, &request(200, 30, (0, 0)));
        metrics.http_request(&labels, &request(503, 7, (0, 0)));
        let text = metrics.encode();
        let ok = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
            .expect("a 200 series");
        assert!(ok.contains("reporter=\"waypoint\""), "{ok}");
        assert!(ok.contains("request_protocol=\"http\""), "{ok}");
        assert!(ok.contains("grpc_response_status=\"\""), "{ok}");
        assert!(ok.ends_with(" 2"), "{ok}");
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_request_duration_milliseconds_bucket{")
                        && l.contains("response_code=\"200\"")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("no le={le} bucket in\n{text}"))
                .to_string()
        };
        assert!(bucket("5.0").ends_with(" 1"), "{}", bucket("5.0"));
        assert!(bucket("50.0").ends_with(" 2"), "{}", bucket("50.0"));
        assert!(bucket("3600000.0").ends_with(" 2"));
    }

    #[test]
    fn request_and_response_sizes_are_recorded_per_request() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Waypoint).with_protocol(RequestProtocol::Http);
        metrics.http_request(&labels, &request(200, 1, (1_100, 250)));
        metrics.http_request(&labels, &request(200, 1, (2_100, 50_000)));
        let text = metrics.encode();
        let ok = ["response_code=\"200\""];
        assert_eq!(value(&text, "istio_request_bytes_sum{", &ok), 3_200.0);
        assert_eq!(value(&text, "istio_request_bytes_count{", &ok), 2.0);
        assert_eq!(value(&text, "istio_response_bytes_sum{", &ok), 50_250.0);
        // Envoy's buckets: 250 falls in le=250, 50,000 in le=60,000.
        let le = |l: &str| {
            value(
                &text,
                "istio_response_bytes_bucket{",
                &["response_code=\"200\"", &format!("le=\"{l}\"")],
            )
        };
        assert_eq!((le("100.0"), le("250.0"), le("60000.0")), (0.0, 1.0, 2.0));
    }

    #[test]
    fn grpc_requests_carry_their_grpc_status_and_failures_their_flags() {
        let metrics = Metrics::new();
        let grpc = hbone(Reporter::Waypoint).with_protocol(RequestProtocol::Grpc);
        let ok = HttpRequestRecord {
            grpc_status: Some(0),
            ..request(200, 1, (10, 10))
        };
        let unavailable = HttpRequestRecord {
            grpc_status: Some(14),
            ..request(200, 1, (10, 10))
        };
        metrics.http_request(&grpc, &ok);
        metrics.http_request(&grpc, &unavailable);
        metrics.http_request(&grpc, &unavailable);
        let overflow = hbone(Reporter::Waypoint)
            .with_protocol(RequestProtocol::Http)
            .with_response_flags(ResponseFlags::UPSTREAM_OVERFLOW);
        metrics.http_request(&overflow, &request(503, 1, (10, 10)));
        let text = metrics.encode();
        let grpc_ok = [
            "request_protocol=\"grpc\"",
            "grpc_response_status=\"0\"",
            "response_code=\"200\"",
        ];
        assert_eq!(value(&text, "istio_requests_total{", &grpc_ok), 1.0);
        let grpc_14 = ["request_protocol=\"grpc\"", "grpc_response_status=\"14\""];
        assert_eq!(value(&text, "istio_requests_total{", &grpc_14), 2.0);
        let uo = [
            "response_flags=\"UO\"",
            "response_code=\"503\"",
            "connection_security_policy=\"mutual_tls\"",
        ];
        assert_eq!(value(&text, "istio_requests_total{", &uo), 1.0);
    }

    #[test]
    fn the_build_gauge_names_the_component_and_its_version() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("istio_build{"));
        metrics.set_build("ztunnel", "0.1.0");
        let text = metrics.encode();
        assert!(text.contains("# TYPE istio_build gauge\n"), "{text}");
        assert!(
            text.contains("istio_build{component=\"ztunnel\",tag=\"0.1.0\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn telemetry_overrides_disable_a_metric_and_remove_replace_or_add_tags() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Waypoint).with_protocol(super::super::RequestProtocol::Http);
        let record = HttpRequestRecord {
            status: 503,
            grpc_status: None,
            duration: Duration::from_millis(3),
            request_bytes: 10,
            response_bytes: 20,
        };
        let tags = TagChanges::new([
            ("request_protocol".to_string(), None),
            ("destination_app".to_string(), Some("renamed".to_string())),
            ("request_host".to_string(), Some("web:80".to_string())),
        ]);
        let overrides = RequestOverrides {
            count: MetricChange {
                disabled: true,
                tags: TagChanges::default(),
            },
            duration: MetricChange {
                disabled: false,
                tags,
            },
            ..Default::default()
        };
        metrics.http_request_with(&labels, &record, &overrides);
        let text = metrics.encode();
        assert!(!text.contains("istio_requests_total{"), "{text}");
        let duration = text
            .lines()
            .find(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
            .expect("duration recorded");
        assert!(!duration.contains("request_protocol="), "{duration}");
        assert!(
            duration.contains("destination_app=\"renamed\""),
            "{duration}"
        );
        assert!(duration.contains(",request_host=\"web:80\"}"), "{duration}");
        let size = text
            .lines()
            .find(|l| l.starts_with("istio_request_bytes_count{"))
            .expect("request size recorded unchanged");
        assert!(size.contains("request_protocol=\"http\""), "{size}");
        assert!(!size.contains("request_host"), "{size}");
    }
}
