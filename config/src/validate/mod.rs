//! The one place an object is judged before it enters the registry.
//!
//! [`validate`] refuses what Istio (or the API server) would refuse, naming the field
//! path; [`warnings`] reports what is accepted but probably a mistake (a destination that
//! names no known service). Both are pure: the registry, the sources and `weftctl
//! validate` call the same functions.
pub mod cidr;
mod gateway_api;
mod kubernetes;
mod mesh;
mod networking;
mod paths;
mod security;

use std::collections::HashSet;

use crate::api::Object;
use crate::refusal::{FieldIssue, Refusal, Warning};
use crate::translate::hosts::{MeshSettings, qualify};

/// Every reason to refuse `object`; empty when it may enter.
pub fn validate(object: &Object) -> Vec<Refusal> {
    let issues = match object {
        Object::Namespace(_) => Vec::new(),
        Object::Pod(pod) => kubernetes::pod(pod),
        Object::Service(service) => kubernetes::service(service),
        Object::EndpointSlice(slice) => kubernetes::endpoint_slice(slice),
        Object::VirtualService(vs) => networking::virtual_service(&vs.spec),
        Object::DestinationRule(dr) => networking::destination_rule(&dr.spec),
        Object::ServiceEntry(se) => networking::service_entry(&se.spec),
        Object::Gateway(gw) => networking::gateway(&gw.spec),
        Object::AuthorizationPolicy(ap) => security::authorization_policy(&ap.spec),
        Object::PeerAuthentication(pa) => security::peer_authentication(&pa.spec),
        Object::KubernetesGateway(gw) => gateway_api::gateway(gw),
        Object::MeshConfig(config) => mesh::mesh_config(&config.mesh),
        Object::RequestAuthentication(ra) => security::request_authentication(&ra.spec),
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
        Object::VirtualService(vs) => networking::unresolved_destinations(&vs.spec, known),
        Object::DestinationRule(dr) => {
            let host = &dr.spec.host;
            if host.starts_with('*') || known(host) {
                Vec::new()
            } else {
                vec![FieldIssue::new(
                    "spec.host",
                    format!("{host:?} names no known Service or ServiceEntry host"),
                )]
            }
        }
        Object::MeshConfig(config) => mesh::warnings(&object_ref, &config.mesh, settings),
        Object::RequestAuthentication(ra) => security::request_authentication_warnings(&ra.spec),
        _ => Vec::new(),
    };
    issues
        .into_iter()
        .map(|issue| issue.refusal(&object_ref))
        .collect()
}
