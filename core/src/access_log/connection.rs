//! A node agent's access log line for one connection, with ztunnel's field names
//! (`src.addr`, `src.workload`, `src.identity`, `dst.addr`, `dst.service`, …): `connection
//! complete` when it was carried, `connection failed` with its `error` when it was refused
//! or could not be made.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::encoding::Encoding;

#[derive(Clone, Debug, Default)]
pub struct ConnectionEntry {
    /// `inbound` or `outbound`, from the pod's side.
    pub direction: &'static str,
    pub src_addr: Option<SocketAddr>,
    pub src_workload: Option<String>,
    pub src_namespace: Option<String>,
    pub src_identity: Option<String>,
    /// Where the agent sent it: the HBONE server, or the destination itself.
    pub dst_addr: Option<SocketAddr>,
    /// The destination inside the tunnel (what the client dialed), over HBONE.
    pub dst_hbone_addr: Option<SocketAddr>,
    pub dst_service: Option<String>,
    pub dst_workload: Option<String>,
    pub dst_namespace: Option<String>,
    pub dst_identity: Option<String>,
    /// `HBONE`, `TCP`, or `SAME_NODE` (the node agent's same-node fast path: both pods on
    /// its node, their identities known to it, no tunnel).
    pub protocol: &'static str,
    /// From the source's side.
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    pub duration: Duration,
    /// Why it did not go through.
    pub error: Option<String>,
    /// The trace id of the connection's span, when it is traced.
    pub trace_id: Option<String>,
}

impl ConnectionEntry {
    /// The line, without its newline, ending now.
    pub fn render(&self, encoding: Encoding) -> String {
        self.render_at(encoding, SystemTime::now())
    }

    fn message(&self) -> &'static str {
        if self.error.is_some() {
            "connection failed"
        } else {
            "connection complete"
        }
    }

    fn fields(&self) -> Vec<(&'static str, Field)> {
        let mut fields = Vec::with_capacity(16);
        let mut text = |name, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                fields.push((name, Field::Text(value)));
            }
        };
        text("src.addr", self.src_addr.map(address));
        text("src.workload", self.src_workload.clone());
        text("src.namespace", self.src_namespace.clone());
        text("src.identity", self.src_identity.clone());
        text("dst.addr", self.dst_addr.map(address));
        text("dst.hbone_addr", self.dst_hbone_addr.map(address));
        text("dst.service", self.dst_service.clone());
        text("dst.workload", self.dst_workload.clone());
        text("dst.namespace", self.dst_namespace.clone());
        text("dst.identity", self.dst_identity.clone());
        text("direction", Some(self.direction.to_string()));
        text("protocol", Some(self.protocol.to_string()));
        text("trace_id", self.trace_id.clone());
        fields.push(("bytes_sent", Field::Number(self.bytes_sent)));
        fields.push(("bytes_recv", Field::Number(self.bytes_recv)));
        fields.push((
            "duration",
            Field::Text(format!("{}ms", self.duration.as_millis())),
        ));
        if let Some(error) = &self.error {
            fields.push(("error", Field::Text(error.clone())));
        }
        fields
    }

    /// Its fields as OTLP attributes (ztunnel's names), with `message`.
    pub fn attributes(&self) -> Vec<(String, crate::access_log::otlp::AttributeValue)> {
        use crate::access_log::otlp::AttributeValue;
        std::iter::once(("message", Field::Text(self.message().to_string())))
            .chain(self.fields())
            .map(|(name, value)| {
                let value = match value {
                    Field::Number(n) => AttributeValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                    Field::Text(text) => AttributeValue::Text(text),
                };
                (name.to_string(), value)
            })
            .collect()
    }

    fn render_at(&self, encoding: Encoding, at: SystemTime) -> String {
        let time = rfc3339(at);
        match encoding {
            Encoding::Text => {
                let mut out = format!("{time}\tinfo\taccess\t{}", self.message());
                for (name, value) in self.fields() {
                    match value {
                        Field::Number(n) => {
                            let _ = write!(out, " {name}={n}");
                        }
                        Field::Text(text) => {
                            let _ = write!(out, " {name}={text:?}");
                        }
                    }
                }
                out
            }
            Encoding::Json => {
                let mut object = serde_json::Map::new();
                object.insert("level".into(), "info".into());
                object.insert("time".into(), time.into());
                object.insert("scope".into(), "access".into());
                object.insert("message".into(), self.message().into());
                for (name, value) in self.fields() {
                    let value = match value {
                        Field::Number(n) => serde_json::Value::from(n),
                        Field::Text(text) => serde_json::Value::String(text),
                    };
                    object.insert(name.into(), value);
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }
}

/// Port 0: only the address is known (a client behind HBONE's `Forwarded`).
fn address(address: SocketAddr) -> String {
    if address.port() == 0 {
        address.ip().to_string()
    } else {
        address.to_string()
    }
}

enum Field {
    Number(u64),
    Text(String),
}

/// `2024-01-31T12:34:56.789012Z`, as ztunnel's logs print time.
fn rfc3339(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(0);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            since.subsec_micros()
        ),
        Err(_) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ConnectionEntry {
        ConnectionEntry {
            direction: "outbound",
            src_addr: Some("10.244.2.11:40000".parse().expect("addr")),
            src_workload: Some("client".into()),
            src_namespace: Some("shop".into()),
            src_identity: Some("spiffe://cluster.local/ns/shop/sa/client".into()),
            dst_addr: Some("10.244.1.11:15008".parse().expect("addr")),
            dst_hbone_addr: Some("10.244.1.11:8080".parse().expect("addr")),
            dst_service: Some("web.shop.svc.cluster.local".into()),
            dst_workload: Some("web-0".into()),
            dst_namespace: Some("shop".into()),
            dst_identity: Some("spiffe://cluster.local/ns/shop/sa/web".into()),
            protocol: "HBONE",
            bytes_sent: 82,
            bytes_recv: 337,
            duration: Duration::from_millis(3),
            error: None,
            trace_id: None,
        }
    }

    #[test]
    fn text_lines_carry_ztunnels_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            entry().render_at(Encoding::Text, at),
            "2023-11-14T22:13:20.000000Z\tinfo\taccess\tconnection complete src.addr=\"10.244.2.11:40000\" src.workload=\"client\" src.namespace=\"shop\" src.identity=\"spiffe://cluster.local/ns/shop/sa/client\" dst.addr=\"10.244.1.11:15008\" dst.hbone_addr=\"10.244.1.11:8080\" dst.service=\"web.shop.svc.cluster.local\" dst.workload=\"web-0\" dst.namespace=\"shop\" dst.identity=\"spiffe://cluster.local/ns/shop/sa/web\" direction=\"outbound\" protocol=\"HBONE\" bytes_sent=82 bytes_recv=337 duration=\"3ms\""
        );
    }

    #[test]
    fn json_lines_and_refusals() {
        let mut refused = entry();
        refused.error = Some("PeerAuthentication STRICT: plaintext refused".into());
        refused.dst_identity = None;
        let line = refused.render(Encoding::Json);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["message"], "connection failed");
        assert_eq!(value["scope"], "access");
        assert_eq!(
            value["src.identity"],
            "spiffe://cluster.local/ns/shop/sa/client"
        );
        assert_eq!(value["bytes_recv"], 337);
        assert!(value.get("trace_id").is_none(), "not traced");
        let mut traced = entry();
        traced.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        assert!(
            traced
                .render(Encoding::Text)
                .contains(" protocol=\"HBONE\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\" ")
        );
        assert_eq!(
            value["error"],
            "PeerAuthentication STRICT: plaintext refused"
        );
        assert!(value.get("dst.identity").is_none(), "unknown: left out");
    }
}
