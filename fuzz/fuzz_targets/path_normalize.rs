//! The waypoint's path normalization (`weft_waypoint::http::normalize`), applied to every
//! request path hyper accepts, in each meshConfig `pathNormalization` mode (the first byte
//! chooses it). Authorization and routing see the normalized path, so:
//! - normalizing is idempotent (a second proxy, or a second pass, sees the same path);
//! - no `.` or `..` segment (also as `%2e`) is left, and the path starts with `/`;
//! - with MERGE_SLASHES and DECODE_AND_MERGE_SLASHES no `//` is left;
//! - the query string is never changed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_config::api::mesh::PathNormalization;
use weft_waypoint::http::normalize::normalize;

const MODES: [PathNormalization; 5] = [
    PathNormalization::Default,
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

/// `%2e`/`%2E` decoded, for telling a dot segment however it is written.
fn dots(segment: &str) -> String {
    segment.replace("%2e", ".").replace("%2E", ".")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = MODES[usize::from(mode) % MODES.len()];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // What a request can carry: hyper hands the waypoint a parsed path and query.
    let Ok(sent) = http::uri::PathAndQuery::try_from(text) else {
        return;
    };
    let sent = sent.as_str();
    let Ok(normalized) = normalize(sent, mode) else {
        return;
    };
    let query = |p: &str| p.find('?').map(|at| p[at..].to_string());
    assert_eq!(query(&normalized), query(sent), "{sent:?}: query changed");
    if mode.effective() == PathNormalization::None {
        assert_eq!(normalized, sent);
        return;
    }
    let path = normalized.split('?').next().unwrap_or_default();
    assert!(path.starts_with('/'), "{sent:?} → {path:?}");
    for segment in path.split('/') {
        let segment = dots(segment);
        assert!(
            segment != "." && segment != "..",
            "{sent:?} ({mode:?}) → {path:?} keeps a dot segment"
        );
    }
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        assert!(!path.contains("//"), "{sent:?} ({mode:?}) → {path:?}");
    }
    let again = normalize(&normalized, mode)
        .unwrap_or_else(|_| panic!("{sent:?} ({mode:?}) → {normalized:?}, then refused"));
    assert_eq!(
        again, normalized,
        "{sent:?} ({mode:?}): normalizing twice differs from once"
    );
});
