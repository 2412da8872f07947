//! The Grafana dashboards of `deploy/observability/dashboards/`, read as a test reads them:
//! each panel's PromQL, the variables it uses, and the forms of a query the tests run
//! against Prometheus (variables substituted; `rate()` taken off for exact totals).
use std::path::PathBuf;

use serde_json::Value;

/// Variables Grafana itself defines.
pub const BUILTINS: [&str; 4] = ["__rate_interval", "__range", "__interval", "datasource"];

pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/observability/dashboards"
    ))
}

/// Every dashboard: its file name and JSON.
pub fn all() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/observability/dashboards")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, json)
        })
        .collect()
}

/// A panel with queries: its title and each target's `expr`.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub exprs: Vec<String>,
    pub json: Value,
}

/// Every panel with queries, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<Panel> {
    fn walk(list: &Value, out: &mut Vec<Panel>) {
        for panel in list.as_array().into_iter().flatten() {
            walk(&panel["panels"], out);
            let exprs: Vec<String> = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str().map(String::from))
                .collect();
            if !exprs.is_empty() {
                out.push(Panel {
                    title: panel["title"].as_str().unwrap_or_default().to_string(),
                    exprs,
                    json: panel.clone(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's template variables: name and (for query variables) the query.
pub fn variables(dashboard: &Value) -> Vec<(String, Option<String>)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["definition"].as_str())
                .filter(|_| v["type"] == "query")
                .map(String::from);
            (v["name"].as_str().unwrap_or_default().to_string(), query)
        })
        .collect()
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `$name` and `${name}` variables a query uses.
pub fn used_variables(expr: &str) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let end = body.find(|c: char| !is_name(c)).unwrap_or(body.len());
        if end > 0 {
            used.push(body[..end].to_string());
        }
    }
    used
}

/// `expr` with its variables replaced: `$__rate_interval` by `window`, `$__range` by
/// `range`, the others by `values`.
pub fn substitute(expr: &str, window: &str, range: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr
        .replace("${__rate_interval}", window)
        .replace("$__rate_interval", window)
        .replace("${__range}", range)
        .replace("$__range", range);
    // Longest names first, so `$workload` does not eat `$workload_namespace`.
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The same query over the counters' totals instead of their rates: every
/// `rate(SELECTOR[WINDOW])` becomes `SELECTOR`. On a lab whose counters started at zero
/// this answers exactly what was counted (rates are extrapolated over their window).
pub fn totals(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rate(") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_name);
        if preceded {
            out.push_str(&rest[..i + 5]);
            rest = &rest[i + 5..];
            continue;
        }
        out.push_str(&rest[..i]);
        let inner = &rest[i + 5..];
        let mut depth = 1;
        let close = inner
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(j, _)| j)
            .unwrap_or_else(|| panic!("unbalanced rate( in {expr}"));
        let argument = &inner[..close];
        let selector = argument
            .rfind('[')
            .map_or(argument, |k| argument[..k].trim_end());
        out.push_str(selector);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The metric names a query reads (Istio's and weft's, prefixed `istio_`).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("istio_") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_name);
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_totals_and_variables_values() {
        let expr = r#"sum(irate(a[1m])) + sum by (x) (rate(istio_requests_total{w="$workload", n="$workload_namespace"}[$__rate_interval]))"#;
        assert_eq!(
            totals(expr),
            r#"sum(irate(a[1m])) + sum by (x) (istio_requests_total{w="$workload", n="$workload_namespace"})"#
        );
        assert_eq!(
            substitute(
                expr,
                "1m",
                "10m",
                &[("workload", "r"), ("workload_namespace", "b")]
            ),
            r#"sum(irate(a[1m])) + sum by (x) (rate(istio_requests_total{w="r", n="b"}[1m]))"#
        );
        assert_eq!(
            used_variables(expr),
            ["workload", "workload_namespace", "__rate_interval"]
        );
        assert_eq!(metric_names(expr), ["istio_requests_total"]);
    }
}
