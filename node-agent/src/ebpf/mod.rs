//! The agent's side of the kernel programs: loading the embedded object with its pinned
//! maps, and attaching programs to pods.
pub mod attach;
pub mod loader;
