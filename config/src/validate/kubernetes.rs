//! The few checks worth making on Kubernetes' own kinds. The API server has validated
//! them already; a hand-written directory (the lab, the demo) has not, and an address
//! that does not parse would silently drop a workload.
use std::net::IpAddr;

use super::paths::{FieldPath, Issues};
use crate::api::kubernetes::{EndpointSlice, Pod, Service};
use crate::refusal::FieldIssue;
use crate::translate::service::{
    TRAFFIC_DISTRIBUTION_ANNOTATION, prefers_close, traffic_distribution_setting,
};

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

/// A traffic distribution weft does not act on (`PreferSameNode`, a misspelling): the
/// agent then balances over every endpoint, as Kubernetes' default.
pub(super) fn service_warnings(service: &Service) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    if let Some((annotated, value)) = traffic_distribution_setting(service)
        && !prefers_close(value)
    {
        let at = if annotated {
            FieldPath::root("metadata")
                .field("annotations")
                .key(TRAFFIC_DISTRIBUTION_ANNOTATION)
        } else {
            FieldPath::spec().field("trafficDistribution")
        };
        issues.add(
            &at,
            format!(
                "{value:?} is not acted on by weft: connections go to endpoints in any zone \
                 (only PreferClose and PreferSameZone keep them close)"
            ),
        );
    }
    issues.into_vec()
}

pub(super) fn endpoint_slice(slice: &EndpointSlice) -> Vec<FieldIssue> {
    // A slice without the kubernetes.io/service-name label (one a custom controller
    // manages) is legitimate: it belongs to no Service, which is not an error.
    // An address must be of the slice's family, as the API server requires: consumers pick
    // a ClusterIP's endpoints by family (an IPv6 ClusterIP leads to the IPv6 slices).
    let mut issues = Issues::default();
    let ipv6 = match slice.address_type.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        _ => return issues.into_vec(),
    };
    for (e, endpoint) in slice.endpoints.iter().enumerate() {
        for (a, text) in endpoint.addresses.iter().enumerate() {
            let at = FieldPath::root("endpoints")
                .index(e)
                .field("addresses")
                .index(a);
            match text.parse::<IpAddr>() {
                Err(_) => issues.add(&at, format!("{text:?} is not an IP address")),
                Ok(ip) if ip.is_ipv6() != ipv6 => issues.add(
                    &at,
                    format!(
                        "{text} is not an address of the slice's addressType {}",
                        slice.address_type
                    ),
                ),
                Ok(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kubernetes::Endpoint;

    fn distributed(field: Option<&str>, annotation: Option<&str>) -> Service {
        let mut service = Service::default();
        service.spec.traffic_distribution = field.map(str::to_string);
        if let Some(value) = annotation {
            service.metadata.annotations = Some(
                [(
                    TRAFFIC_DISTRIBUTION_ANNOTATION.to_string(),
                    value.to_string(),
                )]
                .into_iter()
                .collect(),
            );
        }
        service
    }

    #[test]
    fn a_traffic_distribution_weft_does_not_act_on_is_warned_about() {
        let fields = |s: &Service| -> Vec<String> {
            service_warnings(s).into_iter().map(|i| i.field).collect()
        };
        assert!(fields(&distributed(Some("PreferClose"), None)).is_empty());
        assert!(fields(&distributed(None, Some("PreferSameZone"))).is_empty());
        assert!(fields(&distributed(None, None)).is_empty());
        assert_eq!(
            fields(&distributed(Some("PreferSameNode"), None)),
            ["spec.trafficDistribution"]
        );
        // The annotation wins over the field, and is the one named.
        assert_eq!(
            fields(&distributed(Some("PreferClose"), Some("PerferClose"))),
            ["metadata.annotations[\"networking.istio.io/traffic-distribution\"]"]
        );
    }

    fn slice(address_type: &str, addresses: &[&str]) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            endpoints: vec![Endpoint {
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_slice_addresses_are_of_the_slice_s_family() {
        assert!(endpoint_slice(&slice("IPv6", &["fd00:10:244:1::a"])).is_empty());
        assert!(endpoint_slice(&slice("IPv4", &["10.244.1.10"])).is_empty());
        let mixed = endpoint_slice(&slice("IPv4", &["10.244.1.10", "fd00:10:244:1::a"]));
        assert_eq!(mixed.len(), 1, "{mixed:?}");
        assert_eq!(mixed[0].field.to_string(), "endpoints[0].addresses[1]");
        assert!(mixed[0].reason.contains("addressType IPv4"), "{mixed:?}");
        assert_eq!(endpoint_slice(&slice("IPv6", &["10.244.1.10"])).len(), 1);
        assert!(
            endpoint_slice(&slice("FQDN", &["example.com"])).is_empty(),
            "FQDN slices hold names"
        );
    }
}
