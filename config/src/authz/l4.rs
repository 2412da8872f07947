//! AuthorizationPolicy at L4, as the destination's node agent enforces it.
//!
//! Istio's order: CUSTOM first ([`custom`] says whether the extension provider is asked;
//! the caller asks it), then any matching DENY denies, then if any ALLOW policy applies one
//! must match, otherwise the request is allowed. AUDIT ([`audited`]) changes nothing: it
//! names the policies whose rules match, for the audit record.
//!
//! A rule that needs request attributes an L4 proxy cannot see (methods, paths, hosts,
//! request principals, HTTP conditions) fails closed, as in Istio ambient: in an ALLOW
//! policy such a rule matches nothing; in a DENY policy its L7 parts are ignored, so it
//! denies everything its L4 parts match.
use std::net::IpAddr;
use std::sync::Arc;

use super::decision::Decision;
use super::rules::{self, Custom, Subject};
use crate::api::security::AuthorizationPolicy;

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

fn subject(request: &L4Request) -> Subject<'_> {
    Subject {
        principal: request.principal.as_deref(),
        source_ip: request.source_ip,
        // Without HTTP there is no X-Forwarded-For: the remote is the peer.
        remote_ip: request.source_ip,
        destination_ip: Some(request.destination_ip),
        destination_port: request.destination_port,
        http: None,
    }
}

pub fn evaluate(policies: &[&Arc<AuthorizationPolicy>], request: &L4Request) -> Decision {
    rules::evaluate(policies, &subject(request))
}

/// The CUSTOM step for a connection.
pub fn custom(policies: &[&Arc<AuthorizationPolicy>], request: &L4Request) -> Custom {
    rules::custom(policies, &subject(request))
}

/// The AUDIT policies whose rules match the connection.
pub fn audited(policies: &[&Arc<AuthorizationPolicy>], request: &L4Request) -> Vec<String> {
    rules::audited(policies, &subject(request))
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

    #[test]
    fn custom_rules_choose_the_connections_the_provider_sees() {
        let custom = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: ext, namespace: shop}\nspec:\n  action: CUSTOM\n  provider: {name: authz}\n  rules: [{to: [{operation: {ports: [\"8080\"], paths: [\"/x\"]}}]}]\n",
        );
        // HTTP parts are left out at L4 (as in a DENY rule): the port decides.
        assert_eq!(
            super::custom(&[&custom], &request(Some(SLEEP), 8080)),
            Custom::Check {
                provider: "authz".into(),
                policies: vec!["shop/ext".into()]
            }
        );
        assert_eq!(
            super::custom(&[&custom], &request(Some(SLEEP), 9000)),
            Custom::Skip
        );
        let other = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: ext2, namespace: shop}\nspec:\n  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {ports: [\"9000\"]}}]}]\n",
        );
        assert!(
            matches!(
                super::custom(&[&custom, &other], &request(Some(SLEEP), 8080)),
                Custom::Deny(_)
            ),
            "two providers on one workload: denied"
        );
        let no_rules = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: ext, namespace: shop}\nspec: {action: CUSTOM, provider: {name: authz}}\n",
        );
        assert_eq!(
            super::custom(&[&no_rules], &request(Some(SLEEP), 8080)),
            Custom::Skip
        );
        // CUSTOM decides nothing in the DENY/ALLOW step.
        assert_eq!(evaluate(&[&custom], &request(None, 8080)), Decision::Allow);
    }

    #[test]
    fn audit_names_matching_policies_and_decides_nothing() {
        let audit = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: audit, namespace: shop}\nspec:\n  action: AUDIT\n  rules: [{from: [{source: {namespaces: [shop]}}]}]\n",
        );
        assert_eq!(
            audited(&[&audit], &request(Some(SLEEP), 80)),
            ["shop/audit"]
        );
        assert!(audited(&[&audit], &request(Some(OTHER), 80)).is_empty());
        assert_eq!(
            evaluate(&[&audit], &request(Some(SLEEP), 80)),
            Decision::Allow
        );
    }

    #[test]
    fn service_accounts_default_to_the_policy_namespace() {
        let allow = policy(
            "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  rules: [{from: [{source: {serviceAccounts: [sleep, other/client]}}]}]\n",
        );
        assert_eq!(
            evaluate(&[&allow], &request(Some(SLEEP), 80)),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&allow], &request(Some(OTHER), 80)),
            Decision::Allow
        );
        assert!(matches!(
            evaluate(
                &[&allow],
                &request(Some("cluster.local/ns/other/sa/sleep"), 80)
            ),
            Decision::Deny(_)
        ));
    }
}
