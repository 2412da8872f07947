//! weft-core: the pieces both weft binaries share.
pub mod host;
pub mod mesh;
