//! What a person reads after each step of the tour: pure functions from the responses the
//! curl pod printed to a few lines of text.
use std::collections::BTreeMap;

use serde_json::Value;

/// One request as the tour sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// What the curl pod got back.
    pub status: u16,
    pub elapsed_ms: u64,
    /// The reviews call productpage made: (status, version); `None` when not made or the
    /// request went to reviews directly.
    pub reviews: Option<(Option<u16>, Option<String>)>,
}

impl Sample {
    /// From one JSON line of `weft-testapp get` against productpage (or reviews).
    pub fn from_line(line: &Value) -> Self {
        let reviews = line["body"]["calls"].as_array().and_then(|calls| {
            calls
                .iter()
                .find(|c| c["url"].as_str().is_some_and(|u| u.contains("reviews")))
                .map(|c| {
                    (
                        c["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
                        c["version"].as_str().map(str::to_owned),
                    )
                })
        });
        Self {
            status: line["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0),
            elapsed_ms: line["elapsed_ms"].as_u64().unwrap_or(0),
            reviews,
        }
    }

    /// Whether the page came back whole: productpage answered and so did reviews.
    pub fn ok(&self) -> bool {
        self.status == 200
            && self
                .reviews
                .as_ref()
                .is_none_or(|(status, _)| *status == Some(200))
    }
}

/// Which reviews version answered, per request (errors counted under their status).
pub fn reviews_distribution(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        let key = match &sample.reviews {
            Some((Some(200), Some(version))) => format!("reviews {version}"),
            Some((Some(status), _)) => format!("error {status}"),
            Some((None, _)) => "error (no answer)".to_string(),
            None => format!("status {}", sample.status),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The share of `key` in `counts`, in percent.
pub fn percent(counts: &BTreeMap<String, usize>, key: &str) -> f64 {
    let total: usize = counts.values().sum();
    if total == 0 {
        return 0.0;
    }
    100.0 * counts.get(key).copied().unwrap_or(0) as f64 / total as f64
}

const BAR_WIDTH: usize = 40;

/// A bar per entry, scaled to the total.
pub fn bar_table(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum::<usize>().max(1);
    let width = counts.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (key, count) in counts {
        let filled = (count * BAR_WIDTH).div_ceil(total).min(BAR_WIDTH);
        out.push_str(&format!(
            "    {key:<width$}  {}{}  {count:>5}  {:>5.1}%\n",
            "█".repeat(filled),
            " ".repeat(BAR_WIDTH - filled),
            100.0 * *count as f64 / total as f64
        ));
    }
    out
}

/// Nearest-rank percentile of the samples' latencies, in ms.
pub fn percentile(samples: &[Sample], p: f64) -> u64 {
    let mut values: Vec<u64> = samples.iter().map(|s| s.elapsed_ms).collect();
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// `ok/errors, p50, p99` in one line.
pub fn summary(samples: &[Sample]) -> String {
    let ok = samples.iter().filter(|s| s.ok()).count();
    format!(
        "    {} requests: {ok} ok, {} errors; latency p50 {} ms, p99 {} ms",
        samples.len(),
        samples.len() - ok,
        percentile(samples, 50.0),
        percentile(samples, 99.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(status: u64, reviews: Option<(u64, &str)>, ms: u64) -> Value {
        let calls = match reviews {
            Some((s, v)) => {
                json!([{"url": "http://details:9080/"}, {"url": "http://reviews:9080/", "status": s, "version": v}])
            }
            None => json!([]),
        };
        json!({"status": status, "elapsed_ms": ms, "body": {"calls": calls}})
    }

    #[test]
    fn distribution_counts_versions_and_errors() {
        let samples: Vec<Sample> = [
            line(200, Some((200, "v1")), 3),
            line(200, Some((200, "v1")), 5),
            line(200, Some((200, "v3")), 4),
            line(200, Some((500, "v3")), 9),
            line(403, None, 1),
        ]
        .iter()
        .map(Sample::from_line)
        .collect();
        let counts = reviews_distribution(&samples);
        assert_eq!(counts["reviews v1"], 2);
        assert_eq!(counts["reviews v3"], 1);
        assert_eq!(counts["error 500"], 1);
        assert_eq!(counts["status 403"], 1);
        assert_eq!(percent(&counts, "reviews v1"), 40.0);
        assert_eq!(samples.iter().filter(|s| s.ok()).count(), 3);
        assert_eq!(percentile(&samples, 50.0), 4);
        assert_eq!(percentile(&samples, 99.0), 9);
    }

    #[test]
    fn bars_scale_to_the_total() {
        let counts = BTreeMap::from([("a".to_string(), 3), ("bb".to_string(), 1)]);
        let table = bar_table(&counts);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].matches('█').count(), 30);
        assert_eq!(lines[1].matches('█').count(), 10);
        assert!(lines[0].ends_with(" 75.0%"), "{table}");
    }
}
