//! AuthorizationPolicy at L4, as the destination's node agent enforces it.
//!
//! Istio's order: CUSTOM is not supported here (ignored, logged by the caller if needed),
//! any matching DENY denies, then if any ALLOW policy applies one must match, otherwise
//! the request is allowed. AUDIT changes nothing.
//!
//! A rule that needs request attributes an L4 proxy cannot see (methods, paths, hosts,
//! request principals, HTTP conditions) fails closed, as in Istio ambient: in an ALLOW
//! policy such a rule matches nothing; in a DENY policy its L7 parts are ignored, so it
//! denies everything its L4 parts match.
use std::net::IpAddr;
use std::sync::Arc;

use crate::api::security::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};
use crate::validate::cidr;

/// What is known of a connection at the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Request {
    /// The peer's identity without `spiffe://` (Istio's principal form,
    /// `cluster.local/ns/<ns>/sa/<sa>`); `None` for plaintext.
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

impl L4Request {
    fn namespace(&self) -> Option<&str> {
        let principal = self.principal.as_deref()?;
        let (_, rest) = principal.split_once("/ns/")?;
        rest.split('/').next()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, naming the policy (`namespace/name`) or the reason.
    Deny(String),
}

fn policy_name(policy: &AuthorizationPolicy) -> String {
    format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap_or_default(),
        policy.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn evaluate(policies: &[&Arc<AuthorizationPolicy>], request: &L4Request) -> Decision {
    for policy in policies.iter().filter(|p| action(p) == Action::Deny) {
        if rules(policy)
            .iter()
            .any(|rule| rule_matches(rule, request, Action::Deny))
        {
            return Decision::Deny(format!(
                "denied by AuthorizationPolicy {}",
                policy_name(policy)
            ));
        }
    }
    let allows: Vec<_> = policies
        .iter()
        .filter(|p| action(p) == Action::Allow)
        .collect();
    if allows.is_empty() {
        return Decision::Allow;
    }
    if allows.iter().any(|policy| {
        rules(policy)
            .iter()
            .any(|rule| rule_matches(rule, request, Action::Allow))
    }) {
        Decision::Allow
    } else {
        let names: Vec<String> = allows.iter().map(|p| policy_name(p)).collect();
        Decision::Deny(format!(
            "no ALLOW rule matches (AuthorizationPolicy {})",
            names.join(", ")
        ))
    }
}

fn action(policy: &AuthorizationPolicy) -> Action {
    policy.spec.action.unwrap_or_default()
}

fn rules(policy: &AuthorizationPolicy) -> &[Rule] {
    policy.spec.rules.as_deref().unwrap_or_default()
}

fn rule_matches(rule: &Rule, request: &L4Request, action: Action) -> bool {
    let needs_l7 = rule
        .to
        .iter()
        .filter_map(|t| t.operation.as_ref())
        .any(operation_needs_l7)
        || rule
            .from
            .iter()
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
        || rule.when.iter().any(|c| !is_l4_condition(&c.key));
    if needs_l7 && action == Action::Allow {
        return false;
    }
    let from_ok = rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|f| f.source.as_ref().is_none_or(|s| source_matches(s, request)));
    let to_ok = rule.to.is_empty()
        || rule.to.iter().any(|t| {
            t.operation
                .as_ref()
                .is_none_or(|o| ports_match(o, request.destination_port))
        });
    let when_ok = rule
        .when
        .iter()
        .filter(|c| is_l4_condition(&c.key))
        .all(|c| condition_matches(c, request));
    from_ok && to_ok && when_ok
}

fn operation_needs_l7(operation: &Operation) -> bool {
    !(operation.hosts.is_empty()
        && operation.not_hosts.is_empty()
        && operation.methods.is_empty()
        && operation.not_methods.is_empty()
        && operation.paths.is_empty()
        && operation.not_paths.is_empty())
}

fn is_l4_condition(key: &str) -> bool {
    matches!(
        key,
        "source.ip"
            | "source.namespace"
            | "source.principal"
            | "destination.ip"
            | "destination.port"
            | "remote.ip"
    )
}

/// Istio's string match: exact, `*` (anything present), `prefix*` or `*suffix`.
fn string_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

fn any_matches(patterns: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| string_matches(p, v)))
}

fn ip_in(blocks: &[String], ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip else { return false };
    blocks.iter().any(|block| match cidr::parse(block) {
        Ok((network, len)) => in_network(ip, network, len),
        Err(_) => false,
    })
}

fn in_network(ip: IpAddr, network: IpAddr, len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn source_matches(source: &Source, request: &L4Request) -> bool {
    let principal = request.principal.as_deref();
    let namespace = request.namespace();
    let service_account = principal.map(|p| {
        // `<ns>/<sa>` as `serviceAccounts` lists them.
        let mut parts = p.split("/ns/").nth(1).unwrap_or_default().split("/sa/");
        let ns = parts.next().unwrap_or_default();
        let sa = parts.next().unwrap_or_default();
        format!("{ns}/{sa}")
    });
    (source.principals.is_empty() || any_matches(&source.principals, principal))
        && !any_matches(&source.not_principals, principal)
        && (source.namespaces.is_empty() || any_matches(&source.namespaces, namespace))
        && !any_matches(&source.not_namespaces, namespace)
        && (source.service_accounts.is_empty()
            || any_matches(&source.service_accounts, service_account.as_deref()))
        && !any_matches(&source.not_service_accounts, service_account.as_deref())
        && (source.ip_blocks.is_empty() || ip_in(&source.ip_blocks, request.source_ip))
        && !ip_in(&source.not_ip_blocks, request.source_ip)
        && (source.remote_ip_blocks.is_empty()
            || ip_in(&source.remote_ip_blocks, request.source_ip))
        && !ip_in(&source.not_remote_ip_blocks, request.source_ip)
}

fn ports_match(operation: &Operation, port: u16) -> bool {
    let listed = |ports: &[String]| ports.iter().any(|p| p.parse::<u16>().ok() == Some(port));
    (operation.ports.is_empty() || listed(&operation.ports)) && !listed(&operation.not_ports)
}

fn condition_matches(condition: &Condition, request: &L4Request) -> bool {
    let value: Option<String> = match condition.key.as_str() {
        "source.ip" | "remote.ip" => request.source_ip.map(|ip| ip.to_string()),
        "source.namespace" => request.namespace().map(str::to_string),
        "source.principal" => request.principal.clone(),
        "destination.ip" => Some(request.destination_ip.to_string()),
        "destination.port" => Some(request.destination_port.to_string()),
        _ => None,
    };
    let is_ip = matches!(
        condition.key.as_str(),
        "source.ip" | "remote.ip" | "destination.ip"
    );
    let matches = |patterns: &[String]| match (&value, is_ip) {
        (Some(v), true) => v.parse().ok().is_some_and(|ip| ip_in(patterns, Some(ip))),
        (Some(v), false) => patterns.iter().any(|p| string_matches(p, v)),
        (None, _) => false,
    };
    (condition.values.is_empty() || matches(&condition.values)) && !matches(&condition.not_values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Arc<AuthorizationPolicy> {
        Arc::new(serde_yaml::from_str(yaml).expect("valid AuthorizationPolicy"))
    }

    fn request(principal: Option<&str>, port: u16) -> L4Request {
        L4Request {
            principal: principal.map(str::to_string),
            source_ip: Some("10.244.1.10".parse().expect("ip")),
            destination_ip: "10.244.2.10".parse().expect("ip"),
            destination_port: port,
        }
    }

    const SLEEP: &str = "cluster.local/ns/shop/sa/sleep";
    const OTHER: &str = "cluster.local/ns/other/sa/client";

    #[test]
    fn no_policy_allows() {
        assert_eq!(evaluate(&[], &request(None, 80)), Decision::Allow);
    }

    #[test]
    fn deny_by_principal_wins_over_allow() {
        let deny = policy(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principals: [\"cluster.local/ns/shop/sa/sleep\"]}}]}]\n",
        );
        let allow_all = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {rules: [{}]}\n",
        );
        let decision = evaluate(&[&deny, &allow_all], &request(Some(SLEEP), 80));
        assert_eq!(
            decision,
            Decision::Deny("denied by AuthorizationPolicy shop/d".into())
        );
        assert_eq!(
            evaluate(&[&deny, &allow_all], &request(Some(OTHER), 80)),
            Decision::Allow
        );
    }

    #[test]
    fn allow_must_match_when_present() {
        let allow = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {ports: [\"8080\"]}}]}]\n",
        );
        assert_eq!(
            evaluate(&[&allow], &request(Some(SLEEP), 8080)),
            Decision::Allow
        );
        assert!(matches!(
            evaluate(&[&allow], &request(Some(SLEEP), 9000)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&[&allow], &request(Some(OTHER), 8080)),
            Decision::Deny(_)
        ));
        assert!(
            matches!(evaluate(&[&allow], &request(None, 8080)), Decision::Deny(_)),
            "plaintext has no namespace"
        );
    }

    #[test]
    fn allow_without_rules_matches_nothing() {
        let allow =
            policy("kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {}\n");
        assert!(matches!(
            evaluate(&[&allow], &request(Some(SLEEP), 80)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn l7_attributes_fail_closed() {
        let allow_get = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
        );
        assert!(matches!(
            evaluate(&[&allow_get], &request(Some(SLEEP), 80)),
            Decision::Deny(_)
        ));
        let deny_get = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principals: [\"*/sa/sleep\"]}}], to: [{operation: {methods: [GET]}}]}]\n",
        );
        assert!(matches!(
            evaluate(&[&deny_get], &request(Some(SLEEP), 80)),
            Decision::Deny(_)
        ));
        assert_eq!(
            evaluate(&[&deny_get], &request(Some(OTHER), 80)),
            Decision::Allow
        );
    }

    #[test]
    fn ip_blocks_and_conditions() {
        let allow = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  rules: [{from: [{source: {ipBlocks: [10.244.1.0/24]}}], when: [{key: destination.port, values: [\"80\"]}]}]\n",
        );
        assert_eq!(evaluate(&[&allow], &request(None, 80)), Decision::Allow);
        assert!(matches!(
            evaluate(&[&allow], &request(None, 81)),
            Decision::Deny(_)
        ));
        let mut elsewhere = request(None, 80);
        elsewhere.source_ip = Some("10.244.2.9".parse().expect("ip"));
        assert!(matches!(evaluate(&[&allow], &elsewhere), Decision::Deny(_)));
    }
}
