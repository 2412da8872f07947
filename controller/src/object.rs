//! The objects the controller writes: their kinds, keys, and what it needs to know of one
//! that already exists (whose it is, who owns it, whether it has drifted from what the
//! controller would write).
use std::fmt;

use serde_json::Value;

use crate::class::{Class, MANAGED_LABEL};

/// The uid of the Gateway an object was made for, on the Roles and RoleBindings of an
/// ingress gateway (owner references cannot cross namespaces).
pub const GATEWAY_UID_LABEL: &str = "weft.io/gateway-uid";
/// The namespace of the Gateway an object was made for, on the same.
pub const GATEWAY_NAMESPACE_LABEL: &str = "weft.io/gateway-namespace";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    ServiceAccount,
    Deployment,
    Service,
    /// The mesh's root certificate, published in a waypoint's namespace.
    ConfigMap,
    /// The one binding of the waypoints' ClusterRole, whose subjects the controller keeps.
    ClusterRoleBinding,
    /// An ingress gateway's grant to read the Secrets its listeners name, in one namespace.
    Role,
    /// Binds that Role to the ingress gateway's ServiceAccount.
    RoleBinding,
}

impl ObjectKind {
    /// Every kind, in the order objects are applied: the ServiceAccount before the
    /// Deployment that runs as it.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::ServiceAccount,
        ObjectKind::ConfigMap,
        ObjectKind::Role,
        ObjectKind::RoleBinding,
        ObjectKind::Deployment,
        ObjectKind::Service,
        ObjectKind::ClusterRoleBinding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::ServiceAccount => "ServiceAccount",
            ObjectKind::Deployment => "Deployment",
            ObjectKind::Service => "Service",
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::ClusterRoleBinding => "ClusterRoleBinding",
            ObjectKind::Role => "Role",
            ObjectKind::RoleBinding => "RoleBinding",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            ObjectKind::ServiceAccount | ObjectKind::Service | ObjectKind::ConfigMap => "",
            ObjectKind::Deployment => "apps",
            ObjectKind::ClusterRoleBinding | ObjectKind::Role | ObjectKind::RoleBinding => {
                "rbac.authorization.k8s.io"
            }
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_string(),
            group => format!("{group}/{}", self.version()),
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::ServiceAccount => "serviceaccounts",
            ObjectKind::Deployment => "deployments",
            ObjectKind::Service => "services",
            ObjectKind::ConfigMap => "configmaps",
            ObjectKind::ClusterRoleBinding => "clusterrolebindings",
            ObjectKind::Role => "roles",
            ObjectKind::RoleBinding => "rolebindings",
        }
    }

    pub fn namespaced(self) -> bool {
        self != ObjectKind::ClusterRoleBinding
    }
}

/// Which object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object body the controller made (kind, namespace and name read back).
    pub fn of(kind: ObjectKind, body: &Value) -> Self {
        Self::new(
            kind,
            body["metadata"]["namespace"].as_str().unwrap_or_default(),
            body["metadata"]["name"].as_str().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.name(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
        }
    }
}

/// An object as the cluster holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Existing {
    pub key: ObjectKey,
    pub uid: String,
    pub resource_version: Option<String>,
    pub value: Value,
}

impl Existing {
    pub fn from_json(kind: ObjectKind, value: Value) -> Self {
        let metadata = &value["metadata"];
        Self {
            key: ObjectKey::new(
                kind,
                metadata["namespace"].as_str().unwrap_or_default(),
                metadata["name"].as_str().unwrap_or_default(),
            ),
            uid: metadata["uid"].as_str().unwrap_or_default().to_string(),
            resource_version: metadata["resourceVersion"].as_str().map(str::to_string),
            value,
        }
    }

    /// Made by one of weft's controllers ([`MANAGED_LABEL`] with one of its values).
    pub fn is_managed(&self) -> bool {
        self.value["metadata"]["labels"][MANAGED_LABEL]
            .as_str()
            .is_some_and(Class::is_ours)
    }

    /// The uid of the owner with `controller: true`, if any.
    pub fn controller_uid(&self) -> Option<&str> {
        self.owner_references()
            .find(|r| r["controller"].as_bool() == Some(true))
            .and_then(|r| r["uid"].as_str())
    }

    /// Made for the Gateway `uid`: its controller owner, or (a Role or RoleBinding in
    /// another namespace than the Gateway's, which an owner reference cannot reach) its
    /// [`GATEWAY_UID_LABEL`].
    pub fn made_for(&self, uid: &str) -> bool {
        self.controller_uid() == Some(uid)
            || self.value["metadata"]["labels"][GATEWAY_UID_LABEL].as_str() == Some(uid)
    }

    /// Whether `uid` is among its owners.
    pub fn owned_by(&self, uid: &str) -> bool {
        self.owner_references()
            .any(|r| r["uid"].as_str() == Some(uid))
    }

    fn owner_references(&self) -> impl Iterator<Item = &Value> {
        self.value["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
    }

    /// Whether it still holds everything `desired` says, as the API server would leave it
    /// after applying `desired`: every field `desired` sets is there with the same value;
    /// what others added (defaults, other controllers' labels, list entries of their own) does
    /// not count as drift.
    pub fn holds(&self, desired: &Value) -> bool {
        contains(&self.value, desired)
    }
}

/// `live` has every field of `desired` with its value. Objects compare field by field
/// (extra fields in `live` are fine); lists of objects need each desired entry in some live
/// entry (server-side apply merges keyed lists such as containers, ports and env, keeping
/// entries others added); lists of scalars (args, command) must be equal.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired
            .iter()
            .all(|(key, want)| live.get(key).is_some_and(|have| contains(have, want))),
        (Value::Array(live), Value::Array(desired)) => {
            if desired.iter().all(Value::is_object) && !desired.is_empty() {
                desired
                    .iter()
                    .all(|want| live.iter().any(|have| contains(have, want)))
            } else {
                live == desired
            }
        }
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_additions_are_not_drift_but_changed_or_missing_fields_are() {
        let desired = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "args": ["--x", "1"], "ports": [{"containerPort": 1}]}]}});
        let defaulted = json!({"metadata": {"labels": {"a": "1", "other": "x"}, "uid": "u"},
            "spec": {"replicas": 1, "containers": [
                {"name": "c", "args": ["--x", "1"], "imagePullPolicy": "IfNotPresent",
                 "ports": [{"containerPort": 1, "protocol": "TCP"}]},
                {"name": "injected"}]}});
        assert!(contains(&defaulted, &desired));
        let edited_arg = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "args": ["--x", "2"], "ports": [{"containerPort": 1}]}]}});
        assert!(!contains(&edited_arg, &desired));
        let label_gone = json!({"metadata": {"labels": {}},
            "spec": {"containers": [{"name": "c", "args": ["--x", "1"], "ports": [{"containerPort": 1}]}]}});
        assert!(!contains(&label_gone, &desired));
        let extra_arg = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "args": ["--x", "1", "--y"], "ports": [{"containerPort": 1}]}]}});
        assert!(!contains(&extra_arg, &desired), "args are one value");
    }

    #[test]
    fn managed_and_owned_are_read_from_labels_and_owner_references() {
        let existing = Existing::from_json(
            ObjectKind::Deployment,
            json!({"metadata": {"name": "wp", "namespace": "shop", "uid": "d-1", "resourceVersion": "7",
                "labels": {"gateway.istio.io/managed": "weft.io-waypoint-controller"},
                "ownerReferences": [{"uid": "other"}, {"uid": "g-1", "controller": true}]}}),
        );
        assert_eq!(existing.key.to_string(), "Deployment shop/wp");
        assert!(existing.is_managed());
        assert_eq!(existing.controller_uid(), Some("g-1"));
        assert!(existing.owned_by("other"));
        let istios = Existing::from_json(
            ObjectKind::Service,
            json!({"metadata": {"name": "wp", "labels": {"gateway.istio.io/managed": "istio.io-mesh-controller"}}}),
        );
        assert!(!istios.is_managed(), "Istio's, not weft's");
    }
}
