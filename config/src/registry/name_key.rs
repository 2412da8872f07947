//! The (namespace, name) key of the by-name indexes, sharing its strings with the object
//! it indexes, and looked up by borrowed `(&str, &str)` without building one.
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl NameKey {
    pub fn new(namespace: Arc<str>, name: Arc<str>) -> Self {
        Self { namespace, name }
    }
}

/// What a lookup borrows: a `NameKey` or a pair of `&str`.
pub trait NamePair {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
}

impl NamePair for NameKey {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl NamePair for (&str, &str) {
    fn namespace(&self) -> &str {
        self.0
    }

    fn name(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn NamePair + 'a> for NameKey {
    fn borrow(&self) -> &(dyn NamePair + 'a) {
        self
    }
}

// The key and what it borrows as must hash and compare alike.
impl Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn NamePair).hash(state);
    }
}

impl Hash for dyn NamePair + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace().hash(state);
        self.name().hash(state);
    }
}

impl PartialEq for dyn NamePair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.namespace() == other.namespace() && self.name() == other.name()
    }
}

impl Eq for dyn NamePair + '_ {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn found_by_a_borrowed_pair() {
        let mut map = HashMap::new();
        map.insert(NameKey::new("shop".into(), "web-1".into()), 1);
        assert_eq!(map.get(&("shop", "web-1") as &dyn NamePair), Some(&1));
        assert_eq!(map.get(&("shop", "web-2") as &dyn NamePair), None);
        assert_eq!(map.get(&("shopw", "eb-1") as &dyn NamePair), None);
    }
}
