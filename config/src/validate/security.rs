//! Istio's security rules: AuthorizationPolicy, PeerAuthentication and
//! RequestAuthentication.
//!
//! RequestAuthentication is refused as istiod refuses it (no issuer, an empty audience or
//! location, a `jwksUri` that is not an http(s) URL, an inline `jwks` that does not parse,
//! an output header that is not a header name or is named twice, a bad `timeout`, both
//! `selector` and `targetRef(s)`), and where weft could not verify the tokens it promises
//! to: with neither `jwks` nor `jwksUri` (OpenID discovery from the issuer is not
//! implemented) or with both. It is warned about where it has no effect in ambient mode:
//! without `targetRefs` (waypoints never use selectors or namespace-wide policies, and
//! weft has no sidecars), or with a target kind weft's waypoint does not attach to (it
//! attaches to its Gateway, Services, ServiceEntries (networking.istio.io) and the
//! GatewayClass).
use std::collections::HashSet;

use super::cidr;
use super::paths::{FieldPath, Issues};
use crate::api::security::{
    Action, AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::authn;
use crate::duration;
use crate::refusal::FieldIssue;

/// The attribute keys Istio accepts in `when` (exact keys, and prefixes ending in `[` or
/// `.` for the families).
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];
const CONDITION_KEY_FAMILIES: &[&str] = &[
    "request.headers[",
    "request.auth.claims[",
    "experimental.envoy.filters.",
];

pub(super) fn authorization_policy(spec: &AuthorizationPolicySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    let action = spec.effective_action();
    match (action, &spec.provider) {
        (Action::Custom, None) => issues.add(&root.field("provider"), "CUSTOM needs a provider"),
        (Action::Custom, Some(provider)) if provider.name.is_empty() => {
            issues.add(&root.field("provider").field("name"), "required")
        }
        (Action::Allow | Action::Deny | Action::Audit, Some(_)) => issues.add(
            &root.field("provider"),
            "a provider is only allowed with action CUSTOM",
        ),
        _ => {}
    }
    let targets = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    if spec.selector.is_some() && targets {
        issues.add(
            &root.field("selector"),
            "only one of selector or targetRefs may be set",
        );
    }
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        issues.add(
            &root.field("targetRef"),
            "only one of targetRef or targetRefs may be set",
        );
    }
    // A policy attached to what no waypoint applies policies for would be enforced nowhere:
    // refused rather than ignored.
    let attached: Vec<(FieldPath, &crate::api::common::PolicyTargetReference)> =
        match &spec.target_ref {
            Some(target) => vec![(root.field("targetRef"), target)],
            None => spec
                .target_refs
                .iter()
                .enumerate()
                .map(|(t, target)| (root.field("targetRefs").index(t), target))
                .collect(),
        };
    for (at, target) in attached {
        let supported = matches!(
            (target.group.as_str(), target.kind.as_str()),
            ("gateway.networking.k8s.io", "Gateway")
                | ("", "Service")
                | ("networking.istio.io", "ServiceEntry")
        );
        if !supported {
            issues.add(
                &at,
                format!(
                    "weft cannot attach a policy to {}/{} (only a waypoint's Gateway, group \
                     gateway.networking.k8s.io; a Service, group \"\"; a ServiceEntry, group \
                     networking.istio.io): it would be enforced nowhere",
                    if target.group.is_empty() {
                        "core"
                    } else {
                        &target.group
                    },
                    target.kind
                ),
            );
        }
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let at = root.field("rules").index(r);
        for (f, from) in rule.from.iter().enumerate() {
            let fa = at.field("from").index(f).field("source");
            let Some(source) = &from.source else {
                issues.add(&fa, "required: an empty `from` would match every source");
                continue;
            };
            if source.is_empty() {
                issues.add(&fa, "must set at least one field");
            }
            for (name, list) in [
                ("principals", &source.principals),
                ("notPrincipals", &source.not_principals),
                ("requestPrincipals", &source.request_principals),
                ("notRequestPrincipals", &source.not_request_principals),
                ("namespaces", &source.namespaces),
                ("notNamespaces", &source.not_namespaces),
                ("serviceAccounts", &source.service_accounts),
                ("notServiceAccounts", &source.not_service_accounts),
            ] {
                non_empty_values(list, &fa.field(name), &mut issues);
            }
            for (name, list) in [
                ("ipBlocks", &source.ip_blocks),
                ("notIpBlocks", &source.not_ip_blocks),
                ("remoteIpBlocks", &source.remote_ip_blocks),
                ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
            ] {
                for (i, block) in list.iter().enumerate() {
                    if let Err(reason) = cidr::parse(block) {
                        issues.add(&fa.field(name).index(i), reason);
                    }
                }
            }
            if (!source.principals.is_empty() || !source.not_principals.is_empty())
                && (!source.service_accounts.is_empty() || !source.not_service_accounts.is_empty())
            {
                issues.add(&fa, "principals and serviceAccounts cannot both be set");
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            let ta = at.field("to").index(t).field("operation");
            let Some(operation) = &to.operation else {
                issues.add(&ta, "required: an empty `to` would match every operation");
                continue;
            };
            if operation.is_empty() {
                issues.add(&ta, "must set at least one field");
            }
            for (name, list) in [
                ("ports", &operation.ports),
                ("notPorts", &operation.not_ports),
            ] {
                for (i, port) in list.iter().enumerate() {
                    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                        issues.add(
                            &ta.field(name).index(i),
                            format!("{port:?} is not a port number (1–65535)"),
                        );
                    }
                }
            }
            for (name, list) in [
                ("hosts", &operation.hosts),
                ("notHosts", &operation.not_hosts),
                ("methods", &operation.methods),
                ("notMethods", &operation.not_methods),
                ("paths", &operation.paths),
                ("notPaths", &operation.not_paths),
            ] {
                non_empty_values(list, &ta.field(name), &mut issues);
            }
        }
        for (w, condition) in rule.when.iter().enumerate() {
            let wa = at.field("when").index(w);
            let key = condition.key.as_str();
            let known = CONDITION_KEYS.contains(&key)
                || CONDITION_KEY_FAMILIES
                    .iter()
                    .any(|family| key.starts_with(family));
            if key.is_empty() {
                issues.add(&wa.field("key"), "required");
            } else if !known {
                issues.add(
                    &wa.field("key"),
                    format!("{key:?} is not an attribute Istio knows"),
                );
            } else if key.starts_with("request.auth.claims[")
                && authn::condition_claim_path(key).is_none()
            {
                issues.add(
                    &wa.field("key"),
                    format!(
                        "{key:?}: claims are written request.auth.claims[name] (nested: [a][b])"
                    ),
                );
            }
            if condition.values.is_empty() && condition.not_values.is_empty() {
                issues.add(&wa, "one of values or notValues is required");
            }
            for (name, list) in [
                ("values", &condition.values),
                ("notValues", &condition.not_values),
            ] {
                for (i, value) in list.iter().enumerate() {
                    let reason = match key {
                        "source.ip" | "remote.ip" | "destination.ip" => cidr::parse(value).err(),
                        "destination.port" if !value.parse::<u16>().is_ok_and(|p| p > 0) => {
                            Some(format!("{value:?} is not a port number (1–65535)"))
                        }
                        _ => None,
                    };
                    if let Some(reason) = reason {
                        issues.add(&wa.field(name).index(i), reason);
                    }
                }
            }
        }
    }
    issues.into_vec()
}

fn non_empty_values(values: &[String], at: &FieldPath, issues: &mut Issues) {
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() {
            issues.add(&at.index(i), "must not be empty");
        }
    }
}

pub(super) fn peer_authentication(spec: &PeerAuthenticationSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if !spec.port_level_mtls.is_empty()
        && spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    {
        issues.add(
            &root.field("portLevelMtls"),
            "port-level mTLS needs a workload selector (Istio ignores it on namespace-wide policies)",
        );
    }
    for port in spec.port_level_mtls.keys() {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            issues.add(
                &root.field("portLevelMtls").key(port),
                format!("{port:?} is not a port number (1–65535)"),
            );
        }
    }
    issues.into_vec()
}

pub(super) fn request_authentication(spec: &RequestAuthenticationSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    let targets = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    if spec.selector.is_some() && targets {
        issues.add(
            &root.field("selector"),
            "only one of selector or targetRefs may be set",
        );
    }
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        issues.add(
            &root.field("targetRef"),
            "only one of targetRef or targetRefs may be set",
        );
    }
    for (t, target) in spec.target_refs.iter().enumerate() {
        if target.name.is_empty() {
            issues.add(&root.field("targetRefs").index(t).field("name"), "required");
        }
    }
    if let Some(target) = &spec.target_ref
        && target.name.is_empty()
    {
        issues.add(&root.field("targetRef").field("name"), "required");
    }
    let mut issuers = HashSet::new();
    for (r, rule) in spec.jwt_rules.iter().enumerate() {
        let at = root.field("jwtRules").index(r);
        if rule.issuer.is_empty() {
            issues.add(&at.field("issuer"), "required");
        } else if !issuers.insert(rule.issuer.as_str()) {
            issues.add(
                &at.field("issuer"),
                format!("{:?} has another rule in this policy", rule.issuer),
            );
        }
        for (i, audience) in rule.audiences.iter().enumerate() {
            if audience.is_empty() {
                issues.add(&at.field("audiences").index(i), "must not be empty");
            }
        }
        let uri = rule.jwks_uri.as_deref().filter(|u| !u.is_empty());
        let inline = rule.jwks.as_deref().filter(|j| !j.is_empty());
        match (uri, inline) {
            (Some(_), Some(_)) => issues.add(
                &at,
                "set only one of jwks and jwksUri: weft would not know which keys to trust",
            ),
            (None, None) => issues.add(
                &at,
                "set jwksUri or jwks: weft does not discover keys from the issuer (OpenID discovery)",
            ),
            _ => {}
        }
        if let Some(uri) = uri
            && let Err(reason) = http_url(uri)
        {
            issues.add(&at.field("jwksUri"), reason);
        }
        if let Some(jwks) = inline
            && let Err(e) = authn::jwks::parse(jwks)
        {
            issues.add(&at.field("jwks"), e.to_string());
        }
        for (h, location) in rule.from_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(location.name.as_bytes()).is_err() {
                issues.add(
                    &at.field("fromHeaders").index(h).field("name"),
                    format!("{:?} is not an HTTP header name", location.name),
                );
            }
        }
        for (name, list) in [
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
        ] {
            non_empty_values(list, &at.field(name), &mut issues);
        }
        let mut outputs = HashSet::new();
        if let Some(header) = &rule.output_payload_to_header {
            output_header(
                header,
                &at.field("outputPayloadToHeader"),
                &mut outputs,
                &mut issues,
            );
        }
        for (c, output) in rule.output_claim_to_headers.iter().enumerate() {
            let ca = at.field("outputClaimToHeaders").index(c);
            output_header(
                &output.header,
                &ca.field("header"),
                &mut outputs,
                &mut issues,
            );
            if output.claim.is_empty() || output.claim.split('.').any(str::is_empty) {
                issues.add(&ca.field("claim"), "a claim name (nested: a.b) is required");
            }
        }
        if let Some(timeout) = &rule.timeout
            && let Err(e) = duration::parse(timeout)
        {
            issues.add(&at.field("timeout"), e.to_string());
        }
    }
    issues.into_vec()
}

/// Headers the waypoint writes: valid, lowercase-insensitive unique, and not ones that
/// would change how the request is framed or routed.
fn output_header(name: &str, at: &FieldPath, seen: &mut HashSet<String>, issues: &mut Issues) {
    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        issues.add(at, format!("{name:?} is not an HTTP header name"));
        return;
    }
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
    ) {
        issues.add(at, format!("{name:?} cannot be overwritten"));
    }
    if !seen.insert(lower) {
        issues.add(
            at,
            format!("{name:?} is written by another output of this rule"),
        );
    }
}

/// `jwksUri`: an absolute http or https URL with a host.
fn http_url(uri: &str) -> Result<(), String> {
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("{uri:?} is not a URL: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{uri:?} must be an http:// or https:// URL")),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

/// Where a RequestAuthentication has no effect on a waypoint.
pub(super) fn request_authentication_warnings(spec: &RequestAuthenticationSpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if spec.target_ref.is_none() && spec.target_refs.is_empty() {
        issues.add(
            &root,
            "no effect: waypoints apply only RequestAuthentications with targetRefs (their Gateway, a Service bound to one, or GatewayClass istio-waypoint from the root namespace); selectors and namespace-wide policies are for sidecars, which weft does not have",
        );
    }
    let (field, refs): (&str, Vec<_>) = if spec.target_refs.is_empty() {
        ("targetRef", spec.target_ref.iter().collect())
    } else {
        ("targetRefs", spec.target_refs.iter().collect())
    };
    for (t, target) in refs.into_iter().enumerate() {
        let known = matches!(
            (target.group.as_str(), target.kind.as_str()),
            ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
                | ("" | "core", "Service")
                | ("networking.istio.io", "ServiceEntry")
        );
        if !known {
            let at = if field == "targetRef" {
                root.field(field)
            } else {
                root.field(field).index(t)
            };
            issues.add(
                &at,
                format!(
                    "no effect: a waypoint does not attach policies to {}/{}",
                    target.group, target.kind
                ),
            );
        }
    }
    issues.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security::{Condition, Operation, Rule, RuleFrom, RuleTo, Source};

    fn request_authentication_fields(yaml: &str) -> Vec<String> {
        let spec: RequestAuthenticationSpec = serde_yaml::from_str(yaml).expect("spec");
        request_authentication(&spec)
            .into_iter()
            .map(|i| i.field)
            .collect()
    }

    #[test]
    fn request_authentication_is_checked_with_paths() {
        assert!(
            request_authentication_fields(
                r#"
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
jwtRules:
- issuer: https://issuer.example
  jwksUri: https://issuer.example/jwks.json
  audiences: [shop]
  fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
  outputPayloadToHeader: x-jwt-payload
  outputClaimToHeaders: [{header: x-group, claim: org.group}]
  timeout: 2s
- issuer: other
  jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'
"#
            )
            .is_empty()
        );
        assert_eq!(
            request_authentication_fields(
                r#"
selector: {matchLabels: {app: a}}
targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: w}
jwtRules:
- issuer: ""
  jwksUri: ftp://issuer.example/jwks
  audiences: [""]
- issuer: b
  jwks: '{"keys": 1}'
  fromHeaders: [{name: "bad header"}]
  fromParams: [""]
  outputPayloadToHeader: "x y"
  outputClaimToHeaders: [{header: x-a, claim: ""}, {header: X-A, claim: b}]
  timeout: soon
- issuer: c
- issuer: d
  jwksUri: http://keys
  jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'
- issuer: d
  jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'
"#
            ),
            [
                "spec.selector",
                "spec.jwtRules[0].issuer",
                "spec.jwtRules[0].audiences[0]",
                "spec.jwtRules[0].jwksUri",
                "spec.jwtRules[1].jwks",
                "spec.jwtRules[1].fromHeaders[0].name",
                "spec.jwtRules[1].fromParams[0]",
                "spec.jwtRules[1].outputPayloadToHeader",
                "spec.jwtRules[1].outputClaimToHeaders[0].claim",
                "spec.jwtRules[1].outputClaimToHeaders[1].header",
                "spec.jwtRules[1].timeout",
                "spec.jwtRules[2]",
                "spec.jwtRules[3]",
                "spec.jwtRules[4].issuer",
            ]
        );
    }

    #[test]
    fn request_authentication_without_targets_is_warned_about() {
        let spec: RequestAuthenticationSpec = serde_yaml::from_str(
            "jwtRules: [{issuer: a, jwks: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}'}]",
        )
        .expect("spec");
        assert_eq!(request_authentication_warnings(&spec)[0].field, "spec");
        let spec: RequestAuthenticationSpec = serde_yaml::from_str(
            "targetRefs: [{kind: Service, group: '', name: a}, {kind: Deployment, group: apps, name: b}]",
        )
        .expect("spec");
        let warned: Vec<_> = request_authentication_warnings(&spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(warned, ["spec.targetRefs[1]"]);
    }

    #[test]
    fn cidrs_ports_and_keys_are_checked_with_paths() {
        let spec = AuthorizationPolicySpec {
            action: Some(Action::Deny),
            rules: Some(vec![Rule {
                from: vec![RuleFrom {
                    source: Some(Source {
                        ip_blocks: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
                        ..Default::default()
                    }),
                }],
                to: vec![RuleTo {
                    operation: Some(Operation {
                        ports: vec!["8080".into(), "http".into()],
                        ..Default::default()
                    }),
                }],
                when: vec![Condition {
                    key: "request.colour".into(),
                    values: vec!["red".into()],
                    ..Default::default()
                }],
            }]),
            ..Default::default()
        };
        let fields: Vec<_> = authorization_policy(&spec)
            .into_iter()
            .map(|i| i.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].from[0].source.ipBlocks[1]",
                "spec.rules[0].to[0].operation.ports[1]",
                "spec.rules[0].when[0].key"
            ]
        );
    }

    #[test]
    fn custom_needs_a_provider() {
        let spec = AuthorizationPolicySpec {
            action: Some(Action::Custom),
            ..Default::default()
        };
        assert_eq!(authorization_policy(&spec)[0].field, "spec.provider");
    }
}
