//! Istio's security rules: AuthorizationPolicy and PeerAuthentication.
use super::cidr;
use super::paths::{FieldPath, Issues};
use crate::api::security::{Action, AuthorizationPolicySpec, PeerAuthenticationSpec};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security::{Condition, Operation, Rule, RuleFrom, RuleTo, Source};

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
