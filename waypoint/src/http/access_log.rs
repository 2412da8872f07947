//! The waypoint's (and ingress gateway's) access log: one line per request, to the sinks
//! in force — meshConfig `accessLogFile`, or the providers `defaultProviders.accessLogging`
//! names (files, OTLP collectors), each in its format (Envoy's command operators, Istio's
//! default line when unset; `weft_core::access_log::format`). Where Telemetry resources
//! configure access logging for the request's destination, they decide instead: the sinks of
//! the providers they name, each written when its `filter.expression` holds for the
//! finished request (`super::telemetry_api`).
//!
//! The request's facts are taken before it is handled ([`start`]: the request line and
//! headers as the client sent them, with the `x-request-id` the waypoint gave it), what
//! handling decided on the way ([`Decided`]: route and cluster), and the rest when its
//! response ends ([`finish`], from `metered::Recorded`): code, flags, bytes, duration.
use std::sync::Arc;

use http::HeaderMap;
use weft_config::access_log::{default_sinks, otlp_endpoint};
use weft_config::telemetry_api::AccessLogging;
use weft_config::telemetry_api::cel::Expr;
use weft_core::access_log::{ActiveLog, HttpEntry};
use weft_core::metrics::ResponseFlags;
use weft_core::telemetry::TraceContext;

use crate::context::WaypointContext;
use crate::downstream::Downstream;

/// What handling a request decided that its log line shows.
#[derive(Debug, Default)]
pub struct Decided {
    /// The route's name (VirtualService rule and match names).
    pub route_name: Option<String>,
    /// `outbound|port|subset|host`, as Istio names Envoy's clusters.
    pub cluster: Option<String>,
}

/// A request being logged: where its line goes (each with the filter its line must
/// pass) and what is known of it.
pub struct Logged {
    sinks: Vec<(Arc<ActiveLog>, Option<Arc<Expr>>)>,
    entry: HttpEntry,
}

/// The request's line as far as its head tells, when access logs are on for it.
pub fn start(
    ctx: &WaypointContext,
    down: &Downstream,
    parts: &http::request::Parts,
    trace: &TraceContext,
    logging: &AccessLogging,
) -> Option<Logged> {
    let snapshot = ctx.registry.load();
    let sinks: Vec<_> = match logging {
        AccessLogging::MeshDefault => active(ctx).map(|log| (log, None)).into_iter().collect(),
        AccessLogging::Providers(providers) => providers
            .iter()
            .filter_map(|provider| {
                ctx.access_log
                    .active_sinks(
                        snapshot.version(),
                        std::slice::from_ref(&provider.sink),
                        |sink| otlp_endpoint(&snapshot, sink),
                    )
                    .map(|log| (log, provider.filter.clone()))
            })
            .collect(),
    };
    if sinks.is_empty() {
        return None;
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut entry = HttpEntry::started(parts.method.as_str(), path, authority, parts.version);
    entry.scheme = if down.secure { "https" } else { "http" };
    entry.request_headers = parts.headers.clone();
    entry.downstream_remote = down.source_ip.map(|ip| std::net::SocketAddr::new(ip, 0));
    entry.downstream_local = Some(down.destination);
    entry.downstream_peer = down.source.principal.clone();
    entry.trace_id = Some(trace.trace_id().to_string());
    Some(Logged { sinks, entry })
}

/// Where access log lines go now: the mesh's default sinks (`defaultProviders.accessLogging`,
/// else `accessLogFile`), rebuilt when the registry's snapshot changes them.
pub fn active(ctx: &WaypointContext) -> Option<Arc<ActiveLog>> {
    let snapshot = ctx.registry.load();
    ctx.access_log.active_for(
        snapshot.version(),
        || default_sinks(snapshot.mesh_config()),
        |sink| otlp_endpoint(&snapshot, sink),
    )
}

/// What the response told, known when its headers are ready.
pub struct Answer<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    pub upstream: Option<std::net::SocketAddr>,
    pub decided: Decided,
}

impl Logged {
    /// Adds the answer's head: its code, headers, where it came from.
    pub fn answered(&mut self, ctx: &WaypointContext, answer: Answer<'_>) {
        let entry = &mut self.entry;
        entry.response_code = answer.status;
        entry.response_headers = answer.headers.clone();
        entry.upstream_host = answer.upstream;
        entry.upstream_cluster = answer.decided.cluster;
        entry.route_name = answer.decided.route_name;
        entry.upstream_peer = answer.upstream.and_then(|address| {
            ctx.registry
                .load()
                .workload_by_ip(address.ip())
                .map(|w| w.identity.to_string())
        });
    }
}

/// Writes the request's line: its final flags, bytes and duration.
pub fn finish(
    mut logged: Logged,
    flags: ResponseFlags,
    bytes_received: u64,
    bytes_sent: u64,
    duration: std::time::Duration,
) {
    let entry = &mut logged.entry;
    entry.response_flags = flags;
    entry.response_code_details =
        code_details(flags, entry.upstream_host.is_some()).map(str::to_string);
    entry.bytes_received = bytes_received;
    entry.bytes_sent = bytes_sent;
    entry.duration = duration;
    let facts = super::telemetry_api::RequestFacts::of_entry(entry);
    for (log, filter) in &logged.sinks {
        if filter.as_ref().is_none_or(|f| f.matches(&facts)) {
            log.write_http(entry);
        }
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for what weft can tell: an upstream's answer, or the
/// reason behind a local reply's flag.
fn code_details(flags: ResponseFlags, from_upstream: bool) -> Option<&'static str> {
    let details = match flags.0 {
        "NR" => "route_not_found",
        "UH" | "UH,URX" => "no_healthy_upstream",
        "UT" | "UT,URX" => "response_timeout",
        "UF" | "UF,URX" => "upstream_reset_before_response_started{connection_failure}",
        "UO" | "UO,URX" => "upstream_reset_before_response_started{overflow}",
        "UAEX" => "ext_authz_denied",
        "FI" => "fault_filter_abort",
        "DC" if from_upstream => "downstream_remote_disconnect",
        _ if from_upstream => "via_upstream",
        _ => return None,
    };
    Some(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_details_name_the_reason_of_a_local_reply() {
        assert_eq!(
            code_details(ResponseFlags::NONE, true),
            Some("via_upstream")
        );
        assert_eq!(
            code_details(ResponseFlags::NO_ROUTE, false),
            Some("route_not_found")
        );
        assert_eq!(code_details(ResponseFlags::NONE, false), None);
    }
}
