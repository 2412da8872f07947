//! The agent's side of the kernel programs: loading the embedded object, pinning its maps,
//! attaching programs to pods.
pub mod loader;
