//! Which traffic of an enrolled pod is captured, and enrolling pods into capture.
pub mod addresses;
pub mod desired;
pub mod enrollment;
pub mod exclusions;
