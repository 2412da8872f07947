//! What a line of the table says of a field.
use crate::api::Kind;

/// How far weft follows a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Istio's (or the Gateway API's) behaviour.
    Supported,
    /// Part of the behaviour: what is and is not done (the rest is warned about).
    Partial(&'static str),
    /// Not acted on; an object that sets it is accepted with a warning naming it.
    Warned(&'static str),
    /// Not acted on; an object that sets it is refused, or the traffic it concerns fails
    /// closed (what a security field weft cannot honour gets).
    Refused(&'static str),
    /// Not acted on and not warned about: a gap against "nothing accepted is ignored",
    /// listed so it is known (the fix is a warning, or the behaviour).
    Ignored(&'static str),
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Supported => "supported",
            Status::Partial(_) => "partial",
            Status::Warned(_) => "unsupported (warned)",
            Status::Refused(_) => "unsupported (refused)",
            Status::Ignored(_) => "unsupported (not warned)",
        }
    }

    pub fn note(self) -> &'static str {
        match self {
            Status::Supported => "",
            Status::Partial(note)
            | Status::Warned(note)
            | Status::Refused(note)
            | Status::Ignored(note) => note,
        }
    }
}

/// One field: its kind, its path (`spec.http[].fault.delay`, `[]` for any index), its
/// status.
pub type Line = (Kind, &'static str, Status);
