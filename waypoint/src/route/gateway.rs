//! The route table of an ingress gateway's HTTP listener (or of one HTTPS server): virtual
//! hosts chosen by the request's `Host`, each with the compiled routes bound to it.
//!
//! Where the routes come from is the caller's business: for an Istio `Gateway`, the
//! VirtualServices bound to it (`weft_config::translate::gateway::virtual_hosts`); a
//! Gateway API `Gateway`'s listener would give the HTTPRoutes attached to it. Either way
//! a table is virtual hosts of [`CompiledRoutes`], and what no virtual host or route takes
//! is a 404.
use std::sync::Arc;

use weft_config::translate::gateway::{VirtualHostPlan, select_virtual_host};
use weft_config::translate::hosts::MeshSettings;

use super::CompiledRoutes;

/// One virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    /// Lower case; `*.example.com` and `*` are wildcards.
    pub domain: String,
    /// Plaintext requests are answered 301 to `https://` (Envoy's `require_tls: ALL`).
    pub https_redirect: bool,
    pub routes: Arc<CompiledRoutes>,
}

/// A listener's virtual hosts.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub hosts: Vec<VirtualHost>,
}

impl RouteTable {
    /// From the virtual hosts an Istio Gateway's servers and their VirtualServices make.
    pub fn from_virtual_services(plans: &[VirtualHostPlan], settings: &MeshSettings) -> Self {
        Self {
            hosts: plans
                .iter()
                .map(|plan| VirtualHost {
                    domain: plan.domain.clone(),
                    https_redirect: plan.https_redirect,
                    routes: Arc::new(CompiledRoutes::compile_gateway(&plan.routes, settings)),
                })
                .collect(),
        }
    }

    /// The virtual host for a request's authority, as Envoy chooses it.
    pub fn select(&self, authority: &str) -> Option<&VirtualHost> {
        select_virtual_host(&self.hosts, |h| h.domain.as_str(), authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{RequestFacts, RouteAction, Source};

    fn vs(yaml: &str) -> Arc<weft_config::api::networking::VirtualService> {
        Arc::new(serde_yaml::from_str(yaml).expect("VirtualService"))
    }

    fn facts<'a>(
        uri: &'a http::Uri,
        authority: &'a str,
        headers: &'a http::HeaderMap,
        source: &'a Source,
    ) -> RequestFacts<'a> {
        RequestFacts {
            method: &http::Method::GET,
            uri,
            authority,
            headers,
            port: 80,
            source,
            auth: None,
        }
    }

    fn routed(table: &RouteTable, authority: &str, path: &str) -> Option<String> {
        let uri: http::Uri = path.parse().expect("uri");
        let headers = http::HeaderMap::new();
        let source = Source::default();
        let host = table.select(authority)?;
        let route = host
            .routes
            .http_route(&facts(&uri, authority, &headers, &source))?;
        match route.action() {
            RouteAction::Forward(destinations) => Some(destinations[0].host.clone()),
            _ => Some("other".into()),
        }
    }

    /// Istio's Bookinfo gateway: five paths to productpage, anything else 404 — the
    /// gateway has no default route.
    #[test]
    fn the_bookinfo_gateway_routes_its_paths_and_nothing_else() {
        let gateway =
            weft_config::translate::gateway::GatewayRef::new("default", "bookinfo-gateway");
        let bookinfo = vs(
            "metadata: {name: bookinfo, namespace: default}\nspec:\n  hosts: ['*']\n  gateways: [bookinfo-gateway]\n  http:\n  - match:\n    - uri: {exact: /productpage}\n    - uri: {prefix: /static}\n    - uri: {exact: /login}\n    - uri: {exact: /logout}\n    - uri: {prefix: /api/v1/products}\n    route:\n    - destination: {host: productpage, port: {number: 9080}}\n",
        );
        let table = RouteTable::from_virtual_services(
            &[VirtualHostPlan {
                domain: "*".into(),
                https_redirect: false,
                routes: vec![(gateway, bookinfo)],
            }],
            &MeshSettings::default(),
        );
        let productpage = Some("productpage.default.svc.cluster.local".to_string());
        for path in [
            "/productpage",
            "/static/bootstrap.css",
            "/login",
            "/logout",
            "/api/v1/products/1",
        ] {
            assert_eq!(routed(&table, "10.0.0.1", path), productpage, "{path}");
        }
        assert_eq!(routed(&table, "10.0.0.1", "/nothing"), None);
        assert_eq!(routed(&table, "10.0.0.1", "/productpage/x"), None);
    }

    /// Two VirtualServices on one host: their rules merge in age order, catch-alls last;
    /// a match block naming another gateway does not exist here.
    #[test]
    fn merged_virtual_services_keep_catch_alls_last() {
        let gateway = weft_config::translate::gateway::GatewayRef::new("web", "gw");
        let first = vs(
            "metadata: {name: a, namespace: web}\nspec:\n  hosts: [shop.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: fallback}}]\n",
        );
        let second = vs(
            "metadata: {name: b, namespace: web}\nspec:\n  hosts: [shop.example.com]\n  gateways: [gw, other]\n  http:\n  - match: [{uri: {prefix: /cart}, gateways: [other]}]\n    route: [{destination: {host: wrong}}]\n  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: api}}]\n",
        );
        let table = RouteTable::from_virtual_services(
            &[VirtualHostPlan {
                domain: "shop.example.com".into(),
                https_redirect: false,
                routes: vec![(gateway.clone(), first), (gateway, second)],
            }],
            &MeshSettings::default(),
        );
        assert_eq!(
            routed(&table, "shop.example.com", "/api/items").as_deref(),
            Some("api.web.svc.cluster.local")
        );
        assert_eq!(
            routed(&table, "shop.example.com", "/cart").as_deref(),
            Some("fallback.web.svc.cluster.local"),
            "the /cart block is for another gateway"
        );
        assert_eq!(routed(&table, "other.example.com", "/api"), None);
    }
}
