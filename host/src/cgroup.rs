//! cgroup v2 facts.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A cgroup's id as `bpf_get_current_cgroup_id()` reports it: its cgroup2 inode number.
pub fn cgroup_id(cgroup: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(cgroup)?.ino())
}

/// Ids of a cgroup and of every cgroup below it (a pod's containers, in a cluster).
pub fn cgroup_tree_ids(root: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = vec![cgroup_id(root)?];
    for entry in std::fs::read_dir(root)?.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            ids.extend(cgroup_tree_ids(&entry.path())?);
        }
    }
    Ok(ids)
}
