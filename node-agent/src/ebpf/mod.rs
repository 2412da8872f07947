//! The agent's side of the kernel programs: loading the embedded object with its pinned
//! maps (checked against what earlier runs pinned), and attaching programs to pods.
pub mod attach;
pub mod loader;
pub mod pinned_layout;
