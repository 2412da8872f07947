//! The few checks worth making on Kubernetes' own kinds. The API server has validated
//! them already; a hand-written directory (the lab, the demo) has not, and an address
//! that does not parse would silently drop a workload.
use std::net::IpAddr;

use super::paths::{FieldPath, Issues};
use crate::api::kubernetes::{EndpointSlice, Pod, Service};
use crate::refusal::FieldIssue;

pub(super) fn pod(pod: &Pod) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let status = FieldPath::root("status");
    if let Some(ip) = &pod.status.pod_ip {
        address(ip, &status.field("podIP"), &mut issues);
    }
    for (i, ip) in pod.status.pod_ips.iter().enumerate() {
        address(
            &ip.ip,
            &status.field("podIPs").index(i).field("ip"),
            &mut issues,
        );
    }
    issues.into_vec()
}

pub(super) fn service(service: &Service) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let spec = FieldPath::spec();
    if let Some(ip) = &service.spec.cluster_ip
        && ip != "None"
        && !ip.is_empty()
    {
        address(ip, &spec.field("clusterIP"), &mut issues);
    }
    for (i, ip) in service.spec.cluster_ips.iter().enumerate() {
        if ip != "None" {
            address(ip, &spec.field("clusterIPs").index(i), &mut issues);
        }
    }
    for (i, port) in service.spec.ports.iter().enumerate() {
        if !(1..=65535).contains(&port.port) {
            issues.add(
                &spec.field("ports").index(i).field("port"),
                format!("{} is not a port number (1–65535)", port.port),
            );
        }
    }
    issues.into_vec()
}

pub(super) fn endpoint_slice(slice: &EndpointSlice) -> Vec<FieldIssue> {
    // A slice without the kubernetes.io/service-name label (one a custom controller
    // manages) is legitimate: it belongs to no Service, which is not an error.
    let mut issues = Issues::default();
    if matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        for (e, endpoint) in slice.endpoints.iter().enumerate() {
            for (a, ip) in endpoint.addresses.iter().enumerate() {
                address(
                    ip,
                    &FieldPath::root("endpoints")
                        .index(e)
                        .field("addresses")
                        .index(a),
                    &mut issues,
                );
            }
        }
    }
    issues.into_vec()
}

fn address(text: &str, at: &FieldPath, issues: &mut Issues) {
    if text.parse::<IpAddr>().is_err() {
        issues.add(at, format!("{text:?} is not an IP address"));
    }
}
