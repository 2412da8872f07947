//! For tests (this crate's and, with the `test-util` feature, other crates'): a registry or
//! a snapshot from a YAML text, every object required to be accepted.
use std::path::PathBuf;
use std::sync::Arc;

use crate::registry::{Change, Registry, Snapshot};
use crate::source::yaml::parse;

/// A registry holding the objects of `yaml` (documents separated by `---`). Panics, naming
/// them, if the YAML does not parse or an object is refused: a fixture must be valid.
pub fn registry_of(yaml: &str) -> Registry {
    let registry = Registry::new(Default::default());
    let documents = match parse(yaml, Arc::new(PathBuf::from("fixture.yaml"))) {
        Ok(documents) => documents,
        Err(e) => panic!("the fixture is not YAML: {e}"),
    };
    assert!(
        documents.errors.is_empty(),
        "the fixture's documents: {:?}",
        documents.errors
    );
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert!(
        report.refused.is_empty(),
        "the fixture's objects are refused: {:?}",
        report.refused
    );
    registry
}

/// The snapshot of [`registry_of`]`(yaml)`.
pub fn snapshot_of(yaml: &str) -> Arc<Snapshot> {
    registry_of(yaml).snapshot()
}
