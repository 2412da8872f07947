//! Analyses of istioctl's that weft's validation does not make (they judge nothing weft
//! applies, they point at likely mistakes): unknown istio.io annotations, mesh
//! VirtualServices claiming the same host, Service port names, TLS origination without
//! caCertificates, DestinationRule subsets that select no pod. Pure: over the accepted
//! objects.
use std::collections::{BTreeMap, BTreeSet};

use weft_config::api::networking::{ClientTlsMode, ClientTlsSettings, DestinationRule};
use weft_config::api::{Object, ObjectRef};
use weft_config::refusal::Origin;
use weft_config::translate::MeshSettings;
use weft_config::translate::hosts::qualify;

use super::message::{self as code, Level, Message, ObjectName};

/// The istio.io annotations weft reads (on pods, Gateways): any other on an object weft
/// reads is reported.
pub const KNOWN_ANNOTATIONS: &[&str] = &[
    "ambient.istio.io/dns-capture",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    // Read by weft-ca's controllers, which say what they do with them.
    "gateway.istio.io/name-override",
    "gateway.istio.io/service-account",
];

/// The protocols Istio (and weft's waypoint) recognise in a port name
/// (`<protocol>[-<suffix>]`).
const PORT_PROTOCOLS: &[&str] = &[
    "grpc", "grpc-web", "h2c", "http", "http2", "https", "mongo", "mysql", "redis", "tcp", "tls",
    "udp",
];

/// How long a waypoint waits for a client's first bytes on a port of no declared protocol.
const SNIFF: &str = "300 ms";

pub fn run(objects: &[(Object, Option<Origin>)], settings: &MeshSettings) -> Vec<Message> {
    let mut out = Vec::new();
    for (object, origin) in objects {
        let origin = origin.as_ref().map(ToString::to_string);
        out.extend(annotations(object, origin.clone()));
        match object {
            Object::Service(service) => {
                for (i, port) in service.spec.ports.iter().enumerate() {
                    if port.app_protocol.is_some()
                        || port_name_follows_convention(port.name.as_deref())
                    {
                        continue;
                    }
                    out.push(Message::new(
                        Level::Info,
                        code::PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
                        Some(name_of(object)),
                        format!("spec.ports[{i}].name"),
                        format!(
                            "port {} is named {:?}, which names no protocol (http, http2, grpc, tcp, …), and has no appProtocol: a waypoint guesses the protocol from the client's first bytes (a server-first protocol waits {SNIFF} for them)",
                            port.port,
                            port.name.as_deref().unwrap_or_default()
                        ),
                        origin.clone(),
                    ));
                }
            }
            Object::DestinationRule(rule) => {
                out.extend(tls_without_ca(object, rule, origin.clone()));
            }
            _ => {}
        }
    }
    out.extend(mesh_host_conflicts(objects, settings));
    out.extend(subsets_without_pods(objects, settings));
    out
}

fn name_of(object: &Object) -> ObjectName {
    let r: ObjectRef = object.object_ref();
    ObjectName {
        kind: r.kind.name().to_string(),
        namespace: r.namespace,
        name: r.name,
    }
}

/// `http`, `http-web`, `grpc-web`, `tcp-db`: a protocol, alone or before a `-`.
pub fn port_name_follows_convention(name: Option<&str>) -> bool {
    let Some(name) = name else { return false };
    let name = name.to_ascii_lowercase();
    PORT_PROTOCOLS.iter().any(|protocol| {
        name == *protocol
            || name
                .strip_prefix(protocol)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

fn annotations(object: &Object, origin: Option<String>) -> Vec<Message> {
    let Some(annotations) = object.meta().annotations.as_ref() else {
        return Vec::new();
    };
    annotations
        .keys()
        .filter(|key| {
            let domain = key.split_once('/').map_or("", |(domain, _)| domain);
            (domain == "istio.io" || domain.ends_with(".istio.io"))
                && !KNOWN_ANNOTATIONS.contains(&key.as_str())
        })
        .map(|key| {
            Message::new(
                Level::Warning,
                code::UNKNOWN_ANNOTATION,
                Some(name_of(object)),
                format!("metadata.annotations[{key:?}]"),
                format!("unknown annotation {key}: weft does not read it"),
                origin.clone(),
            )
        })
        .collect()
}

/// SIMPLE or MUTUAL origination with neither caCertificates nor credentialName, verifying.
fn tls_without_ca(object: &Object, rule: &DestinationRule, origin: Option<String>) -> Vec<Message> {
    let unchecked = |tls: &ClientTlsSettings| {
        matches!(
            tls.mode,
            Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
        ) && tls.ca_certificates.as_deref().is_none_or(str::is_empty)
            && tls.credential_name.as_deref().is_none_or(str::is_empty)
            && tls.insecure_skip_verify != Some(true)
    };
    let mode = |tls: &ClientTlsSettings| match tls.mode {
        Some(ClientTlsMode::Mutual) => "MUTUAL",
        _ => "SIMPLE",
    };
    let text = |tls: &ClientTlsSettings, port: Option<u32>| {
        let at = port.map(|p| format!(" at port {p}")).unwrap_or_default();
        format!(
            "TLS mode {} without caCertificates for host {}{at}: the server is verified against the system's trust roots only",
            mode(tls),
            rule.spec.host
        )
    };
    let mut out = Vec::new();
    let mut levels = Vec::new();
    if let Some(policy) = &rule.spec.traffic_policy {
        levels.push(("spec.trafficPolicy".to_string(), policy));
    }
    for (i, subset) in rule.spec.subsets.iter().enumerate() {
        if let Some(policy) = &subset.traffic_policy {
            levels.push((format!("spec.subsets[{i}].trafficPolicy"), policy));
        }
    }
    for (at, policy) in levels {
        if let Some(tls) = policy.tls.as_ref().filter(|t| unchecked(t)) {
            out.push(Message::new(
                Level::Info,
                code::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                Some(name_of(object)),
                format!("{at}.tls"),
                text(tls, None),
                origin.clone(),
            ));
        }
        for (i, level) in policy.port_level_settings.iter().enumerate() {
            if let Some(tls) = level.tls.as_ref().filter(|t| unchecked(t)) {
                out.push(Message::new(
                    Level::Info,
                    code::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                    Some(name_of(object)),
                    format!("{at}.portLevelSettings[{i}].tls"),
                    text(tls, level.port.as_ref().map(|p| p.number)),
                    origin.clone(),
                ));
            }
        }
    }
    out
}

/// Hosts two or more mesh VirtualServices claim (Istio's IST0109), on each of them.
fn mesh_host_conflicts(
    objects: &[(Object, Option<Origin>)],
    settings: &MeshSettings,
) -> Vec<Message> {
    // Fully qualified host → (VirtualService, field, origin).
    let mut claims: BTreeMap<String, Vec<(ObjectName, String, Option<String>)>> = BTreeMap::new();
    for (object, origin) in objects {
        let Object::VirtualService(vs) = object else {
            continue;
        };
        let mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !mesh {
            continue;
        }
        let namespace = object.object_ref().namespace;
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            claims
                .entry(qualify(host, &namespace, settings))
                .or_default()
                .push((
                    name_of(object),
                    format!("spec.hosts[{i}]"),
                    origin.as_ref().map(ToString::to_string),
                ));
        }
    }
    let mut out = Vec::new();
    for (host, claimants) in claims {
        let names: BTreeSet<String> = claimants.iter().map(|(n, _, _)| n.to_string()).collect();
        if names.len() < 2 {
            continue;
        }
        for (object, field, origin) in &claimants {
            let others: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != object.to_string())
                .collect();
            out.push(Message::new(
                Level::Error,
                code::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                Some(object.clone()),
                field.clone(),
                format!(
                    "host {host} is also claimed by {} for the mesh: merge them into one VirtualService",
                    others.join(", ")
                ),
                origin.clone(),
            ));
        }
    }
    out
}

/// Subsets of a DestinationRule on a Service's host whose labels select none of the
/// Service's pods, when the objects hold some of its pods (files of Deployments hold none:
/// nothing is said then).
fn subsets_without_pods(
    objects: &[(Object, Option<Origin>)],
    settings: &MeshSettings,
) -> Vec<Message> {
    let selects = |selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let mut out = Vec::new();
    for (object, origin) in objects {
        let Object::DestinationRule(rule) = object else {
            continue;
        };
        let namespace = object.object_ref().namespace;
        let host = qualify(&rule.spec.host, &namespace, settings);
        let service = objects.iter().find_map(|(o, _)| match o {
            Object::Service(s) => {
                let r = o.object_ref();
                (settings.service_host(&r.name, &r.namespace) == host).then_some((s, r))
            }
            _ => None,
        });
        let Some((service, service_ref)) = service else {
            continue;
        };
        let Some(selector) = service.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let pods: Vec<BTreeMap<String, String>> = objects
            .iter()
            .filter_map(|(o, _)| match o {
                Object::Pod(_) if o.object_ref().namespace == service_ref.namespace => {
                    Some(o.meta().labels.clone().unwrap_or_default())
                }
                _ => None,
            })
            .filter(|labels| selects(selector, labels))
            .collect();
        if pods.is_empty() {
            continue;
        }
        for (i, subset) in rule.spec.subsets.iter().enumerate() {
            if !pods.iter().any(|labels| selects(&subset.labels, labels)) {
                out.push(Message::new(
                    Level::Error,
                    code::DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                    Some(name_of(object)),
                    format!("spec.subsets[{i}].labels"),
                    format!(
                        "subset {} selects none of the {} pod(s) of Service {}/{}: requests routed to it fail with 503",
                        subset.name,
                        pods.len(),
                        service_ref.namespace,
                        service_ref.name
                    ),
                    origin.as_ref().map(ToString::to_string),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::port_name_follows_convention as follows;

    #[test]
    fn port_names_follow_istios_convention() {
        for name in ["http", "http-web", "grpc-web", "HTTP2", "tcp-db", "tls"] {
            assert!(follows(Some(name)), "{name}");
        }
        for name in ["web", "httpx", "metrics", ""] {
            assert!(!follows(Some(name)), "{name}");
        }
        assert!(!follows(None));
    }
}
