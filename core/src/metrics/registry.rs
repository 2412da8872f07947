//! The registry of Istio's standard metrics and the families behind each name.
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::dns::{DnsLabels, DnsOutcome};
use super::labels::{ConnectionLabels, RequestLabels, ResponseCode};
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

type RequestKey = (ConnectionLabels, ResponseCode);
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
            "The size of HTTP request bodies",
            request_bytes.clone(),
        );
        let response_bytes: HistogramFamily = Family::new_with_constructor(istio_histogram);
        registry.register(
            "response_bytes",
            "The size of HTTP response bodies",
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
        Arc::new(Self {
            registry,
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

    /// Counts a finished request (`istio_requests_total`) and its duration.
    pub fn http_request(&self, labels: &RequestLabels, status: u16, duration: Duration) {
        let key = (labels.clone(), ResponseCode(status));
        self.requests.get_or_create(&key).inc();
        self.request_duration
            .get_or_create(&key)
            .observe(duration.as_secs_f64() * 1000.0);
    }

    /// Records the body sizes of a finished request (`istio_request_bytes`,
    /// `istio_response_bytes`), for callers that count them.
    pub fn http_body_sizes(
        &self,
        labels: &RequestLabels,
        status: u16,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let key = (labels.clone(), ResponseCode(status));
        self.request_bytes
            .get_or_create(&key)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(&key)
            .observe(response_bytes as f64);
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

    #[test]
    fn requests_count_by_response_code_with_istios_buckets() {
        let metrics = Metrics::new();
        let labels = hbone(Reporter::Waypoint).with_protocol(RequestProtocol::Http);
        metrics.http_request(&labels, 200, Duration::from_millis(3));
        metrics.http_request(&labels, 200, Duration::from_millis(30));
        metrics.http_request(&labels, 503, Duration::from_millis(7));
        metrics.http_body_sizes(&labels, 200, 10, 2000);
        let text = metrics.encode();
        let ok = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
            .expect("a 200 series");
        assert!(ok.contains("reporter=\"waypoint\""), "{ok}");
        assert!(ok.contains("request_protocol=\"http\""), "{ok}");
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
        assert!(text.contains("istio_response_bytes_sum{"), "{text}");
    }
}
