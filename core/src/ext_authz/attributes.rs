//! The `AttributeContext` of a check, filled as Envoy's ext_authz filters fill it:
//! source and destination (address, SPIFFE principal, labels where known), and for HTTP
//! the request: id (`x-request-id`), method, every header (lower-case names, the
//! pseudo-headers `:authority`, `:method`, `:path`, `:scheme` included, several values
//! joined by `,`, bytes that are not UTF-8 replaced by `!`), path with query, host,
//! scheme, protocol, size (-1 unknown) and, when configured, the body.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Version};

use super::proto::{
    Address, AttributeContext, CheckRequest, HttpRequest, Peer, Request, SocketAddress,
};

/// Envoy's header telling the service whether the body it got was cut at the limit.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// One side of a connection or request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: Option<SocketAddr>,
    /// The SPIFFE id (`spiffe://…`), when the peer proved one.
    pub principal: Option<String>,
    /// Pod labels, where the peer is a known workload.
    pub labels: BTreeMap<String, String>,
}

impl PeerInfo {
    fn to_proto(&self) -> Peer {
        Peer {
            address: self.address.map(|a| Address {
                socket_address: Some(SocketAddress {
                    protocol: 0,
                    address: a.ip().to_string(),
                    port_value: u32::from(a.port()),
                }),
            }),
            service: String::new(),
            labels: self.labels.clone(),
            principal: self.principal.clone().unwrap_or_default(),
            certificate: String::new(),
        }
    }
}

/// The body sent with a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckBody {
    pub bytes: Bytes,
    /// Cut at `maxRequestBytes`.
    pub partial: bool,
}

/// What is known of one HTTP request when it is checked.
#[derive(Clone, Debug)]
pub struct HttpAttributes<'a> {
    pub source: PeerInfo,
    pub destination: PeerInfo,
    pub method: &'a str,
    /// Path and query, as the request carries them.
    pub path: &'a str,
    pub host: &'a str,
    pub scheme: &'a str,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub body: Option<CheckBody>,
}

/// `HTTP/1.1`, as Envoy names protocols.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Header bytes as Envoy puts them in a string field: invalid UTF-8 becomes `!`.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(bytes).replace('\u{fffd}', "!"),
    }
}

/// The request's headers as the check sees them (pseudo-headers first).
pub fn header_map(attributes: &HttpAttributes<'_>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    map.insert(":authority".to_string(), attributes.host.to_string());
    map.insert(":method".to_string(), attributes.method.to_string());
    map.insert(":path".to_string(), attributes.path.to_string());
    map.insert(":scheme".to_string(), attributes.scheme.to_string());
    for name in attributes.headers.keys() {
        if name == http::header::HOST {
            continue;
        }
        let joined: Vec<String> = attributes
            .headers
            .get_all(name)
            .iter()
            .map(|v| text(v.as_bytes()))
            .collect();
        map.insert(name.as_str().to_string(), joined.join(","));
    }
    if let Some(body) = &attributes.body {
        map.insert(
            PARTIAL_BODY_HEADER.to_string(),
            if body.partial { "true" } else { "false" }.to_string(),
        );
    }
    map
}

/// The gRPC check of an HTTP request.
pub fn http_check_request(
    attributes: &HttpAttributes<'_>,
    pack_as_bytes: bool,
    now: SystemTime,
) -> CheckRequest {
    let headers = header_map(attributes);
    let size = attributes
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or_else(|| {
            attributes
                .body
                .as_ref()
                .filter(|b| !b.partial)
                .and_then(|b| i64::try_from(b.bytes.len()).ok())
        })
        .unwrap_or(-1);
    let mut http = HttpRequest {
        id: headers.get("x-request-id").cloned().unwrap_or_default(),
        method: attributes.method.to_string(),
        headers,
        path: attributes.path.to_string(),
        host: attributes.host.to_string(),
        scheme: attributes.scheme.to_string(),
        size,
        protocol: protocol_name(attributes.version).to_string(),
        ..HttpRequest::default()
    };
    if let Some(body) = &attributes.body {
        if pack_as_bytes {
            http.raw_body = body.bytes.to_vec();
        } else {
            http.body = text(&body.bytes);
        }
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attributes.source.to_proto()),
            destination: Some(attributes.destination.to_proto()),
            request: Some(Request {
                time: Some(prost_types::Timestamp::from(now)),
                http: Some(http),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// The gRPC check of a TCP connection (Envoy's network filter): the peers only.
pub fn network_check_request(source: &PeerInfo, destination: &PeerInfo) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source.to_proto()),
            destination: Some(destination.to_proto()),
            ..AttributeContext::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn http_requests_are_described_as_envoy_does() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("reviews:9080"));
        headers.insert("x-request-id", HeaderValue::from_static("r-1"));
        headers.append("x-ext-authz", HeaderValue::from_static("allow"));
        headers.append("x-ext-authz", HeaderValue::from_static("again"));
        headers.insert(
            "x-bytes",
            HeaderValue::from_bytes(b"a\xffb").expect("opaque value"),
        );
        headers.insert("content-length", HeaderValue::from_static("5"));
        let attributes = HttpAttributes {
            source: PeerInfo {
                address: Some("10.244.1.10:0".parse().expect("addr")),
                principal: Some("spiffe://cluster.local/ns/shop/sa/client".into()),
                labels: BTreeMap::from([("app".into(), "client".into())]),
            },
            destination: PeerInfo {
                address: Some("10.96.0.20:9080".parse().expect("addr")),
                ..PeerInfo::default()
            },
            method: "POST",
            path: "/reviews/1?x=1",
            host: "reviews:9080",
            scheme: "http",
            version: Version::HTTP_11,
            headers: &headers,
            body: Some(CheckBody {
                bytes: Bytes::from_static(b"hello"),
                partial: false,
            }),
        };
        let request = http_check_request(&attributes, false, SystemTime::UNIX_EPOCH);
        let context = request.attributes.expect("attributes");
        let source = context.source.expect("source");
        assert_eq!(source.principal, "spiffe://cluster.local/ns/shop/sa/client");
        assert_eq!(source.labels["app"], "client");
        let socket = source
            .address
            .and_then(|a| a.socket_address)
            .expect("address");
        assert_eq!(
            (socket.address.as_str(), socket.port_value),
            ("10.244.1.10", 0)
        );
        let http = context.request.and_then(|r| r.http).expect("http");
        assert_eq!(http.id, "r-1");
        assert_eq!(http.headers[":authority"], "reviews:9080");
        assert_eq!(http.headers[":path"], "/reviews/1?x=1");
        assert_eq!(http.headers["x-ext-authz"], "allow,again");
        assert_eq!(http.headers["x-bytes"], "a!b");
        assert_eq!(http.headers[PARTIAL_BODY_HEADER], "false");
        assert!(!http.headers.contains_key("host"));
        assert_eq!(http.protocol, "HTTP/1.1");
        assert_eq!((http.size, http.body.as_str()), (5, "hello"));
        assert!(http.raw_body.is_empty());

        let packed = http_check_request(&attributes, true, SystemTime::UNIX_EPOCH);
        let http = packed
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .expect("http");
        assert_eq!(
            (http.body.as_str(), http.raw_body.as_slice()),
            ("", &b"hello"[..])
        );
    }
}
