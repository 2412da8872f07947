//! The committed CRDs in deploy/crds/ are exactly what the API types generate.
use std::path::PathBuf;

use weft_config::api::crds::{REGENERATE_COMMAND, render};

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

#[test]
fn committed_crds_match_the_api_types() {
    let dir = crds_dir();
    let mut stale = Vec::new();
    let generated = render().expect("CRDs render");
    for file in &generated {
        let path = dir.join(&file.file_name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == file.yaml => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    let expected: Vec<&str> = generated.iter().map(|f| f.file_name.as_str()).collect();
    for entry in std::fs::read_dir(&dir).expect("deploy/crds exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !expected.contains(&name.as_str()) {
            stale.push(format!(
                "{} is not generated any more",
                dir.join(name).display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/crds is out of date:\n  {}\nrefresh it from the workspace root with:\n  {REGENERATE_COMMAND}",
        stale.join("\n  ")
    );
}

#[test]
fn every_istio_kind_serves_istio_versions_with_one_storage_version() {
    let crds = weft_config::api::crds::crds();
    let names: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        names,
        [
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "Gateway",
            "AuthorizationPolicy",
            "PeerAuthentication",
            "RequestAuthentication",
            "Telemetry"
        ]
    );
    for crd in &crds {
        let versions: Vec<_> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        let expected: &[&str] = if crd.spec.group == "networking.istio.io" {
            &["v1", "v1beta1", "v1alpha3"]
        } else if crd.spec.group == "telemetry.istio.io" {
            &["v1", "v1alpha1"]
        } else {
            &["v1", "v1beta1"]
        };
        assert_eq!(versions, expected, "{}", crd.spec.names.kind);
        assert!(crd.spec.versions.iter().all(|v| v.served));
        assert_eq!(crd.spec.versions.iter().filter(|v| v.storage).count(), 1);
        // One schema for every version, and unknown fields kept at spec level.
        let schemas: Vec<_> = crd.spec.versions.iter().map(|v| &v.schema).collect();
        assert!(schemas.windows(2).all(|w| w[0] == w[1]));
        let spec = schemas[0]
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .expect("spec schema");
        assert_eq!(spec.x_kubernetes_preserve_unknown_fields, Some(true));
    }
}
