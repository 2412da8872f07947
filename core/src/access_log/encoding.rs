//! meshConfig `accessLogEncoding`.

/// How lines are written: Envoy's text format, or one JSON object per line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    #[default]
    Text,
    Json,
}
