//! What the benchmarks measure: the groups, the paths from client to server in each (with
//! the baseline first), and the rows of results the runner fills and the report prints.
use serde::Serialize;

use super::capture::{self, ProxyKind};
use super::convergence::Convergence;
use super::stats::Summary;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    L4,
    Capture,
    L7,
    Ingress,
    Resources,
    Scale,
}

impl Group {
    /// Its name in `WEFT_BENCH_GROUPS`.
    pub(super) fn key(self) -> &'static str {
        match self {
            Group::L4 => "l4",
            Group::Capture => "capture",
            Group::L7 => "l7",
            Group::Ingress => "ingress",
            Group::Resources => "resources",
            Group::Scale => "scale",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Group::L4 => "L4 paths",
            Group::Capture => "Capture cost: eBPF against an in-pod nftables REDIRECT",
            Group::L7 => "L7 through a waypoint",
            Group::Ingress => "Ingress: weft's gateway against nginx, same routes, same backend",
            Group::Resources => "Resources",
            Group::Scale => "Scale: the registry at a million pods, and each agent's watch traffic",
        }
    }

    /// What the ratio column divides by.
    pub fn baseline(self) -> &'static str {
        match self {
            Group::Resources => "0 pods",
            Group::Scale => "baseline",
            group => paths(group).first().map_or("baseline", |p| p.name),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// A pod, by its IP.
    Pod(&'static str),
    /// A Service, by its name (from a client in its namespace).
    Service(&'static str),
    /// An edge proxy, from the outside host: the NodePort of its Service (`namespace/name`)
    /// on node-1's address, asking for `host` (the Host header and the TLS server name).
    Edge {
        service: &'static str,
        host: &'static str,
    },
}

/// A way from a client pod to a server, and what its CPU cost counts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Path {
    pub(super) name: &'static str,
    pub(super) client: &'static str,
    pub(super) target: Target,
    /// The pods that answer (their CPU counts with the client's).
    pub(super) servers: &'static [&'static str],
    /// Nodes whose agents' CPU counts.
    pub(super) agents: &'static [&'static str],
    pub(super) waypoint: Option<&'static str>,
    /// An edge proxy's pod (weft's ingress gateway, nginx): its CPU is "proxy".
    pub(super) gateway: Option<&'static str>,
    pub(super) proxy: Option<ProxyKind>,
}

pub(super) const BOTH_AGENTS: &[&str] = &["node-1", "node-2"];
pub(super) const WAYPOINT: &str = "mesh/waypoint-0";

/// The baseline comes first in each group: ratios are against it.
pub(super) const L4_PATHS: [Path; 3] = [
    Path {
        name: "no mesh",
        client: "plain/client",
        target: Target::Pod("plain/server"),
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: None,
        proxy: None,
    },
    Path {
        name: "weft",
        client: "mesh/client",
        target: Target::Pod("mesh/server"),
        servers: &["mesh/server"],
        agents: BOTH_AGENTS,
        waypoint: None,
        gateway: None,
        proxy: None,
    },
    Path {
        name: "weft same-node",
        client: "mesh/client",
        target: Target::Pod("mesh/server-local"),
        servers: &["mesh/server-local"],
        agents: BOTH_AGENTS,
        waypoint: None,
        gateway: None,
        proxy: None,
    },
];

pub(super) const CAPTURE_PATHS: [Path; 4] = [
    Path {
        name: "nft redirect + proxy",
        client: capture::NFT_CLIENT,
        target: Target::Pod("plain/server"),
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: None,
        proxy: Some(ProxyKind::Nft),
    },
    Path {
        name: "eBPF + proxy",
        client: capture::EBPF_CLIENT,
        target: Target::Pod("plain/server"),
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: None,
        proxy: Some(ProxyKind::Ebpf),
    },
    Path {
        name: "eBPF + weft agent",
        client: capture::AGENT_CLIENT,
        target: Target::Pod("plain/server"),
        servers: &["plain/server"],
        agents: &["node-2"],
        waypoint: None,
        gateway: None,
        proxy: None,
    },
    Path {
        name: "no capture",
        client: capture::DIRECT_CLIENT,
        target: Target::Pod("plain/server"),
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: None,
        proxy: None,
    },
];

pub(super) const L7_PATHS: [Path; 2] = [
    Path {
        name: "L4 only",
        client: "mesh/client",
        target: Target::Service("echo-l4"),
        servers: &["mesh/server"],
        agents: BOTH_AGENTS,
        waypoint: None,
        gateway: None,
        proxy: None,
    },
    Path {
        name: "waypoint, 10 rules",
        client: "mesh/client",
        target: Target::Service("echo-l7"),
        servers: &["mesh/echo-v1", "mesh/echo-v2"],
        agents: BOTH_AGENTS,
        waypoint: Some(WAYPOINT),
        gateway: None,
        proxy: None,
    },
];

/// The benchmark's clients outside the cluster run on the lab's outside host.
pub(super) const OUTSIDE: &str = "outside";
/// The edge proxies, both on node-1; the backends on node-2.
pub(super) const INGRESS_GATEWAY: &str = "istio-system/istio-ingressgateway-0";
pub(super) const NGINX: &str = "edge/nginx";

pub(super) const INGRESS_PATHS: [Path; 3] = [
    Path {
        name: "nginx",
        client: OUTSIDE,
        target: Target::Edge {
            service: "edge/nginx",
            host: "plain.bench",
        },
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: Some(NGINX),
        proxy: None,
    },
    Path {
        name: "weft ingress",
        client: OUTSIDE,
        target: Target::Edge {
            service: "istio-system/istio-ingressgateway",
            host: "plain.bench",
        },
        servers: &["plain/server"],
        agents: &[],
        waypoint: None,
        gateway: Some(INGRESS_GATEWAY),
        proxy: None,
    },
    Path {
        name: "weft ingress, mesh backend",
        client: OUTSIDE,
        target: Target::Edge {
            service: "istio-system/istio-ingressgateway",
            host: "mesh.bench",
        },
        servers: &["mesh/server"],
        agents: &["node-2"],
        waypoint: None,
        gateway: Some(INGRESS_GATEWAY),
        proxy: None,
    },
];

pub(super) fn paths(group: Group) -> &'static [Path] {
    match group {
        Group::L4 => &L4_PATHS,
        Group::Capture => &CAPTURE_PATHS,
        Group::L7 => &L7_PATHS,
        Group::Ingress => &INGRESS_PATHS,
        Group::Resources | Group::Scale => &[],
    }
}

/// One metric of one scenario on one path, over the repetitions.
#[derive(Debug, Serialize)]
pub struct Row {
    pub group: Group,
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub route: String,
    pub summary: Summary,
    /// Median over the group's baseline path's median, for the same metric.
    pub ratio_to_baseline: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub quick: bool,
    /// Wall time of the whole command, build included, in seconds.
    pub run_seconds: f64,
    pub rows: Vec<Row>,
    pub convergence: Option<Convergence>,
    pub notes: Vec<String>,
}
