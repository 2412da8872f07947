//! Changes the Telemetry API makes to the request metrics of one request (its `metrics`
//! overrides, evaluated by the proxy): a metric not recorded, or recorded with labels
//! removed, replaced or added.
//!
//! A removed label is left out of the series; an added one is an extra label. Prometheus
//! reads a missing label as an empty one, so every series of a family still answers the
//! same queries (`sum by (request_host)` groups the series without it under "").
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, LabelSetEncoder};

/// One label's change: its name, and its value (`None`: removed).
type TagChange = (Arc<str>, Option<Arc<str>>);

/// Label changes, sorted by label name: `None` removes the label, a value sets it (adding
/// it when it is not one of Istio's labels).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TagChanges(Arc<[TagChange]>);

impl TagChanges {
    pub fn new(changes: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        let mut changes: Vec<TagChange> = changes
            .into_iter()
            .map(|(name, value)| (Arc::from(name), value.map(Arc::from)))
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes.dedup_by(|a, b| a.0 == b.0);
        Self(changes.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The change to `name`: `Some(None)` removed, `Some(Some(v))` set.
    fn change(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_deref())
    }

    /// Writes `name="value"` as changed: left out, replaced, or as it is.
    pub(super) fn label(
        &self,
        encoder: &mut LabelSetEncoder,
        name: &str,
        value: &str,
    ) -> Result<(), std::fmt::Error> {
        match self.change(name) {
            Some(None) => Ok(()),
            Some(Some(changed)) => (name, changed).encode(encoder.encode_label()),
            None => (name, value).encode(encoder.encode_label()),
        }
    }

    /// Writes the labels set that are not in `known`.
    pub(super) fn added(
        &self,
        encoder: &mut LabelSetEncoder,
        known: &[&str],
    ) -> Result<(), std::fmt::Error> {
        for (name, value) in self.0.iter() {
            if let Some(value) = value
                && !known.contains(&&**name)
            {
                (&**name, &**value).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

/// What the Telemetry API does to one metric for a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricChange {
    /// Not recorded.
    pub disabled: bool,
    pub tags: TagChanges,
}

/// The changes to each request metric (`REQUEST_COUNT`, `REQUEST_DURATION`,
/// `REQUEST_SIZE`, `RESPONSE_SIZE`); the default changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOverrides {
    pub count: MetricChange,
    pub duration: MetricChange,
    pub request_size: MetricChange,
    pub response_size: MetricChange,
}
