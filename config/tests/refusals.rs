//! One test per validation rule: an invalid object is refused with its kind, namespace/name,
//! field path and reason, is counted and listed, and the previously valid version of the
//! same object keeps serving.
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use weft_config::api::{Kind, Object, ObjectRef};
use weft_config::registry::{Candidate, Change, Registry, Snapshot};
use weft_config::source::yaml;

fn candidates(text: &str) -> Vec<Candidate> {
    let documents = yaml::parse(text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
    assert!(documents.errors.is_empty(), "{:?}", documents.errors);
    documents.candidates
}

fn apply(registry: &Registry, text: &str) -> weft_config::registry::ApplyReport {
    registry.apply(candidates(text).into_iter().map(Change::Apply))
}

/// The spec of the object `r` as the snapshot serves it, as JSON.
fn served_spec(snapshot: &Snapshot, r: &ObjectRef, host: &str) -> Option<Value> {
    let json = |spec: &dyn erased::Spec| spec.json();
    match r.kind {
        Kind::VirtualService => snapshot
            .routes_for_host(host)?
            .virtual_services
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(&r.name))
            .map(|v| json(&v.spec)),
        Kind::DestinationRule => snapshot
            .routes_for_host(host)?
            .destination_rule
            .as_ref()
            .map(|d| json(&d.spec)),
        Kind::AuthorizationPolicy => snapshot
            .authorization_policies(&r.namespace)
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&r.name))
            .map(|p| json(&p.spec)),
        Kind::PeerAuthentication => snapshot
            .peer_authentications(&r.namespace)
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&r.name))
            .map(|p| json(&p.spec)),
        Kind::ServiceEntry => snapshot
            .service_entries_for_host(host)
            .first()
            .map(|s| json(&s.spec)),
        other => panic!("no spec lookup for {other}"),
    }
}

mod erased {
    pub trait Spec {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Spec for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("spec serialises")
        }
    }
}

fn spec_of(text: &str) -> Value {
    match candidates(text).remove(0).object.expect("valid object") {
        Object::VirtualService(o) => serde_json::to_value(&o.spec),
        Object::DestinationRule(o) => serde_json::to_value(&o.spec),
        Object::AuthorizationPolicy(o) => serde_json::to_value(&o.spec),
        Object::PeerAuthentication(o) => serde_json::to_value(&o.spec),
        Object::ServiceEntry(o) => serde_json::to_value(&o.spec),
        other => panic!("unexpected {other:?}"),
    }
    .expect("spec serialises")
}

/// Applies `valid`, then `invalid` (the same object), and checks the refusal and that
/// `valid` still serves under `host`.
fn refused(valid: &str, invalid: &str, host: &str, field: &str, reason: &str) {
    let registry = Registry::default();
    let report = apply(&registry, valid);
    assert!(
        report.refused.is_empty(),
        "valid version refused: {:?}",
        report.refused
    );
    let r = candidates(valid)[0].object_ref();
    assert_eq!(
        served_spec(&registry.snapshot(), &r, host),
        Some(spec_of(valid))
    );

    let report = apply(&registry, invalid);
    let snapshot = registry.snapshot();
    let refusals = snapshot.refusals_of(&r);
    assert!(
        !refusals.is_empty(),
        "not refused; listed refusals: {:?}",
        snapshot.refused().collect::<Vec<_>>()
    );
    assert_eq!(
        report.refused, refusals,
        "the report carries what the snapshot lists"
    );
    let found = refusals
        .iter()
        .find(|x| x.field == field)
        .unwrap_or_else(|| {
            panic!(
                "no refusal at {field}: {:?}",
                refusals.iter().map(ToString::to_string).collect::<Vec<_>>()
            )
        });
    assert!(
        found.reason.contains(reason),
        "reason {:?} lacks {reason:?}",
        found.reason
    );
    assert_eq!(found.object, r);
    // What a user reads in the log: file:document: Kind namespace/name: field: reason.
    let line = found.to_string();
    assert!(
        line.starts_with(&format!(
            "test.yaml:1: {} {}/{}: {field}: ",
            r.kind, r.namespace, r.name
        )),
        "{line}"
    );
    assert!(registry.refused_total() >= 1);
    assert!(snapshot.refused().any(|x| x == found));
    assert_eq!(
        served_spec(&snapshot, &r, host),
        Some(spec_of(valid)),
        "the previously valid version stopped serving"
    );
}

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";

const VS_VALID: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#;

/// VS_VALID with `from` replaced by `to`.
fn vs_with(from: &str, to: &str) -> String {
    assert!(VS_VALID.contains(from), "{from}");
    VS_VALID.replace(from, to)
}

#[test]
fn a_delegate_virtual_service_with_gateways() {
    // Without hosts a VirtualService is a delegate, which Istio refuses with gateways.
    refused(
        VS_VALID,
        &vs_with("hosts: [reviews]", "gateways: [bookinfo-gateway]"),
        REVIEWS,
        "spec.gateways",
        "delegate virtual service must have no gateways specified",
    );
}

#[test]
fn virtual_service_weights_not_summing_to_100() {
    refused(
        VS_VALID,
        &vs_with("subset: v2}, weight: 50", "subset: v2}, weight: 40"),
        REVIEWS,
        "spec.http[0].route[1].weight",
        "sum to 90, not 100",
    );
}

#[test]
fn virtual_service_negative_weight() {
    refused(
        VS_VALID,
        &vs_with("subset: v2}, weight: 50", "subset: v2}, weight: -50"),
        REVIEWS,
        "spec.http[0].route[1].weight",
        "not between 0 and 100",
    );
}

#[test]
fn virtual_service_regex_that_does_not_compile() {
    refused(
        VS_VALID,
        &vs_with("uri: {prefix: /api}", "uri: {regex: \"/api/(v1\"}"),
        REVIEWS,
        "spec.http[0].match[0].uri.regex",
        "invalid regular expression",
    );
}

#[test]
fn virtual_service_regex_outside_re2() {
    // Look-around is not RE2: Istio (Envoy) refuses it, and so does weft.
    refused(
        VS_VALID,
        &vs_with("uri: {prefix: /api}", "uri: {regex: \"/api(?=/v1)\"}"),
        REVIEWS,
        "spec.http[0].match[0].uri.regex",
        "invalid regular expression",
    );
}

#[test]
fn virtual_service_duration_that_does_not_parse() {
    refused(
        VS_VALID,
        &vs_with("timeout: 2s", "timeout: 2 seconds"),
        REVIEWS,
        "spec.http[0].timeout",
        "invalid duration",
    );
}

#[test]
fn virtual_service_negative_retry_attempts() {
    refused(
        VS_VALID,
        &vs_with("attempts: 3", "attempts: -1"),
        REVIEWS,
        "spec.http[0].retries.attempts",
        "negative",
    );
}

#[test]
fn virtual_service_invalid_per_try_timeout() {
    refused(
        VS_VALID,
        &vs_with("perTryTimeout: 500ms", "perTryTimeout: soon"),
        REVIEWS,
        "spec.http[0].retries.perTryTimeout",
        "invalid duration",
    );
}

#[test]
fn virtual_service_fault_percentage_out_of_range() {
    refused(
        VS_VALID,
        &vs_with(
            "    timeout: 2s\n",
            "    timeout: 2s\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n",
        ),
        REVIEWS,
        "spec.http[0].fault.delay.percentage.value",
        "150 is not between 0 and 100",
    );
}

#[test]
fn virtual_service_abort_status_out_of_range() {
    refused(
        VS_VALID,
        &vs_with(
            "    timeout: 2s\n",
            "    timeout: 2s\n    fault: {abort: {httpStatus: 700, percentage: {value: 10}}}\n",
        ),
        REVIEWS,
        "spec.http[0].fault.abort.httpStatus",
        "700 is not an HTTP status between 200 and 599",
    );
}

#[test]
fn virtual_service_field_of_the_wrong_type() {
    refused(
        VS_VALID,
        &vs_with("subset: v2}, weight: 50", "subset: v2}, weight: fifty"),
        REVIEWS,
        "spec.http[0].route[1].weight",
        "invalid type",
    );
}

#[test]
fn virtual_service_destination_without_host() {
    refused(
        VS_VALID,
        &vs_with("{host: reviews, subset: v2}", "{subset: v2}"),
        REVIEWS,
        "spec.http[0].route[1].destination.host",
        "required",
    );
}

#[test]
fn virtual_service_unresolvable_destination_is_a_warning_not_a_refusal() {
    let registry = Registry::default();
    let report = apply(&registry, VS_VALID);
    assert!(report.refused.is_empty());
    let snapshot = registry.snapshot();
    let warnings: Vec<_> = snapshot.warnings().collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.field == "spec.http[0].route[0].destination.host"
                && w.reason.contains("\"reviews\" names no known Service")),
        "{warnings:?}"
    );
    assert!(
        snapshot.routes_for_host(REVIEWS).is_some(),
        "accepted despite the warning"
    );
    // Once the Service exists, the warning goes; one remains while no waypoint serves it.
    apply(
        &registry,
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {ports: [{port: 9080}]}\n",
    );
    let reasons: Vec<String> = registry
        .snapshot()
        .warnings()
        .map(|w| format!("{}: {}", w.field, w.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "spec.hosts[0]: \"reviews\" has no waypoint: L7 rules apply only through a waypoint: \
          label the Service istio.io/use-waypoint"
        ]
    );
}

#[test]
fn unknown_fields_are_tolerated() {
    let registry = Registry::default();
    let report = apply(
        &registry,
        &vs_with(
            "    timeout: 2s\n",
            "    timeout: 2s\n    someFutureField: {x: 1}\n",
        ),
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert!(registry.snapshot().routes_for_host(REVIEWS).is_some());
    // Tolerated, and named as kubectl's strict field validation names it.
    let unknown: Vec<String> = registry
        .snapshot()
        .warnings()
        .filter(|w| w.reason.starts_with("unknown field"))
        .map(|w| format!("{}: {}", w.field, w.reason))
        .collect();
    assert_eq!(
        unknown,
        [
            "spec.http[0].someFutureField: unknown field \"spec.http[0].someFutureField\": not in \
          the VirtualService schema, ignored (misspelt?)"
        ]
    );
    // Fixed: the warning goes, though the typed object is the same.
    apply(
        &registry,
        &vs_with("    timeout: 2s\n", "    timeout: 2s\n"),
    );
    assert!(
        registry
            .snapshot()
            .warnings()
            .all(|w| !w.reason.starts_with("unknown field")),
        "{:?}",
        registry.snapshot().warnings().collect::<Vec<_>>()
    );
}

#[test]
fn every_served_istio_version_is_accepted_and_others_are_refused() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let registry = Registry::default();
        let text = VS_VALID.replace(
            "networking.istio.io/v1",
            &format!("networking.istio.io/{version}"),
        );
        assert!(apply(&registry, &text).refused.is_empty(), "{version}");
    }
    refused(
        VS_VALID,
        &VS_VALID.replace("networking.istio.io/v1", "networking.istio.io/v2"),
        REVIEWS,
        "apiVersion",
        "is not served for VirtualService",
    );
}

const DR_VALID: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 250ms}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

#[test]
fn destination_rule_duplicate_subset_names() {
    refused(
        DR_VALID,
        &DR_VALID.replace("{name: v2,", "{name: v1,"),
        REVIEWS,
        "spec.subsets[1].name",
        "duplicate subset name \"v1\"",
    );
}

#[test]
fn destination_rule_subset_without_labels() {
    refused(
        DR_VALID,
        &DR_VALID.replace("{name: v1, labels: {version: v1}}", "{name: v1}"),
        REVIEWS,
        "spec.subsets[0].labels",
        "needs labels",
    );
}

#[test]
fn destination_rule_duration_that_does_not_parse() {
    refused(
        DR_VALID,
        &DR_VALID.replace("250ms", "250 millis"),
        REVIEWS,
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "invalid duration",
    );
}

const AP_VALID: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/bookinfo/sa/bookinfo-productpage]
        ipBlocks: [10.244.0.0/16]
    to:
    - operation: {methods: [GET], ports: ["9080"]}
    when:
    - {key: "request.headers[version]", values: [v1]}
"#;

#[test]
fn authorization_policy_invalid_action() {
    refused(
        AP_VALID,
        &AP_VALID.replace("action: ALLOW", "action: PERMIT"),
        "",
        "spec.action",
        "unknown variant `PERMIT`",
    );
}

#[test]
fn authorization_policy_ip_block_that_is_not_a_cidr() {
    refused(
        AP_VALID,
        &AP_VALID.replace("10.244.0.0/16", "10.244.0.0/40"),
        "",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "invalid prefix length",
    );
}

#[test]
fn authorization_policy_deny_rule_with_an_empty_source() {
    let invalid = AP_VALID
        .replace("action: ALLOW", "action: DENY")
        .replace(
            "        principals: [cluster.local/ns/bookinfo/sa/bookinfo-productpage]\n        ipBlocks: [10.244.0.0/16]\n",
            "        {}\n",
        );
    refused(
        AP_VALID,
        &invalid,
        "",
        "spec.rules[0].from[0].source",
        "must set at least one field",
    );
}

#[test]
fn authorization_policy_port_that_is_not_a_number() {
    refused(
        AP_VALID,
        &AP_VALID.replace("ports: [\"9080\"]", "ports: [http]"),
        "",
        "spec.rules[0].to[0].operation.ports[0]",
        "not a port number",
    );
}

#[test]
fn authorization_policy_custom_without_provider() {
    refused(
        AP_VALID,
        &AP_VALID.replace("action: ALLOW", "action: CUSTOM"),
        "",
        "spec.provider",
        "CUSTOM needs a provider",
    );
}

const PA_VALID: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "9080": {mode: PERMISSIVE}
"#;

#[test]
fn peer_authentication_invalid_mode() {
    refused(
        PA_VALID,
        &PA_VALID.replace("mode: STRICT", "mode: SOMETIMES"),
        "",
        "spec.mtls.mode",
        "unknown variant `SOMETIMES`",
    );
}

#[test]
fn peer_authentication_port_level_without_selector() {
    refused(
        PA_VALID,
        &PA_VALID.replace("  selector: {matchLabels: {app: reviews}}\n", ""),
        "",
        "spec.portLevelMtls",
        "needs a workload selector",
    );
}

#[test]
fn a_refused_object_is_counted_once_and_cleared_when_fixed_or_deleted() {
    let registry = Registry::default();
    let invalid = vs_with("hosts: [reviews]", "hosts: ['*']");
    apply(&registry, &invalid);
    apply(&registry, &invalid);
    assert_eq!(
        registry.refused_total(),
        1,
        "the same refused version counts once"
    );
    let r = ObjectRef::new(Kind::VirtualService, "bookinfo", "reviews");
    assert!(
        registry.snapshot().routes_for_host(REVIEWS).is_none(),
        "nothing to keep serving"
    );
    apply(&registry, VS_VALID);
    assert!(registry.snapshot().refusals_of(&r).is_empty());
    apply(&registry, &invalid);
    assert_eq!(registry.refused_total(), 2);
    registry.apply([Change::Delete(r.clone())]);
    let snapshot = registry.snapshot();
    assert!(
        snapshot.refusals_of(&r).is_empty(),
        "a deleted object has no refusal"
    );
    assert!(snapshot.routes_for_host(REVIEWS).is_none(), "and no route");
}
