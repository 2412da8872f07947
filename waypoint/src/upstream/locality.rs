//! Locality load balancing, Istio's `loadBalancer.localityLbSetting`, as istiod programs
//! Envoy with it and Envoy balances: endpoints are split into priorities by how close they
//! are to the proxy (the waypoint: it is the proxy choosing, as in Istio ambient where the
//! waypoint's Envoy balances), and traffic spills to the next priority only as the closer
//! ones lose healthy endpoints.
//!
//! - Failover (the default, in effect only with `outlierDetection`, as in Istio): priority
//!   0 is the proxy's region, zone and subzone; 1 its region and zone; 2 its region; 3 any
//!   other region, or 4 for regions other than the `failover` rule's `to` for the proxy's
//!   region. `failoverPriority` labels rank endpoints first (by how many of the leading
//!   labels they share with the proxy), locality second when `failover` is also set.
//! - `distribute`: from the first rule whose `from` matches the proxy, each locality gets
//!   its share of the weight of the `to` pattern it matches; localities no pattern matches
//!   get no traffic.
//!
//! Pure: the caller gives localities and labels (from the registry), which endpoints are
//! healthy (after outlier detection) and a random draw.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use weft_config::api::networking::LocalityLbSetting;
use weft_config::registry::model::{Locality, REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL};

/// Envoy's default overprovisioning factor (percent): a priority keeps all the traffic
/// until fewer than 1/1.4 (≈71%) of its endpoints are healthy.
const OVERPROVISIONING: usize = 140;

/// Where the proxy or an endpoint is, and its pod's labels (for `failoverPriority`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
}

/// One endpoint's share in locality balancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// 0 is the most preferred; priorities are numbered without gaps.
    pub priority: u32,
    /// The endpoint's locality group (endpoints of one locality share it).
    pub group: usize,
    /// The locality's weight under `distribute`; 0 when localities are not weighted.
    pub weight: u32,
}

/// Each endpoint's slot, in `endpoints` order; `None` for an endpoint that gets no
/// traffic (a locality `distribute` leaves out). `failover`: the cluster has outlier
/// detection (without it Istio applies no failover: every endpoint is priority 0).
pub fn plan(
    setting: &LocalityLbSetting,
    failover: bool,
    proxy: &Place,
    endpoints: &[Place],
) -> Vec<Option<Slot>> {
    let mut groups: Vec<&Locality> = Vec::new();
    let group_of: Vec<usize> = endpoints
        .iter()
        .map(|e| match groups.iter().position(|g| **g == e.locality) {
            Some(i) => i,
            None => {
                groups.push(&e.locality);
                groups.len() - 1
            }
        })
        .collect();
    let slot = |i: usize, priority: u32, weight: u32| Slot {
        priority,
        group: group_of[i],
        weight,
    };
    if setting.enabled == Some(false) {
        return (0..endpoints.len()).map(|i| Some(slot(i, 0, 0))).collect();
    }
    if !setting.distribute.is_empty() {
        let Some(rule) = setting
            .distribute
            .iter()
            .find(|d| matches(&proxy.locality, &d.from))
        else {
            return (0..endpoints.len()).map(|i| Some(slot(i, 0, 0))).collect();
        };
        let weights = distribute_weights(&rule.to, &groups, &group_of);
        return (0..endpoints.len())
            .map(|i| weights[group_of[i]].map(|w| slot(i, 0, w)))
            .collect();
    }
    if !failover {
        return (0..endpoints.len()).map(|i| Some(slot(i, 0, 0))).collect();
    }
    let raw: Vec<u32> = endpoints
        .iter()
        .map(|e| {
            if setting.failover_priority.is_empty() {
                locality_priority(&proxy.locality, &e.locality, setting)
            } else {
                let by_labels = label_priority(&setting.failover_priority, proxy, e);
                if setting.failover.is_empty() {
                    by_labels
                } else {
                    // Istio keeps room for the five locality priorities under each label one.
                    by_labels * 5 + locality_priority(&proxy.locality, &e.locality, setting)
                }
            }
        })
        .collect();
    // Numbered 0..N without gaps, as Envoy requires.
    let mut distinct = raw.clone();
    distinct.sort_unstable();
    distinct.dedup();
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let rank = distinct.partition_point(|d| d < p);
            Some(slot(i, u32::try_from(rank).unwrap_or(u32::MAX), 0))
        })
        .collect()
}

/// Istio's `LocalityMatch`: `region/zone/subzone`, where `*` or a missing part matches any.
pub fn matches(locality: &Locality, pattern: &str) -> bool {
    let mut parts = pattern.splitn(3, '/');
    let region = parts.next().unwrap_or_default();
    let zone = parts.next().unwrap_or_default();
    let subzone = parts.next().unwrap_or_default();
    let part = |rule: &str, value: &str, optional: bool| {
        rule == "*" || (optional && rule.is_empty()) || rule == value
    };
    part(region, &locality.region, false)
        && part(zone, &locality.zone, true)
        && part(subzone, &locality.subzone, true)
}

/// Istio's `LbPriority`, with its `failover` rules for other regions.
fn locality_priority(proxy: &Locality, endpoint: &Locality, setting: &LocalityLbSetting) -> u32 {
    if proxy.region == endpoint.region {
        if proxy.zone == endpoint.zone {
            return if proxy.subzone == endpoint.subzone {
                0
            } else {
                1
            };
        }
        return 2;
    }
    match setting.failover.iter().find(|f| f.from == proxy.region) {
        Some(rule) if rule.to != endpoint.region => 4,
        _ => 3,
    }
}

/// How many of the leading `labels` the endpoint does *not* share with the proxy: the count
/// of labels after the first mismatch, plus it. `key=value` compares the endpoint with
/// `value` instead of the proxy's label. The locality labels name the places' localities.
fn label_priority(labels: &[String], proxy: &Place, endpoint: &Place) -> u32 {
    let value = |place: &Place, key: &str| -> Option<String> {
        match key {
            REGION_LABEL if !place.locality.region.is_empty() => {
                Some(place.locality.region.clone())
            }
            ZONE_LABEL if !place.locality.zone.is_empty() => Some(place.locality.zone.clone()),
            SUBZONE_LABEL if !place.locality.subzone.is_empty() => {
                Some(place.locality.subzone.clone())
            }
            _ => place.labels.get(key).cloned(),
        }
    };
    let total = u32::try_from(labels.len()).unwrap_or(u32::MAX);
    for (matched, label) in labels.iter().enumerate() {
        let (key, wanted) = match label.split_once('=') {
            Some((key, wanted)) => (key, Some(wanted.to_string())),
            None => (label.as_str(), value(proxy, label)),
        };
        if wanted.is_none() || value(endpoint, key) != wanted {
            return total - u32::try_from(matched).unwrap_or(total);
        }
    }
    0
}

/// Istio's `applyLocalityWeights`: each `to` pattern (in order) takes the groups it matches
/// that no earlier pattern took, and splits its weight among them by their endpoint count
/// (rounded up). Groups no pattern takes: `None`.
fn distribute_weights(
    to: &BTreeMap<String, u32>,
    groups: &[&Locality],
    group_of: &[usize],
) -> Vec<Option<u32>> {
    let count =
        |g: usize| u64::try_from(group_of.iter().filter(|x| **x == g).count()).unwrap_or(u64::MAX);
    let mut weights: Vec<Option<u32>> = vec![None; groups.len()];
    for (pattern, weight) in to {
        let taken: Vec<usize> = (0..groups.len())
            .filter(|g| weights[*g].is_none() && matches(groups[*g], pattern))
            .collect();
        let total: u64 = taken.iter().map(|g| count(*g)).sum();
        for g in taken {
            let share = (count(g) * u64::from(*weight)).div_ceil(total.max(1));
            weights[g] = Some(u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    weights
}

/// The endpoints one request may go to: of `healthy` (the members of `all` outlier
/// detection leaves in), those of the priority and (with `distribute`) the locality that
/// `draw` (uniformly random) lands on. `all[i]` has `slots[i]`.
///
/// Envoy's priority load: each priority's health is its healthy share of its endpoints
/// times 1.4, at most 100%; priority 0 takes its health in percent of the traffic, the next
/// what is left up to its own health, and so on; when the healths add up to less than 100%
/// the loads are scaled up to 100%. Weighted localities are chosen in proportion to weight
/// times health the same way.
pub fn narrow(
    all: &[SocketAddr],
    slots: &[Option<Slot>],
    healthy: &[SocketAddr],
    draw: u64,
) -> Vec<SocketAddr> {
    let members: Vec<(SocketAddr, Slot, bool)> = all
        .iter()
        .zip(slots)
        .filter_map(|(a, s)| Some((*a, (*s)?, healthy.contains(a))))
        .collect();
    let levels = members
        .iter()
        .map(|m| m.1.priority)
        .max()
        .map_or(0, |p| p + 1);
    let health: Vec<u64> = (0..levels)
        .map(|p| {
            let (up, total) = members
                .iter()
                .filter(|m| m.1.priority == p)
                .fold((0, 0), |(u, t), m| (u + usize::from(m.2), t + 1));
            availability(up, total)
        })
        .collect();
    let loads = priority_loads(&health);
    let Some(level) = choose(&loads, draw) else {
        return Vec::new();
    };
    let level = u32::try_from(level).unwrap_or(u32::MAX);
    let in_level: Vec<&(SocketAddr, Slot, bool)> =
        members.iter().filter(|m| m.1.priority == level).collect();
    // Weighted localities (distribute): a group in proportion to weight × health.
    let mut groups: Vec<usize> = in_level.iter().map(|m| m.1.group).collect();
    groups.sort_unstable();
    groups.dedup();
    let weighted = in_level.iter().any(|m| m.1.weight > 0);
    let group = if weighted {
        let effective: Vec<u64> = groups
            .iter()
            .map(|g| {
                let of: Vec<_> = in_level.iter().filter(|m| m.1.group == *g).collect();
                let up = of.iter().filter(|m| m.2).count();
                u64::from(of.first().map_or(0, |m| m.1.weight)) * availability(up, of.len())
            })
            .collect();
        // A second, independent part of the draw picks the locality.
        choose(&effective, draw.rotate_left(32)).and_then(|i| groups.get(i).copied())
    } else {
        None
    };
    in_level
        .iter()
        .filter(|m| m.2 && group.is_none_or(|g| m.1.group == g))
        .map(|m| m.0)
        .collect()
}

/// A priority's (or locality's) health in percent: healthy share × 1.4, at most 100.
fn availability(healthy: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    u64::try_from((healthy * OVERPROVISIONING) / total)
        .unwrap_or(u64::MAX)
        .min(100)
}

/// Envoy's priority loads (percent) from each priority's health.
fn priority_loads(health: &[u64]) -> Vec<u64> {
    let sum: u64 = health.iter().sum();
    if sum == 0 {
        return vec![0; health.len()];
    }
    if sum < 100 {
        // Not enough healthy anywhere: spread in proportion to health.
        return health.to_vec();
    }
    let mut left = 100u64;
    health
        .iter()
        .map(|h| {
            let load = (*h).min(left);
            left -= load;
            load
        })
        .collect()
}

/// The index `draw` lands on among `weights` (in proportion); `None` when all are 0.
fn choose(weights: &[u64], draw: u64) -> Option<usize> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let mut at = draw % total;
    for (i, w) in weights.iter().enumerate() {
        if at < *w {
            return Some(i);
        }
        at -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_config::api::networking::{LocalityDistribute, LocalityFailover};

    fn place(locality: &str) -> Place {
        let mut parts = locality.split('/').map(str::to_string);
        Place {
            locality: Locality {
                region: parts.next().unwrap_or_default(),
                zone: parts.next().unwrap_or_default(),
                subzone: parts.next().unwrap_or_default(),
            },
            labels: BTreeMap::new(),
        }
    }

    fn priorities(
        setting: &LocalityLbSetting,
        failover: bool,
        proxy: &str,
        at: &[&str],
    ) -> Vec<Option<u32>> {
        let endpoints: Vec<Place> = at.iter().map(|l| place(l)).collect();
        plan(setting, failover, &place(proxy), &endpoints)
            .into_iter()
            .map(|s| s.map(|s| s.priority))
            .collect()
    }

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, u8::try_from(i + 1).unwrap_or(1)], 80)))
            .collect()
    }

    /// How many of `draws` requests land on each of `all`.
    fn spread(all: &[SocketAddr], slots: &[Option<Slot>], healthy: &[SocketAddr]) -> Vec<usize> {
        let mut counts = vec![0; all.len()];
        for draw in 0..1000u64 {
            // Spread draws over the whole range, both halves.
            let draw = draw.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let choice = narrow(all, slots, healthy, draw);
            // The balancer would pick among `choice`; count each candidate once.
            for a in choice {
                if let Some(i) = all.iter().position(|x| *x == a) {
                    counts[i] += 1;
                }
            }
        }
        counts
    }

    #[test]
    fn failover_ranks_by_subzone_zone_region_and_the_failover_region() {
        let endpoints = ["eu/a/1", "eu/a/2", "eu/b/1", "us/c/1", "ap/d/1", ""];
        let default = LocalityLbSetting::default();
        assert_eq!(
            priorities(&default, true, "eu/a/1", &endpoints),
            [Some(0), Some(1), Some(2), Some(3), Some(3), Some(3)]
        );
        // Without outlier detection Istio applies no failover: one priority.
        assert_eq!(
            priorities(&default, false, "eu/a/1", &endpoints),
            [Some(0); 6]
        );
        let to_us = LocalityLbSetting {
            failover: vec![LocalityFailover {
                from: "eu".into(),
                to: "us".into(),
            }],
            ..Default::default()
        };
        // us is preferred over the other regions: priorities 3 and 4 renumbered 3 and 4.
        assert_eq!(
            priorities(&to_us, true, "eu/a/1", &endpoints),
            [Some(0), Some(1), Some(2), Some(3), Some(4), Some(4)]
        );
        // Gaps closed: only zone-local and remote endpoints → 0 and 1.
        assert_eq!(
            priorities(&default, true, "eu/a/1", &["eu/a/1", "us/c/1"]),
            [Some(0), Some(1)]
        );
        let off = LocalityLbSetting {
            enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(
            priorities(&off, true, "eu/a/1", &["eu/a/1", "us/c/1"]),
            [Some(0), Some(0)]
        );
    }

    #[test]
    fn failover_priority_ranks_by_leading_labels_then_locality() {
        let labelled = |locality: &str, labels: &[(&str, &str)]| Place {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..place(locality)
        };
        let proxy = labelled("eu/a", &[("network", "n1"), ("tier", "gold")]);
        let endpoints = [
            labelled("us/c", &[("network", "n1"), ("tier", "gold")]),
            labelled("eu/a", &[("network", "n1"), ("tier", "silver")]),
            labelled("eu/a", &[("network", "n2"), ("tier", "gold")]),
        ];
        let setting = LocalityLbSetting {
            failover_priority: vec!["network".into(), "tier".into()],
            ..Default::default()
        };
        let got: Vec<_> = plan(&setting, true, &proxy, &endpoints)
            .into_iter()
            .map(|s| s.map(|s| s.priority))
            .collect();
        assert_eq!(got, [Some(0), Some(1), Some(2)]);
        // With failover too, locality breaks ties inside a label priority.
        let both = LocalityLbSetting {
            failover_priority: vec!["network".into()],
            failover: vec![LocalityFailover {
                from: "eu".into(),
                to: "us".into(),
            }],
            ..Default::default()
        };
        let got: Vec<_> = plan(&both, true, &proxy, &endpoints)
            .into_iter()
            .map(|s| s.map(|s| s.priority))
            .collect();
        assert_eq!(got, [Some(1), Some(0), Some(2)]);
        // `key=value` compares with the value, and the locality labels with localities.
        let pinned = LocalityLbSetting {
            failover_priority: vec!["network=n2".into(), REGION_LABEL.into()],
            ..Default::default()
        };
        let got: Vec<_> = plan(&pinned, true, &proxy, &endpoints)
            .into_iter()
            .map(|s| s.map(|s| s.priority))
            .collect();
        assert_eq!(got, [Some(1), Some(1), Some(0)]);
    }

    #[test]
    fn traffic_stays_in_the_closest_priority_until_it_is_unhealthy_enough() {
        let all = addrs(6);
        // Four endpoints in the proxy's zone, two in another.
        let at = ["eu/a", "eu/a", "eu/a", "eu/a", "eu/b", "eu/b"];
        let endpoints: Vec<Place> = at.iter().map(|l| place(l)).collect();
        let slots = plan(
            &LocalityLbSetting::default(),
            true,
            &place("eu/a"),
            &endpoints,
        );
        // All healthy: only the zone's endpoints.
        assert_eq!(spread(&all, &slots, &all), [1000, 1000, 1000, 1000, 0, 0]);
        // One of four ejected: 3/4 × 1.4 > 100%, still all local.
        let healthy: Vec<_> = all[1..].to_vec();
        assert_eq!(spread(&all, &slots, &healthy), [0, 1000, 1000, 1000, 0, 0]);
        // Three of four ejected: 1/4 × 1.4 = 35% stays, 65% fails over.
        let healthy: Vec<_> = all[3..].to_vec();
        let counts = spread(&all, &slots, &healthy);
        assert!((290..=410).contains(&counts[3]), "{counts:?}");
        assert_eq!(counts[4], 1000 - counts[3]);
        // The whole zone gone: everything to the next priority.
        let healthy: Vec<_> = all[4..].to_vec();
        assert_eq!(spread(&all, &slots, &healthy), [0, 0, 0, 0, 1000, 1000]);
        // Nothing healthy anywhere: nothing to choose (503).
        assert_eq!(spread(&all, &slots, &[]), [0; 6]);
    }

    #[test]
    fn distribute_weights_localities_and_drops_the_unlisted() {
        let all = addrs(4);
        let at = ["eu/a", "eu/b", "eu/b", "us/c"];
        let endpoints: Vec<Place> = at.iter().map(|l| place(l)).collect();
        let setting = LocalityLbSetting {
            distribute: vec![
                LocalityDistribute {
                    from: "us/*".into(),
                    to: BTreeMap::from([("us/*".into(), 100)]),
                },
                LocalityDistribute {
                    from: "eu/a/*".into(),
                    to: BTreeMap::from([("eu/a".into(), 80), ("eu/b".into(), 20)]),
                },
            ],
            ..Default::default()
        };
        let slots = plan(&setting, false, &place("eu/a/x"), &endpoints);
        assert_eq!(slots[3], None, "us/c matches no pattern: no traffic");
        let counts = spread(&all, &slots, &all);
        // eu/a takes ~80%; eu/b's two endpoints are chosen together ~20%.
        assert!((740..=860).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[1], counts[2]);
        assert_eq!(counts[0] + counts[1], 1000);
        assert_eq!(counts[3], 0);
        // A proxy no rule's `from` matches: no weights, everything in one priority.
        let slots = plan(&setting, false, &place("ap/x"), &endpoints);
        assert!(
            slots
                .iter()
                .all(|s| s.is_some_and(|s| s.weight == 0 && s.priority == 0))
        );
        assert_eq!(spread(&all, &slots, &all), [1000; 4]);
    }

    #[test]
    fn patterns_match_as_istio_matches_them() {
        let l = place("eu/a/1").locality;
        for (pattern, expected) in [
            ("eu", true),
            ("eu/*", true),
            ("eu/a", true),
            ("eu/a/1", true),
            ("eu/a/*", true),
            ("*", true),
            ("eu/b", false),
            ("us/*", false),
            ("eu/a/2", false),
        ] {
            assert_eq!(matches(&l, pattern), expected, "{pattern}");
        }
    }
}
