//! Every map the programs share with the agent, in one place.
use aya_ebpf::{macros::map, maps::HashMap};
use weft_ebpf_common::{MAX_PODS, PodStats};

/// Per-pod counters keyed by the pod's cgroup id. The agent inserts a zeroed entry when it
/// enrolls a pod and removes it on unenroll, so the map never grows on its own.
#[map(name = "POD_STATS")]
pub static POD_STATS: HashMap<u64, PodStats> = HashMap::with_max_entries(MAX_PODS, 0);
