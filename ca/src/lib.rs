//! weft-ca's parts that tests reach: how node agents are authenticated in a cluster.
pub mod token_review;
