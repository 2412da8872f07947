//! Host names as Istio resolves them.

/// Mesh-wide names: the trust domain of SPIFFE identities, the cluster's DNS domain and
/// Istio's root namespace (whose policies apply mesh-wide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSettings {
    pub trust_domain: String,
    pub cluster_domain: String,
    pub root_namespace: String,
    /// The namespace whose TLS Secrets this process reads (an ingress gateway's own), so
    /// that a Gateway naming a `credentialName` missing there is warned about; `None` for
    /// processes that read no Secret and so cannot tell.
    pub secrets_namespace: Option<String>,
    /// The namespace of the waypoint or ingress gateway this process is: it applies the
    /// VirtualServices and DestinationRules exported there (`exportTo`). `None` for a
    /// process that applies none of its own (it sees them all).
    pub proxy_namespace: Option<String>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            secrets_namespace: None,
            proxy_namespace: None,
        }
    }
}

impl MeshSettings {
    /// `name.namespace.svc.<cluster domain>`.
    pub fn service_host(&self, name: &str, namespace: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.cluster_domain)
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }
}

/// Istio's rule for hosts in routing rules: a short name (no dot) is a Service of the
/// rule's own namespace; anything with a dot is taken as written.
pub fn qualify(host: &str, namespace: &str, settings: &MeshSettings) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        settings.service_host(host, namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_belong_to_the_rule_namespace() {
        let s = MeshSettings::default();
        assert_eq!(
            qualify("reviews", "bookinfo", &s),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            qualify("reviews.other.svc.cluster.local", "bookinfo", &s),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(qualify("*.example.com", "bookinfo", &s), "*.example.com");
        assert_eq!(
            s.spiffe_id("shop", "web"),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
    }
}
