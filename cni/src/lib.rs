//! weft-cni: a chained CNI plugin, and what weft-agent shares with it.
//!
//! The container runtime runs `weft-cni` for every pod of the node, after the plugin that
//! gives the pod its interface and addresses, and before any of the pod's containers start
//! (CNI spec 1.0: <https://www.cni.dev/docs/spec/>). On ADD the plugin asks the node's agent,
//! over a root-only unix socket, to capture the pod's network namespace and cgroup, and
//! answers only once capture is in place; when the agent cannot be reached the ADD fails,
//! so the kubelet tries again later and a pod of the mesh never starts uncaptured.
//!
//! - [`spec`]: the CNI side, pure: environment, `CNI_ARGS`, the network configuration with
//!   its `prevResult`, the pod's addresses, results and errors as the runtime reads them;
//! - [`plugin`]: what each command does, with the agent behind a trait;
//! - [`protocol`]: the versioned request and response between plugin and agent;
//! - [`wire`]: their framing on a unix stream socket, with the pod's network namespace
//!   passed as a file descriptor (`SCM_RIGHTS`), and the peer's credentials;
//! - [`client`]: the plugin's end of the socket;
//! - [`conflist`]: the agent's edits of the node's CNI configuration (pure).
pub mod client;
pub mod conflist;
pub mod plugin;
pub mod protocol;
pub mod spec;
pub mod wire;
