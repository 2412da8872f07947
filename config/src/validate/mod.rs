//! The one place an object is judged before it enters the registry.
//!
//! [`validate`] refuses what Istio (or the API server) would refuse, naming the field
//! path; [`warnings`] reports what is accepted but probably a mistake (a destination that
//! names no known service). Both are pure: the registry, the sources and `weftctl
//! validate` call the same functions.
pub mod cidr;
pub mod gateway;
mod gateway_api;
mod gateway_routes;
mod kubernetes;
mod mesh;
mod mesh_access_log;
mod mesh_tracing;
mod networking;
pub use networking::delegate_warnings;
mod paths;
mod security;
mod telemetry;

use std::collections::HashSet;

use crate::api::Object;
use crate::refusal::{FieldIssue, Refusal, Warning};
use crate::translate::hosts::{MeshSettings, qualify};

/// Every reason to refuse `object`; empty when it may enter.
pub fn validate(object: &Object) -> Vec<Refusal> {
    let issues = match object {
        Object::Namespace(_) | Object::Node(_) => Vec::new(),
        Object::Pod(pod) => kubernetes::pod(pod),
        Object::Service(service) => kubernetes::service(service),
        Object::EndpointSlice(slice) => kubernetes::endpoint_slice(slice),
        Object::VirtualService(vs) => networking::virtual_service(&vs.spec),
        Object::DestinationRule(dr) => networking::destination_rule(&dr.spec),
        Object::ServiceEntry(se) => networking::service_entry(&se.spec),
        Object::Gateway(gw) => gateway::gateway(&gw.spec),
        Object::AuthorizationPolicy(ap) => security::authorization_policy(&ap.spec),
        Object::PeerAuthentication(pa) => security::peer_authentication(&pa.spec),
        Object::KubernetesGateway(gw) => gateway_api::gateway(gw),
        Object::MeshConfig(config) => mesh::mesh_config(&config.mesh),
        Object::RequestAuthentication(ra) => security::request_authentication(&ra.spec),
        Object::HttpRoute(route) => gateway_routes::http_route(&route.spec),
        Object::GrpcRoute(route) => gateway_routes::grpc_route(&route.spec),
        Object::TlsRoute(route) => gateway_routes::tls_route(&route.spec),
        Object::TcpRoute(route) => gateway_routes::tcp_route(&route.spec),
        Object::ReferenceGrant(grant) => gateway_routes::reference_grant(&grant.spec),
        Object::Secret(secret) => gateway::secret(secret),
        Object::Telemetry(t) => telemetry::telemetry(&t.spec),
    };
    let object_ref = object.object_ref();
    issues
        .into_iter()
        .map(|issue| issue.refusal(&object_ref))
        .collect()
}

/// Hostnames routes may send to: Services (`name.ns.svc.<domain>`) and ServiceEntry hosts,
/// which may be wildcards (`*.example.com`).
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    exact: HashSet<String>,
    wildcard_suffixes: Vec<String>,
}

impl KnownHosts {
    pub fn insert(&mut self, host: &str) {
        match host.strip_prefix('*') {
            Some(suffix) => self.wildcard_suffixes.push(suffix.to_string()),
            None => {
                self.exact.insert(host.to_string());
            }
        }
    }

    pub fn contains(&self, host: &str) -> bool {
        self.exact.contains(host)
            || self
                .wildcard_suffixes
                .iter()
                .any(|suffix| host.ends_with(suffix.as_str()))
    }

    /// The hosts named by a set of objects (what `weftctl validate` knows offline).
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = &'a Object>,
        domain: &MeshSettings,
    ) -> Self {
        let mut hosts = Self::default();
        for object in objects {
            match object {
                Object::Service(_) => {
                    let r = object.object_ref();
                    hosts.insert(&domain.service_host(&r.name, &r.namespace));
                }
                Object::ServiceEntry(se) => {
                    for host in &se.spec.hosts {
                        hosts.insert(host);
                    }
                }
                _ => {}
            }
        }
        hosts
    }
}

/// Accepted but doubtful, or accepted and not acted on: route destinations and
/// DestinationRule hosts that name no Service or ServiceEntry host (`is_known` answers for
/// fully qualified hosts); mesh config fields weft does not act on; RequestAuthentications
/// no waypoint applies.
pub fn warnings(
    object: &Object,
    is_known: &dyn Fn(&str) -> bool,
    settings: &MeshSettings,
) -> Vec<Warning> {
    let object_ref = object.object_ref();
    let known = |host: &str| is_known(&qualify(host, &object_ref.namespace, settings));
    let issues = match object {
        Object::VirtualService(vs) => {
            let mut issues = networking::unresolved_destinations(&vs.spec, known);
            issues.extend(networking::virtual_service_ignored(&vs.spec));
            issues
        }
        Object::DestinationRule(dr) => {
            let host = &dr.spec.host;
            let mut issues = if host.starts_with('*') || known(host) {
                Vec::new()
            } else {
                vec![FieldIssue::new(
                    "spec.host",
                    format!("{host:?} names no known Service or ServiceEntry host"),
                )]
            };
            issues.extend(networking::destination_rule_tls_warnings(&dr.spec));
            issues.extend(networking::destination_rule_ignored(&dr.spec));
            issues
        }
        Object::MeshConfig(config) => {
            mesh::warnings(&object_ref, &config.mesh, settings, &|host| is_known(host))
        }
        Object::RequestAuthentication(ra) => security::request_authentication_warnings(&ra.spec),
        Object::HttpRoute(route) => gateway_routes::http_route_warnings(&route.spec),
        Object::GrpcRoute(route) => gateway_routes::grpc_route_warnings(&route.spec),
        Object::TlsRoute(route) => gateway_routes::stream_route_warnings(
            &route.spec.parent_refs,
            &route.spec.rules,
            route.spec.use_default_gateways.is_some(),
        ),
        Object::TcpRoute(route) => gateway_routes::stream_route_warnings(
            &route.spec.parent_refs,
            &route.spec.rules,
            route.spec.use_default_gateways.is_some(),
        ),
        Object::Gateway(gw) => gateway::gateway_warnings(&gw.spec),
        Object::ServiceEntry(se) => networking::service_entry_ignored(&se.spec),
        Object::Service(service) => kubernetes::service_warnings(service),
        Object::Telemetry(t) => telemetry::telemetry_warnings(&t.spec),
        _ => Vec::new(),
    };
    issues
        .into_iter()
        .map(|issue| issue.refusal(&object_ref))
        .collect()
}

/// Whether a host, a Service or a ServiceEntry sends its traffic through a waypoint
/// (`istio.io/use-waypoint` on it or its namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Waypoint,
    /// Known, and bound to no waypoint: `kind` is `Service` or `ServiceEntry`.
    NoWaypoint {
        kind: &'static str,
    },
    /// Not known here (other warnings name it).
    Unknown,
}

/// What the waypoint warnings need to know of the cluster (the registry's snapshot, or the
/// files `weftctl validate` reads).
pub trait Bindings {
    /// A fully qualified host: a Service's or a ServiceEntry's.
    fn host(&self, host: &str) -> Binding;
    fn service(&self, namespace: &str, name: &str) -> Binding;
    fn entry(&self, namespace: &str, name: &str) -> Binding;
    /// Whether a VirtualService bound to an Istio Gateway routes to `host` (fully
    /// qualified): its DestinationRule then applies at that gateway.
    fn gateway_routed(&self, host: &str) -> bool;
}

/// The fully qualified destination hosts of a VirtualService's routes and mirrors.
pub fn destination_hosts(
    spec: &crate::api::networking::VirtualServiceSpec,
    namespace: &str,
    settings: &MeshSettings,
) -> Vec<String> {
    let found = std::cell::RefCell::new(Vec::new());
    networking::unresolved_destinations(spec, |host| {
        found.borrow_mut().push(qualify(host, namespace, settings));
        true
    });
    found.into_inner()
}

/// The advice for rules on a host no waypoint serves.
pub const NO_WAYPOINT: &str = "L7 rules apply only through a waypoint: label the";

/// Rules and policies that only a waypoint applies, on a host, Service or ServiceEntry
/// that has none: a mesh VirtualService's hosts, a DestinationRule's host (unless a
/// VirtualService bound to an Istio Gateway routes there: the gateway applies it), an
/// AuthorizationPolicy's `targetRefs` to a Service or ServiceEntry (which then fails
/// closed: see `translate::policy::unenforceable_targets`).
pub fn waypoint_warnings(
    object: &Object,
    bindings: &dyn Bindings,
    settings: &MeshSettings,
) -> Vec<Warning> {
    let object_ref = object.object_ref();
    let namespace = object_ref.namespace.as_str();
    let advice = |kind: &str| format!("{NO_WAYPOINT} {kind} istio.io/use-waypoint");
    let mut issues = Vec::new();
    match object {
        Object::VirtualService(vs) => {
            // Bound to Istio Gateways: the gateway applies it.
            if vs.spec.gateways.iter().any(|g| g != "mesh") {
                return Vec::new();
            }
            for (i, host) in vs.spec.hosts.iter().enumerate() {
                if host.starts_with('*') {
                    continue;
                }
                if let Binding::NoWaypoint { kind } =
                    bindings.host(&qualify(host, namespace, settings))
                {
                    issues.push(FieldIssue::new(
                        format!("spec.hosts[{i}]"),
                        format!("{host:?} has no waypoint: {}", advice(kind)),
                    ));
                }
            }
        }
        Object::DestinationRule(dr) => {
            let host = &dr.spec.host;
            let qualified = qualify(host, namespace, settings);
            if !host.starts_with('*')
                && !bindings.gateway_routed(&qualified)
                && let Binding::NoWaypoint { kind } = bindings.host(&qualified)
            {
                issues.push(FieldIssue::new(
                    "spec.host",
                    format!("{host:?} has no waypoint: {}", advice(kind)),
                ));
            }
        }
        Object::AuthorizationPolicy(policy) => {
            let (field, refs): (&str, Vec<_>) = if policy.spec.target_refs.is_empty() {
                ("spec.targetRef", policy.spec.target_ref.iter().collect())
            } else {
                ("spec.targetRefs", policy.spec.target_refs.iter().collect())
            };
            let single = field == "spec.targetRef";
            for (t, target) in refs.into_iter().enumerate() {
                let binding = match (target.group.as_str(), target.kind.as_str()) {
                    ("" | "core", "Service") => bindings.service(namespace, &target.name),
                    ("networking.istio.io", "ServiceEntry") => {
                        bindings.entry(namespace, &target.name)
                    }
                    _ => continue,
                };
                if let Binding::NoWaypoint { kind } = binding {
                    let at = if single {
                        field.to_string()
                    } else {
                        format!("{field}[{t}]")
                    };
                    let effect = if policy.spec.effective_action()
                        == crate::api::security::Action::Deny
                        || policy.spec.effective_action() == crate::api::security::Action::Audit
                    {
                        "the policy has no effect"
                    } else {
                        "the agent refuses every connection to its workloads until it has one \
                         (fail closed)"
                    };
                    issues.push(FieldIssue::new(
                        at,
                        format!(
                            "{kind} {namespace}/{} has no waypoint, so this policy cannot be \
                             applied: {effect}; {}",
                            target.name,
                            advice(kind)
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    issues
        .into_iter()
        .map(|issue| issue.refusal(&object_ref))
        .collect()
}

/// ServiceEntry addresses another object already claims (`entries` oldest first): a single
/// address or block overlapping an older entry's (connections to it go to the older entry's
/// host), or a Service's ClusterIP (`service_at` names the Service; it wins). Warned about
/// on the younger entry, at `spec.addresses[i]`.
pub fn address_overlaps(
    entries: &[std::sync::Arc<crate::api::networking::ServiceEntry>],
    service_at: &dyn Fn(std::net::IpAddr) -> Option<String>,
) -> Vec<(crate::api::ObjectRef, Vec<Warning>)> {
    use cidr::in_block;
    let mut claimed: Vec<(std::net::IpAddr, u8, crate::api::ObjectRef)> = Vec::new();
    let mut out = Vec::new();
    for entry in entries {
        let object_ref = crate::api::ObjectRef::new(
            crate::api::Kind::ServiceEntry,
            entry.metadata.namespace.as_deref().unwrap_or_default(),
            entry.metadata.name.as_deref().unwrap_or_default(),
        );
        let mut issues = Vec::new();
        for (i, address) in entry.spec.addresses.iter().enumerate() {
            let Ok((ip, prefix)) = cidr::parse(address) else {
                continue;
            };
            let field = format!("spec.addresses[{i}]");
            let single = prefix == if ip.is_ipv4() { 32 } else { 128 };
            if single && let Some(service) = service_at(ip) {
                issues.push(FieldIssue::new(
                    field.clone(),
                    format!(
                        "{address} is the ClusterIP of Service {service}: connections to it \
                         go to the Service"
                    ),
                ));
            }
            let older = claimed.iter().find(|(other, other_prefix, owner)| {
                *owner != object_ref && in_block(ip, *other, prefix.min(*other_prefix))
            });
            if let Some((_, _, owner)) = older {
                issues.push(FieldIssue::new(
                    field,
                    format!(
                        "{address} overlaps an address of ServiceEntry {}/{}: connections to \
                         the addresses both claim go to the older entry's hosts",
                        owner.namespace, owner.name
                    ),
                ));
            }
            claimed.push((ip, prefix, object_ref.clone()));
        }
        if !issues.is_empty() {
            out.push((
                object_ref.clone(),
                issues
                    .into_iter()
                    .map(|issue| issue.refusal(&object_ref))
                    .collect(),
            ));
        }
    }
    out
}

/// What an AuthorizationPolicy's CUSTOM action cannot do with the mesh config in force:
/// a provider the mesh config does not define, or one that is not an ext-authz provider
/// (the requests its rules match are denied, as Istio denies them); an HTTP provider on a
/// policy with a `selector`, which the node agent enforces on connections, where no HTTP
/// request can be checked (those connections are refused).
pub fn policy_warnings(
    policy: &crate::api::security::AuthorizationPolicy,
    mesh: &crate::api::mesh::MeshConfig,
) -> Vec<Warning> {
    use crate::api::security::Action;
    let spec = &policy.spec;
    let mut issues = Vec::new();
    if spec.effective_action() == Action::Custom
        && let Some(provider) = &spec.provider
    {
        match crate::authz::ext_authz::provider_settings(mesh, &provider.name) {
            Err(reason) => issues.push(FieldIssue::new(
                "spec.provider.name",
                format!("{reason}: the requests this policy's rules match are denied"),
            )),
            Ok(settings)
                if spec.selector.is_some()
                    && matches!(settings.protocol, weft_core::ext_authz::Protocol::Http(_)) =>
            {
                issues.push(FieldIssue::new(
                    "spec.provider.name",
                    format!(
                        "{} is an HTTP provider: with a selector the node agent enforces this \
                         policy on connections, which an HTTP service cannot check; the \
                         connections its rules match are refused (attach it to a waypoint \
                         with targetRefs to check requests)",
                        provider.name
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    let object_ref = crate::api::ObjectRef::new(
        crate::api::Kind::AuthorizationPolicy,
        policy.metadata.namespace.as_deref().unwrap_or_default(),
        policy.metadata.name.as_deref().unwrap_or_default(),
    );
    issues
        .into_iter()
        .map(|issue| issue.refusal(&object_ref))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::mesh::MeshConfig;

    #[test]
    fn overlapping_service_entry_addresses_are_named_on_the_younger_entry() {
        let entry = |name: &str,
                     addresses: &str|
         -> std::sync::Arc<crate::api::networking::ServiceEntry> {
            std::sync::Arc::new(
                serde_yaml::from_str(&format!(
                    "metadata: {{name: {name}, namespace: shop}}\nspec: {{hosts: [{name}.example.com], addresses: [{addresses}]}}"
                ))
                .expect("a ServiceEntry"),
            )
        };
        let entries = vec![
            entry("a", "192.0.2.0/24"),
            entry("b", "192.0.2.7"),
            entry("c", "198.51.100.1, 10.96.0.10"),
        ];
        let found = address_overlaps(&entries, &|ip| {
            (ip.to_string() == "10.96.0.10").then(|| "shop/web".to_string())
        });
        let named: Vec<(String, Vec<String>)> = found
            .iter()
            .map(|(o, w)| (o.name.clone(), w.iter().map(|w| w.field.clone()).collect()))
            .collect();
        assert_eq!(
            named,
            [
                ("b".to_string(), vec!["spec.addresses[0]".to_string()]),
                ("c".to_string(), vec!["spec.addresses[1]".to_string()]),
            ]
        );
        assert!(
            found[0].1[0].reason.contains("shop/a"),
            "{}",
            found[0].1[0].reason
        );
    }
    use crate::api::security::AuthorizationPolicy;

    #[test]
    fn custom_policies_are_checked_against_the_mesh_config() {
        let mesh: MeshConfig = serde_yaml::from_str(
            "extensionProviders:\n- name: grpc\n  envoyExtAuthzGrpc: {service: a.foo.svc.cluster.local, port: 9000}\n- name: http\n  envoyExtAuthzHttp: {service: a.foo.svc.cluster.local, port: 8000}\n",
        )
        .expect("mesh config");
        let policy = |provider: &str, selector: bool| -> AuthorizationPolicy {
            let selector = if selector {
                "  selector: {matchLabels: {app: a}}\n"
            } else {
                ""
            };
            serde_yaml::from_str(&format!(
                "kind: AuthorizationPolicy\nmetadata: {{name: ext, namespace: foo}}\nspec:\n{selector}  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules: [{{}}]\n"
            ))
            .expect("policy")
        };
        assert!(policy_warnings(&policy("grpc", true), &mesh).is_empty());
        assert!(policy_warnings(&policy("http", false), &mesh).is_empty());
        let unknown = policy_warnings(&policy("opa", false), &mesh);
        assert_eq!(unknown[0].field, "spec.provider.name");
        assert!(
            unknown[0].reason.contains("denied"),
            "{}",
            unknown[0].reason
        );
        let http_on_selector = policy_warnings(&policy("http", true), &mesh);
        assert!(
            http_on_selector[0].reason.contains("refused"),
            "{}",
            http_on_selector[0].reason
        );
    }
}
