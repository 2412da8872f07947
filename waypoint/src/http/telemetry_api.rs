//! The Telemetry API at the waypoint (and the ingress gateway): which Telemetry resources
//! apply to a request, and the request's facts their CEL expressions read.
//!
//! As istiod configures a waypoint (`applicableTelemetries`: the proxy's config namespace),
//! a waypoint's requests are judged by the waypoint's own place: the root namespace's
//! Telemetry, then its own namespace's, then the oldest of its own namespace that selects it
//! — by `selector` on the waypoint pod's labels, or by `targetRefs` to its Gateway or to the
//! Service or ServiceEntry the request was sent to (a Telemetry of the destination's
//! namespace does not apply at a waypoint of another namespace, as in Istio). A waypoint
//! serves its destinations (the `SERVER` side of `match.mode`); an ingress gateway sends
//! (`CLIENT`), as Istio's gateways do, and is judged by its own workload likewise.
//! The decisions are `weft_config::telemetry_api`; this module supplies the inputs and
//! turns the metric overrides into the registry's [`RequestOverrides`].
use std::net::SocketAddr;

use http::{HeaderMap, Version};
use weft_config::api::telemetry::{IstioMetricName, WorkloadMode};
use weft_config::registry::Snapshot;
use weft_config::telemetry_api::cel::{Attribute, Attributes, Value};
use weft_config::telemetry_api::{
    EffectiveTelemetry, MetricOverride, MetricSettings, TagValue, TelemetryTarget, TracingSpec,
};
use weft_core::access_log::HttpEntry;
use weft_core::metrics::{MetricChange, RequestOverrides, TagChanges, UNKNOWN};

use crate::context::WaypointContext;
use crate::downstream::{Downstream, Target};

/// What the Telemetry resources decide for a request to `down`.
pub fn for_request(
    ctx: &WaypointContext,
    snapshot: &Snapshot,
    down: &Downstream,
) -> EffectiveTelemetry {
    let gateway = Some((ctx.namespace.as_str(), ctx.name.as_str()));
    // The waypoint's own pod (its labels are what a `selector` compares), when it knows
    // its name (POD_NAME from the downward API).
    let own = ctx
        .whereabouts
        .pod
        .as_deref()
        .and_then(|pod| snapshot.workload(&ctx.whereabouts.namespace, pod));
    let waypoint = |service, service_entry| TelemetryTarget {
        namespace: &ctx.namespace,
        labels: own.map(|w| &*w.labels),
        service,
        service_entry,
        gateway,
    };
    let (target, side) = match &down.target {
        Target::Service { service, .. } => (
            waypoint(
                Some((service.namespace.as_str(), service.name.as_str())),
                None,
            ),
            WorkloadMode::Server,
        ),
        Target::Workload { .. } => (waypoint(None, None), WorkloadMode::Server),
        Target::EntryHost { host, .. } => (
            waypoint(None, Some((host.namespace.as_str(), host.name.as_str()))),
            WorkloadMode::Server,
        ),
        Target::Gateway(listener) => {
            let workload = listener.workload.as_deref();
            (
                TelemetryTarget {
                    namespace: workload.map_or(ctx.namespace.as_str(), |w| &w.namespace),
                    labels: workload.map(|w| &*w.labels),
                    service: None,
                    service_entry: None,
                    gateway,
                },
                WorkloadMode::Client,
            )
        }
    };
    snapshot.effective_telemetry(&target, side)
}

/// The side a request is seen from here: an ingress gateway is its client's proxy
/// (`CLIENT`), a waypoint its destination's (`SERVER`).
pub fn side(down: &Downstream) -> WorkloadMode {
    match down.target {
        Target::Gateway(_) => WorkloadMode::Client,
        _ => WorkloadMode::Server,
    }
}

/// The tracing the Telemetry resources decide for a request (`None`: the mesh config's).
pub fn tracing_spec<'a>(
    telemetry: &'a EffectiveTelemetry,
    down: &Downstream,
) -> Option<&'a TracingSpec> {
    telemetry.tracing.as_ref().map(|t| t.side(side(down)))
}

/// A request's facts, as CEL attributes.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub version: Version,
    pub request_headers: &'a HeaderMap,
    /// `None` before (or without) a response.
    pub response_code: Option<u16>,
    pub response_headers: Option<&'a HeaderMap>,
    pub mtls: bool,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

impl<'a> RequestFacts<'a> {
    /// The facts of a request's access-log entry.
    pub fn of_entry(entry: &'a HttpEntry) -> Self {
        Self {
            method: &entry.method,
            path: &entry.path,
            authority: &entry.authority,
            scheme: entry.scheme,
            version: entry.version,
            request_headers: &entry.request_headers,
            response_code: (entry.response_code != 0).then_some(entry.response_code),
            response_headers: Some(&entry.response_headers),
            mtls: entry.downstream_peer.is_some(),
            source: entry.downstream_remote,
            destination: entry.downstream_local,
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<Value> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| Value::Str(v.to_string()))
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

impl Attributes for RequestFacts<'_> {
    fn attribute(&self, attribute: &Attribute) -> Option<Value> {
        let text = |s: &str| Some(Value::Str(s.to_string()));
        match attribute {
            Attribute::RequestHeader(name) => header(self.request_headers, name),
            Attribute::RequestHost => text(self.authority),
            Attribute::RequestMethod => text(self.method),
            Attribute::RequestPath => text(self.path),
            Attribute::RequestUrlPath => text(self.path.split('?').next().unwrap_or_default()),
            Attribute::RequestScheme => text(self.scheme),
            Attribute::RequestProtocol => text(protocol(self.version)),
            Attribute::RequestId => header(self.request_headers, "x-request-id"),
            Attribute::RequestUserAgent => header(self.request_headers, "user-agent"),
            Attribute::ResponseCode => self.response_code.map(|c| Value::Int(i64::from(c))),
            Attribute::ResponseHeader(name) => self.response_headers.and_then(|h| header(h, name)),
            Attribute::ResponseGrpcStatus => self
                .response_headers
                .and_then(|h| h.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Value::Int),
            Attribute::ConnectionMtls => Some(Value::Bool(self.mtls)),
            Attribute::SourceAddress => self.source.map(|a| Value::Str(a.ip().to_string())),
            Attribute::SourcePort => self
                .source
                .filter(|a| a.port() != 0)
                .map(|a| Value::Int(i64::from(a.port()))),
            Attribute::DestinationAddress => {
                self.destination.map(|a| Value::Str(a.ip().to_string()))
            }
            Attribute::DestinationPort => self.destination.map(|a| Value::Int(i64::from(a.port()))),
        }
    }
}

/// Whether any request metric override sets a tag from the request (the request's head is
/// then kept until its response is known).
pub fn needs_facts(metrics: &MetricSettings) -> bool {
    metrics
        .overrides
        .values()
        .any(|o| o.tags.values().any(|t| matches!(t, TagValue::Upsert(_))))
}

/// The Telemetry API's changes to a request's metrics: all of them off when Prometheus is
/// not a provider for the destination, else each override's `disabled` and tags (a value
/// whose expression has no value for this request is `unknown`, as Istio's stats say).
pub fn request_overrides(
    metrics: &MetricSettings,
    facts: Option<&RequestFacts<'_>>,
) -> RequestOverrides {
    let change = |metric: IstioMetricName| -> MetricChange {
        if !metrics.prometheus {
            return MetricChange {
                disabled: true,
                tags: TagChanges::default(),
            };
        }
        match metrics.overrides.get(&metric) {
            None => MetricChange::default(),
            Some(MetricOverride { disabled, tags }) => MetricChange {
                disabled: *disabled,
                tags: TagChanges::new(tags.iter().map(|(name, value)| {
                    let value = match value {
                        TagValue::Remove => None,
                        TagValue::Upsert(expr) => Some(
                            facts
                                .and_then(|f| expr.eval(f).ok())
                                .map_or_else(|| UNKNOWN.to_string(), |v| v.to_string()),
                        ),
                    };
                    (name.clone(), value)
                })),
            },
        }
    };
    RequestOverrides {
        count: change(IstioMetricName::RequestCount),
        duration: change(IstioMetricName::RequestDuration),
        request_size: change(IstioMetricName::RequestSize),
        response_size: change(IstioMetricName::ResponseSize),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use weft_config::telemetry_api::cel;

    use super::*;

    fn facts(headers: &HeaderMap) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path: "/a?b=c",
            authority: "reviews:9080",
            scheme: "http",
            version: Version::HTTP_11,
            request_headers: headers,
            response_code: Some(404),
            response_headers: None,
            mtls: true,
            source: None,
            destination: None,
        }
    }

    #[test]
    fn tags_are_evaluated_from_the_request_or_unknown() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "ann".parse().expect("valid"));
        let upsert = |e: &str| TagValue::Upsert(Arc::new(cel::parse(e).expect("valid")));
        let metrics = MetricSettings {
            prometheus: true,
            overrides: BTreeMap::from([(
                IstioMetricName::RequestCount,
                MetricOverride {
                    disabled: false,
                    tags: BTreeMap::from([
                        ("user".to_string(), upsert("request.headers['x-user']")),
                        ("team".to_string(), upsert("request.headers['x-team']")),
                        ("request_protocol".to_string(), TagValue::Remove),
                    ]),
                },
            )]),
            custom: BTreeMap::new(),
        };
        let f = facts(&headers);
        let overrides = request_overrides(&metrics, Some(&f));
        assert_eq!(
            overrides.count.tags,
            TagChanges::new([
                ("user".to_string(), Some("ann".to_string())),
                ("team".to_string(), Some(UNKNOWN.to_string())),
                ("request_protocol".to_string(), None),
            ])
        );
        assert_eq!(overrides.duration, MetricChange::default());
        let off = request_overrides(&MetricSettings::default(), None);
        assert!(off.count.disabled && off.response_size.disabled);
    }

    #[test]
    fn request_facts_answer_istios_attributes() {
        let headers = HeaderMap::new();
        let f = facts(&headers);
        let filter = cel::parse_filter(
            "response.code >= 400 && request.url_path == '/a' && request.host == 'reviews:9080' && connection.mtls",
        )
        .expect("valid");
        assert!(filter.matches(&f));
    }
}
