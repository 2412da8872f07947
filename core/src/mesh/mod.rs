//! Mesh-wide rules that do not depend on where configuration comes from.
pub mod enrollment;
pub mod waypoint;
