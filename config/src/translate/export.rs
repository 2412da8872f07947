//! `exportTo` of VirtualServices and DestinationRules: which proxies see a rule. In
//! ambient, the proxy applying a rule is a waypoint or an ingress gateway, so a rule
//! applies there when it is exported to the proxy's namespace (pilot's `SidecarScope`
//! of that proxy, `push_context.go`). A process that applies no rule of its own (the node
//! agent, `weftctl`) sees every rule.
use crate::api::networking::{DestinationRule, VirtualService};
use crate::api::{DEFAULT_NAMESPACE, mesh::MeshConfig};

/// Whether a rule of namespace `owner` with `export_to` is visible in `client`: `*` to
/// every namespace, `.` to its own, `~` to none, a name to that namespace. An empty list
/// is `default` (the mesh config's `defaultVirtualServiceExportTo` or
/// `defaultDestinationRuleExportTo`), and an empty default is `*`, as in Istio.
pub fn visible(export_to: &[String], default: &[String], owner: &str, client: &str) -> bool {
    let list = if export_to.is_empty() {
        default
    } else {
        export_to
    };
    list.is_empty()
        || list.iter().any(|to| match to.as_str() {
            "*" => true,
            "~" => false,
            "." => owner == client,
            name => name == client,
        })
}

/// What one process applies: the rules visible in its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// The namespace of the waypoint or ingress gateway this process is; `None` for a
    /// process that applies no rule (everything is visible).
    pub proxy_namespace: Option<String>,
    /// The mesh config's `defaultVirtualServiceExportTo`.
    pub virtual_service_default: Vec<String>,
    /// The mesh config's `defaultDestinationRuleExportTo`.
    pub destination_rule_default: Vec<String>,
}

impl Visibility {
    /// For the proxy of `proxy_namespace` (if any) under `mesh`'s defaults.
    pub fn new(proxy_namespace: Option<&str>, mesh: &MeshConfig) -> Self {
        Self {
            proxy_namespace: proxy_namespace.map(str::to_string),
            virtual_service_default: mesh.default_virtual_service_export_to.clone(),
            destination_rule_default: mesh.default_destination_rule_export_to.clone(),
        }
    }

    /// Whether this process applies `vs`.
    pub fn virtual_service(&self, vs: &VirtualService) -> bool {
        self.proxy_namespace.as_deref().is_none_or(|client| {
            visible(
                &vs.spec.export_to,
                &self.virtual_service_default,
                namespace_of(vs.metadata.namespace.as_deref()),
                client,
            )
        })
    }

    /// Whether this process applies `dr`.
    pub fn destination_rule(&self, dr: &DestinationRule) -> bool {
        self.proxy_namespace.as_deref().is_none_or(|client| {
            visible(
                &dr.spec.export_to,
                &self.destination_rule_default,
                namespace_of(dr.metadata.namespace.as_deref()),
                client,
            )
        })
    }

    /// Whether `dr` is local to the proxy (its own namespace): pilot prefers such a rule
    /// to one of any other namespace (`PushContext.destinationRule`, step 1).
    pub fn is_local(&self, dr: &DestinationRule) -> bool {
        self.proxy_namespace.as_deref() == Some(namespace_of(dr.metadata.namespace.as_deref()))
    }
}

fn namespace_of(namespace: Option<&str>) -> &str {
    namespace.unwrap_or(DEFAULT_NAMESPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn export_to_values_as_istio_reads_them() {
        let none: Vec<String> = Vec::new();
        assert!(visible(&none, &none, "shop", "mesh-gw"), "default is *");
        assert!(visible(&list(&["*"]), &none, "shop", "other"));
        assert!(visible(&list(&["."]), &none, "shop", "shop"));
        assert!(!visible(&list(&["."]), &none, "shop", "other"));
        assert!(!visible(&list(&["~"]), &none, "shop", "shop"));
        assert!(visible(&list(&["audit", "."]), &none, "shop", "audit"));
        assert!(!visible(&list(&["audit"]), &none, "shop", "shop"));
        // The mesh default applies only when the rule has no exportTo of its own.
        assert!(!visible(&none, &list(&["."]), "shop", "other"));
        assert!(visible(&none, &list(&["."]), "shop", "shop"));
        assert!(visible(&list(&["*"]), &list(&["."]), "shop", "other"));
    }

    #[test]
    fn a_process_without_a_proxy_namespace_sees_everything() {
        let vs: VirtualService = serde_yaml::from_str(
            "metadata: {name: r, namespace: shop}\nspec: {hosts: [r], exportTo: ['~']}\n",
        )
        .expect("vs");
        assert!(Visibility::default().virtual_service(&vs));
        let waypoint = Visibility {
            proxy_namespace: Some("shop".into()),
            ..Visibility::default()
        };
        assert!(!waypoint.virtual_service(&vs));
    }
}
