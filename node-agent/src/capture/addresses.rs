//! A pod's addresses as capture uses them: at most one per family (Kubernetes gives a pod
//! one IPv4 and/or one IPv6 address, `status.podIPs`), either of which may be absent.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PodIps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl PodIps {
    /// The first address of each family among `ips` (`status.podIPs` order); `None` when
    /// there is none at all. Link-local, loopback and unspecified addresses are no pod's
    /// address and are skipped.
    pub fn from_ips(ips: &[IpAddr]) -> Option<Self> {
        let usable = |ip: &&IpAddr| {
            !ip.is_unspecified()
                && !ip.is_loopback()
                && match ip {
                    IpAddr::V4(v4) => !v4.is_link_local(),
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                }
        };
        let v4 = ips.iter().filter(usable).find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let v6 = ips.iter().filter(usable).find_map(|ip| match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(*v6),
            _ => None,
        });
        (v4.is_some() || v6.is_some()).then_some(Self { v4, v6 })
    }

    /// Every address, IPv4 first.
    pub fn all(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }

    /// The address the pod is known by first (IPv4 in a dual-stack pod).
    pub fn primary(&self) -> IpAddr {
        match (self.v4, self.v6) {
            (Some(v4), _) => IpAddr::V4(v4),
            (None, Some(v6)) => IpAddr::V6(v6),
            // `from_ips` never builds one without an address.
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4 == Some(v4),
            IpAddr::V6(v6) => self.v6 == Some(v6),
        }
    }

    /// The pod's address of `peer`'s family, which a connection to `peer` leaves from (and
    /// so what the pod is on that connection); the primary one when it has none of that
    /// family.
    pub fn facing(&self, peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
        .unwrap_or_else(|| self.primary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn takes_the_first_address_of_each_family() {
        let ips = PodIps::from_ips(&[
            ip("10.244.1.10"),
            ip("fd00:10:244:1::a"),
            ip("10.244.1.99"),
            ip("fd00:10:244:1::63"),
        ])
        .expect("addresses");
        assert_eq!(ips.v4, Some("10.244.1.10".parse().expect("v4")));
        assert_eq!(ips.v6, Some("fd00:10:244:1::a".parse().expect("v6")));
        assert_eq!(ips.all(), [ip("10.244.1.10"), ip("fd00:10:244:1::a")]);
        assert_eq!(ips.primary(), ip("10.244.1.10"));
    }

    #[test]
    fn an_ipv6_only_pod_is_known_by_its_ipv6_address() {
        let ips = PodIps::from_ips(&[ip("fd00:10:244:1::a")]).expect("addresses");
        assert_eq!(ips.v4, None);
        assert_eq!(ips.primary(), ip("fd00:10:244:1::a"));
        assert_eq!(ips.facing(ip("10.96.0.10")), ip("fd00:10:244:1::a"));
    }

    #[test]
    fn no_usable_address_is_no_pod_address() {
        assert_eq!(PodIps::from_ips(&[]), None);
        assert_eq!(
            PodIps::from_ips(&[
                ip("fe80::1"),
                ip("::1"),
                ip("0.0.0.0"),
                ip("::ffff:10.0.0.1")
            ]),
            None
        );
    }

    #[test]
    fn faces_each_peer_with_the_address_of_its_family() {
        let ips = PodIps::from_ips(&[ip("10.244.1.10"), ip("fd00:10:244:1::a")]).expect("ips");
        assert_eq!(ips.facing(ip("10.244.2.11")), ip("10.244.1.10"));
        assert_eq!(ips.facing(ip("fd00:10:244:2::b")), ip("fd00:10:244:1::a"));
        assert!(ips.contains(ip("fd00:10:244:1::a")));
        assert!(!ips.contains(ip("fd00:10:244:1::b")));
        let v4_only = PodIps::from_ips(&[ip("10.244.1.10")]).expect("ips");
        assert_eq!(v4_only.facing(ip("fd00::1")), ip("10.244.1.10"));
    }
}
