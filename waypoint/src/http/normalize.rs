//! Path normalization, as Istio configures Envoy for meshConfig `pathNormalization`, applied
//! once to every request before authorization and routing; the upstream receives the
//! normalized path, as from Envoy.
//!
//! Istio's modes map onto Envoy's HTTP connection manager settings, which Envoy applies in
//! this order (`ConnectionManagerUtility::maybeNormalizePath`):
//! - `DECODE_AND_MERGE_SLASHES`: `%2F`/`%2f` become `/` and `%5C`/`%5c` become `\`
//!   (`path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`);
//! - `BASE` (Istio's default) and above: Envoy's `normalize_path`, Chromium's path
//!   canonicalization (RFC 3986 §6.2.2 and §5.2.4 as browsers do it): `.`/`..` segments
//!   (also written `%2e`) resolved, never above the root; `\` becomes `/`; escapes of
//!   unreserved characters (letters, digits, `-._~`) decoded; characters a path may not
//!   hold escaped (`%XX`, upper case); other escapes kept exactly as sent;
//! - `MERGE_SLASHES` and above: runs of `/` merged into one.
//!
//! `NONE` leaves the path as sent. The query string is never touched. A path Envoy refuses
//! to canonicalize (a NUL, raw or as `%00`) is answered 400, as Envoy does.
use std::borrow::Cow;

use weft_config::api::mesh::PathNormalization;

/// The path cannot be normalized safely: the request is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request path cannot be normalized (a NUL character, which Envoy refuses)")]
pub struct Unnormalizable;

/// `path_and_query` (as sent: `/a/../b?x=1`) normalized by `mode`; borrowed when unchanged.
pub fn normalize(
    path_and_query: &str,
    mode: PathNormalization,
) -> Result<Cow<'_, str>, Unnormalizable> {
    let mode = mode.effective();
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) = match path_and_query.find('?') {
        Some(at) => path_and_query.split_at(at),
        None => (path_and_query, ""),
    };
    let unescaped;
    let path = if mode == PathNormalization::DecodeAndMergeSlashes {
        unescaped = unescape_slashes(path);
        unescaped.as_str()
    } else {
        path
    };
    let mut normalized = canonicalize(path.as_bytes())?;
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        normalized = merge_slashes(&normalized);
    }
    normalized.push_str(query);
    if normalized == path_and_query {
        Ok(Cow::Borrowed(path_and_query))
    } else {
        Ok(Cow::Owned(normalized))
    }
}

/// `%2F`, `%2f` → `/`; `%5C`, `%5c` → `\` (Envoy's `PathUtil::unescapeSlashes`).
fn unescape_slashes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let code = [
                bytes[i + 1].to_ascii_uppercase(),
                bytes[i + 2].to_ascii_uppercase(),
            ];
            match &code {
                b"2F" => {
                    out.push('/');
                    i += 3;
                    continue;
                }
                b"5C" => {
                    out.push('\\');
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        // hyper's URI parser admits only visible ASCII in a path.
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// Runs of `/` become one (Envoy's `PathUtil::mergeSlashes`).
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' {
            if previous_slash {
                continue;
            }
            previous_slash = true;
        } else {
            previous_slash = false;
        }
        out.push(c);
    }
    out
}

/// How a byte is treated in a path (Chromium's `kPathCharLookup`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as is.
    Pass,
    /// Escaped in the output.
    Escape,
    /// Decoded when found escaped (unreserved characters).
    Unescape,
    /// Refused (NUL).
    Invalid,
}

fn class(byte: u8) -> Class {
    match byte {
        0 => Class::Invalid,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => Class::Unescape,
        0x01..=0x20
        | b'"'
        | b'#'
        | b'%'
        | b'<'
        | b'>'
        | b'?'
        | b'\\'
        | b'^'
        | b'`'
        | b'{'
        | b'|'
        | b'}'
        | 0x7f..=0xff => Class::Escape,
        _ => Class::Pass,
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The byte `%XY` at `at` decodes to, if it is a valid escape.
fn decode_escape(path: &[u8], at: usize) -> Option<u8> {
    let high = hex_value(*path.get(at + 1)?)?;
    let low = hex_value(*path.get(at + 2)?)?;
    Some(high * 16 + low)
}

/// The length of a dot at `at`: 1 for `.`, 3 for `%2e`/`%2E`, 0 otherwise.
fn dot_len(path: &[u8], at: usize) -> usize {
    match path.get(at) {
        Some(b'.') => 1,
        Some(b'%') if decode_escape(path, at) == Some(b'.') => 3,
        _ => 0,
    }
}

fn is_slash(byte: Option<&u8>) -> bool {
    matches!(byte, Some(b'/' | b'\\'))
}

/// Chromium's `CanonicalizePath` as Envoy's `normalize_path` uses it.
fn canonicalize(path: &[u8]) -> Result<String, Unnormalizable> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 1);
    if !is_slash(path.first()) {
        out.push(b'/');
    }
    let mut valid = true;
    // Where in `out` a `%` that began no valid escape was written, to catch nested
    // escapes (`%%30%30` must not become `%00`).
    let mut invalid_percent: Option<usize> = None;
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        let dot = dot_len(path, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                let after = i + dot;
                if after == path.len() {
                    // `/.` at the end: the directory itself.
                    i = after;
                    continue;
                }
                if is_slash(path.get(after)) {
                    i = after + 1;
                    continue;
                }
                let second = dot_len(path, after);
                if second > 0
                    && (after + second == path.len() || is_slash(path.get(after + second)))
                {
                    back_up_to_previous_slash(&mut out);
                    // A `%` in the segment dropped is gone: what follows is not behind it.
                    invalid_percent = invalid_percent.filter(|&p| p < out.len());
                    i = after + second + usize::from(after + second < path.len());
                    continue;
                }
            }
            out.push(b'.');
            i += dot;
            continue;
        }
        match byte {
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            b'%' => match decode_escape(path, i) {
                Some(value) => {
                    match class(value) {
                        Class::Unescape => {
                            out.push(value);
                            if invalid_percent.is_some_and(|p| p + 3 >= out.len()) {
                                check_nested_escape(path, i + 3, invalid_percent, &mut out);
                            }
                        }
                        other => {
                            out.extend_from_slice(&path[i..i + 3]);
                            if other == Class::Invalid {
                                valid = false;
                            }
                        }
                    }
                    i += 3;
                }
                None => {
                    invalid_percent = Some(out.len());
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                match class(byte) {
                    Class::Invalid => {
                        escape_into(byte, &mut out);
                        valid = false;
                    }
                    Class::Escape => escape_into(byte, &mut out),
                    Class::Pass | Class::Unescape => out.push(byte),
                }
                i += 1;
            }
        }
    }
    if !valid {
        return Err(Unnormalizable);
    }
    // Every byte written is ASCII: escapes, unreserved characters and visible ASCII.
    Ok(out.into_iter().map(char::from).collect())
}

/// `out` ends with `/`: drop the last segment, never the leading slash.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    let last = out.len() - 1;
    if last == 0 {
        return;
    }
    let mut i = last - 1;
    while i > 0 && out[i] != b'/' {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// After decoding right behind a `%` that began no valid escape: if the output now reads
/// as a valid escape, write that `%` as `%25` so the result can't decode differently when
/// normalized again (Chromium's `CheckForNestedEscapes`).
fn check_nested_escape(
    path: &[u8],
    next: usize,
    invalid_percent: Option<usize>,
    out: &mut Vec<u8>,
) {
    let Some(percent) = invalid_percent else {
        return;
    };
    let length = out.len();
    let Some(&last) = out.last() else {
        return;
    };
    let append_next = percent + 2 == length;
    if append_next {
        match path.get(next) {
            Some(&byte) if byte < 0x80 => out.push(byte),
            _ => return,
        }
    }
    if decode_escape(out, percent).is_some() {
        if !append_next {
            out.push(out[percent + 1]);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(last);
    } else if append_next {
        out.truncate(length);
    }
}

fn escape_into(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(byte >> 4)]);
    out.push(HEX[usize::from(byte & 0x0f)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(path: &str) -> String {
        normalize(path, PathNormalization::Base)
            .expect("normalizable")
            .into_owned()
    }

    #[test]
    fn dot_segments_are_resolved_never_above_the_root() {
        assert_eq!(base("/./admin"), "/admin");
        assert_eq!(base("/public/../admin"), "/admin");
        assert_eq!(base("/a/b/../../../admin"), "/admin");
        assert_eq!(base("/a/%2e%2E/admin"), "/admin");
        assert_eq!(base("/a/.%2e/admin"), "/admin");
        assert_eq!(base("/a/."), "/a/");
        assert_eq!(base("/a/b/.."), "/a/");
        assert_eq!(base("/a/..b/c"), "/a/..b/c", "not a dot segment");
        assert_eq!(base("/a/b./c"), "/a/b./c");
        assert_eq!(base("/.."), "/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept() {
        assert_eq!(base("/%61dmin"), "/admin");
        assert_eq!(base("/%41%7e%5F"), "/A~_");
        assert_eq!(
            base("/a%2Fb"),
            "/a%2Fb",
            "an escaped slash stays escaped in BASE"
        );
        assert_eq!(base("/a%2fb"), "/a%2fb", "kept exactly as sent");
        assert_eq!(base("/a%zzb"), "/a%zzb", "an invalid escape passes through");
        assert_eq!(
            base("/%%30%30"),
            "/%2500",
            "a nested escape can't become %00"
        );
    }

    #[test]
    fn a_percent_in_a_segment_dropped_by_dot_dot_does_not_rewrite_what_follows() {
        // Found by fuzz/fuzz_targets/path_normalize.rs: the `%` of `a%` was still taken for
        // the start of a nested escape after `..` removed it, and `%5c%66` became `%525cf`,
        // which a second normalization reads as `R5cf`.
        assert_eq!(base("/a%/../%5c%66"), "/%5cf");
        assert_eq!(base("/%5cf"), "/%5cf", "normalizing again changes nothing");
    }

    #[test]
    fn backslashes_become_slashes_and_unsafe_characters_are_escaped() {
        assert_eq!(base("/a\\..\\admin"), "/admin");
        assert_eq!(base("/a\"b"), "/a%22b");
        assert_eq!(base("/a{b}"), "/a%7Bb%7D");
        assert_eq!(base("/a//b"), "/a//b", "BASE keeps double slashes");
    }

    #[test]
    fn the_query_is_left_alone() {
        assert_eq!(base("/a/../b?x=/../%61"), "/b?x=/../%61");
        assert_eq!(base("/b?"), "/b?");
    }

    #[test]
    fn merge_slashes_and_decoding_slashes() {
        let merge = |p| {
            normalize(p, PathNormalization::MergeSlashes)
                .expect("normalizable")
                .into_owned()
        };
        assert_eq!(merge("//admin///x"), "/admin/x");
        assert_eq!(merge("/a%2F%2Fadmin"), "/a%2F%2Fadmin");
        let decode = |p| {
            normalize(p, PathNormalization::DecodeAndMergeSlashes)
                .expect("normalizable")
                .into_owned()
        };
        assert_eq!(decode("/public%2F..%2Fadmin"), "/admin");
        assert_eq!(decode("/a%2f%2F/b"), "/a/b");
        assert_eq!(decode("/a%5c..%5Cadmin"), "/admin");
    }

    #[test]
    fn none_leaves_the_path_as_sent_and_default_is_base() {
        assert_eq!(
            normalize("/./%61dmin", PathNormalization::None).expect("none"),
            "/./%61dmin"
        );
        assert_eq!(
            normalize("/./%61dmin", PathNormalization::Default).expect("default"),
            "/admin"
        );
        assert!(matches!(
            normalize("/already/fine", PathNormalization::Base),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn a_nul_is_refused() {
        assert_eq!(
            normalize("/a%00b", PathNormalization::Base),
            Err(Unnormalizable)
        );
        assert_eq!(
            normalize("/a%00b", PathNormalization::None).map(Cow::into_owned),
            Ok("/a%00b".to_string()),
            "NONE does not look"
        );
    }
}
