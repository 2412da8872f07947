//! The pods of this node: which are in the mesh, and where their namespaces and cgroups are.
pub mod locator;
pub mod sandboxes;
