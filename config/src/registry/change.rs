//! What sources hand the registry.
use crate::api::{Kind, Object, ObjectRef};
use crate::refusal::{Origin, Refusal, Warning};

/// One object as a source read it: parsed, or refused already because it could not be
/// read as its kind (the refusal names the field).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub object: Result<Object, Refusal>,
    pub origin: Option<Origin>,
    /// What reading it found doubtful but kept: fields its schema does not have
    /// (`Object::from_json_checked`).
    pub warnings: Vec<Warning>,
}

impl Candidate {
    pub fn object_ref(&self) -> ObjectRef {
        match &self.object {
            Ok(object) => object.object_ref(),
            Err(refusal) => refusal.object.clone(),
        }
    }
}

impl From<Object> for Candidate {
    fn from(object: Object) -> Self {
        Self {
            object: Ok(object),
            origin: None,
            warnings: Vec::new(),
        }
    }
}

impl From<Refusal> for Candidate {
    fn from(refusal: Refusal) -> Self {
        let origin = refusal.origin.as_deref().cloned();
        Self {
            object: Err(refusal),
            origin,
            warnings: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Change {
    /// An object was created or changed.
    Apply(Candidate),
    /// An object is gone.
    Delete(ObjectRef),
    /// The complete set of objects of `kinds`: anything of those kinds not listed is gone
    /// (a relist after a watch restart, a rescan of a directory).
    Replace {
        kinds: Vec<Kind>,
        candidates: Vec<Candidate>,
    },
}
