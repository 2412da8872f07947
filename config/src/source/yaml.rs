//! Kubernetes manifests in YAML (or JSON): multi-document files, `List` documents, nested
//! folders. Shared by the directory source and `weftctl validate`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::api::Object;
use crate::refusal::Origin;
use crate::registry::Candidate;

/// A document that is not a Kubernetes object at all (so no kind or name to refuse).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct DocumentError {
    pub origin: Origin,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A YAML syntax error spoils the whole file: documents after it cannot be found.
    #[error("{path}: {source}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
}

/// What one file holds.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    pub candidates: Vec<Candidate>,
    pub errors: Vec<DocumentError>,
    /// Objects of kinds a user may mean for Istio but weft does not read
    /// (`api::unsupported`): accepted and ignored, so worth a warning.
    pub ignored: Vec<DocumentError>,
}

/// Whether `path` looks like a manifest: `.yaml`, `.yml` or `.json`, not hidden (editors'
/// swap files, ConfigMap mounts' `..data` links).
pub fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let extension = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(extension, Some("yaml" | "yml" | "json"))
}

/// Manifest files under `root` (or `root` itself if it is a file), sorted.
pub fn manifest_files(root: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let metadata = std::fs::metadata(root).map_err(|source| ReadError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if metadata.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| ReadError::Io {
            path: folder.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ReadError::Io {
                path: folder.clone(),
                source,
            })?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            // `metadata` follows symlinks, as a mounted ConfigMap needs.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() && !hidden => folders.push(path),
                Ok(m) if m.is_file() && is_manifest(&path) => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    Ok(files)
}

pub fn read_file(path: &Path) -> Result<Documents, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, Arc::new(path.to_path_buf())).map_err(|source| ReadError::Syntax {
        path: path.to_path_buf(),
        source,
    })
}

/// The objects of a YAML (or JSON) text; `file` names it in origins.
pub fn parse(text: &str, file: Arc<PathBuf>) -> Result<Documents, serde_yaml::Error> {
    let mut documents = Documents::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.clone(),
            document: u32::try_from(index + 1).unwrap_or(u32::MAX),
            item: None,
        };
        let yaml = serde_yaml::Value::deserialize(document)?;
        if yaml.is_null() {
            continue;
        }
        let value = match serde_json::to_value(&yaml) {
            Ok(value) => value,
            Err(e) => {
                documents.errors.push(DocumentError {
                    origin,
                    reason: format!("not representable as JSON: {e}"),
                });
                continue;
            }
        };
        if !value.is_object() {
            documents.errors.push(DocumentError {
                origin,
                reason: "not a Kubernetes object (expected a mapping with apiVersion and kind)"
                    .into(),
            });
            continue;
        }
        match list_items(value) {
            Ok(items) => {
                for (item, value) in items.into_iter().enumerate() {
                    let origin = Origin {
                        item: Some(u32::try_from(item).unwrap_or(u32::MAX)),
                        ..origin.clone()
                    };
                    push_object(value, origin, &mut documents);
                }
            }
            Err(value) => push_object(value, origin, &mut documents),
        }
    }
    Ok(documents)
}

/// The items of a `List` (or `PodList`, …) document; the document itself otherwise.
fn list_items(mut value: Value) -> Result<Vec<Value>, Value> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        return Err(value);
    }
    match value.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        _ => Ok(Vec::new()),
    }
}

fn push_object(value: Value, origin: Origin, documents: &mut Documents) {
    let unsupported = crate::api::unsupported(&value);
    match Object::from_json_checked(value) {
        Ok(Some((object, warnings))) => documents.candidates.push(Candidate {
            object: Ok(object),
            warnings: warnings
                .into_iter()
                .map(|w| w.with_origin(Some(origin.clone())))
                .collect(),
            origin: Some(origin),
        }),
        // Kinds weft does not use (Deployments, ConfigMaps, …) are expected here; those
        // meant for Istio are warned about.
        Ok(None) => {
            if let Some(reason) = unsupported {
                documents.ignored.push(DocumentError { origin, reason });
            }
        }
        Err(refusal) => documents.candidates.push(Candidate {
            object: Err(refusal.with_origin(Some(origin.clone()))),
            origin: Some(origin),
            warnings: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;

    #[test]
    fn multi_document_lists_and_foreign_kinds() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
  - apiVersion: networking.istio.io/v1beta1
    kind: VirtualService
    metadata: {name: web}
    spec: {hosts: [web]}
---
just a string
"#;
        let docs = parse(text, Arc::new("x.yaml".into())).expect("parses");
        let refs: Vec<_> = docs
            .candidates
            .iter()
            .map(|c| {
                (
                    c.object_ref().kind,
                    c.object_ref().namespace,
                    c.origin.clone(),
                )
            })
            .map(|(k, ns, o)| (k, ns, o.map(|o| (o.document, o.item))))
            .collect();
        assert_eq!(
            refs,
            [
                (Kind::Namespace, String::new(), Some((1, None))),
                (Kind::Service, "shop".to_string(), Some((3, Some(0)))),
                // No namespace in the manifest: kubectl's default.
                (
                    Kind::VirtualService,
                    "default".to_string(),
                    Some((3, Some(1)))
                ),
            ]
        );
        assert_eq!(docs.errors.len(), 1);
        assert_eq!(docs.errors[0].origin.document, 4);
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews}
          weight: fifty
"#;
        let docs = parse(text, Arc::new("vs.yaml".into())).expect("parses");
        let refusal = docs.candidates[0].object.as_ref().expect_err("refused");
        assert_eq!(refusal.field, "spec.http[0].route[0].weight");
        assert!(
            refusal.reason.contains("invalid type"),
            "{}",
            refusal.reason
        );
        assert_eq!(
            refusal.to_string().split(": ").take(3).collect::<Vec<_>>(),
            [
                "vs.yaml:1",
                "VirtualService bookinfo/reviews",
                "spec.http[0].route[0].weight"
            ]
        );
    }

    #[test]
    fn unserved_versions_are_refused() {
        let text =
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n";
        let docs = parse(text, Arc::new("vs.yaml".into())).expect("parses");
        let refusal = docs.candidates[0].object.as_ref().expect_err("refused");
        assert_eq!(refusal.field, "apiVersion");
    }
}
