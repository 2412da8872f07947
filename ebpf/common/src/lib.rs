//! Types laid out identically in the kernel programs and in the agent.
//!
//! Every type here is `#[repr(C)]`, `Copy`, and free of padding surprises, because the
//! kernel and userspace read the same bytes.
#![no_std]

/// Names of the maps as they appear in the ELF object and under bpffs.
pub mod map_names {
    /// Per-pod counters, keyed by the pod's cgroup id.
    pub const POD_STATS: &str = "POD_STATS";
}

/// Counters kept per enrolled pod, keyed by the id of the pod's cgroup (its inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    /// TCP and UDP `connect()` calls made by the pod's processes (IPv4 and IPv6).
    pub connects: u64,
}

/// Upper bound on pods per node the maps are sized for.
pub const MAX_PODS: u32 = 4096;

#[cfg(feature = "user")]
mod user {
    // SAFETY: PodStats is repr(C), Copy, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PodStats {}
}
