//! The service graph made of the samples: workloads, services and waypoints as nodes; who
//! calls which service and which workload answers as edges, with request and error rates,
//! TCP byte rates and how much of it was mutual TLS.
//!
//! Who reports what (weft's reporters): agents count TCP connections twice, as `source`
//! (the client's node) and `destination` (the server's node); a waypoint counts the
//! requests it routes as `waypoint`. An edge takes its numbers from one reporter only —
//! `waypoint`, else `source`, else `destination` — so nothing is counted twice. The TCP
//! connections that carry requests to and from a waypoint are not drawn as TCP edges: the
//! requests they carry are drawn, through the waypoint.
use std::collections::{BTreeMap, BTreeSet};

use super::sample::{Metric, Sample};

const UNKNOWN: &str = "unknown";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Workload,
    Service,
    Waypoint,
    /// A client or server no label names (outside the mesh).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Node {
    fn new(kind: Kind, namespace: &str, name: &str) -> Node {
        Node {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn unknown() -> Node {
        Node::new(Kind::Unknown, "", UNKNOWN)
    }

    /// A name unique in the graph (DOT's node id).
    pub fn id(&self) -> String {
        let kind = match self.kind {
            Kind::Workload => "workload",
            Kind::Service => "service",
            Kind::Waypoint => "waypoint",
            Kind::Unknown => return UNKNOWN.to_string(),
        };
        format!("{kind}/{}/{}", self.namespace, self.name)
    }
}

/// What an edge carried, per second (or in total when read from one reading).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Requests (HTTP, gRPC).
    pub requests: f64,
    /// Of which answered 5xx.
    pub errors: f64,
    /// TCP bytes, both ways.
    pub bytes: f64,
    /// TCP connections opened.
    pub connections: f64,
    /// Of the requests (or, for a TCP edge, of the bytes): how much was mutual TLS.
    pub mutual_tls: f64,
}

impl Traffic {
    pub fn is_http(&self) -> bool {
        self.requests > 0.0
    }

    /// 5xx answers per request.
    pub fn error_rate(&self) -> f64 {
        if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        }
    }

    /// How much of it was mutual TLS, 0 to 1.
    pub fn mtls_share(&self) -> f64 {
        let whole = if self.is_http() {
            self.requests
        } else {
            self.bytes
        };
        if whole > 0.0 {
            (self.mutual_tls / whole).min(1.0)
        } else {
            0.0
        }
    }

    fn add(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.connections += other.connections;
        self.mutual_tls += other.mutual_tls;
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub from: Node,
    pub to: Node,
    /// The waypoint the requests went through, drawn between `from` and `to`.
    pub via: Option<Node>,
    pub traffic: Traffic,
}

/// Whether the numbers are per second or totals since the counters started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    PerSecond,
    Total,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub nodes: BTreeSet<Node>,
    pub edges: Vec<Edge>,
    pub unit: Unit,
}

#[cfg(test)]
impl Graph {
    /// The edge from `from` to `to` whose nodes have these names, if any.
    pub fn edge(&self, from: &str, to: &str) -> Option<&Edge> {
        self.edges
            .iter()
            .find(|e| e.from.name == from && e.to.name == to)
    }
}

/// Which reporter's count an edge keeps, best first.
fn reporter_rank(reporter: &str) -> u8 {
    match reporter {
        "waypoint" => 0,
        "source" => 1,
        "destination" => 2,
        _ => 3,
    }
}

/// A series' three places: client workload, service addressed, server workload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    source: Node,
    service: Option<Node>,
    destination: Option<Node>,
}

fn workload(sample: &Sample, side: &str) -> Option<Node> {
    let name = sample.label(&format!("{side}_workload"));
    (name != UNKNOWN).then(|| {
        Node::new(
            Kind::Workload,
            sample.label(&format!("{side}_workload_namespace")),
            name,
        )
    })
}

fn route(sample: &Sample) -> Route {
    let service_name = sample.label("destination_service_name");
    let service = if service_name != UNKNOWN {
        Some(Node::new(
            Kind::Service,
            sample.label("destination_service_namespace"),
            service_name,
        ))
    } else {
        // A ServiceEntry host or the BlackHoleCluster: the host is all there is.
        let host = sample.label("destination_service");
        (host != UNKNOWN).then(|| Node::new(Kind::Service, "", host))
    };
    Route {
        source: workload(sample, "source").unwrap_or_else(Node::unknown),
        service,
        destination: workload(sample, "destination"),
    }
}

fn traffic(sample: &Sample) -> Traffic {
    let mtls = sample.label("connection_security_policy") == "mutual_tls";
    let share = if mtls { sample.value } else { 0.0 };
    match sample.metric {
        Metric::Requests => Traffic {
            requests: sample.value,
            errors: if sample.label("response_code").starts_with('5') {
                sample.value
            } else {
                0.0
            },
            mutual_tls: share,
            ..Traffic::default()
        },
        Metric::TcpSent | Metric::TcpReceived => Traffic {
            bytes: sample.value,
            mutual_tls: share,
            ..Traffic::default()
        },
        Metric::TcpOpened => Traffic {
            connections: sample.value,
            ..Traffic::default()
        },
    }
}

/// The workloads that are waypoints: what a client's agent connected to, for a service whose
/// requests a waypoint reported, when that workload is not one the requests were routed
/// to. A waypoint that is not seen so is named `waypoint` in the service's namespace
/// (Istio's default name).
fn waypoints(samples: &[Sample]) -> BTreeMap<Node, Node> {
    let mut routed: BTreeMap<(Node, Node), BTreeSet<Node>> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.metric == Metric::Requests && s.label("reporter") == "waypoint")
    {
        let r = route(s);
        if let Some(service) = r.service {
            let servers = routed.entry((r.source, service)).or_default();
            servers.extend(r.destination);
        }
    }
    let mut by_service = BTreeMap::new();
    for s in samples.iter().filter(|s| s.metric != Metric::Requests) {
        let r = route(s);
        let (Some(service), Some(server)) = (r.service, r.destination) else {
            continue;
        };
        if let Some(servers) = routed.get(&(r.source, service.clone()))
            && !servers.contains(&server)
        {
            by_service.insert(
                service,
                Node::new(Kind::Waypoint, &server.namespace, &server.name),
            );
        }
    }
    for (_, service) in routed.keys() {
        by_service
            .entry(service.clone())
            .or_insert_with(|| Node::new(Kind::Waypoint, &service.namespace, "waypoint"));
    }
    by_service
}

/// Builds the graph of `samples` (per-second rates or totals, as `unit` says). Series
/// whose values are all zero draw nothing.
pub fn build(samples: &[Sample], unit: Unit) -> Graph {
    let waypoints = waypoints(samples);
    let waypoint_workloads: BTreeSet<(String, String)> = waypoints
        .values()
        .map(|w| (w.namespace.clone(), w.name.clone()))
        .collect();
    let is_waypoint = |node: Option<&Node>| {
        node.is_some_and(|n| waypoint_workloads.contains(&(n.namespace.clone(), n.name.clone())))
    };
    // Per route and protocol, the traffic each reporter counted.
    let mut counted: BTreeMap<(Route, bool), BTreeMap<u8, Traffic>> = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.value > 0.0) {
        let route = route(sample);
        let http = sample.metric == Metric::Requests;
        if !http && (is_waypoint(Some(&route.source)) || is_waypoint(route.destination.as_ref())) {
            // The connections carrying a waypoint's requests: drawn as those requests.
            continue;
        }
        counted
            .entry((route, http))
            .or_default()
            .entry(reporter_rank(sample.label("reporter")))
            .or_default()
            .add(&traffic(sample));
    }
    let mut edges: BTreeMap<(Node, Node, Option<Node>), Traffic> = BTreeMap::new();
    let mut nodes = BTreeSet::new();
    for ((route, http), reporters) in counted {
        // The best reporter's count; the others counted the same traffic.
        let Some((&rank, traffic)) = reporters.iter().next() else {
            continue;
        };
        let via = (http && rank == 0)
            .then(|| {
                route
                    .service
                    .as_ref()
                    .and_then(|s| waypoints.get(s))
                    .cloned()
            })
            .flatten();
        let mut hops = vec![route.source.clone()];
        hops.extend(route.service.clone());
        hops.extend(route.destination.clone());
        for (i, pair) in hops.windows(2).enumerate() {
            let via = if i == 0 { via.clone() } else { None };
            nodes.extend(via.clone());
            edges
                .entry((pair[0].clone(), pair[1].clone(), via))
                .or_default()
                .add(traffic);
        }
        nodes.extend(hops);
    }
    Graph {
        nodes,
        edges: edges
            .into_iter()
            .map(|((from, to, via), traffic)| Edge {
                from,
                to,
                via,
                traffic,
            })
            .collect(),
        unit,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(metric: Metric, value: f64, labels: &[(&str, &str)]) -> Sample {
        Sample {
            metric,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn service(name: &str) -> [(&'static str, String); 3] {
        [
            ("destination_service_name", name.to_string()),
            ("destination_service_namespace", "bookinfo".to_string()),
            (
                "destination_service",
                format!("{name}.bookinfo.svc.cluster.local"),
            ),
        ]
    }

    fn labels<'a>(
        reporter: &'a str,
        from: &'a str,
        to: &'a str,
        service_labels: &'a [(&'static str, String); 3],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![
            ("reporter", reporter),
            ("source_workload", from),
            ("source_workload_namespace", "bookinfo"),
            ("destination_workload", to),
            ("destination_workload_namespace", "bookinfo"),
            ("connection_security_policy", "mutual_tls"),
        ];
        all.extend(service_labels.iter().map(|(k, v)| (*k, v.as_str())));
        all.extend_from_slice(extra);
        all
    }

    /// productpage → reviews through the waypoint, reviews → ratings directly: what the
    /// waypoint and both agents report.
    pub fn bookinfo() -> Vec<Sample> {
        let reviews = service("reviews");
        let ratings = service("ratings");
        let ok = [("response_code", "200"), ("request_protocol", "http")];
        let failed = [("response_code", "503"), ("request_protocol", "http")];
        let mut samples = vec![
            sample(
                Metric::Requests,
                3.0,
                &labels("waypoint", "productpage-v1", "reviews-v1", &reviews, &ok),
            ),
            sample(
                Metric::Requests,
                1.0,
                &labels(
                    "waypoint",
                    "productpage-v1",
                    "reviews-v2",
                    &reviews,
                    &failed,
                ),
            ),
        ];
        // Both agents count the connections to and from the waypoint, and reviews → ratings.
        for reporter in ["source", "destination"] {
            for (metric, value) in [(Metric::TcpSent, 100.0), (Metric::TcpReceived, 400.0)] {
                samples.push(sample(
                    metric,
                    value,
                    &labels(reporter, "productpage-v1", "waypoint", &reviews, &[]),
                ));
                samples.push(sample(
                    metric,
                    value,
                    &labels(reporter, "waypoint", "reviews-v1", &reviews, &[]),
                ));
                samples.push(sample(
                    metric,
                    value / 2.0,
                    &labels(reporter, "reviews-v2", "ratings-v1", &ratings, &[]),
                ));
            }
        }
        samples
    }

    #[test]
    fn a_waypoint_hop_is_drawn_from_the_client_to_the_service_through_the_waypoint() {
        let graph = build(&bookinfo(), Unit::PerSecond);
        let hop = graph.edge("productpage-v1", "reviews").expect("an edge");
        assert_eq!(
            hop.via.as_ref().map(Node::id).as_deref(),
            Some("waypoint/bookinfo/waypoint")
        );
        assert_eq!(hop.traffic.requests, 4.0);
        assert_eq!(hop.traffic.error_rate(), 0.25);
        assert_eq!(hop.traffic.mtls_share(), 1.0);
        assert!(graph.nodes.iter().any(|n| n.kind == Kind::Waypoint));
        // The service's requests split between its workloads.
        assert_eq!(
            graph
                .edge("reviews", "reviews-v1")
                .expect("an edge")
                .traffic
                .requests,
            3.0
        );
        assert_eq!(
            graph
                .edge("reviews", "reviews-v2")
                .expect("an edge")
                .traffic
                .errors,
            1.0
        );
        // The connections carrying them are not edges of their own.
        assert!(graph.edge("productpage-v1", "waypoint").is_none());
        assert!(graph.edge("waypoint", "reviews-v1").is_none());
        assert!(
            !graph
                .nodes
                .iter()
                .any(|n| n.kind == Kind::Workload && n.name == "waypoint")
        );
    }

    #[test]
    fn tcp_edges_count_each_connection_once_though_both_agents_report_it() {
        let graph = build(&bookinfo(), Unit::PerSecond);
        let tcp = graph.edge("reviews-v2", "ratings").expect("a TCP edge");
        assert_eq!(tcp.via, None);
        assert_eq!(
            tcp.traffic.bytes, 250.0,
            "50 + 200 from the source, not twice"
        );
        assert!(!tcp.traffic.is_http());
        assert_eq!(
            graph
                .edge("ratings", "ratings-v1")
                .expect("an edge")
                .traffic
                .bytes,
            250.0
        );
    }

    #[test]
    fn the_destination_counts_when_no_source_reports_and_plaintext_is_not_mtls() {
        let ratings = service("ratings");
        let plain = [("connection_security_policy", "none")];
        let mut only_destination = labels("destination", "unknown", "ratings-v1", &ratings, &[]);
        only_destination.retain(|(k, _)| *k != "connection_security_policy");
        only_destination.extend_from_slice(&plain);
        let graph = build(
            &[sample(Metric::TcpReceived, 42.0, &only_destination)],
            Unit::Total,
        );
        let edge = graph.edge("unknown", "ratings").expect("from outside");
        assert_eq!(edge.from.kind, Kind::Unknown);
        assert_eq!(edge.traffic.bytes, 42.0);
        assert_eq!(edge.traffic.mtls_share(), 0.0);
    }

    #[test]
    fn series_that_counted_nothing_draw_nothing() {
        let zero: Vec<Sample> = bookinfo()
            .into_iter()
            .map(|s| Sample { value: 0.0, ..s })
            .collect();
        let graph = build(&zero, Unit::PerSecond);
        assert!(graph.edges.is_empty(), "{:?}", graph.edges);
    }
}
