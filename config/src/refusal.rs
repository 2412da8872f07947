//! What is said about an object that did not get in (a refusal) or got in with a doubt
//! (a warning).
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::ObjectRef;

/// Where a document came from, for messages a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub file: Arc<PathBuf>,
    /// 1-based position of the YAML document in its file.
    pub document: u32,
    /// Position in the `items` of a `List` document.
    pub item: Option<u32>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

/// An object that was not accepted: which one, which field, why.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub object: ObjectRef,
    /// The JSON path of the offending field, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    pub reason: String,
    /// Boxed to keep `Result<_, Refusal>` small; most refusals from the API have none.
    pub origin: Option<Box<Origin>>,
}

impl Refusal {
    pub fn new(object: ObjectRef, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            object,
            field: field.into(),
            reason: reason.into(),
            origin: None,
        }
    }

    pub fn with_origin(mut self, origin: Option<Origin>) -> Self {
        if let Some(origin) = origin {
            self.origin = Some(Box::new(origin));
        }
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}: {}: {}", self.object, self.field, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// Something accepted but probably not what the user meant (a destination that names no
/// known service, for instance). Same shape as a refusal.
pub type Warning = Refusal;

/// A problem found in one field, before the object it belongs to is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: String,
    pub reason: String,
}

impl FieldIssue {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn refusal(self, object: &ObjectRef) -> Refusal {
        Refusal::new(object.clone(), self.field, self.reason)
    }
}
