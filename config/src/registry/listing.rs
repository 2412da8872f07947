//! Whole-registry listings for operators (the agent's admin endpoint and config dump). The
//! data path never needs them: it looks up by address, host or workload.
use std::sync::Arc;

use super::model::HostRoutes;
use super::snapshot::Snapshot;
use crate::api::security::{AuthorizationPolicy, PeerAuthentication};

impl Snapshot {
    /// Every AuthorizationPolicy, by namespace, oldest first within one.
    pub fn all_authorization_policies(&self) -> Vec<&Arc<AuthorizationPolicy>> {
        let mut namespaces: Vec<_> = self.authorization_policies.iter().collect();
        namespaces.sort_by(|a, b| a.0.cmp(b.0));
        namespaces.into_iter().flat_map(|(_, p)| p).collect()
    }

    /// Every PeerAuthentication, by namespace, oldest first within one.
    pub fn all_peer_authentications(&self) -> Vec<&Arc<PeerAuthentication>> {
        let mut namespaces: Vec<_> = self.peer_authentications.iter().collect();
        namespaces.sort_by(|a, b| a.0.cmp(b.0));
        namespaces.into_iter().flat_map(|(_, p)| p).collect()
    }

    /// Every host that has routes, sorted; wildcard hosts as written (`*.example.com`).
    pub fn all_routes(&self) -> Vec<(String, &Arc<HostRoutes>)> {
        let mut hosts: Vec<(String, &Arc<HostRoutes>)> = self
            .routes
            .iter()
            .map(|(host, routes)| (host.clone(), routes))
            .chain(
                self.wildcard_routes
                    .iter()
                    .map(|(suffix, routes)| (format!("*{suffix}"), routes)),
            )
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn listings_cover_every_namespace_and_wildcard_hosts() {
        let text = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: empty}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: shop}
spec:
  hosts: ["*.example.com", web.shop.svc.cluster.local]
  http: [{route: [{destination: {host: web.shop.svc.cluster.local}}]}]
"#;
        let snapshot = crate::testing::snapshot_of(text);
        let names = |meta: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            meta.iter()
                .map(|m| m.name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                snapshot
                    .all_authorization_policies()
                    .iter()
                    .map(|p| &p.metadata)
                    .collect()
            ),
            ["mesh-wide", "allow-web"]
        );
        assert_eq!(
            names(
                snapshot
                    .all_peer_authentications()
                    .iter()
                    .map(|p| &p.metadata)
                    .collect()
            ),
            ["strict"],
            "a namespace without workloads is listed too"
        );
        let hosts: Vec<String> = snapshot.all_routes().into_iter().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["*.example.com", "web.shop.svc.cluster.local"]);
    }
}
