//! Which pods of this node are in the mesh, read from a directory of Kubernetes YAML.
//!
//! Reads only Namespaces and Pods; the full configuration registry (Services, Istio
//! resources, validation, the Kubernetes API source) replaces this reader.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use weft_core::mesh::enrollment::ambient_enrolled;

#[derive(Debug, Deserialize)]
struct Object {
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
}

/// A pod of this node that is in the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `status.podIP`; a pod without one yet is not running and cannot be captured.
    pub ip: Option<std::net::Ipv4Addr>,
    pub annotations: BTreeMap<String, String>,
}

/// Mesh pods scheduled on `node`, from every YAML file under `dir`.
pub fn mesh_pods_on_node(dir: &Path, node: &str) -> anyhow::Result<Vec<MeshPod>> {
    let mut texts = Vec::new();
    read_yaml_files(dir, &mut texts)?;
    let mut namespaces = BTreeMap::new();
    let mut pods = Vec::new();
    for (file, text) in &texts {
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(document)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let object: Object = serde_yaml::from_value(value)
                .with_context(|| format!("reading an object in {}", file.display()))?;
            match object.kind.as_deref() {
                Some("Namespace") => {
                    namespaces.insert(object.metadata.name.clone(), object.metadata.labels);
                }
                Some("Pod") => pods.push(object),
                _ => {}
            }
        }
    }
    Ok(pods
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .filter_map(|p| {
            let namespace = p.metadata.namespace.unwrap_or_else(|| "default".into());
            if !ambient_enrolled(&p.metadata.labels, namespaces.get(&namespace)) {
                return None;
            }
            Some(MeshPod {
                uid: p.metadata.uid,
                namespace,
                name: p.metadata.name,
                ip: p.status.pod_ip.and_then(|ip| ip.parse().ok()),
                annotations: p.metadata.annotations,
            })
        })
        .collect())
}

fn read_yaml_files(dir: &Path, out: &mut Vec<(std::path::PathBuf, String)>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((path, text));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_ambient_pods_of_this_node() {
        let dir = std::env::temp_dir().join(format!("weft-selection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("c.yaml"),
            "kind: Namespace\nmetadata: {name: a, labels: {istio.io/dataplane-mode: ambient}}\n---\n\
             kind: Pod\nmetadata: {name: p1, namespace: a, uid: u1}\nspec: {nodeName: n1}\nstatus: {podIP: 10.0.0.1}\n---\n\
             kind: Pod\nmetadata: {name: p2, namespace: a, uid: u2}\nspec: {nodeName: n2}\n---\n\
             kind: Pod\nmetadata: {name: p3, namespace: a, uid: u3, labels: {istio.io/dataplane-mode: none}}\nspec: {nodeName: n1}\n---\n\
             kind: Pod\nmetadata: {name: p4, uid: u4}\nspec: {nodeName: n1}\n",
        )
        .expect("write");
        let pods = mesh_pods_on_node(&dir, "n1").expect("reads");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            pods,
            [MeshPod {
                uid: "u1".into(),
                namespace: "a".into(),
                name: "p1".into(),
                ip: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
                annotations: BTreeMap::new(),
            }]
        );
    }
}
