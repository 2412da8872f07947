//! The series `weftctl graph` reads — Istio's request and TCP counters, one value per label
//! set — from Prometheus' instant-query answers or from a `/metrics` page (two pages make
//! rates).
use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

/// The counters the graph is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// `istio_requests_total`: HTTP and gRPC requests.
    Requests,
    /// `istio_tcp_sent_bytes_total`: bytes sent back to the client.
    TcpSent,
    /// `istio_tcp_received_bytes_total`: bytes received from the client.
    TcpReceived,
    /// `istio_tcp_connections_opened_total`.
    TcpOpened,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::Requests,
        Metric::TcpSent,
        Metric::TcpReceived,
        Metric::TcpOpened,
    ];

    /// The series' name in Prometheus' exposition.
    pub fn series(self) -> &'static str {
        match self {
            Metric::Requests => "istio_requests_total",
            Metric::TcpSent => "istio_tcp_sent_bytes_total",
            Metric::TcpReceived => "istio_tcp_received_bytes_total",
            Metric::TcpOpened => "istio_tcp_connections_opened_total",
        }
    }

    fn from_series(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.series() == name)
    }
}

/// The labels the graph groups by (Kiali's graph reads the same ones).
pub const GROUP_BY: [&str; 11] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "response_code",
    "connection_security_policy",
    "request_protocol",
];

/// One series: a counter's label set and its value (a rate per second, or a total).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: Metric,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// A label's value; an absent label reads as Istio's `unknown`.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("unknown", String::as_str)
    }
}

/// The PromQL instant query of `metric`'s per-second rate over `window` (`1m`, `30s`),
/// summed by the labels the graph groups by.
pub fn rate_query(metric: Metric, window: &str) -> String {
    format!(
        "sum by ({}) (rate({}[{window}]))",
        GROUP_BY.join(", "),
        metric.series()
    )
}

/// The samples of a Prometheus `/api/v1/query` answer (a vector).
pub fn from_prometheus(metric: Metric, answer: &Value) -> anyhow::Result<Vec<Sample>> {
    if answer["status"] != "success" {
        bail!(
            "Prometheus answered {}: {}",
            answer["status"],
            answer["error"].as_str().unwrap_or("no error given")
        );
    }
    let result = answer["data"]["result"]
        .as_array()
        .context("Prometheus' answer has no data.result list")?;
    let mut samples = Vec::with_capacity(result.len());
    for series in result {
        let labels = series["metric"]
            .as_object()
            .context("a series without labels")?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let value = series["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("a series without a value: {series}"))?;
        if value.is_finite() {
            samples.push(Sample {
                metric,
                labels,
                value,
            });
        }
    }
    Ok(samples)
}

/// The samples of the graph's counters on a Prometheus text or OpenMetrics page; other
/// series are skipped. Only the graph's labels are kept, and series equal in them summed.
pub fn from_exposition(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut summed: BTreeMap<(Metric, BTreeMap<String, String>), f64> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let Some(metric) = Metric::from_series(&line[..name_end]) else {
            continue;
        };
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..])
                .with_context(|| format!("line {}: {line}", number + 1))?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value: f64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("line {}: no value in {line}", number + 1))?;
        let kept = labels
            .into_iter()
            .filter(|(k, _)| GROUP_BY.contains(&k.as_str()))
            .collect();
        *summed.entry((metric, kept)).or_default() += value;
    }
    Ok(summed
        .into_iter()
        .map(|((metric, labels), value)| Sample {
            metric,
            labels,
            value,
        })
        .collect())
}

/// `a="x",b="y\"z"} rest` → the labels and `rest`.
fn parse_labels(mut text: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = text.split_once("=\"").context("a label without =\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("a label value is cut off"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => bail!("a label value is not closed"),
            }
        };
        labels.insert(name.trim().to_string(), value);
        text = &rest[end + 1..];
    }
}

/// Per-second rates between two readings of the same counters `seconds` apart. A series
/// only in the later one started in between (from zero); one that went down was reset
/// (its later value is what it counted since).
pub fn rates(earlier: &[Sample], later: &[Sample], seconds: f64) -> Vec<Sample> {
    let before: BTreeMap<(Metric, &BTreeMap<String, String>), f64> = earlier
        .iter()
        .map(|s| ((s.metric, &s.labels), s.value))
        .collect();
    later
        .iter()
        .map(|s| {
            let start = before.get(&(s.metric, &s.labels)).copied().unwrap_or(0.0);
            let counted = if s.value >= start {
                s.value - start
            } else {
                s.value
            };
            Sample {
                value: counted / seconds,
                ..s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = concat!(
        "# HELP istio_requests The total number of requests.\n",
        "# TYPE istio_requests counter\n",
        "istio_requests_total{reporter=\"waypoint\",source_workload=\"productpage-v1\",",
        "source_principal=\"spiffe://cluster.local/ns/b/sa/p\",response_code=\"200\",",
        "destination_service=\"reviews.b.svc.cluster.local\",request_protocol=\"http\"} 7\n",
        "istio_requests_total{reporter=\"waypoint\",source_workload=\"productpage-v1\",",
        "source_principal=\"spiffe://cluster.local/ns/b/sa/other\",response_code=\"200\",",
        "destination_service=\"reviews.b.svc.cluster.local\",request_protocol=\"http\"} 3\n",
        "istio_request_duration_milliseconds_bucket{le=\"5.0\"} 2\n",
        "istio_tcp_sent_bytes_total{reporter=\"source\",source_workload=\"a\\\"b\"} 1.5e3\n",
        "# EOF\n",
    );

    #[test]
    fn a_metrics_page_gives_the_graphs_counters_summed_over_the_labels_it_ignores() {
        let samples = from_exposition(PAGE).expect("parses");
        assert_eq!(samples.len(), 2, "{samples:?}");
        let requests = &samples[0];
        assert_eq!(requests.metric, Metric::Requests);
        assert_eq!(requests.value, 10.0, "two principals, one edge");
        assert_eq!(requests.label("source_workload"), "productpage-v1");
        assert_eq!(requests.label("source_principal"), "unknown", "not kept");
        assert_eq!(samples[1].metric, Metric::TcpSent);
        assert_eq!(samples[1].label("source_workload"), "a\"b");
        assert_eq!(samples[1].value, 1500.0);
    }

    #[test]
    fn a_broken_line_is_an_error_naming_it() {
        let error = from_exposition("istio_requests_total{reporter=\"source} 1\n")
            .expect_err("unterminated");
        assert!(format!("{error:#}").contains("line 1"), "{error:#}");
    }

    #[test]
    fn two_readings_make_rates_new_series_count_from_zero() {
        let at = |value: f64, code: &str| Sample {
            metric: Metric::Requests,
            labels: [("response_code".to_string(), code.to_string())].into(),
            value,
        };
        let rated = rates(&[at(10.0, "200")], &[at(30.0, "200"), at(5.0, "500")], 5.0);
        assert_eq!(rated[0].value, 4.0);
        assert_eq!(rated[1].value, 1.0);
        let reset = rates(&[at(100.0, "200")], &[at(10.0, "200")], 5.0);
        assert_eq!(reset[0].value, 2.0);
    }

    #[test]
    fn a_prometheus_vector_is_read_and_an_error_answer_refused() {
        let answer = serde_json::json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {"reporter": "source"}, "value": [1.0, "0.25"]}]}});
        let samples = from_prometheus(Metric::TcpOpened, &answer).expect("a vector");
        assert_eq!(samples[0].value, 0.25);
        assert_eq!(samples[0].label("reporter"), "source");
        let error = serde_json::json!({"status": "error", "error": "parse error"});
        assert!(from_prometheus(Metric::Requests, &error).is_err());
        assert!(rate_query(Metric::Requests, "1m").ends_with("(rate(istio_requests_total[1m]))"));
    }
}
