//! The conformance table (`config/src/conformance/table.rs`) against the types, the
//! validation and the committed `docs/CONFORMANCE.md`.
use std::path::Path;

use serde_json::Value;
use weft_config::api::{Kind, Object};
use weft_config::conformance::{self, DOCUMENT, REGENERATE_COMMAND, Status, schema, table};
use weft_config::translate::MeshSettings;
use weft_config::validate;

const TABLE_FILE: &str = "config/src/conformance/table.rs";

fn line_text(kind: Kind, field: &str, status: Status) -> String {
    let status = match status {
        Status::Supported => "Supported".to_string(),
        Status::Partial(n) => format!("Partial({n:?})"),
        Status::Warned(n) => format!("Warned({n:?})"),
        Status::Refused(n) => format!("Refused({n:?})"),
        Status::Ignored(n) => format!("Ignored({n:?})"),
    };
    format!("({kind:?}, \"{field}\", {status}),")
}

#[test]
fn every_field_of_every_kind_weft_reads_has_a_line() {
    let missing: Vec<String> = schema::fields()
        .into_iter()
        .filter(|(kind, field)| conformance::line(*kind, field).is_none())
        .map(|(kind, field)| format!("    {}", line_text(kind, &field, Status::Supported)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} field(s) of weft's types have no line in {TABLE_FILE}; add (with their real status):\n{}",
        missing.len(),
        missing.join("\n")
    );
    let fields = schema::fields();
    let stale: Vec<String> = table::TABLE
        .iter()
        .filter(|(kind, field, _)| !fields.iter().any(|(k, f)| k == kind && f == field))
        .map(|(kind, field, status)| line_text(*kind, field, *status))
        .collect();
    assert!(
        stale.is_empty(),
        "lines of {TABLE_FILE} name fields weft's types do not have; remove:\n{}",
        stale.join("\n")
    );
}

/// A valid object of each kind, with at least one element in each list a field path goes
/// through.
fn base(kind: Kind) -> &'static str {
    match kind {
        Kind::VirtualService => {
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: s, namespace: shop}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n  tcp: [{route: [{destination: {host: reviews}}]}]\n  tls: [{match: [{sniHosts: [reviews]}], route: [{destination: {host: reviews}}]}]\n"
        }
        Kind::DestinationRule => {
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: s, namespace: shop}\nspec:\n  host: reviews\n  trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}\n  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}}]\n"
        }
        Kind::ServiceEntry => {
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: shop}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DNS\n"
        }
        Kind::Gateway => {
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: s, namespace: shop}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: c}}]\n"
        }
        Kind::AuthorizationPolicy => {
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: s, namespace: shop}\nspec:\n  rules: [{from: [{source: {principals: [a]}}], to: [{operation: {paths: [/a]}}], when: [{key: \"request.headers[x]\", values: [a]}]}]\n"
        }
        Kind::PeerAuthentication => {
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: s, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n"
        }
        Kind::RequestAuthentication => {
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: s, namespace: shop}\nspec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}], jwtRules: [{issuer: a, jwksUri: \"https://a.example.com/jwks\"}]}\n"
        }
        Kind::Telemetry => {
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: s, namespace: shop}\nspec:\n  accessLogging: [{providers: [{name: envoy}]}]\n  metrics: [{providers: [{name: prometheus}], overrides: [{disabled: true}]}]\n  tracing: [{providers: [{name: zipkin}]}]\n"
        }
        Kind::KubernetesGateway => {
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: s, namespace: shop}\nspec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n"
        }
        Kind::HttpRoute => {
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: s, namespace: shop}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: reviews, port: 80}]}]}\n"
        }
        Kind::GrpcRoute => {
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: s, namespace: shop}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: reviews, port: 80}]}]}\n"
        }
        Kind::TlsRoute => {
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: s, namespace: shop}\nspec: {parentRefs: [{name: gw}], hostnames: [a.example.com], rules: [{backendRefs: [{name: reviews, port: 443}]}]}\n"
        }
        Kind::TcpRoute => {
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: s, namespace: shop}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: reviews, port: 9000}]}]}\n"
        }
        Kind::ReferenceGrant => {
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: s, namespace: shop}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}], to: [{group: \"\", kind: Service}]}\n"
        }
        other => panic!("no sample object of {other:?}"),
    }
}

/// `object` with `value` at `path` (`spec.http[].fault`: the first element of a list).
fn set(object: &mut Value, path: &str, value: Value) {
    let segments: Vec<&str> = path.split('.').collect();
    let mut at = object;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (name, list) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*segment, false),
        };
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let map = at.as_object_mut().expect("an object");
        if last {
            map.insert(name.to_string(), value);
            return;
        }
        let entry = map.entry(name.to_string()).or_insert(Value::Null);
        if list {
            if entry.as_array().is_none_or(|a| a.is_empty()) {
                *entry = Value::Array(vec![Value::Object(Default::default())]);
            }
            at = &mut entry.as_array_mut().expect("a list")[0];
        } else {
            at = entry;
        }
    }
}

/// `spec.http[0].fault` as `spec.http[].fault`.
fn normalized(field: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Whether a message about `field` names `path`: the same field, one inside it or the
/// object holding it (not the whole `spec`).
fn names(field: &str, path: &str) -> bool {
    if field == "spec" || field.is_empty() {
        // About the whole object, not a field of it.
        return false;
    }
    let field = normalized(field);
    field == path
        || path.starts_with(&format!("{field}."))
        || path.starts_with(&format!("{field}["))
        || field.starts_with(&format!("{path}."))
        || field.starts_with(&format!("{path}["))
}

/// (refusals, warnings) of the sample of `kind` with `value` at `path`, as (field, reason).
type Said = (Vec<(String, String)>, Vec<(String, String)>);

fn judge(kind: Kind, path: &str, value: Value) -> Said {
    let mut object: Value = serde_yaml::from_str(base(kind)).expect("a sample object");
    set(&mut object, path, value);
    // A Gateway API filter's `type` names the member that is set.
    if let Some((filter, rest)) = path.split_once("filters[].") {
        let member = rest.split(['.', '[']).next().unwrap_or_default();
        let type_name: String = match member {
            "cors" => "CORS".to_string(),
            "urlRewrite" => "URLRewrite".to_string(),
            _ => {
                let mut chars = member.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .into_iter()
                    .chain(chars)
                    .collect()
            }
        };
        if member != "type" {
            set(
                &mut object,
                &format!("{filter}filters[].type"),
                Value::from(type_name),
            );
        }
    }
    // A ServiceEntry endpoint needs its address.
    if kind == Kind::ServiceEntry
        && path.starts_with("spec.endpoints[].")
        && path != "spec.endpoints[].address"
    {
        set(
            &mut object,
            "spec.endpoints[].address",
            Value::from("192.0.2.10"),
        );
    }
    let pair = |r: weft_config::Refusal| (r.field, r.reason);
    match Object::from_json_checked(object) {
        Err(refusal) => (vec![pair(refusal)], Vec::new()),
        Ok(None) => panic!("the sample of {kind:?} is not read"),
        Ok(Some((object, unknown))) => {
            let refusals: Vec<_> = validate::validate(&object).into_iter().map(pair).collect();
            let mut warnings: Vec<_> = unknown.into_iter().map(pair).collect();
            if refusals.is_empty() {
                warnings.extend(
                    validate::warnings(&object, &|_| true, &MeshSettings::default())
                        .into_iter()
                        .map(pair),
                );
            }
            (refusals, warnings)
        }
    }
}

/// Values of fields whose type (a string) accepts fewer values than the schema says, by
/// the field's name.
const SAMPLES: &[(&str, &str)] = &[("h2UpgradePolicy", "DEFAULT")];

/// What a warning or refusal says when it reports a field as not acted on (or acted on
/// differently by weft).
fn says_unsupported(reason: &str) -> bool {
    [
        "not supported",
        "not implemented",
        "not acted on",
        "ignored",
        "weft's",
        "weft does not",
    ]
    .iter()
    .any(|words| reason.contains(words))
}

#[test]
fn unsupported_fields_are_warned_about_or_refused_and_supported_ones_are_not() {
    let mut wrong = Vec::new();
    for (kind, path, sample) in schema::fields_with_samples() {
        let Some((_, _, status)) = conformance::line(kind, &path) else {
            continue; // every_field_of_every_kind_weft_reads_has_a_line names it
        };
        // A field inside an unsupported object is unsupported with it: the object's line
        // is checked (setting the field sets the object).
        let parent_status = path
            .rsplit_once('.')
            .and_then(|(parent, _)| conformance::line(kind, parent.trim_end_matches("[]")))
            .map(|line| line.2);
        if matches!(status, Status::Warned(_) | Status::Refused(_))
            && parent_status == Some(*status)
        {
            continue;
        }
        let leaf = path.rsplit('.').next().unwrap_or_default();
        let sample = match SAMPLES.iter().find(|(name, _)| *name == leaf) {
            Some((_, yaml)) => serde_yaml::from_str(yaml).expect("a sample value"),
            None => sample,
        };
        let (refusals, warnings) = judge(kind, &path, sample);
        let here = |said: &[(String, String)]| {
            said.iter()
                .filter(|(field, _)| names(field, &path))
                .map(|(field, reason)| format!("{field}: {reason}"))
                .collect::<Vec<_>>()
        };
        let current = line_text(kind, &path, *status);
        match status {
            Status::Warned(_) if here(&warnings).is_empty() => wrong.push(format!(
                "{current}\n  is marked unsupported (warned) but setting it gives no warning naming it \
                 (refusals: {:?}); if weft now acts on it, change that line of {TABLE_FILE} to\n  {}",
                here(&refusals),
                line_text(kind, &path, Status::Supported)
            )),
            Status::Refused(_) if here(&refusals).is_empty() && here(&warnings).is_empty() => {
                wrong.push(format!(
                    "{current}\n  is marked unsupported (refused) but setting it is neither refused nor \
                     warned about; if weft now acts on it, change that line of {TABLE_FILE} to\n  {}",
                    line_text(kind, &path, Status::Supported)
                ))
            }
            Status::Ignored(_) if !here(&warnings).is_empty() => wrong.push(format!(
                "{current}\n  is marked not warned about, but setting it is warned about ({:?}); \
                 change that line of {TABLE_FILE} to Warned(\"why\")",
                here(&warnings)
            )),
            Status::Supported => {
                let unsupported: Vec<String> = here(&warnings)
                    .into_iter()
                    .chain(here(&refusals))
                    .filter(|w| says_unsupported(w))
                    .collect();
                if !unsupported.is_empty() {
                    wrong.push(format!(
                        "{current}\n  is marked supported but setting it is warned about or refused as not acted on \
                         ({unsupported:?}); change that line of {TABLE_FILE} to Warned(\"why\") or \
                         Partial(\"what\")"
                    ));
                }
            }
            _ => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} line(s) of the conformance table disagree with the validation (then regenerate \
         {DOCUMENT} with `{REGENERATE_COMMAND}`):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_conformance_document_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let committed = std::fs::read_to_string(root.join(DOCUMENT)).unwrap_or_default();
    assert!(
        committed == conformance::markdown(),
        "{DOCUMENT} is out of date: refresh it from the workspace root with:\n  {REGENERATE_COMMAND}"
    );
}

#[test]
fn the_table_is_checked_against_the_validation() {
    // A warned field, set: the warning names it.
    let (_, warnings) = judge(
        Kind::DestinationRule,
        "spec.workloadSelector",
        serde_json::json!({"matchLabels": {"app": "reviews"}}),
    );
    assert!(
        warnings.iter().any(|(f, _)| f == "spec.workloadSelector"),
        "{warnings:?}"
    );
    // A supported one, set: no warning about it.
    let (_, warnings) = judge(
        Kind::VirtualService,
        "spec.http[].timeout",
        Value::from("1s"),
    );
    assert!(
        !warnings
            .iter()
            .any(|(f, _)| names(f, "spec.http[].timeout")),
        "{warnings:?}"
    );
}
