//! What an authorization check concludes, at L4 and L7 alike.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, naming the policy (`namespace/name`) or the reason.
    Deny(String),
}
