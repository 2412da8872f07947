//! What weft's refusals and warnings are in istioctl's terms: each gets the code of the
//! Istio analyzer that reports the same thing, or weft's own. Weft's validation stays the
//! one judge (config/src/validate); this only names what it found.
use weft_config::Refusal;
use weft_config::validate::NO_WAYPOINT;

use super::message::{self as code, Level, Message, ObjectName};
use crate::validate::Finding;

/// How weft treated what a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The object (or document) does not get in.
    Refused,
    /// Accepted with a warning (unknown fields included).
    Warned,
}

pub fn finding(finding: &Finding) -> Message {
    match finding {
        Finding::Unreadable(line) => Message::new(
            Level::Error,
            code::SCHEMA_VALIDATION_ERROR,
            None,
            "",
            line.clone(),
            None,
        ),
        Finding::KindNotRead(document) => {
            // "Sidecar shop/x: networking.istio.io/Sidecar is not supported by weft: ignored"
            let (object, text) = match document.reason.split_once(": ") {
                Some((head, text)) => (object_named(head), text.to_string()),
                None => (None, document.reason.clone()),
            };
            Message::new(
                Level::Warning,
                code::KIND_NOT_READ,
                object,
                "",
                text,
                Some(document.origin.to_string()),
            )
        }
        Finding::Refused(r) => refusal(r, Verdict::Refused),
        Finding::UnknownField(r) | Finding::Warned(r) => refusal(r, Verdict::Warned),
    }
}

fn refusal(r: &Refusal, verdict: Verdict) -> Message {
    let object = ObjectName {
        kind: r.object.kind.name().to_string(),
        namespace: r.object.namespace.clone(),
        name: r.object.name.clone(),
    };
    message(
        verdict,
        object,
        &r.field,
        &r.reason,
        r.origin.as_ref().map(ToString::to_string),
    )
}

/// "Sidecar shop/x" as an object.
fn object_named(head: &str) -> Option<ObjectName> {
    let (kind, rest) = head.split_once(' ')?;
    let (namespace, name) = rest.split_once('/').unwrap_or(("", rest));
    Some(ObjectName {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// A refusal or warning of weft's, by the kind of its object, its field and its reason.
pub fn message(
    verdict: Verdict,
    object: ObjectName,
    field: &str,
    reason: &str,
    origin: Option<String>,
) -> Message {
    let (level, code) = match verdict {
        Verdict::Refused => (Level::Error, code::SCHEMA_VALIDATION_ERROR),
        Verdict::Warned => warning(&object.kind, field, reason),
    };
    Message::new(level, code, Some(object), field, reason, origin)
}

fn warning(kind: &str, field: &str, reason: &str) -> (Level, code::Code) {
    let warn = |code| (Level::Warning, code);
    if reason.starts_with("unknown field ") {
        return warn(code::SCHEMA_WARNING);
    }
    if reason.contains(NO_WAYPOINT) {
        return match kind {
            "AuthorizationPolicy" => warn(code::INEFFECTIVE_POLICY),
            _ => warn(code::NO_WAYPOINT),
        };
    }
    let unknown_host = reason.ends_with("names no known Service or ServiceEntry host");
    match kind {
        "VirtualService" if unknown_host => return warn(code::REFERENCED_RESOURCE_NOT_FOUND),
        "VirtualService" if reason.starts_with("Gateway ") && reason.contains("does not exist") => {
            // Routes bound to nothing: istioctl's error.
            return (Level::Error, code::REFERENCED_RESOURCE_NOT_FOUND);
        }
        "DestinationRule" if field == "spec.host" && unknown_host => {
            return warn(code::UNKNOWN_DESTINATION_RULE_HOST);
        }
        "DestinationRule" if reason.starts_with("waypoints do not read Secrets") => {
            return warn(code::WAYPOINT_READS_NO_SECRETS);
        }
        "Gateway" if field.ends_with("tls.credentialName") && reason.starts_with("no Secret") => {
            return warn(code::REFERENCED_RESOURCE_NOT_FOUND);
        }
        "Gateway" if reason.starts_with("conflict with Gateway") => {
            return (Level::Error, code::CONFLICTING_GATEWAYS);
        }
        "HTTPRoute" | "GRPCRoute"
            if reason.contains("NotFound") || reason.contains("does not exist") =>
        {
            return warn(code::REFERENCED_RESOURCE_NOT_FOUND);
        }
        "ServiceEntry" if field.starts_with("spec.addresses") => {
            return warn(code::ADDRESS_CONFLICT);
        }
        _ => {}
    }
    if [
        "not supported",
        "not implemented",
        "not acted on",
        "ignored",
    ]
    .iter()
    .any(|words| reason.contains(words))
    {
        return warn(code::FIELD_NOT_SUPPORTED);
    }
    warn(code::ADVISORY)
}
