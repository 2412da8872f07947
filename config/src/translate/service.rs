//! A Service, its Namespace and its EndpointSlices → a registry [`Service`].
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::hosts::MeshSettings;
use super::waypoint;
use crate::api::kubernetes::{self, EndpointSlice};
use crate::api::{DEFAULT_NAMESPACE, labels};
use crate::registry::model::{
    Endpoint, EndpointPort, Service, ServicePort, TargetPort, TrafficDistribution,
};

/// `endpoints`: those of the Service's EndpointSlices ([`endpoints`]), in order.
pub fn service(
    service: &kubernetes::Service,
    namespace_labels: Option<&BTreeMap<String, String>>,
    endpoints: Arc<[Endpoint]>,
    settings: &MeshSettings,
) -> Service {
    let meta = &service.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let service_labels = labels(meta).clone();
    Service {
        hostname: settings.service_host(&name, &namespace),
        vips: vips(&service.spec),
        ports: service.spec.ports.iter().filter_map(service_port).collect(),
        selector: service.spec.selector.clone(),
        endpoints,
        waypoint: waypoint::binding(&service_labels, &namespace, namespace_labels),
        traffic_distribution: traffic_distribution(service),
        labels: service_labels,
        name,
        namespace,
    }
}

/// `service` again after its namespace's labels or its endpoints changed: the waypoint
/// binding (which the namespace's labels decide) and the endpoints anew, the rest as it was.
pub fn rebind(
    service: &Service,
    namespace_labels: Option<&BTreeMap<String, String>>,
    endpoints: Arc<[Endpoint]>,
) -> Service {
    Service {
        name: service.name.clone(),
        namespace: service.namespace.clone(),
        hostname: service.hostname.clone(),
        vips: service.vips.clone(),
        ports: service.ports.clone(),
        selector: service.selector.clone(),
        endpoints,
        waypoint: waypoint::binding(&service.labels, &service.namespace, namespace_labels),
        traffic_distribution: service.traffic_distribution,
        labels: service.labels.clone(),
    }
}

/// Istio's annotation first (it overrides the field, as ztunnel reads them), then
/// `spec.trafficDistribution`. Only `PreferClose` (and Istio's `PreferSameZone`, its newer
/// name) change anything; other values are Kubernetes' default (and warned about).
fn traffic_distribution(service: &kubernetes::Service) -> TrafficDistribution {
    match traffic_distribution_setting(service) {
        Some((_, value)) if prefers_close(value) => TrafficDistribution::PreferClose,
        _ => TrafficDistribution::Any,
    }
}

/// The traffic distribution a Service asks for, and where it says so: Istio's annotation
/// (`true`) or `spec.trafficDistribution` (`false`).
pub fn traffic_distribution_setting(service: &kubernetes::Service) -> Option<(bool, &str)> {
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRAFFIC_DISTRIBUTION_ANNOTATION));
    match annotation {
        Some(value) => Some((true, value.as_str())),
        None => service
            .spec
            .traffic_distribution
            .as_deref()
            .map(|value| (false, value)),
    }
}

/// Whether weft acts on a traffic distribution value: `PreferClose`, or `PreferSameZone`.
pub fn prefers_close(value: &str) -> bool {
    matches!(value, "PreferClose" | "PreferSameZone")
}

/// Istio's annotation for `spec.trafficDistribution` on clusters whose Services lack it.
pub const TRAFFIC_DISTRIBUTION_ANNOTATION: &str = "networking.istio.io/traffic-distribution";

/// ClusterIPs (the list, or the single field of older objects); "None" marks a headless
/// service, which has no VIP.
fn vips(spec: &kubernetes::ServiceSpec) -> Vec<IpAddr> {
    let listed = spec.cluster_ips.iter().map(String::as_str);
    let mut vips: Vec<IpAddr> = Vec::new();
    for ip in spec.cluster_ip.as_deref().into_iter().chain(listed) {
        if let Ok(ip) = ip.parse()
            && !vips.contains(&ip)
        {
            vips.push(ip);
        }
    }
    vips
}

fn service_port(port: &kubernetes::ServicePort) -> Option<ServicePort> {
    let number = u16::try_from(port.port).ok()?;
    let target_port = match &port.target_port {
        None => TargetPort::Number(number),
        Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
        Some(IntOrString::String(s)) => match s.parse::<u16>() {
            Ok(n) => TargetPort::Number(n),
            Err(_) => TargetPort::Name(s.clone()),
        },
    };
    Some(ServicePort {
        name: port.name.clone().filter(|n| !n.is_empty()),
        port: number,
        target_port,
        protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
        app_protocol: port.app_protocol.clone(),
    })
}

/// The endpoints of one EndpointSlice of `namespace`.
pub fn endpoints(slice: &EndpointSlice, namespace: &str) -> Vec<Endpoint> {
    let ports: Arc<[EndpointPort]> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: u16::try_from(p.port?).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect();
    let mut out = Vec::with_capacity(slice.endpoints.len());
    for endpoint in &slice.endpoints {
        let conditions = &endpoint.conditions;
        let target = endpoint
            .target_ref
            .as_ref()
            .filter(|t| t.kind.as_deref().is_none_or(|k| k == "Pod"))
            .and_then(|t| {
                Some((
                    Arc::from(t.namespace.as_deref().unwrap_or(namespace)),
                    Arc::from(t.name.as_deref()?),
                ))
            });
        for address in &endpoint.addresses {
            let Ok(address) = address.parse() else {
                continue;
            };
            out.push(Endpoint {
                address,
                ready: conditions.ready.unwrap_or(true),
                serving: conditions.serving.or(conditions.ready).unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                node: endpoint.node_name.as_deref().map(Arc::from),
                target: target.clone(),
                ports: ports.clone(),
            });
        }
    }
    out
}
