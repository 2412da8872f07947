//! Audit records of AuthorizationPolicy `AUDIT`: one structured line per request (waypoint)
//! or connection (waypoint TCP streams, node agent) that an AUDIT policy's rules match,
//! logged as a JSON object on the tracing target [`TARGET`] at INFO, which
//! [`crate::logging::init`] always lets through. AUDIT never changes a decision; the record
//! says what the decision was.
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The tracing target of audit records.
pub const TARGET: &str = "weft::audit";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `waypoint` or `agent`.
    pub reporter: &'static str,
    /// The AUDIT policies whose rules matched, `namespace/name`.
    pub policies: Vec<String>,
    /// `http` or `tcp`.
    pub protocol: &'static str,
    /// The SPIFFE id the client proved, if any.
    pub source_principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// The address the client asked for.
    pub destination: Option<SocketAddr>,
    /// The Service or workload, `namespace/name`, when known.
    pub destination_name: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Why it was denied.
    pub reason: Option<String>,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now(reporter: &'static str, protocol: &'static str, policies: Vec<String>) -> Self {
        Self {
            time: rfc3339_millis(SystemTime::now()),
            reporter,
            protocol,
            policies,
            decision: "allow",
            ..Self::default()
        }
    }

    /// The decision: allowed, or denied for `reason`.
    pub fn decided(mut self, denied: Option<&str>) -> Self {
        self.decision = if denied.is_some() { "deny" } else { "allow" };
        self.reason = denied.map(str::to_string);
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Logs the record on [`TARGET`].
    pub fn log(&self) {
        tracing::info!(target: TARGET, "{}", self.to_json());
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC. Written out rather than pulling a date crate in for one
/// format.
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let seconds = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = rfc3339(i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    format!(
        "{}.{:03}Z",
        seconds.trim_end_matches('Z'),
        since.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn records_are_one_json_object() {
        let mut record = AuditRecord::now("waypoint", "http", vec!["shop/audit".into()]);
        record.time = rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_500));
        record.method = Some("GET".into());
        let record = record.decided(Some("denied by AuthorizationPolicy shop/d"));
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).expect("JSON");
        assert_eq!(json["time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(json["policies"][0], "shop/audit");
        assert_eq!(json["decision"], "deny");
        assert_eq!(json["method"], "GET");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
