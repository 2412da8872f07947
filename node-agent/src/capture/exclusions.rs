//! Outbound traffic a pod keeps out of the mesh, from Istio's annotations.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weft_ebpf_common::{Ipv4Cidr, MAX_EXCLUDED_CIDRS, MAX_EXCLUDED_PORTS, PodCapture, ip6_words};

use super::addresses::PodIps;

pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("annotation {annotation}: {reason}")]
pub struct ExclusionError {
    pub annotation: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub ports: Vec<u16>,
    pub cidrs: Vec<(Ipv4Addr, u8)>,
}

/// Reads the exclusion annotations; a malformed one is refused whole, with the reason.
pub fn from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Exclusions, ExclusionError> {
    let mut exclusions = Exclusions::default();
    if let Some(value) = annotations.get(EXCLUDE_OUTBOUND_PORTS) {
        let error = |reason: String| ExclusionError {
            annotation: EXCLUDE_OUTBOUND_PORTS,
            reason,
        };
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let port: u16 = item
                .parse()
                .map_err(|_| error(format!("{item:?} is not a port number")))?;
            if port == 0 {
                return Err(error("port 0 is not a port".into()));
            }
            exclusions.ports.push(port);
        }
        if exclusions.ports.len() > MAX_EXCLUDED_PORTS {
            return Err(error(format!(
                "at most {MAX_EXCLUDED_PORTS} ports are supported"
            )));
        }
    }
    if let Some(value) = annotations.get(EXCLUDE_OUTBOUND_IP_RANGES) {
        let error = |reason: String| ExclusionError {
            annotation: EXCLUDE_OUTBOUND_IP_RANGES,
            reason,
        };
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, len) = item.split_once('/').unwrap_or((item, "32"));
            let addr: Ipv4Addr = addr
                .parse()
                .map_err(|_| error(format!("{item:?} is not an IPv4 CIDR")))?;
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| error(format!("{item:?} has no valid prefix length")))?;
            exclusions.cidrs.push((addr, len));
        }
        if exclusions.cidrs.len() > MAX_EXCLUDED_CIDRS {
            return Err(error(format!(
                "at most {MAX_EXCLUDED_CIDRS} ranges are supported"
            )));
        }
    }
    Ok(exclusions)
}

impl Exclusions {
    /// The kernel-side form for pod `pod` with addresses `ips`; `loopback_v6`: whether the
    /// agent listens on `[::1]:15001` in the pod.
    pub fn to_capture(&self, pod: u64, ips: &PodIps, loopback_v6: bool) -> PodCapture {
        let mut capture = PodCapture {
            pod,
            ipv6: u32::from(loopback_v6),
            pod_ip: ips.v4.map_or(0, |v4| u32::from(v4).to_be()),
            pod_ip6: ips.v6.map_or([0; 4], |v6| ip6_words(v6.octets())),
            ..PodCapture::default()
        };
        for (slot, port) in capture.exclude_ports.iter_mut().zip(&self.ports) {
            *slot = *port;
        }
        capture.exclude_port_count = self.ports.len().min(MAX_EXCLUDED_PORTS) as u32;
        for (slot, (addr, len)) in capture.exclude_cidrs.iter_mut().zip(&self.cidrs) {
            let mask = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*len))
            };
            *slot = Ipv4Cidr {
                addr: u32::from(*addr).to_be(),
                mask: mask.to_be(),
            };
        }
        capture.exclude_cidr_count = self.cidrs.len().min(MAX_EXCLUDED_CIDRS) as u32;
        capture
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_istio_annotations() {
        let e = from_annotations(&annotations(&[
            (EXCLUDE_OUTBOUND_PORTS, "5432, 6379"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,192.168.1.7"),
        ]))
        .expect("valid");
        assert_eq!(e.ports, [5432, 6379]);
        assert_eq!(
            e.cidrs,
            [
                (Ipv4Addr::new(10, 0, 0, 0), 8),
                (Ipv4Addr::new(192, 168, 1, 7), 32)
            ]
        );
    }

    #[test]
    fn refuses_malformed_values_naming_the_annotation() {
        let err = from_annotations(&annotations(&[(EXCLUDE_OUTBOUND_PORTS, "80,http")]))
            .expect_err("bad port");
        assert_eq!(err.annotation, EXCLUDE_OUTBOUND_PORTS);
        assert!(err.reason.contains("\"http\""), "{err}");
        let err = from_annotations(&annotations(&[(EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33")]))
            .expect_err("bad len");
        assert_eq!(err.annotation, EXCLUDE_OUTBOUND_IP_RANGES);
    }

    #[test]
    fn the_kernel_form_carries_each_family_of_the_pod() {
        let v6: std::net::Ipv6Addr = "fd00:10:244:1::a".parse().expect("v6");
        let dual = PodIps {
            v4: Some(Ipv4Addr::new(10, 244, 1, 10)),
            v6: Some(v6),
        };
        let c = Exclusions::default().to_capture(7, &dual, true);
        let bytes: Vec<u8> = c.pod_ip6.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes, v6.octets(), "the address bytes in network order");
        assert_eq!(c.ipv6, 1);
        let v6_only = PodIps {
            v4: None,
            v6: Some(v6),
        };
        let c = Exclusions::default().to_capture(7, &v6_only, true);
        assert_eq!(c.pod_ip, 0, "connect4 falls back to 127.0.0.1:15001");
    }

    #[test]
    fn kernel_form_matches_addresses_in_network_order() {
        let e = Exclusions {
            ports: vec![5432],
            cidrs: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
        };
        let ips = PodIps {
            v4: Some(Ipv4Addr::new(10, 244, 1, 10)),
            v6: None,
        };
        let c = e.to_capture(7, &ips, false);
        assert_eq!(
            (c.pod, c.exclude_port_count, c.exclude_cidr_count),
            (7, 1, 1)
        );
        assert_eq!(c.pod_ip.to_ne_bytes(), [10, 244, 1, 10]);
        assert_eq!(
            c.pod_ip6, [0; 4],
            "no IPv6 address: connect6 keeps to [::1]"
        );
        let inside = u32::from(Ipv4Addr::new(10, 1, 2, 3)).to_be();
        let outside = u32::from(Ipv4Addr::new(11, 1, 2, 3)).to_be();
        assert!(c.exclude_cidrs[0].contains(inside));
        assert!(!c.exclude_cidrs[0].contains(outside));
    }
}
