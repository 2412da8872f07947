//! Per-pod counters, attached to each enrolled pod's cgroup.
use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, programs::SockAddrContext,
};

use crate::maps::POD_STATS;

/// Returned by cgroup/connect programs to let the `connect()` proceed.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn weft_count_connect4(_ctx: SockAddrContext) -> i32 {
    count_connect();
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn weft_count_connect6(_ctx: SockAddrContext) -> i32 {
    count_connect();
    ALLOW
}

#[inline(always)]
fn count_connect() {
    // SAFETY: the helper has no preconditions in cgroup programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if let Some(stats) = POD_STATS.get_ptr_mut(cgroup) {
        // SAFETY: the pointer comes from a map lookup and is valid for this program run;
        // concurrent updates from two CPUs may lose a count, which counters tolerate.
        unsafe { (*stats).connects += 1 };
    }
}
