//! Istio's Telemetry: refused as istiod refuses it (both `selector` and `targetRefs`, a
//! sampling percentage outside 0–100, a custom tag that is not exactly one of its kinds, a
//! tag override without its value or with one it must not have, a metric selector naming
//! both kinds) and where weft could not do what it says: an expression outside the CEL
//! subset weft evaluates, an Envoy `formatter` tag, a tag name Prometheus cannot carry, a
//! target kind it does not attach to. Warned about where it is accepted and has no effect.
use super::paths::{FieldPath, Issues};
use crate::api::telemetry::{IstioMetricName, TagOperation, TelemetrySpec};
use crate::refusal::FieldIssue;
use crate::telemetry_api::cel;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

pub(super) fn telemetry(spec: &TelemetrySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if spec.has_selector() && spec.targets().next().is_some() {
        issues.add(
            &root,
            "only one of selector and targetRef(s) may be set (as in Istio)",
        );
    }
    let (field, refs): (&str, Vec<_>) = if spec.target_refs.is_empty() {
        ("targetRef", spec.target_ref.iter().collect())
    } else {
        ("targetRefs", spec.target_refs.iter().collect())
    };
    for (t, target) in refs.into_iter().enumerate() {
        let at = if field == "targetRef" {
            root.field(field)
        } else {
            root.field(field).index(t)
        };
        let known = matches!(
            (target.group.as_str(), target.kind.as_str()),
            (GATEWAY_GROUP, "Gateway")
                | ("" | "core", "Service")
                | ("networking.istio.io", "ServiceEntry")
        );
        if !known {
            issues.add(
                &at,
                format!(
                    "weft attaches Telemetry to Services, ServiceEntries and (waypoint) Gateways, not to {}/{}",
                    target.group, target.kind
                ),
            );
        }
        if target.name.is_empty() {
            issues.add(&at.field("name"), "required");
        }
    }
    for (i, logging) in spec.access_logging.iter().enumerate() {
        let at = root.field("accessLogging").index(i);
        providers(&logging.providers, &at, &mut issues);
        if let Some(filter) = &logging.filter
            && !filter.expression.trim().is_empty()
            && let Err(error) = cel::parse_filter(&filter.expression)
        {
            issues.add(
                &at.field("filter").field("expression"),
                format!("weft cannot evaluate this expression: {error}"),
            );
        }
    }
    for (i, metrics) in spec.metrics.iter().enumerate() {
        let at = root.field("metrics").index(i);
        providers(&metrics.providers, &at, &mut issues);
        for (o, over) in metrics.overrides.iter().enumerate() {
            let at = at.field("overrides").index(o);
            if let Some(selector) = &over.match_
                && selector.metric.is_some()
                && selector.custom_metric.is_some()
            {
                issues.add(
                    &at.field("match"),
                    "only one of metric and customMetric may be set",
                );
            }
            for (tag, change) in &over.tag_overrides {
                let at = at.field("tagOverrides").key(tag);
                if !is_label_name(tag) {
                    issues.add(&at, "not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)");
                }
                match change.operation {
                    TagOperation::Remove if !change.value.is_empty() => {
                        issues.add(&at.field("value"), "must be empty when operation is REMOVE")
                    }
                    TagOperation::Remove => {}
                    TagOperation::Upsert if change.value.trim().is_empty() => {
                        issues.add(&at.field("value"), "required when operation is UPSERT")
                    }
                    TagOperation::Upsert => {
                        if let Err(error) = cel::parse(&change.value) {
                            issues.add(
                                &at.field("value"),
                                format!("weft cannot evaluate this expression: {error}"),
                            );
                        }
                    }
                }
            }
        }
    }
    for (i, tracing) in spec.tracing.iter().enumerate() {
        let at = root.field("tracing").index(i);
        providers(&tracing.providers, &at, &mut issues);
        if let Some(p) = tracing.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            issues.add(
                &at.field("randomSamplingPercentage"),
                format!("{p} is not a percentage in 0.0–100.0"),
            );
        }
        for (name, tag) in &tracing.custom_tags {
            let at = at.field("customTags").key(name);
            if tag.formatter.is_some() {
                issues.add(
                    &at.field("formatter"),
                    "weft does not evaluate Envoy formatters; use literal, environment or header",
                );
            }
            let kinds = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                issues.add(
                    &at,
                    "exactly one of literal, environment, header or formatter is required",
                );
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                issues.add(&at.field("environment").field("name"), "required");
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                issues.add(&at.field("header").field("name"), "required");
            }
        }
    }
    issues.into_vec()
}

fn providers(
    providers: &[crate::api::telemetry::ProviderRef],
    at: &FieldPath,
    issues: &mut Issues,
) {
    for (p, provider) in providers.iter().enumerate() {
        if provider.name.is_empty() {
            issues.add(&at.field("providers").index(p).field("name"), "required");
        }
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What weft accepts and does not act on.
pub(super) fn telemetry_warnings(spec: &TelemetrySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    for (i, metrics) in spec.metrics.iter().enumerate() {
        let at = root.field("metrics").index(i);
        if metrics.reporting_interval.is_some() {
            issues.add(
                &at.field("reportingInterval"),
                "no effect: Prometheus scrapes weft's /metrics when it chooses",
            );
        }
        for (p, provider) in metrics.providers.iter().enumerate() {
            if provider.name != crate::telemetry_api::effective::PROMETHEUS_PROVIDER {
                issues.add(
                    &at.field("providers").index(p),
                    format!(
                        "weft's only metrics provider is prometheus: nothing is sent to {:?} (and, named alone, the workloads' Prometheus metrics stop, as in Istio)",
                        provider.name
                    ),
                );
            }
        }
        for (o, over) in metrics.overrides.iter().enumerate() {
            let at = at.field("overrides").index(o).field("match");
            let Some(selector) = &over.match_ else {
                continue;
            };
            if selector.custom_metric.is_some() {
                issues.add(
                    &at.field("customMetric"),
                    "no effect: weft records only Istio's standard metrics",
                );
            }
            if matches!(
                selector.metric,
                Some(
                    IstioMetricName::TcpOpenedConnections
                        | IstioMetricName::TcpClosedConnections
                        | IstioMetricName::TcpSentBytes
                        | IstioMetricName::TcpReceivedBytes
                )
            ) {
                issues.add(
                    &at.field("metric"),
                    "no effect: weft does not apply Telemetry overrides to TCP metrics yet",
                );
            }
            if matches!(
                selector.metric,
                Some(IstioMetricName::GrpcRequestMessages | IstioMetricName::GrpcResponseMessages)
            ) {
                issues.add(
                    &at.field("metric"),
                    "no effect: weft does not record gRPC message counts",
                );
            }
        }
    }
    for (i, tracing) in spec.tracing.iter().enumerate() {
        let at = root.field("tracing").index(i);
        if tracing.use_request_id_for_trace_sampling.is_some() {
            issues.add(
                &at.field("useRequestIdForTraceSampling"),
                "weft samples new traces at random; the request id does not decide (same share of traces, no per-id consistency)",
            );
        }
        if tracing.enable_istio_tags.is_some() {
            issues.add(
                &at.field("enableIstioTags"),
                "weft does not act on this field; it has no effect",
            );
        }
        if tracing.disable_context_propagation.is_some() {
            issues.add(
                &at.field("disableContextPropagation"),
                "weft does not act on this field; it has no effect",
            );
        }
    }
    issues.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TelemetrySpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn what_weft_cannot_do_is_refused_by_field() {
        let issues = telemetry(&spec(
            "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Pod, name: x}]\naccessLogging: [{filter: {expression: 'size(request.headers) > 2'}}]\nmetrics: [{overrides: [{tagOverrides: {'bad-name': {operation: REMOVE, value: x}, user: {value: 'request.body'}, empty: {}}}]}]\ntracing: [{randomSamplingPercentage: 120, customTags: {f: {formatter: {value: '%REQ(x)%'}}, two: {literal: {value: a}, header: {name: b}}}}]\n",
        ));
        assert_eq!(
            fields(&issues),
            vec![
                "spec",
                "spec.targetRefs[0]",
                "spec.accessLogging[0].filter.expression",
                "spec.metrics[0].overrides[0].tagOverrides.bad-name",
                "spec.metrics[0].overrides[0].tagOverrides.bad-name.value",
                "spec.metrics[0].overrides[0].tagOverrides.empty.value",
                "spec.metrics[0].overrides[0].tagOverrides.user.value",
                "spec.tracing[0].randomSamplingPercentage",
                "spec.tracing[0].customTags.f.formatter",
                "spec.tracing[0].customTags.two",
            ]
        );
    }

    #[test]
    fn istio_documented_examples_are_accepted() {
        let issues = telemetry(&spec(
            "accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400 || connection.mtls == false'}}]\nmetrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {request_host: {value: request.host}, request_protocol: {operation: REMOVE}}}]}]\ntracing: [{randomSamplingPercentage: 10, customTags: {env: {environment: {name: POD_NAME}}}}]\n",
        ));
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn the_tracing_section_is_honoured_but_request_id_sampling() {
        let warnings = telemetry_warnings(&spec(
            "tracing: [{randomSamplingPercentage: 10, useRequestIdForTraceSampling: true}]\nmetrics: [{reportingInterval: 5s, overrides: [{match: {customMetric: my_metric}}]}]",
        ));
        assert_eq!(
            fields(&warnings),
            vec![
                "spec.metrics[0].reportingInterval",
                "spec.metrics[0].overrides[0].match.customMetric",
                "spec.tracing[0].useRequestIdForTraceSampling",
            ]
        );
    }
}
