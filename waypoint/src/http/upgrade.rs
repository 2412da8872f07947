//! HTTP/1.1 Upgrade (WebSocket) through the proxy, as Istio configures Envoy: every HTTP
//! route allows the `websocket` upgrade (`upgrade_configs: [{upgrade_type: websocket}]`).
//! The request's `Upgrade`/`Connection: upgrade` go to the endpoint with the routed
//! request; a `101 Switching Protocols` is passed to the client, and the two upgraded
//! connections are then spliced both ways until either side closes. Policies, routes and
//! header operations apply to the upgrade request as to any other; the route's timeout
//! covers the wait for the response headers only, not the upgraded stream (Envoy's
//! `timeout` ends with the response for an upgrade). Any other upgrade protocol (`h2c`, …) is
//! stripped as a hop-by-hop header, as Envoy does for upgrade types it is not configured for.
//!
//! HTTP/2 extended CONNECT (RFC 8441) is not offered: the waypoint does not advertise
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so a client speaking HTTP/2 opens its WebSocket over
//! HTTP/1.1 (RFC 8441 §3).
use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::local::ResponseBody;

/// The upgrade protocols the proxy relays (Istio's default: WebSocket only).
const UPGRADE_TYPES: &[&str] = &["websocket"];

/// A downstream request asking to switch protocols: its `Upgrade` value and hyper's handle
/// on the connection once the `101` has been sent.
pub struct Requested {
    protocol: HeaderValue,
    downstream: OnUpgrade,
}

/// The upgrade the request asks for, if the proxy relays it: HTTP/1.1, `Connection`
/// listing `upgrade`, `Upgrade` naming one of [`UPGRADE_TYPES`]. Takes hyper's upgrade
/// handle out of the request's extensions.
pub fn requested(parts: &mut http::request::Parts) -> Option<Requested> {
    if parts.version != Version::HTTP_11 {
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
    let name = protocol.to_str().ok()?.trim();
    if !UPGRADE_TYPES.iter().any(|t| name.eq_ignore_ascii_case(t)) {
        return None;
    }
    let downstream = parts.extensions.remove::<OnUpgrade>()?;
    Some(Requested {
        protocol,
        downstream,
    })
}

impl Requested {
    /// Puts the upgrade back on the request to the endpoint, after hop-by-hop headers have
    /// been removed.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// Completes the upgrade when the endpoint switched protocols: the client gets the
    /// `101` with `Upgrade`/`Connection`, and both upgraded connections are spliced in a
    /// task of their own, which also holds the upstream response (and with it the
    /// request's circuit-breaker permit and connection slot) until the stream ends. Any
    /// other answer is returned as it is, and the client's connection stays HTTP.
    pub fn finish(self, response: &mut http::Response<ResponseBody>) -> bool {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return false;
        }
        let Some(upstream) = response.extensions_mut().remove::<OnUpgrade>() else {
            // A 101 the waypoint made up, or from a connection that cannot upgrade.
            *response = super::local::reply(StatusCode::BAD_GATEWAY, "upgrade failed");
            return false;
        };
        let held = std::mem::replace(response.body_mut(), super::local::full(bytes::Bytes::new()));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        response
            .headers_mut()
            .insert(header::UPGRADE, self.protocol);
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
