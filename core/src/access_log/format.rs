//! Envoy's access log format strings (command operators), as meshConfig `accessLogFormat`
//! gives them, evaluated for one HTTP request ([`HttpEntry`]).
//!
//! A format is parsed once ([`Format::parse`]); an operator weft does not evaluate is kept
//! by name ([`Format::unknown_operators`], warned about at config time) and prints `-`, as
//! Envoy prints a value it does not have. Text formats print `-` for a missing value; JSON
//! formats (Istio's keys by default) give a lone numeric operator as a number and a missing
//! value as `null`, as Envoy's JSON formatter does.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Version};

use super::encoding::Encoding;
use crate::metrics::ResponseFlags;

/// Istio's default TEXT format (`EnvoyTextLogFormat`, Istio 1.9 onwards).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Istio's default JSON keys (`EnvoyJSONLogFormatIstio`), in the order weft prints them.
pub const ISTIO_JSON_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// The command operators weft evaluates (documented in the README's "Access logs").
pub const KNOWN_OPERATORS: &[&str] = &[
    "START_TIME",
    "REQ",
    "RESP",
    "TRAILER",
    "PROTOCOL",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE_DETAILS",
    "CONNECTION_TERMINATION_DETAILS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "DURATION",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_PEER_URI_SAN",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
    "TRACE_ID",
];

/// Everything an access log line can say about one request, filled in as the request
/// goes: request facts before it is handled, the answer's when its response ends.
#[derive(Clone, Debug)]
pub struct HttpEntry {
    pub start: SystemTime,
    pub method: String,
    /// The path as the client sent it (before normalization and rewrites).
    pub path: String,
    pub authority: String,
    pub scheme: &'static str,
    pub version: Version,
    /// The request's headers as received (with the `x-request-id` the proxy gave it).
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    /// `0` when no response was sent (Envoy's value then).
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    pub response_code_details: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<SocketAddr>,
    /// `outbound|port|subset|host`.
    pub upstream_cluster: Option<String>,
    pub upstream_local: Option<SocketAddr>,
    pub upstream_failure: Option<String>,
    pub upstream_peer: Option<String>,
    /// Port 0 when only the address is known (printed without a port).
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_peer: Option<String>,
    pub server_name: Option<String>,
    pub route_name: Option<String>,
    pub trace_id: Option<String>,
    /// A TCP stream rather than an HTTP request (a waypoint's TCP route): no method, path,
    /// protocol or headers, `%RESPONSE_CODE%` 0, as Envoy's TCP proxy logs it.
    pub stream: bool,
}

impl HttpEntry {
    /// A request started now, nothing known of it yet.
    pub fn started(method: &str, path: &str, authority: &str, version: Version) -> Self {
        Self {
            start: SystemTime::now(),
            method: method.to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            scheme: "http",
            version,
            request_headers: HeaderMap::new(),
            response_headers: HeaderMap::new(),
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            upstream_failure: None,
            upstream_peer: None,
            downstream_remote: None,
            downstream_local: None,
            downstream_peer: None,
            server_name: None,
            route_name: None,
            trace_id: None,
            stream: false,
        }
    }

    /// A TCP stream started now (Envoy's TCP proxy): nothing known of it yet.
    pub fn stream_started() -> Self {
        Self {
            stream: true,
            ..Self::started("", "", "", Version::HTTP_11)
        }
    }
}

/// A header operator's argument: `X?Y` (the first present), with an optional max length.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeaderArg {
    main: String,
    alternative: Option<String>,
    max_length: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operator {
    StartTime,
    Req(HeaderArg),
    Resp(HeaderArg),
    Trailer(HeaderArg),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    UpstreamPeerUriSan,
    DownstreamRemoteAddress {
        port: bool,
    },
    DownstreamLocalAddress {
        port: bool,
    },
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
    TraceId,
    /// Not evaluated by weft: prints `-`.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Operator(Operator),
}

/// A parsed text template.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Template(Vec<Piece>);

/// A parsed access log format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Text(Template),
    Json(Vec<(String, Template)>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("a JSON accessLogFormat must be a JSON object of string values: {0}")]
    Json(String),
}

impl Format {
    /// The format for `encoding`: `format` when set (empty is Istio's default), else
    /// Istio's default for the encoding. A JSON format that is not an object of strings is
    /// an error (Istio then logs the default, as the caller should).
    pub fn parse(encoding: Encoding, format: &str) -> Result<Self, FormatError> {
        let kind = match encoding {
            Encoding::Text if format.trim().is_empty() => {
                Kind::Text(Template::parse(ISTIO_TEXT_FORMAT))
            }
            // Istio appends the newline itself; weft's writer ends every line.
            Encoding::Text => Kind::Text(Template::parse(format.trim_end_matches('\n'))),
            Encoding::Json if format.trim().is_empty() => Kind::Json(
                ISTIO_JSON_FORMAT
                    .iter()
                    .map(|(k, v)| (k.to_string(), Template::parse(v)))
                    .collect(),
            ),
            Encoding::Json => {
                let value: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(format).map_err(|e| FormatError::Json(e.to_string()))?;
                let mut keys = Vec::with_capacity(value.len());
                for (key, value) in value {
                    let serde_json::Value::String(text) = value else {
                        return Err(FormatError::Json(format!("{key:?} is not a string")));
                    };
                    keys.push((key, Template::parse(&text)));
                }
                Kind::Json(keys)
            }
        };
        Ok(Self { kind })
    }

    /// The JSON format of `labels` (name, Envoy text operators), as Istio builds it from a
    /// provider's `logFormat.labels`.
    pub fn labels(labels: &[(String, String)]) -> Self {
        Self {
            kind: Kind::Json(
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Template::parse(v)))
                    .collect(),
            ),
        }
    }

    /// Each key of a JSON format with its text (`-` when not known), as OTLP attributes
    /// carry them; a text format has no keys.
    pub fn render_fields(&self, entry: &HttpEntry) -> Vec<(String, String)> {
        match &self.kind {
            Kind::Text(_) => Vec::new(),
            Kind::Json(keys) => keys
                .iter()
                .map(|(key, template)| (key.clone(), template.render_text(entry)))
                .collect(),
        }
    }

    /// Istio's default for `encoding`.
    pub fn default_for(encoding: Encoding) -> Self {
        // The defaults are well-formed: parsing them cannot fail.
        Self::parse(encoding, "").unwrap_or(Self {
            kind: Kind::Text(Template(Vec::new())),
        })
    }

    /// The operators in the format weft does not evaluate (they print `-`), each once.
    pub fn unknown_operators(&self) -> Vec<String> {
        let templates: Vec<&Template> = match &self.kind {
            Kind::Text(t) => vec![t],
            Kind::Json(keys) => keys.iter().map(|(_, t)| t).collect(),
        };
        let mut unknown = Vec::new();
        for template in templates {
            for piece in &template.0 {
                if let Piece::Operator(Operator::Unknown(name)) = piece
                    && !unknown.contains(name)
                {
                    unknown.push(name.clone());
                }
            }
        }
        unknown
    }

    /// The line for `entry`, without its newline.
    pub fn render(&self, entry: &HttpEntry) -> String {
        match &self.kind {
            Kind::Text(template) => template.render_text(entry),
            Kind::Json(keys) => {
                let mut object = serde_json::Map::with_capacity(keys.len());
                for (key, template) in keys {
                    object.insert(key.clone(), template.render_json(entry));
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }
}

impl Template {
    /// Envoy's syntax: `%OPERATOR%`, `%OPERATOR(arg)%`, `%OPERATOR(arg):N%`; `%%` is a
    /// literal `%`; a `%` that opens no operator is kept as text.
    fn parse(text: &str) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(stripped) = after.strip_prefix('%') {
                literal.push('%');
                rest = stripped;
                continue;
            }
            match operator_at(after) {
                Some((operator, used)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Operator(operator));
                    rest = &after[used..];
                }
                None => {
                    literal.push('%');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Self(pieces)
    }

    fn render_text(&self, entry: &HttpEntry) -> String {
        let mut out = String::with_capacity(256);
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Operator(op) => match evaluate(op, entry) {
                    Some(value) => out.push_str(&value.text()),
                    None => out.push('-'),
                },
            }
        }
        out
    }

    fn render_json(&self, entry: &HttpEntry) -> serde_json::Value {
        if let [Piece::Operator(op)] = self.0.as_slice() {
            return match evaluate(op, entry) {
                Some(Value::Number(n)) => serde_json::Value::from(n),
                Some(Value::Text(text)) => serde_json::Value::String(text),
                None => serde_json::Value::Null,
            };
        }
        serde_json::Value::String(self.render_text(entry))
    }
}

/// The operator at the start of `text` (after its opening `%`), and the bytes it used
/// with its closing `%`.
fn operator_at(text: &str) -> Option<(Operator, usize)> {
    let name_end = text
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut used = name_end;
    let mut arg = None;
    if text[used..].starts_with('(') {
        let close = text[used..].find(')')? + used;
        arg = Some(&text[used + 1..close]);
        used = close + 1;
    }
    let mut max_length = None;
    if let Some(after) = text[used..].strip_prefix(':') {
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if digits > 0 {
            max_length = after[..digits].parse().ok();
            used += 1 + digits;
        }
    }
    if !text[used..].starts_with('%') {
        return None;
    }
    let header = |arg: Option<&str>| {
        let arg = arg.unwrap_or_default();
        let (main, alternative) = match arg.split_once('?') {
            Some((main, alt)) => (main, Some(alt.to_ascii_lowercase())),
            None => (arg, None),
        };
        HeaderArg {
            main: main.to_ascii_lowercase(),
            alternative,
            max_length,
        }
    };
    let full = &text[..used];
    let operator = match (name, arg) {
        ("START_TIME", None) => Operator::StartTime,
        ("REQ", Some(a)) if !a.is_empty() => Operator::Req(header(Some(a))),
        ("RESP", Some(a)) if !a.is_empty() => Operator::Resp(header(Some(a))),
        ("TRAILER", Some(a)) if !a.is_empty() => Operator::Trailer(header(Some(a))),
        ("PROTOCOL", None) => Operator::Protocol,
        ("RESPONSE_CODE", None) => Operator::ResponseCode,
        ("RESPONSE_FLAGS", None) => Operator::ResponseFlags,
        ("RESPONSE_CODE_DETAILS", None) => Operator::ResponseCodeDetails,
        ("CONNECTION_TERMINATION_DETAILS", None) => Operator::ConnectionTerminationDetails,
        ("BYTES_RECEIVED", None) => Operator::BytesReceived,
        ("BYTES_SENT", None) => Operator::BytesSent,
        ("DURATION", None) => Operator::Duration,
        ("UPSTREAM_HOST", None) => Operator::UpstreamHost,
        ("UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW", None) => Operator::UpstreamCluster,
        ("UPSTREAM_LOCAL_ADDRESS", None) => Operator::UpstreamLocalAddress,
        ("UPSTREAM_TRANSPORT_FAILURE_REASON", None) => Operator::UpstreamTransportFailureReason,
        ("UPSTREAM_PEER_URI_SAN", None) => Operator::UpstreamPeerUriSan,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Operator::DownstreamRemoteAddress { port: true },
        ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", None) => {
            Operator::DownstreamRemoteAddress { port: false }
        }
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Operator::DownstreamLocalAddress { port: true },
        ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", None) => {
            Operator::DownstreamLocalAddress { port: false }
        }
        ("DOWNSTREAM_PEER_URI_SAN", None) => Operator::DownstreamPeerUriSan,
        ("REQUESTED_SERVER_NAME", None) => Operator::RequestedServerName,
        ("ROUTE_NAME", None) => Operator::RouteName,
        ("TRACE_ID", None) => Operator::TraceId,
        _ => Operator::Unknown(full.to_string()),
    };
    Some((operator, used + 1))
}

enum Value {
    Number(u64),
    Text(String),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Number(n) => n.to_string(),
            Value::Text(t) => t,
        }
    }
}

fn text(value: Option<impl ToString>) -> Option<Value> {
    value.map(|v| Value::Text(v.to_string()))
}

fn evaluate(op: &Operator, entry: &HttpEntry) -> Option<Value> {
    match op {
        Operator::StartTime => Some(Value::Text(start_time(entry.start))),
        Operator::Req(arg) => request_header(entry, arg),
        Operator::Resp(arg) => header_value(&entry.response_headers, arg, None),
        // Trailers are not kept: a gRPC status is counted in the metrics.
        Operator::Trailer(_) => None,
        Operator::Protocol if entry.stream => None,
        Operator::Protocol => Some(Value::Text(protocol(entry.version).to_string())),
        Operator::ResponseCode => Some(Value::Number(u64::from(entry.response_code))),
        Operator::ResponseFlags => Some(Value::Text(entry.response_flags.0.to_string())),
        Operator::ResponseCodeDetails => text(entry.response_code_details.as_deref()),
        Operator::ConnectionTerminationDetails => None,
        Operator::BytesReceived => Some(Value::Number(entry.bytes_received)),
        Operator::BytesSent => Some(Value::Number(entry.bytes_sent)),
        Operator::Duration => Some(Value::Number(
            u64::try_from(entry.duration.as_millis()).unwrap_or(u64::MAX),
        )),
        Operator::UpstreamHost => text(entry.upstream_host),
        Operator::UpstreamCluster => text(entry.upstream_cluster.as_deref()),
        Operator::UpstreamLocalAddress => text(entry.upstream_local),
        Operator::UpstreamTransportFailureReason => text(entry.upstream_failure.as_deref()),
        Operator::UpstreamPeerUriSan => text(entry.upstream_peer.as_deref()),
        Operator::DownstreamRemoteAddress { port } => address(entry.downstream_remote, *port),
        Operator::DownstreamLocalAddress { port } => address(entry.downstream_local, *port),
        Operator::DownstreamPeerUriSan => text(entry.downstream_peer.as_deref()),
        Operator::RequestedServerName => text(entry.server_name.as_deref()),
        Operator::RouteName => text(entry.route_name.as_deref()),
        Operator::TraceId => text(entry.trace_id.as_deref()),
        Operator::Unknown(_) => None,
    }
}

fn address(address: Option<SocketAddr>, port: bool) -> Option<Value> {
    let address = address?;
    // Port 0: only the address is known (a waypoint's client, from HBONE's `Forwarded`).
    Some(Value::Text(if port && address.port() != 0 {
        address.to_string()
    } else {
        address.ip().to_string()
    }))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `%REQ(X)%`: the pseudo-headers from the request line, others from its headers.
fn request_header(entry: &HttpEntry, arg: &HeaderArg) -> Option<Value> {
    if entry.stream {
        return None;
    }
    let pseudo = |name: &str| -> Option<String> {
        match name {
            ":method" => Some(entry.method.clone()),
            ":path" => Some(entry.path.clone()),
            ":authority" | "host" if !entry.authority.is_empty() => Some(entry.authority.clone()),
            ":scheme" => Some(entry.scheme.to_string()),
            _ => None,
        }
    };
    header_value(&entry.request_headers, arg, Some(&pseudo))
}

/// The values of a request's pseudo-headers (`:method`, `:path`, …), by name.
type PseudoHeaders<'a> = &'a dyn Fn(&str) -> Option<String>;

fn header_value(
    headers: &HeaderMap,
    arg: &HeaderArg,
    pseudo: Option<PseudoHeaders<'_>>,
) -> Option<Value> {
    let lookup = |name: &str| -> Option<String> {
        if let Some(value) = pseudo.and_then(|p| p(name)) {
            return Some(value);
        }
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut value = lookup(&arg.main).or_else(|| arg.alternative.as_deref().and_then(lookup))?;
    if let Some(max) = arg.max_length
        && value.len() > max
    {
        let mut cut = max;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
    }
    Some(Value::Text(value))
}

/// Envoy's default `%START_TIME%`: `2024-01-31T12:34:56.789Z`, UTC.
fn start_time(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(0);
    let mut out = String::with_capacity(24);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                since.subsec_millis()
            );
        }
        Err(_) => out.push('-'),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HttpEntry {
        let mut e = HttpEntry::started("GET", "/status/418?x=1", "web.shop:80", Version::HTTP_11);
        e.start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        e.request_headers
            .insert("user-agent", "curl/8.5".parse().expect("value"));
        e.request_headers
            .insert("x-request-id", "req-1".parse().expect("value"));
        e.request_headers
            .insert("authorization", "Bearer secret".parse().expect("value"));
        e.response_code = 418;
        e.response_flags = ResponseFlags::NONE;
        e.response_code_details = Some("via_upstream".into());
        e.bytes_received = 12;
        e.bytes_sent = 34;
        e.duration = Duration::from_millis(5);
        e.upstream_host = Some("10.244.1.11:8080".parse().expect("addr"));
        e.upstream_cluster = Some("outbound|80||web.shop.svc.cluster.local".into());
        e.downstream_remote = Some("10.244.2.11:40000".parse().expect("addr"));
        e.downstream_local = Some("10.96.0.10:80".parse().expect("addr"));
        e.downstream_peer = Some("spiffe://cluster.local/ns/shop/sa/client".into());
        e
    }

    #[test]
    fn the_default_text_format_is_istios_line() {
        let line = Format::default_for(Encoding::Text).render(&entry());
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.123Z] \"GET /status/418?x=1 HTTP/1.1\" 418 - via_upstream - \"-\" 12 34 5 - \"-\" \"curl/8.5\" \"req-1\" \"web.shop:80\" \"10.244.1.11:8080\" outbound|80||web.shop.svc.cluster.local - 10.96.0.10:80 10.244.2.11:40000 - -"
        );
        assert!(!line.contains("secret"), "no Authorization value");
        assert!(
            Format::default_for(Encoding::Text)
                .unknown_operators()
                .is_empty()
        );
    }

    #[test]
    fn the_default_json_format_has_istios_keys_and_typed_values() {
        let line = Format::default_for(Encoding::Json).render(&entry());
        let value: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        let keys: Vec<&str> = ISTIO_JSON_FORMAT.iter().map(|(k, _)| *k).collect();
        let object = value.as_object().expect("object");
        assert_eq!(object.keys().count(), keys.len());
        for key in keys {
            assert!(object.contains_key(key), "{key} in {line}");
        }
        assert_eq!(value["response_code"], 418);
        assert_eq!(value["bytes_sent"], 34);
        assert_eq!(value["method"], "GET");
        assert_eq!(value["request_id"], "req-1");
        assert_eq!(value["response_flags"], "-");
        assert_eq!(value["route_name"], serde_json::Value::Null);
        assert!(!line.contains("secret"));
    }

    #[test]
    fn a_custom_format_evaluates_operators_alternatives_and_lengths() {
        let format = Format::parse(
            Encoding::Text,
            "%REQ(:METHOD)% %REQ(X-MISSING?:PATH):7% %RESPONSE_CODE%/%RESPONSE_FLAGS% 100%% %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_CLUSTER%\n",
        )
        .expect("format");
        assert_eq!(
            format.render(&entry()),
            "GET /status 418/- 100% spiffe://cluster.local/ns/shop/sa/client 10.244.2.11 outbound|80||web.shop.svc.cluster.local"
        );
        let json = Format::parse(
            Encoding::Json,
            r#"{"code": "%RESPONSE_CODE%", "who": "%REQ(USER-AGENT)% from %DOWNSTREAM_REMOTE_ADDRESS%"}"#,
        )
        .expect("json format");
        assert_eq!(
            json.render(&entry()),
            r#"{"code":418,"who":"curl/8.5 from 10.244.2.11:40000"}"#
        );
        assert!(Format::parse(Encoding::Json, "[1]").is_err());
        assert!(Format::parse(Encoding::Json, r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn an_unknown_operator_is_named_and_prints_a_dash() {
        let format = Format::parse(
            Encoding::Text,
            "%RESPONSE_CODE% %FILTER_STATE(x)% %CEL(request.path)% %FILTER_STATE(x)% %REQ()% 50% off",
        )
        .expect("format");
        assert_eq!(
            format.unknown_operators(),
            ["FILTER_STATE(x)", "CEL(request.path)", "REQ()"]
        );
        assert_eq!(format.render(&entry()), "418 - - - - 50% off");
    }
}
