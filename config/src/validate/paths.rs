//! Field paths in the form users read in `kubectl explain` and error messages:
//! `spec.http[0].route[1].weight`.
use crate::refusal::FieldIssue;

#[derive(Clone, Debug)]
pub(super) struct FieldPath(String);

impl FieldPath {
    pub(super) fn spec() -> Self {
        Self("spec".to_string())
    }

    pub(super) fn root(name: &str) -> Self {
        Self(name.to_string())
    }

    pub(super) fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    pub(super) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// A key of a map field; quoted when it is not a plain word so the path stays readable.
    pub(super) fn key(&self, key: &str) -> Self {
        if key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            Self(format!("{}.{key}", self.0))
        } else {
            Self(format!("{}[{key:?}]", self.0))
        }
    }
}

/// The issues found while walking one object.
#[derive(Debug, Default)]
pub(super) struct Issues(pub(super) Vec<FieldIssue>);

impl Issues {
    pub(super) fn add(&mut self, path: &FieldPath, reason: impl Into<String>) {
        self.0.push(FieldIssue::new(path.0.clone(), reason));
    }

    pub(super) fn into_vec(self) -> Vec<FieldIssue> {
        self.0
    }
}
