//! The objects weft reads, as one type, and how a JSON (or YAML) document becomes one.
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::gateway::Gateway;
use super::gateway_api::KubernetesGateway;
use super::gateway_routes::{GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute};
use super::kind::{DEFAULT_NAMESPACE, Kind, ObjectRef};
use super::kubernetes::{EndpointSlice, Namespace, Node, Pod, Secret, Service, trim_metadata};
use super::mesh::{MESH_CONFIG_MAP, MESH_KEY, MeshConfig, MeshConfigMap};
use super::networking::{DestinationRule, ServiceEntry, VirtualService};
use super::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use super::telemetry::Telemetry;
use crate::refusal::{Refusal, Warning};

/// One object of a kind weft reads. Cheap to clone: the payload is shared.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    VirtualService(Arc<VirtualService>),
    DestinationRule(Arc<DestinationRule>),
    ServiceEntry(Arc<ServiceEntry>),
    Gateway(Arc<Gateway>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    PeerAuthentication(Arc<PeerAuthentication>),
    KubernetesGateway(Arc<KubernetesGateway>),
    MeshConfig(Arc<MeshConfigMap>),
    RequestAuthentication(Arc<RequestAuthentication>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    TlsRoute(Arc<TlsRoute>),
    TcpRoute(Arc<TcpRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    Secret(Arc<Secret>),
    Telemetry(Arc<Telemetry>),
}

macro_rules! each_object {
    ($value:expr, $binding:ident => $body:expr) => {
        match $value {
            Object::Namespace($binding) => $body,
            Object::Node($binding) => $body,
            Object::Pod($binding) => $body,
            Object::Service($binding) => $body,
            Object::EndpointSlice($binding) => $body,
            Object::VirtualService($binding) => $body,
            Object::DestinationRule($binding) => $body,
            Object::ServiceEntry($binding) => $body,
            Object::Gateway($binding) => $body,
            Object::AuthorizationPolicy($binding) => $body,
            Object::PeerAuthentication($binding) => $body,
            Object::KubernetesGateway($binding) => $body,
            Object::MeshConfig($binding) => $body,
            Object::RequestAuthentication($binding) => $body,
            Object::HttpRoute($binding) => $body,
            Object::GrpcRoute($binding) => $body,
            Object::TlsRoute($binding) => $body,
            Object::TcpRoute($binding) => $body,
            Object::ReferenceGrant($binding) => $body,
            Object::Secret($binding) => $body,
            Object::Telemetry($binding) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::Gateway(_) => Kind::Gateway,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::KubernetesGateway(_) => Kind::KubernetesGateway,
            Object::MeshConfig(_) => Kind::MeshConfig,
            Object::RequestAuthentication(_) => Kind::RequestAuthentication,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Secret(_) => Kind::Secret,
            Object::Telemetry(_) => Kind::Telemetry,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata)
    }

    pub fn object_ref(&self) -> ObjectRef {
        let meta = self.meta();
        let kind = self.kind();
        let namespace = if kind.namespaced() {
            meta.namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
        } else {
            String::new()
        };
        ObjectRef::new(kind, namespace, meta.name.clone().unwrap_or_default())
    }

    /// Reads a document of any kind weft uses. `Ok(None)` for kinds weft has no use for
    /// (Deployments, ConfigMaps, Sidecars, …): they are not
    /// errors, a directory of manifests holds many of them.
    pub fn from_json(value: Value) -> Result<Option<Object>, Refusal> {
        Ok(Self::from_json_checked(value)?.map(|(object, _)| object))
    }

    /// [`Object::from_json`], with a warning for each field of an Istio or Gateway API
    /// object that its schema does not have (a misspelt `rout`, a field of another
    /// version): serde drops them silently, so they are named as kubectl's strict field
    /// validation names them, `unknown field "spec.http[0].rout"`. Kubernetes' own kinds
    /// are cut to the fields weft uses and are not checked.
    pub fn from_json_checked(mut value: Value) -> Result<Option<(Object, Vec<Warning>)>, Refusal> {
        let Some(kind_name) = value.get("kind").and_then(Value::as_str) else {
            return Ok(None);
        };
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (group, version) = match api_version.rsplit_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version.as_str()),
        };
        let Some(kind) = Kind::by_group_and_name(group, kind_name) else {
            // Not a kind weft reads, or the same kind name in another API group.
            return Ok(None);
        };
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind.namespaced() && value.pointer("/metadata/namespace").is_none() {
            // kubectl's rule: a namespaced object without a namespace goes to "default".
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), Value::from(DEFAULT_NAMESPACE));
            }
        }
        let namespace = if kind.namespaced() {
            value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_string()
        } else {
            String::new()
        };
        let object_ref = ObjectRef::new(kind, namespace, name.clone());
        if !kind.versions().contains(&version) {
            return Err(Refusal::new(
                object_ref,
                "apiVersion",
                format!(
                    "{api_version} is not served for {kind}; use one of {}",
                    kind.versions()
                        .iter()
                        .map(|v| join_group(kind.group(), v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if name.is_empty() {
            return Err(Refusal::new(object_ref, "metadata.name", "required"));
        }
        if kind == Kind::MeshConfig && name != MESH_CONFIG_MAP {
            // Only the ConfigMap `istio` is Istio's mesh config; others are the
            // applications' own.
            return Ok(None);
        }
        if kind == Kind::Secret
            && value.get("type").and_then(Value::as_str) != Some(super::kubernetes::TLS_SECRET_TYPE)
        {
            // Only TLS Secrets are a gateway's credentials; weft keeps no other.
            return Ok(None);
        }
        if kind.is_custom() {
            let input = value.clone();
            let (object, unknown) = match kind {
                Kind::VirtualService => checked(value, &object_ref, Object::VirtualService),
                Kind::DestinationRule => checked(value, &object_ref, Object::DestinationRule),
                Kind::ServiceEntry => checked(value, &object_ref, Object::ServiceEntry),
                Kind::Gateway => checked(value, &object_ref, Object::Gateway),
                Kind::AuthorizationPolicy => {
                    checked(value, &object_ref, Object::AuthorizationPolicy)
                }
                Kind::PeerAuthentication => checked(value, &object_ref, Object::PeerAuthentication),
                Kind::RequestAuthentication => {
                    checked(value, &object_ref, Object::RequestAuthentication)
                }
                Kind::KubernetesGateway => checked(value, &object_ref, Object::KubernetesGateway),
                Kind::HttpRoute => checked(value, &object_ref, Object::HttpRoute),
                Kind::GrpcRoute => checked(value, &object_ref, Object::GrpcRoute),
                Kind::TlsRoute => checked(value, &object_ref, Object::TlsRoute),
                Kind::TcpRoute => checked(value, &object_ref, Object::TcpRoute),
                Kind::ReferenceGrant => checked(value, &object_ref, Object::ReferenceGrant),
                Kind::Telemetry => checked(value, &object_ref, Object::Telemetry),
                _ => unreachable_custom(&object_ref),
            }?;
            let warnings = unknown_fields(&input, &unknown)
                .into_iter()
                .map(|field| {
                    let reason = format!(
                        "unknown field {field:?}: not in the {kind} schema, ignored (misspelt?)"
                    );
                    Refusal::new(object_ref.clone(), field, reason)
                })
                .collect();
            return Ok(Some((object, warnings)));
        }
        let parsed = match kind {
            Kind::Namespace => typed(value, &object_ref).map(Object::Namespace),
            Kind::Node => typed(value, &object_ref).map(Object::Node),
            Kind::Pod => typed(value, &object_ref).map(Object::Pod),
            Kind::Service => typed(value, &object_ref).map(Object::Service),
            Kind::EndpointSlice => typed(value, &object_ref).map(Object::EndpointSlice),
            Kind::VirtualService => typed(value, &object_ref).map(Object::VirtualService),
            Kind::DestinationRule => typed(value, &object_ref).map(Object::DestinationRule),
            Kind::ServiceEntry => typed(value, &object_ref).map(Object::ServiceEntry),
            Kind::Gateway => typed(value, &object_ref).map(Object::Gateway),
            Kind::AuthorizationPolicy => typed(value, &object_ref).map(Object::AuthorizationPolicy),
            Kind::PeerAuthentication => typed(value, &object_ref).map(Object::PeerAuthentication),
            Kind::KubernetesGateway => typed(value, &object_ref).map(Object::KubernetesGateway),
            Kind::MeshConfig => mesh_config(value, &object_ref).map(Object::MeshConfig),
            Kind::RequestAuthentication => {
                typed(value, &object_ref).map(Object::RequestAuthentication)
            }
            Kind::HttpRoute => typed(value, &object_ref).map(Object::HttpRoute),
            Kind::GrpcRoute => typed(value, &object_ref).map(Object::GrpcRoute),
            Kind::TlsRoute => typed(value, &object_ref).map(Object::TlsRoute),
            Kind::TcpRoute => typed(value, &object_ref).map(Object::TcpRoute),
            Kind::ReferenceGrant => typed(value, &object_ref).map(Object::ReferenceGrant),
            Kind::Secret => typed(value, &object_ref).map(Object::Secret),
            Kind::Telemetry => typed(value, &object_ref).map(Object::Telemetry),
        }?;
        Ok(Some((parsed, Vec::new())))
    }
}

fn join_group(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Types whose metadata can be trimmed once parsed.
pub trait HasMetadata {
    fn metadata_mut(&mut self) -> &mut ObjectMeta;

    /// What every agent holds of every object of the kind, made as small as it can be
    /// once parsed: the metadata trimmed ([`trim_metadata`]), and for the kinds a
    /// cluster has hundreds of thousands of (Pods, EndpointSlices) what weft never reads
    /// dropped and spare list capacity given back.
    fn trim(&mut self) {
        trim_metadata(self.metadata_mut());
    }
}

macro_rules! has_metadata {
    ($($t:ty),*) => {
        $(impl HasMetadata for $t {
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        })*
    };
}

impl HasMetadata for Pod {
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn trim(&mut self) {
        trim_metadata(&mut self.metadata);
        self.compact();
    }
}

impl HasMetadata for EndpointSlice {
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn trim(&mut self) {
        trim_metadata(&mut self.metadata);
        self.compact();
    }
}

has_metadata!(
    Namespace,
    Node,
    Service,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    KubernetesGateway,
    RequestAuthentication,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    Secret,
    Telemetry
);

fn typed<T: DeserializeOwned + HasMetadata>(
    value: Value,
    object_ref: &ObjectRef,
) -> Result<Arc<T>, Refusal> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(mut object) => {
            object.trim();
            Ok(Arc::new(object))
        }
        Err(error) => {
            let path = error.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                path
            };
            Err(Refusal::new(
                object_ref.clone(),
                field,
                error.into_inner().to_string(),
            ))
        }
    }
}

/// A custom kind's object and its value serialized again from the typed object, to find
/// what the schema dropped.
fn checked<T: DeserializeOwned + Serialize + HasMetadata>(
    value: Value,
    object_ref: &ObjectRef,
    wrap: fn(Arc<T>) -> Object,
) -> Result<(Object, Value), Refusal> {
    let object = typed::<T>(value, object_ref)?;
    let kept = serde_json::to_value(&*object).unwrap_or(Value::Null);
    Ok((wrap(object), kept))
}

/// Every custom kind is listed in `from_json_checked`; an unlisted one is refused rather
/// than read unchecked.
fn unreachable_custom(object_ref: &ObjectRef) -> Result<(Object, Value), Refusal> {
    Err(Refusal::new(
        object_ref.clone(),
        "kind",
        "not a kind weft reads",
    ))
}

/// Field paths (`spec.http[0].rout`) present in `input` and absent from `kept`, the typed
/// object serialized again. `metadata` is Kubernetes' own and `status` is the server's;
/// a value a serializer may leave out as a default (null, false, 0, "", [], {}) is not
/// reported, since it cannot be told from a known field holding its default.
pub fn unknown_fields(input: &Value, kept: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let (Value::Object(input), Value::Object(kept)) = (input, kept) {
        for (key, value) in input {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            match kept.get(key) {
                Some(kept) => walk(value, kept, key.clone(), &mut found),
                None if is_default(value) => {}
                None => found.push(key.clone()),
            }
        }
    }
    found
}

fn walk(input: &Value, kept: &Value, path: String, found: &mut Vec<String>) {
    match (input, kept) {
        (Value::Object(input), Value::Object(kept)) => {
            for (key, value) in input {
                let at = format!("{path}.{key}");
                match kept.get(key) {
                    Some(kept) => walk(value, kept, at, found),
                    None if is_default(value) => {}
                    None => found.push(at),
                }
            }
        }
        (Value::Array(input), Value::Array(kept)) => {
            for (i, (value, kept)) in input.iter().zip(kept).enumerate() {
                walk(value, kept, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The `istio` ConfigMap: its metadata, and its `mesh` key parsed as Istio's MeshConfig.
fn mesh_config(value: Value, object_ref: &ObjectRef) -> Result<Arc<MeshConfigMap>, Refusal> {
    let refuse = |field: String, reason: String| Refusal::new(object_ref.clone(), field, reason);
    let mut metadata: ObjectMeta = match value.get("metadata") {
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| refuse("metadata".into(), e.to_string()))?,
        None => ObjectMeta::default(),
    };
    trim_metadata(&mut metadata);
    let text = match value.pointer(&format!("/data/{MESH_KEY}")) {
        None | Some(Value::Null) => {
            return Ok(Arc::new(MeshConfigMap {
                metadata,
                mesh: MeshConfig::default(),
            }));
        }
        Some(Value::String(text)) => text.clone(),
        Some(_) => {
            return Err(refuse(
                format!("data.{MESH_KEY}"),
                "must be a string holding the mesh config YAML".into(),
            ));
        }
    };
    let document: Value = match serde_yaml::from_str::<Option<Value>>(&text) {
        Ok(Some(document)) => document,
        Ok(None) => Value::Object(Default::default()),
        Err(e) => {
            return Err(refuse(
                format!("data.{MESH_KEY}"),
                format!("not valid YAML: {e}"),
            ));
        }
    };
    match serde_path_to_error::deserialize::<_, MeshConfig>(document) {
        Ok(mesh) => Ok(Arc::new(MeshConfigMap { metadata, mesh })),
        Err(error) => {
            let path = error.path().to_string();
            let field = if path == "." {
                format!("data.{MESH_KEY}")
            } else {
                format!("data.{MESH_KEY}.{path}")
            };
            Err(refuse(field, error.into_inner().to_string()))
        }
    }
}

/// Objects arriving already typed (from the API watchers of the Kubernetes kinds).
macro_rules! from_typed {
    ($($variant:ident),*) => {
        $(impl From<$variant> for Object {
            fn from(mut object: $variant) -> Self {
                object.trim();
                Object::$variant(Arc::new(object))
            }
        })*
    };
}

from_typed!(
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    Secret,
    Telemetry
);

/// The labels of an object's metadata, empty when it has none.
pub fn labels(meta: &ObjectMeta) -> &std::collections::BTreeMap<String, String> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}
