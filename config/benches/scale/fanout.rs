//! What each agent's watches cost the API server at churn, computed from the measured JSON
//! sizes of the generated objects (a calculation, not a measurement of an API server).
//!
//! The agent lists and watches every Pod, Service, EndpointSlice, Node and Namespace of the
//! cluster, unfiltered (`AGENT_WATCHED`, `PodScope::Cluster` in `config/src/source/kube.rs`).
//! The churn model: a fraction of the pods replaced per minute (a Deployment's pod deleted
//! and its replacement created), each replacement sending every watcher
//! - 7 Pod events: the old pod's deletionTimestamp, its containers stopped, DELETED; the new
//!   pod ADDED, scheduled (nodeName), its IP (ContainerCreating → Running), Ready;
//! - 4 EndpointSlice events of its Service's slice: the old pod not ready, gone; the new
//!   pod added not ready, ready;
//!
//! and every Node updating its status every 5 minutes (the kubelet's
//! nodeStatusReportFrequency; its Lease heartbeats are another kind, not watched). A watch
//! event is the object's JSON in `{"type":"MODIFIED","object":…}`.
use std::collections::BTreeMap;

use weft_config::api::Kind;

use super::cluster::Shape;
use super::figure;

pub const CHURN_PER_MINUTE: f64 = 0.01;
pub const POD_EVENTS_PER_REPLACEMENT: f64 = 7.0;
pub const SLICE_EVENTS_PER_REPLACEMENT: f64 = 4.0;
pub const NODE_STATUS_PERIOD_S: f64 = 300.0;
/// `{"type":"MODIFIED","object":` … `}` and a newline.
pub const EVENT_FRAMING: f64 = 32.0;
/// What the API server's watch egress may take before a fan-out layer is needed: a tenth of
/// a 10 Gbit/s link (the API server's other clients, and its CPU for TLS, share the rest).
pub const EGRESS_BUDGET_MB_S: f64 = 125.0;

/// JSON bytes and count of the generated objects, by kind.
#[derive(Default)]
pub struct Sizes(BTreeMap<Kind, (usize, usize)>);

impl Sizes {
    pub fn add(&mut self, kind: Kind, bytes: usize) {
        let entry = self.0.entry(kind).or_default();
        entry.0 += bytes;
        entry.1 += 1;
    }

    fn mean(&self, kind: Kind) -> f64 {
        self.0
            .get(&kind)
            .map_or(0.0, |(bytes, n)| *bytes as f64 / (*n).max(1) as f64)
    }

    fn total(&self) -> f64 {
        self.0.values().map(|(bytes, _)| *bytes as f64).sum()
    }
}

/// Per agent, per second at churn: (events, bytes).
fn per_agent(pods: f64, nodes: f64, pod: f64, slice: f64, node: f64) -> (f64, f64) {
    let replacements = pods * CHURN_PER_MINUTE / 60.0;
    let pod_events = replacements * POD_EVENTS_PER_REPLACEMENT;
    let slice_events = replacements * SLICE_EVENTS_PER_REPLACEMENT;
    let node_events = nodes / NODE_STATUS_PERIOD_S;
    let events = pod_events + slice_events + node_events;
    let bytes = pod_events * (pod + EVENT_FRAMING)
        + slice_events * (slice + EVENT_FRAMING)
        + node_events * (node + EVENT_FRAMING);
    (events, bytes)
}

pub fn report(sizes: &Sizes, shape: &Shape) {
    let scenario = "watch fan-out (calculated from the objects' JSON sizes)";
    let (pod, slice, node) = (
        sizes.mean(Kind::Pod),
        sizes.mean(Kind::EndpointSlice),
        sizes.mean(Kind::Node),
    );
    figure(scenario, "Pod JSON, mean size", "B", pod);
    figure(
        scenario,
        "Service JSON, mean size",
        "B",
        sizes.mean(Kind::Service),
    );
    figure(scenario, "EndpointSlice JSON, mean size", "B", slice);
    figure(scenario, "Node JSON, mean size", "B", node);
    let list = sizes.total();
    figure(
        scenario,
        "each agent's initial list (and relist)",
        "MB",
        list / 1e6,
    );
    figure(
        scenario,
        "every agent's list, one DaemonSet rollout",
        "GB",
        list * shape.nodes as f64 / 1e9,
    );
    let (pods, nodes) = (shape.pods as f64, shape.nodes as f64);
    let (events, bytes) = per_agent(pods, nodes, pod, slice, node);
    let churn = format!("{}% of pods replaced per minute", CHURN_PER_MINUTE * 100.0);
    figure(
        scenario,
        &format!("watch events per agent, {churn}"),
        "events/s",
        events,
    );
    figure(
        scenario,
        &format!("watch bytes per agent, {churn}"),
        "MB/s",
        bytes / 1e6,
    );
    figure(
        scenario,
        &format!("watch bytes, all {} agents, {churn}", shape.nodes),
        "MB/s",
        bytes * nodes / 1e6,
    );
    // Watching only the node's own pods (a field selector, as the kubelet does) and still
    // every Service and EndpointSlice (as kube-proxy does).
    let (_, own_pods) = per_agent(pods / nodes, nodes, pod, 0.0, node);
    let (_, slices) = per_agent(pods, 0.0, 0.0, slice, 0.0);
    let pod_share = bytes - slices - nodes / NODE_STATUS_PERIOD_S * (node + EVENT_FRAMING);
    figure(
        scenario,
        "watch bytes per agent, Pods alone (what kube-proxy does not watch)",
        "MB/s",
        pod_share / 1e6,
    );
    figure(
        scenario,
        "watch bytes per agent, own node's Pods + every EndpointSlice",
        "MB/s",
        (own_pods + slices) / 1e6,
    );
    // The same density and churn at other sizes: all agents' watch bytes grow with
    // nodes × pods, so with the square of the cluster; where they pass the budget.
    let density = pods / nodes;
    let mut threshold = None;
    for n in 1..=nodes as usize {
        let (_, b) = per_agent(density * n as f64, n as f64, pod, slice, node);
        if b * n as f64 / 1e6 > EGRESS_BUDGET_MB_S {
            threshold = Some(n);
            break;
        }
    }
    if let Some(n) = threshold {
        figure(
            scenario,
            &format!(
                "nodes at which all agents' watches pass {EGRESS_BUDGET_MB_S} MB/s ({density:.0} pods per node, {churn})"
            ),
            "nodes",
            n as f64,
        );
    }
}
