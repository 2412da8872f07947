//! Which pods are in the mesh, by Istio ambient's labels.
use std::collections::BTreeMap;

/// The label that opts a namespace or pod into the mesh (Istio ambient's name).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";

/// Istio ambient's rule: a pod's own `istio.io/dataplane-mode` wins (`none`, or any value
/// other than `ambient`, keeps it out); without one, its namespace's label decides.
pub fn ambient_enrolled(
    pod_labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    match pod_labels.get(DATAPLANE_MODE_LABEL) {
        Some(mode) => mode == DATAPLANE_MODE_AMBIENT,
        None => namespace_labels
            .and_then(|labels| labels.get(DATAPLANE_MODE_LABEL))
            .is_some_and(|mode| mode == DATAPLANE_MODE_AMBIENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_label_overrides_namespace() {
        let ns = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        assert!(ambient_enrolled(&labels(&[]), Some(&ns)));
        assert!(!ambient_enrolled(
            &labels(&[(DATAPLANE_MODE_LABEL, "none")]),
            Some(&ns)
        ));
        assert!(ambient_enrolled(
            &labels(&[(DATAPLANE_MODE_LABEL, "ambient")]),
            None
        ));
        assert!(!ambient_enrolled(
            &labels(&[]),
            Some(&labels(&[(DATAPLANE_MODE_LABEL, "none")]))
        ));
        assert!(!ambient_enrolled(&labels(&[]), None));
    }
}
