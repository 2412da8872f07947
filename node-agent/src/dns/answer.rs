//! What the DNS proxy answers for a name, from the registry alone (ztunnel's rules): a
//! Kubernetes Service by its cluster names, a ServiceEntry host by its addresses (declared
//! or allocated by the registry), anything else is forwarded upstream.
//!
//! The names tried for a query, in order: the name itself; its Kubernetes expansions
//! (`svc` → `svc.<ns>.svc.<domain>`, `svc.ns` → `svc.ns.svc.<domain>`, `svc.ns.svc` →
//! `svc.ns.svc.<domain>`); then, for each search domain of the pod (`<ns>.svc.<domain>`,
//! `svc.<domain>`, `<domain>`, as a Kubernetes pod's resolv.conf lists them) that the name
//! ends with, the name without it and its expansions. So `api.example.com.shop.svc.cluster.local`,
//! the first name a resolver with `ndots:5` asks for `api.example.com`, is answered at once
//! for the ServiceEntry host `api.example.com`, with a CNAME to it. Each candidate is also
//! matched against wildcard hosts (`*.example.com`), the most specific first.
use std::net::IpAddr;

use weft_config::registry::Snapshot;

/// The address family a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn holds(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }
}

/// The proxy's answer for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Address records for `name`, preceded by a CNAME from the name asked when the host
    /// was found by stripping one of the pod's search domains (`cname` is then the name
    /// asked, `name` the host).
    Addresses {
        cname: Option<String>,
        name: String,
        addresses: Vec<IpAddr>,
    },
    /// The host is known but has no address of the family asked: NOERROR, no records (not
    /// NXDOMAIN, which would end the resolver's search for the other family too).
    NoRecords,
    /// Not a host of the registry: the query goes to the upstream resolver.
    Forward,
}

/// One candidate name, and the name it stands for when a search domain was stripped.
struct Alias {
    name: String,
    stripped: Option<String>,
}

/// The answer for `name` (lower case, without the trailing dot) asked by a pod of
/// `namespace`, for addresses of `family`.
pub fn answer(snapshot: &Snapshot, namespace: &str, name: &str, family: Family) -> Answer {
    let domain = &snapshot.settings().cluster_domain;
    for alias in aliases(name, namespace, domain) {
        for candidate in wildcards(&alias.name) {
            let Some(addresses) = addresses_of(snapshot, namespace, &candidate, domain) else {
                continue;
            };
            let wanted: Vec<IpAddr> = addresses
                .into_iter()
                .filter(|ip| family.holds(ip))
                .collect();
            if wanted.is_empty() {
                return Answer::NoRecords;
            }
            return match alias.stripped {
                Some(stripped) if !candidate.starts_with('*') => Answer::Addresses {
                    cname: Some(name.to_string()),
                    name: stripped,
                    addresses: wanted,
                },
                _ => Answer::Addresses {
                    cname: None,
                    name: name.to_string(),
                    addresses: wanted,
                },
            };
        }
    }
    Answer::Forward
}

/// The addresses of the host `host` as a client of `namespace` sees it, if the registry
/// answers for it: a Service's ClusterIPs (a headless Service's ready endpoints), a
/// ServiceEntry host's addresses. A ServiceEntry host without addresses is left to the
/// upstream resolver, as ztunnel leaves it.
fn addresses_of(
    snapshot: &Snapshot,
    namespace: &str,
    host: &str,
    domain: &str,
) -> Option<Vec<IpAddr>> {
    if let Some(service) = snapshot.service_by_host(host) {
        if !service.vips.is_empty() {
            return Some(service.vips.clone());
        }
        if host.ends_with(&format!(".svc.{domain}")) {
            return Some(
                service
                    .endpoints
                    .iter()
                    .filter(|e| e.ready)
                    .map(|e| e.address)
                    .collect(),
            );
        }
    }
    snapshot
        .entry_host_named_exactly(host, namespace)
        .filter(|h| !h.vips.is_empty())
        .map(|h| h.vips.clone())
}

/// The names to try for `name`, in order, without repeats.
fn aliases(name: &str, namespace: &str, domain: &str) -> Vec<Alias> {
    let mut out: Vec<Alias> = Vec::new();
    let mut add = |alias: Alias| {
        if !out.iter().any(|a| a.name == alias.name) {
            out.push(alias);
        }
    };
    add(Alias {
        name: name.to_string(),
        stripped: None,
    });
    for fqdn in kube_fqdns(name, namespace, domain) {
        add(Alias {
            name: fqdn,
            stripped: None,
        });
    }
    let search = [
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    for suffix in search {
        let Some(stripped) = name
            .strip_suffix(suffix.as_str())
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        add(Alias {
            name: stripped.to_string(),
            stripped: Some(stripped.to_string()),
        });
        for fqdn in kube_fqdns(stripped, namespace, domain) {
            add(Alias {
                name: fqdn,
                stripped: Some(stripped.to_string()),
            });
        }
    }
    out
}

/// The Kubernetes names a short name may stand for (ztunnel's `to_kube_fqdns`).
fn kube_fqdns(name: &str, namespace: &str, domain: &str) -> Vec<String> {
    let labels: Vec<&str> = name.split('.').collect();
    match labels.len() {
        1 => vec![format!("{name}.{namespace}.svc.{domain}")],
        2 => vec![
            format!("{name}.svc.{domain}"),
            format!("{name}.{namespace}.svc.{domain}"),
        ],
        3 if labels[2] == "svc" => vec![format!("{name}.{domain}"), format!("{name}.svc.{domain}")],
        3 => vec![format!("{name}.svc.{domain}")],
        4 if labels[3] == "svc" => vec![format!("{name}.{domain}")],
        _ => Vec::new(),
    }
}

/// `www.example.com`, `*.example.com`, `*.com`.
fn wildcards(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let mut rest = name;
    while let Some((_, tail)) = rest.split_once('.') {
        out.push(format!("*.{tail}"));
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: data, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.30], conditions: {ready: true}}]
ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: time, namespace: shop}
spec: {hosts: [time.jsontest.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed, namespace: shop}
spec: {hosts: [fixed.example.com], addresses: [192.0.2.10, "2001:db8::10"], ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: shop}
spec: {hosts: ["*.wild.example.com"], addresses: [192.0.2.20], ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: other}
spec: {hosts: [hidden.example.com], addresses: [192.0.2.30], exportTo: ["."], ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: shop}
spec: {hosts: [open.example.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}
"#;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn addresses(answer: Answer) -> Vec<IpAddr> {
        match answer {
            Answer::Addresses { addresses, .. } => addresses,
            other => panic!("no addresses: {other:?}"),
        }
    }

    #[test]
    fn services_answer_by_every_cluster_name() {
        let s = weft_config::testing::snapshot_of(CLUSTER);
        for name in [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local",
        ] {
            assert_eq!(
                addresses(answer(&s, "shop", name, Family::V4)),
                [ip("10.96.0.10")],
                "{name}"
            );
        }
        assert_eq!(
            answer(&s, "web", "web", Family::V4),
            Answer::Forward,
            "a short name is the client's own namespace's"
        );
        assert_eq!(
            answer(&s, "shop", "web", Family::V6),
            Answer::NoRecords,
            "known, but without an IPv6 address"
        );
        assert_eq!(
            addresses(answer(&s, "shop", "db.data.svc.cluster.local", Family::V4)),
            [ip("10.244.2.30")],
            "a headless Service answers with its ready endpoints"
        );
    }

    #[test]
    fn service_entry_hosts_answer_with_their_addresses() {
        let s = weft_config::testing::snapshot_of(CLUSTER);
        let time = addresses(answer(&s, "shop", "time.jsontest.com", Family::V4));
        assert_eq!(time.len(), 1);
        assert!(
            weft_config::translate::service_entry::is_auto_allocated(time[0]),
            "{time:?}"
        );
        assert_eq!(
            addresses(answer(&s, "shop", "fixed.example.com", Family::V6)),
            [ip("2001:db8::10")]
        );
        assert_eq!(
            addresses(answer(&s, "shop", "a.wild.example.com", Family::V4)),
            [ip("192.0.2.20")]
        );
        assert_eq!(
            answer(&s, "shop", "hidden.example.com", Family::V4),
            Answer::Forward,
            "not exported to the client's namespace"
        );
        assert_eq!(
            answer(&s, "shop", "open.example.com", Family::V4),
            Answer::Forward,
            "no address to give: the upstream's answer"
        );
        assert_eq!(
            answer(&s, "shop", "example.org", Family::V4),
            Answer::Forward
        );
    }

    #[test]
    fn a_search_domain_expansion_is_answered_with_a_cname_to_the_host() {
        let s = weft_config::testing::snapshot_of(CLUSTER);
        match answer(
            &s,
            "shop",
            "time.jsontest.com.shop.svc.cluster.local",
            Family::V4,
        ) {
            Answer::Addresses {
                cname,
                name,
                addresses,
                ..
            } => {
                assert_eq!(
                    cname.as_deref(),
                    Some("time.jsontest.com.shop.svc.cluster.local")
                );
                assert_eq!(name, "time.jsontest.com");
                assert_eq!(addresses.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answer(&s, "shop", "nothing.example.com.cluster.local", Family::V4),
            Answer::Forward
        );
    }
}
