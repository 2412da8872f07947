//! The agent's side of weft-cni, the chained CNI plugin that makes a pod's start wait for
//! its capture: the socket the plugin asks (`server`), the decision whether a sandbox's pod
//! belongs to the mesh (`verdict`), and keeping the plugin in the node's CNI configuration
//! (`install`).
pub mod install;
pub mod server;
pub mod verdict;
