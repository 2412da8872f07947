//! weft-config: the cluster as weft sees it.
