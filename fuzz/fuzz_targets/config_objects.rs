//! Istio and Kubernetes objects from YAML or JSON, as the directory source and `weftctl
//! validate` read them (`weft_config::source::yaml::parse`), through validation, warnings
//! and the registry (translation to what the agents and waypoints apply). A document is
//! read, refused or warned about, never a panic; when validation refuses an object, the
//! registry reports a refusal too (it does not take it silently).
#![no_main]
use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use weft_config::api::Kind;
use weft_config::registry::{Candidate, Change, Registry};
use weft_config::source::yaml;
use weft_config::translate::MeshSettings;
use weft_config::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = yaml::parse(text, Arc::new(PathBuf::from("fuzz.yaml"))) else {
        return;
    };
    let settings = MeshSettings::default();
    let objects: Vec<_> = documents
        .candidates
        .iter()
        .filter_map(|c| c.object.as_ref().ok())
        .collect();
    let accepted: Vec<_> = objects
        .iter()
        .copied()
        .filter(|o| validate::validate(o).is_empty())
        .collect();
    let registry = Registry::new(settings.clone());
    let report = registry.apply([Change::Replace {
        kinds: Kind::ALL.to_vec(),
        candidates: documents.candidates.clone(),
    }]);
    if accepted.len() < documents.candidates.len() {
        assert!(!report.refused.is_empty(), "objects refused, none reported");
    }
    let snapshot = registry.snapshot();
    for object in &objects {
        let _ = validate::warnings(object, &|_| true, &settings);
        let _ = validate::warnings(object, &|_| false, &settings);
        let _ = validate::waypoint_warnings(object, &*snapshot, &settings);
    }
    // Only accepted objects are translated: one refused is absent from the registry.
    let only_accepted = Registry::new(settings.clone());
    only_accepted.apply([Change::Replace {
        kinds: Kind::ALL.to_vec(),
        candidates: accepted
            .iter()
            .map(|o| Candidate::from((*o).clone()))
            .collect(),
    }]);
    let _ = only_accepted.snapshot();
});
