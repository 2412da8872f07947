//! weft-host: facts about the machine and ways to act inside other namespaces of it.
//!
//! The only crate of weft's userspace with unsafe code (system calls: setns, mounts,
//! rtnetlink, SCM_RIGHTS, bpf(2)); each unsafe block says why it is sound.
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
