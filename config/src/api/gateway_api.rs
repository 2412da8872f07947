//! `gateway.networking.k8s.io` Gateway (the Kubernetes Gateway API), cut to what declares a
//! waypoint: Istio ambient users declare one as a Gateway of class `istio-waypoint` with an
//! HBONE listener on 15008 and `istio.io/waypoint-for`.
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// Versions the Gateway API serves for Gateway, the preferred one first.
pub const GATEWAY_API_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// Not generated with kube's derive: its CRD is the Gateway API's own (installed with the
/// Gateway API), never one of weft's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesGateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: KubernetesGatewaySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KubernetesGatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    pub port: u32,
    pub protocol: String,
}
