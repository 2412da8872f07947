//! ServiceEntries → the registry's [`EntryHost`]s, one per host, with the addresses clients
//! dial: the entry's own, or one allocated here for hosts that have none.
//!
//! Istio's istiod allocates such addresses from 240.240.0.0/16 and writes them into the
//! entry's status (`status.addresses`), so they survive restarts. weft has no controller
//! writing status; every process (agents, waypoints) derives the same addresses from the
//! same objects instead: each eligible host (resolution not NONE, no `addresses`, not a
//! wildcard, not opted out with `networking.istio.io/enable-autoallocate-ip: "false"`, as
//! Istio decides) gets the address its `namespace/name/host` hashes to, the next free one
//! when that is taken. Entries are taken oldest first (creation time, then namespace and
//! name), so a new entry never moves an older one's address, and a restart gives every
//! host the address it had. Deleting an entry can move a younger entry that had collided
//! with it (one chance in about 65 000 per pair): clients that cached the old answer then
//! reach nothing until they ask again.
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::waypoint;
use crate::api::networking::{Resolution, ServiceEntry};
use crate::api::{DEFAULT_NAMESPACE, labels};
use crate::registry::model::{EntryEndpoint, EntryHost, EntryPort};
use crate::validate;

/// Istio's label that opts a ServiceEntry out of address allocation.
pub const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// The block allocated addresses come from (Istio's default `IP_AUTOALLOCATE_IPV4_PREFIX`).
pub const AUTO_ALLOCATE_BLOCK: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

pub use crate::validate::cidr::in_block;

/// Whether `ip` is one the registry may allocate to a ServiceEntry host.
pub fn is_auto_allocated(ip: IpAddr) -> bool {
    in_block(ip, IpAddr::V4(AUTO_ALLOCATE_BLOCK.0), AUTO_ALLOCATE_BLOCK.1)
}

/// Whether Istio would allocate addresses for `entry`'s hosts.
fn allocates(entry: &ServiceEntry) -> bool {
    let opted_out = labels(&entry.metadata)
        .get(AUTOALLOCATE_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    entry.spec.resolution.unwrap_or_default() != Resolution::None
        && entry.spec.addresses.is_empty()
        && !opted_out
}

/// FNV-1a: a stable hash (the standard library's is seeded per process).
fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Hands out addresses of 240.240.0.0/16 (the network and broadcast addresses excluded).
#[derive(Default)]
struct Allocator {
    taken: HashSet<u32>,
}

impl Allocator {
    const SIZE: u32 = (1 << 16) - 2;

    fn allocate(&mut self, key: &str) -> Option<Ipv4Addr> {
        let base = u32::from(AUTO_ALLOCATE_BLOCK.0);
        let start = fnv1a(key) % Self::SIZE;
        (0..Self::SIZE)
            .map(|step| base + 1 + (start + step) % Self::SIZE)
            .find(|candidate| self.taken.insert(*candidate))
            .map(Ipv4Addr::from)
    }
}

/// Every host of `entries` (in any order), with its addresses and its waypoint binding
/// (`namespace_labels` answers for an entry's namespace).
pub fn entry_hosts<'a>(
    entries: impl IntoIterator<Item = &'a Arc<ServiceEntry>>,
    namespace_labels: &dyn Fn(&str) -> Option<&'a BTreeMap<String, String>>,
) -> Vec<Arc<EntryHost>> {
    let mut entries: Vec<&Arc<ServiceEntry>> = entries.into_iter().collect();
    entries.sort_by(|a, b| super::routes::age_order(&a.metadata, &b.metadata));
    let mut allocator = Allocator::default();
    let mut hosts = Vec::new();
    for entry in entries {
        let spec = &entry.spec;
        let name = entry.metadata.name.clone().unwrap_or_default();
        let namespace = entry
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let mut vips = Vec::new();
        let mut blocks = Vec::new();
        for address in &spec.addresses {
            match validate::cidr::parse(address) {
                Ok((ip, prefix)) if prefix == if ip.is_ipv4() { 32 } else { 128 } => vips.push(ip),
                Ok(block) => blocks.push(block),
                // Refused by validation before it gets here.
                Err(_) => {}
            }
        }
        let ports: Vec<EntryPort> = spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(EntryPort {
                    number: u16::try_from(p.number).ok()?,
                    name: p.name.clone(),
                    protocol: p.protocol.clone().unwrap_or_default().to_ascii_uppercase(),
                    target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
                })
            })
            .collect();
        let endpoints: Vec<EntryEndpoint> = spec
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(EntryEndpoint {
                    address: e.address.clone().filter(|a| !a.is_empty())?,
                    ports: e
                        .ports
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
                        .collect(),
                    labels: e.labels.clone(),
                })
            })
            .collect();
        let own_labels = labels(&entry.metadata);
        let binding = waypoint::binding(own_labels, &namespace, namespace_labels(&namespace));
        let allocate = allocates(entry);
        for host in &spec.hosts {
            let mut host_vips = vips.clone();
            let auto_allocated = allocate && !host.starts_with('*');
            if auto_allocated
                && let Some(ip) = allocator.allocate(&format!("{namespace}/{name}/{host}"))
            {
                host_vips.push(IpAddr::V4(ip));
            }
            hosts.push(Arc::new(EntryHost {
                host: host.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                vips: host_vips,
                auto_allocated,
                blocks: blocks.clone(),
                ports: ports.clone(),
                location: spec.location.unwrap_or_default(),
                resolution: spec.resolution.unwrap_or_default(),
                endpoints: endpoints.clone(),
                workload_selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
                export_to: spec.export_to.clone(),
                waypoint: binding.clone(),
            }));
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(yaml: &str) -> Vec<Arc<ServiceEntry>> {
        yaml.split("\n---\n")
            .map(|doc| Arc::new(serde_yaml::from_str(doc).expect("a ServiceEntry")))
            .collect()
    }

    fn hosts(yaml: &str) -> Vec<Arc<EntryHost>> {
        entries_hosts(&entries(yaml))
    }

    fn entries_hosts(list: &[Arc<ServiceEntry>]) -> Vec<Arc<EntryHost>> {
        entry_hosts(list, &|_| None)
    }

    const TWO: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: time, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {hosts: [time.jsontest.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: shop, creationTimestamp: '2026-01-02T00:00:00Z', labels: {istio.io/use-waypoint: egress}}\nspec: {hosts: [db.example.com, '*.example.org'], addresses: [192.0.2.10, 198.51.100.0/24], ports: [{number: 5432, name: tcp-pg}], resolution: STATIC, endpoints: [{address: 192.0.2.11, ports: {tcp-pg: 15432}}]}";

    #[test]
    fn hosts_without_addresses_get_one_from_the_allocation_block() {
        let h = hosts(TWO);
        assert_eq!(h.len(), 3);
        let time = &h[0];
        assert!(time.auto_allocated);
        assert_eq!(time.vips.len(), 1);
        assert!(is_auto_allocated(time.vips[0]), "{:?}", time.vips);
        assert_ne!(time.vips[0], "240.240.0.0".parse::<IpAddr>().expect("ip"));
        let db = &h[1];
        assert!(
            !db.auto_allocated,
            "declared addresses are used as they are"
        );
        assert_eq!(db.vips, ["192.0.2.10".parse::<IpAddr>().expect("ip")]);
        assert!(db.has_address("198.51.100.7".parse().expect("ip")));
        assert!(!db.has_address("198.51.101.7".parse().expect("ip")));
        assert_eq!(
            db.waypoint.as_ref().map(|w| w.name.as_str()),
            Some("egress")
        );
        assert_eq!(db.endpoint_port(5432, db.endpoints.first()), Some(15432));
        assert_eq!(db.endpoint_port(5432, None), Some(5432));
        assert_eq!(db.endpoint_port(80, None), None);
    }

    #[test]
    fn allocation_is_stable_and_older_entries_keep_their_addresses() {
        let list = entries(TWO);
        let first = entries_hosts(&list);
        let reversed: Vec<_> = list.iter().rev().cloned().collect();
        assert_eq!(
            first,
            entries_hosts(&reversed),
            "independent of the order given"
        );
        // A younger entry whose host hashes to the same address takes the next one.
        let mut allocator = Allocator::default();
        let a = allocator.allocate("shop/time/time.jsontest.com");
        assert_eq!(a.map(IpAddr::V4), Some(first[0].vips[0]));
        let mut again = Allocator::default();
        again.taken.insert(u32::from(a.expect("allocated")));
        let b = again.allocate("shop/time/time.jsontest.com");
        assert_ne!(a, b);
        assert_eq!(
            b.map(u32::from),
            a.map(|a| 0xf0f0_0001 + (u32::from(a) - 0xf0f0_0001 + 1) % Allocator::SIZE)
        );
    }

    #[test]
    fn no_allocation_for_none_resolution_wildcards_or_an_opt_out() {
        let h = hosts(
            "metadata: {name: a, namespace: x}\nspec: {hosts: [a.example.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}\n---\nmetadata: {name: b, namespace: x, labels: {networking.istio.io/enable-autoallocate-ip: 'False'}}\nspec: {hosts: [b.example.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS}\n---\nmetadata: {name: c, namespace: x}\nspec: {hosts: ['*.example.com'], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS, endpoints: [{address: proxy.example.com}]}",
        );
        assert!(h.iter().all(|h| h.vips.is_empty()), "{h:?}");
    }

    #[test]
    fn export_to_decides_who_sees_a_host() {
        let h = hosts(
            "metadata: {name: a, namespace: shop}\nspec: {hosts: [a.example.com], exportTo: ['.', audit]}\n---\nmetadata: {name: b, namespace: shop}\nspec: {hosts: [b.example.com], exportTo: ['~']}\n---\nmetadata: {name: c, namespace: shop}\nspec: {hosts: [c.example.com]}",
        );
        assert!(h[0].visible_to("shop") && h[0].visible_to("audit") && !h[0].visible_to("web"));
        assert!(!h[1].visible_to("shop"));
        assert!(h[2].visible_to("web"));
    }

    #[test]
    fn blocks_match_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(in_block(ip("10.1.2.3"), ip("10.1.0.0"), 16));
        assert!(!in_block(ip("10.2.2.3"), ip("10.1.0.0"), 16));
        assert!(in_block(ip("10.2.2.3"), ip("0.0.0.0"), 0));
        assert!(in_block(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(
            !in_block(ip("10.1.2.3"), ip("2001:db8::"), 0),
            "families differ"
        );
    }
}
