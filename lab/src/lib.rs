//! The lab: a local Kubernetes-like cluster built from Linux namespaces on one machine.
//!
//! It plays the parts a cluster provides around weft — API server (a directory of YAML),
//! kubelet (pod processes in their own network namespace, pod cgroup and a cgroup per
//! container, and their probes: `kubelet`), CNI (veth pairs and routes; then the plugins the
//! node's CNI configuration chains, such as weft-cni, run as a container runtime runs them),
//! kube-proxy (nftables DNAT for ClusterIPs in node namespaces), DNS (`/etc/hosts`, and a DNS
//! server for the internet's names) and the world around the cluster (`outside`: a client
//! host and load balancers; `external`: the internet's hosts behind the nodes' NAT) — so
//! that weft-agent can run unchanged on top of it.
//!
//! Layout on the machine, all named after the lab so that `down` finds even what a crashed
//! `up` left behind:
//! - network namespaces `wl-<lab>-fabric`, `wl-<lab>-node-N`, `wl-<lab>-<ns>-<pod>`;
//! - cgroups under `<cgroup2>/weft-lab/<lab>/`;
//! - files under `/run/weft-lab/<lab>/` (records, logs, the cluster view for agents).
//!
//! No address is ever assigned in the host's network namespace.
mod cgroup;
mod cmd;
pub mod cni;
pub mod container;
mod error;
pub mod external;
pub mod image;
pub mod kubelet;
mod lab;
pub mod manifest;
mod outside;
pub mod plan;
mod process;
pub mod records;
pub mod soak;
mod volumes;

pub use error::LabError;
pub use lab::{Applied, CniRetry, Lab, LabSummary, Runtime, down, leftovers, list_labs};
pub use plan::{LabOptions, Plan};
