//! Aligned columns as kubectl prints them: upper-case headers, three spaces between columns,
//! no trailing blanks; and the small readers that turn the agent's JSON into cells, lenient
//! so that a field an older or newer agent lacks shows as `-` instead of failing.
use std::fmt::Write as _;

use serde_json::Value;

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(columns).enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A text cell: strings as they are, numbers and booleans printed, absent or null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => yes_no(*b).into(),
        Value::Array(items) => list(items.iter().map(text)),
        other => other.to_string(),
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Comma-joined, `-` when empty.
pub fn list(items: impl IntoIterator<Item = String>) -> String {
    let joined = items.into_iter().collect::<Vec<_>>().join(",");
    if joined.is_empty() {
        "-".into()
    } else {
        joined
    }
}

/// The elements of an array field (none when the field is absent or not an array).
pub fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `namespace/name` of a `{namespace, name}` object, `-` for null.
pub fn namespaced(value: &Value) -> String {
    match (value["namespace"].as_str(), value["name"].as_str()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_string(),
        _ => "-".into(),
    }
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`; negative durations as `expired 5m ago`-style `-5m`.
pub fn duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let body = if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_without_trailing_blanks() {
        let mut table = Table::new(&["NAME", "NODE", "IPS"]);
        table.row(vec!["client".into(), "node-1".into(), "10.244.1.2".into()]);
        table.row(vec!["a".into(), "-".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "NAME     NODE     IPS\n\
             client   node-1   10.244.1.2\n\
             a        -        -\n"
        );
    }

    #[test]
    fn cells_from_json() {
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!("")), "-");
        assert_eq!(text(&json!(true)), "yes");
        assert_eq!(text(&json!(["10.0.0.1", "fd00::1"])), "10.0.0.1,fd00::1");
        assert_eq!(text(&json!([])), "-");
        assert_eq!(text(&json!(42)), "42");
        assert_eq!(namespaced(&json!({"namespace": "a", "name": "b"})), "a/b");
        assert_eq!(namespaced(&json!(null)), "-");
        assert_eq!(duration(86_399), "23h59m");
        assert_eq!(duration(90_000), "1d1h");
        assert_eq!(duration(61), "1m1s");
        assert_eq!(duration(-30), "-30s");
    }
}
