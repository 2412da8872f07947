//! Facts about the machine and ways to act inside other namespaces of it.
pub mod mounts;
pub mod netns;
pub mod pod_locations;
