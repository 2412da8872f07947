//! weft's control-plane controllers, as pure decisions: from a Gateway and what the cluster
//! already holds to the objects to apply, the objects to delete and the status to report.
//! Nothing here touches a socket. The control plane (weft-ca, `ca/src/controller.rs`) drives
//! these functions against the Kubernetes API; the lab calls [`reconcile::desired`] to run
//! what that controller would create; `weftctl waypoint generate` prints the same objects.
//!
//! The model is Istio's gateway deployment controller
//! (`pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go`): for each Gateway of a
//! class it handles, a ServiceAccount, a Deployment and a Service named after the Gateway,
//! labelled `gateway.istio.io/managed`, owned by the Gateway (ownerReferences with
//! `controller: true`, so the garbage collector deletes them with it), written with
//! server-side apply under one field manager, and never taking over an object of the same
//! name that it did not create. Two classes ([`class::Class`]): waypoints and ingress gateways.
#![forbid(unsafe_code)]
pub mod certificates;
pub mod class;
pub mod gateway;
pub mod ingress;
pub mod object;
pub mod reconcile;
pub mod status;
pub mod waypoint;
