//! Upgrades (WebSocket) through the proxy, as Istio configures Envoy: every HTTP route
//! allows the `websocket` upgrade (`upgrade_configs: [{upgrade_type: websocket}]`), asked
//! for in either of the two ways a client can:
//!
//! - HTTP/1.1 `Upgrade: websocket` with `Connection: upgrade` (RFC 6455);
//! - HTTP/2 extended CONNECT, `:method CONNECT` with `:protocol websocket` (RFC 8441), which
//!   the waypoint offers by advertising `SETTINGS_ENABLE_CONNECT_PROTOCOL` (server setup in
//!   `super::serve`). As Envoy's HTTP/2 codec does, the request is turned into its HTTP/1.1
//!   form before anything judges it (`GET` with `Upgrade: websocket`, `Host` from
//!   `:authority`), so policies, routes and header operations see one kind of WebSocket
//!   request, and it goes to the endpoint as an HTTP/1.1 upgrade with a fresh
//!   `Sec-WebSocket-Key` (RFC 8441 §5 drops the key; an HTTP/1.1 server requires one). The
//!   endpoint's `101` is answered to the client as `200` without `Sec-WebSocket-Accept`,
//!   and the HTTP/2 stream is spliced to the endpoint's upgraded connection. Any other
//!   `:protocol` is refused with 403, Envoy's answer to an upgrade the route does not allow.
//!
//! The upgrade goes to the endpoint with the routed request; a `101 Switching Protocols`
//! is passed to the client, and the two upgraded connections are then spliced both ways
//! until either side closes. Policies, routes and header operations apply to the upgrade
//! request as to any other; the route's timeout covers the wait for the response headers
//! only, not the upgraded stream (Envoy's `timeout` ends with the response for an
//! upgrade). Any other HTTP/1.1 upgrade protocol is stripped as a hop-by-hop header, as
//! Envoy does for upgrade types it is not configured for, and the request is served as
//! plain HTTP/1.1; an `h2c` upgrade also loses its `HTTP2-Settings` ([`strip_h2c`]).
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::local::ResponseBody;

/// The upgrade protocols the proxy relays (Istio's default: WebSocket only).
const UPGRADE_TYPES: &[&str] = &["websocket"];

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// How the client asked to switch protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// HTTP/1.1 `Upgrade`; the client gets the endpoint's `101`.
    Http1Upgrade,
    /// HTTP/2 extended CONNECT (RFC 8441); the client gets `200` for the endpoint's `101`.
    ExtendedConnect,
}

/// A downstream request asking to switch protocols: its `Upgrade` value and hyper's handle
/// on the connection once the `101` (or, over HTTP/2, the `200`) has been sent.
pub struct Requested {
    protocol: HeaderValue,
    downstream: OnUpgrade,
    asked: Asked,
}

/// An extended CONNECT the proxy does not carry.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A `:protocol` other than [`UPGRADE_TYPES`]: Envoy's 403 for an upgrade the route
    /// does not allow.
    #[error("extended CONNECT for {0:?}, which is not relayed")]
    NotRelayed(String),
    /// A `:protocol` that is no header value, or a CONNECT hyper gave no upgrade handle.
    #[error("malformed extended CONNECT")]
    Malformed,
}

impl Refused {
    /// The answer to the client.
    pub fn response(&self) -> http::Response<ResponseBody> {
        match self {
            Refused::NotRelayed(_) => {
                super::local::reply(StatusCode::FORBIDDEN, "upgrade not allowed")
            }
            Refused::Malformed => super::local::reply(StatusCode::BAD_REQUEST, "Bad Request"),
        }
    }
}

/// The upgrade the request asks for, if the proxy relays it, with the request put in its
/// HTTP/1.1 form when it came as an HTTP/2 extended CONNECT. `Ok(None)`: no upgrade
/// (an HTTP/1.1 upgrade to a protocol not relayed is served as plain HTTP). `Err`: an
/// extended CONNECT the proxy does not carry, to be answered. Takes hyper's upgrade
/// handle out of the request's extensions.
pub fn requested(parts: &mut http::request::Parts) -> Result<Option<Requested>, Refused> {
    if parts.version == Version::HTTP_2 && parts.method == Method::CONNECT {
        return extended_connect(parts);
    }
    Ok(http1_upgrade(parts))
}

fn relayed(name: &str) -> bool {
    UPGRADE_TYPES.iter().any(|t| name.eq_ignore_ascii_case(t))
}

/// HTTP/1.1: `Connection` listing `upgrade`, `Upgrade` naming one of [`UPGRADE_TYPES`].
fn http1_upgrade(parts: &mut http::request::Parts) -> Option<Requested> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    if strip_h2c(&mut parts.headers) {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?.clone();
    if !relayed(protocol.to_str().ok()?.trim()) {
        return None;
    }
    let downstream = parts.extensions.remove::<OnUpgrade>()?;
    Some(Requested {
        protocol,
        downstream,
        asked: Asked::Http1Upgrade,
    })
}

/// An HTTP/1.1 request asking to switch to cleartext HTTP/2 (`Upgrade: h2c`, RFC 7540
/// §3.2) loses `Upgrade`, `Connection` and `HTTP2-Settings` before anything sees it, as in
/// Envoy's HTTP/1.1 codec, and is served as HTTP/1.1 (the client stays on HTTP/1.1, as
/// RFC 7540 allows). Whether it was one.
fn strip_h2c(headers: &mut HeaderMap) -> bool {
    let h2c = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("h2c"));
    if h2c {
        headers.remove(header::UPGRADE);
        headers.remove(header::CONNECTION);
        headers.remove(HTTP2_SETTINGS);
    }
    h2c
}

/// HTTP/2 `CONNECT` with `:protocol` (RFC 8441 §4), rewritten as the HTTP/1.1 upgrade it
/// stands for (RFC 8441 §5: `GET`, `Upgrade`, `Connection: upgrade`, `Host`). A plain
/// `CONNECT` (no `:protocol`) is left as it is.
fn extended_connect(parts: &mut http::request::Parts) -> Result<Option<Requested>, Refused> {
    let Some(protocol) = parts.extensions.remove::<hyper::ext::Protocol>() else {
        return Ok(None);
    };
    let name = protocol.as_str();
    if !relayed(name) {
        return Err(Refused::NotRelayed(name.to_string()));
    }
    let Ok(protocol) = HeaderValue::from_str(name) else {
        return Err(Refused::Malformed);
    };
    let Some(downstream) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(Refused::Malformed);
    };
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol.clone());
    Ok(Some(Requested {
        protocol,
        downstream,
        asked: Asked::ExtendedConnect,
    }))
}

/// A `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64) for an endpoint reached
/// over HTTP/1.1 on behalf of an HTTP/2 client, which sends none.
fn websocket_key() -> HeaderValue {
    let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let encoded = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An endpoint's `101` as the answer to an extended CONNECT: `200`, without the HTTP/1.1
/// handshake's headers (`Sec-WebSocket-Accept` answers a key the client never sent,
/// RFC 8441 §5) and without a length (hyper refuses one on a successful CONNECT).
fn as_connect_success(response: &mut http::Response<ResponseBody>) {
    *response.status_mut() = StatusCode::OK;
    *response.version_mut() = Version::HTTP_2;
    let headers = response.headers_mut();
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        SEC_WEBSOCKET_ACCEPT,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
}

impl Requested {
    /// Puts the upgrade back on the request to the endpoint, after hop-by-hop headers have
    /// been removed; a WebSocket key for one that came as an extended CONNECT.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
        if self.asked == Asked::ExtendedConnect
            && self.protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
            && !headers.contains_key(SEC_WEBSOCKET_KEY)
        {
            headers.insert(SEC_WEBSOCKET_KEY, websocket_key());
        }
    }

    /// Completes the upgrade when the endpoint switched protocols: the client gets the
    /// `101` with `Upgrade`/`Connection` (over HTTP/2: `200`), and both upgraded
    /// connections are spliced in a task of their own, which also holds the upstream
    /// response (and with it the request's circuit-breaker permit and connection slot)
    /// until the stream ends. Any other answer is returned as it is, and the client's
    /// connection stays HTTP; except a success that did not switch protocols, which to an
    /// HTTP/2 client would open the tunnel: that is a 502.
    pub fn finish(self, response: &mut http::Response<ResponseBody>) -> bool {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            if self.asked == Asked::ExtendedConnect && response.status().is_success() {
                *response = super::local::reply(StatusCode::BAD_GATEWAY, "upgrade failed");
            }
            return false;
        }
        let Some(upstream) = response.extensions_mut().remove::<OnUpgrade>() else {
            // A 101 the waypoint made up, or from a connection that cannot upgrade.
            *response = super::local::reply(StatusCode::BAD_GATEWAY, "upgrade failed");
            return false;
        };
        let held = std::mem::replace(response.body_mut(), super::local::full(bytes::Bytes::new()));
        match self.asked {
            Asked::Http1Upgrade => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                response
                    .headers_mut()
                    .insert(header::UPGRADE, self.protocol);
            }
            Asked::ExtendedConnect => as_connect_success(response),
        }
        let downstream = self.downstream;
        tokio::spawn(async move {
            let _held = held;
            let (client, server) = match tokio::try_join!(downstream, upstream) {
                Ok(both) => both,
                Err(error) => {
                    debug!(%error, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut server = TokioIo::new(server);
            match tokio::io::copy_bidirectional(&mut client, &mut server).await {
                Ok((up, down)) => debug!(up, down, "upgraded stream ended"),
                Err(error) => debug!(%error, "upgraded stream failed"),
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper's upgrade handle as a request without a connection has it.
    fn no_upgrade() -> OnUpgrade {
        hyper::upgrade::on(http::Request::new(()))
    }

    fn extended(protocol: Option<&'static str>) -> http::request::Parts {
        let mut request = http::Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("http://ws.example.test/chat?room=1")
            .header("sec-websocket-version", "13")
            .body(())
            .expect("request");
        if let Some(protocol) = protocol {
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from_static(protocol));
        }
        request.extensions_mut().insert(no_upgrade());
        request.into_parts().0
    }

    #[test]
    fn an_extended_connect_for_websocket_becomes_its_http1_upgrade() {
        let mut parts = extended(Some("websocket"));
        let requested = requested(&mut parts)
            .ok()
            .flatten()
            .expect("a WebSocket upgrade");
        assert_eq!(requested.asked, Asked::ExtendedConnect);
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "ws.example.test");
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(
            parts.uri.path_and_query().map(|p| p.as_str()),
            Some("/chat?room=1")
        );

        // To the endpoint: the upgrade headers and a well-formed key of 16 bytes.
        let mut headers = HeaderMap::new();
        requested.restore(&mut headers);
        let key = headers.get("sec-websocket-key").expect("a key");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .expect("base64");
        assert_eq!(decoded.len(), 16);
        assert_eq!(headers["upgrade"], "websocket");
    }

    #[test]
    fn an_extended_connect_for_another_protocol_is_refused_403() {
        let mut parts = extended(Some("connect-udp"));
        let refused = requested(&mut parts).err().expect("refused");
        assert!(matches!(&refused, Refused::NotRelayed(p) if p == "connect-udp"));
        assert_eq!(refused.response().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_plain_connect_is_not_an_upgrade() {
        let mut parts = extended(None);
        assert!(matches!(requested(&mut parts), Ok(None)));
        assert_eq!(parts.method, Method::CONNECT);
    }

    #[test]
    fn an_http1_upgrade_keeps_the_clients_key_and_answers_101() {
        let (mut parts, ()) = http::Request::builder()
            .uri("/chat")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .expect("request")
            .into_parts();
        parts.extensions.insert(no_upgrade());
        let requested = requested(&mut parts).ok().flatten().expect("an upgrade");
        assert_eq!(requested.asked, Asked::Http1Upgrade);
        let mut headers = HeaderMap::new();
        requested.restore(&mut headers);
        assert!(
            !headers.contains_key("sec-websocket-key"),
            "the client's own key goes"
        );
    }

    #[test]
    fn an_h2c_upgrade_is_served_as_http1_without_its_settings() {
        let (mut parts, ()) = http::Request::builder()
            .uri("/")
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", "h2c")
            .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
            .header("x-kept", "1")
            .body(())
            .expect("request")
            .into_parts();
        parts.extensions.insert(no_upgrade());
        assert!(matches!(requested(&mut parts), Ok(None)));
        for gone in ["connection", "upgrade", "http2-settings"] {
            assert!(!parts.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(parts.headers["x-kept"], "1");
    }

    #[test]
    fn the_endpoints_101_answers_an_extended_connect_200_without_the_accept() {
        let mut response = super::super::local::reply(StatusCode::SWITCHING_PROTOCOLS, "");
        let headers = response.headers_mut();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        headers.insert("sec-websocket-accept", HeaderValue::from_static("x"));
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate"),
        );
        as_connect_success(&mut response);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert!(!headers.contains_key("sec-websocket-accept"));
        assert!(!headers.contains_key("upgrade"));
        assert_eq!(headers["sec-websocket-extensions"], "permessage-deflate");
    }
}
