//! Facts about the machine and ways to act inside other namespaces of it.
pub mod bpf_link;
pub mod cgroup;
pub mod handoff;
pub mod mounts;
pub mod netns;
pub mod netns_sockets;
pub mod pod_locations;
pub mod pod_routing;
pub mod sockopt;
pub mod sysctl;
