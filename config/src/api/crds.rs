//! CustomResourceDefinitions for the Istio kinds, generated from the Rust types so the
//! schema the API server enforces and the one weft parses cannot drift apart.
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use super::gateway::Gateway;
use super::kind::{
    NETWORKING_GROUP, NETWORKING_VERSIONS, SECURITY_VERSIONS, TELEMETRY_GROUP, TELEMETRY_VERSIONS,
};
use super::networking::{DestinationRule, ServiceEntry, VirtualService};
use super::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use super::telemetry::Telemetry;

/// The command that rewrites `deploy/crds/` (printed when the committed files are stale).
pub const REGENERATE_COMMAND: &str = "cargo run -p weftctl -- crds --out deploy/crds";

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("rendering the CRD {name} as YAML")]
    Render {
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One generated file: `<plural>.<group>.yaml` and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    pub file_name: String,
    pub yaml: String,
}

/// The CRDs, each serving every version Istio serves for its kind with one schema. The
/// storage version is Istio's (v1alpha3 for networking, v1beta1 for security, v1alpha1 for
/// telemetry) so these
/// CRDs can replace Istio's, or be replaced by them, over existing objects.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        VirtualService::crd(),
        DestinationRule::crd(),
        ServiceEntry::crd(),
        Gateway::crd(),
        AuthorizationPolicy::crd(),
        PeerAuthentication::crd(),
        RequestAuthentication::crd(),
        Telemetry::crd(),
    ]
    .into_iter()
    .map(istio_shape)
    .collect()
}

fn istio_shape(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let (versions, storage) = if crd.spec.group == NETWORKING_GROUP {
        (NETWORKING_VERSIONS, "v1alpha3")
    } else if crd.spec.group == TELEMETRY_GROUP {
        (TELEMETRY_VERSIONS, "v1alpha1")
    } else {
        (SECURITY_VERSIONS, "v1beta1")
    };
    let Some(mut template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    if let Some(validation) = template.schema.as_mut() {
        shape_schema(validation);
    }
    // istiod writes validation messages and conditions into `status`.
    template.subresources = Some(CustomResourceSubresources {
        status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
        scale: None,
    });
    crd.spec.versions = versions
        .iter()
        .map(|version| {
            let mut v = template.clone();
            v.name = version.to_string();
            v.served = true;
            v.storage = *version == storage;
            v
        })
        .collect();
    crd
}

fn shape_schema(validation: &mut CustomResourceValidation) {
    let Some(root) = validation.open_api_v3_schema.as_mut() else {
        return;
    };
    let properties = root.properties.get_or_insert_with(Default::default);
    if let Some(spec) = properties.get_mut("spec") {
        preserve_unknown_fields(spec);
    }
    properties.insert(
        "status".into(),
        JSONSchemaProps {
            type_: Some("object".into()),
            x_kubernetes_preserve_unknown_fields: Some(true),
            ..Default::default()
        },
    );
}

/// Istio's CRDs keep fields they do not know (a newer Istio's fields on an older cluster);
/// the API server prunes unknown fields of every object node that does not say so.
/// Defaults (which serde's `default` puts in the schema) go: the API server would write
/// them into users' objects, which Istio's CRDs never do.
fn preserve_unknown_fields(schema: &mut JSONSchemaProps) {
    if schema.type_.as_deref() == Some("object") && schema.properties.is_some() {
        schema.x_kubernetes_preserve_unknown_fields = Some(true);
    }
    schema.default = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        preserve_unknown_fields(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => preserve_unknown_fields(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(preserve_unknown_fields)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        preserve_unknown_fields(values);
    }
}

/// The files of `deploy/crds/`, one per CRD.
pub fn render() -> Result<Vec<CrdFile>, CrdError> {
    let mut files = crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_yaml::to_string(&crd).map_err(|source| CrdError::Render {
                name: name.clone(),
                source,
            })?;
            Ok(CrdFile {
                file_name: format!("{name}.yaml"),
                yaml: format!(
                    "# Generated from weft-config's API types by `{REGENERATE_COMMAND}`; do not edit.\n{body}"
                ),
            })
        })
        .collect::<Result<Vec<_>, CrdError>>()?;
    files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    // The kustomization that lists them is generated with them, so the two cannot drift.
    let resources: String = files
        .iter()
        .map(|f| format!("  - {}\n", f.file_name))
        .collect();
    files.push(CrdFile {
        file_name: KUSTOMIZATION.to_string(),
        yaml: format!(
            "# The CRDs of the Istio kinds weft reads, generated from config/'s types by\n# `{REGENERATE_COMMAND}`; do not edit.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{resources}"
        ),
    });
    Ok(files)
}

/// The kustomization of `deploy/crds/`, generated with the CRDs.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// Writes every CRD file into `dir`, returning the paths written.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, CrdError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for file in render()? {
        let path = dir.join(&file.file_name);
        std::fs::write(&path, &file.yaml).map_err(|source| CrdError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
