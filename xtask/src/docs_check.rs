//! `cargo xtask docs-check`: every repository path the documentation names exists.
//!
//! `docs/ARCHITECTURE.md` and `README.md` name files and folders in backticks
//! (`node-agent/src/proxy/outbound.rs`, `waypoint/src/route/`) so that a reader can open
//! them; a file moved or renamed has to take the text with it, and this check says where.
//!
//! A code span outside fenced code blocks counts as a repository path when it is made of path
//! characters only (letters, digits, `.`, `_`, `-`, `/`), holds a `/`, does not start with
//! one, and either starts with an entry of the repository's root (a crate's folder,
//! `Cargo.toml`, `.ci`, …; not `target`, the build's output) or ends like a source file
//! (`.rs`, `.toml`, `.md`, …). So placeholders and patterns (`pods/<uid>/<program>`,
//! `deploy/images/*.Dockerfile`), label keys and API groups (`istio.io/use-waypoint`),
//! protocols (`HTTP/2`) and host paths (`/sys/fs/bpf/weft`) are left alone. Paths are
//! relative to the repository's root. Relative link targets (`[text](docs/ARCHITECTURE.md)`)
//! must exist too, relative to the file that holds the link.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};

/// The documents checked, relative to the repository's root.
pub const DOCUMENTS: [&str; 2] = ["docs/ARCHITECTURE.md", "README.md"];

/// Endings that make a span a file path even when its first segment is not at the root
/// (a crate folder mistyped, or moved away).
const FILE_ENDINGS: [&str; 8] = [
    ".rs", ".toml", ".md", ".yaml", ".yml", ".json", ".py", ".proto",
];

/// Root entries that are not the repository's own.
const NOT_SOURCES: [&str; 2] = ["target", ".git"];

pub fn run(root: &Path) -> anyhow::Result<()> {
    let found = missing(root, &DOCUMENTS)?;
    if found.is_empty() {
        println!(
            "docs-check: every path named in {} exists",
            DOCUMENTS.join(" and ")
        );
        return Ok(());
    }
    for line in &found {
        eprintln!("{line}");
    }
    bail!(
        "{} path(s) named in the documentation do not exist: correct the text (or the path)",
        found.len()
    )
}

/// Every path named in `documents` that does not exist, as `file:line: what`.
pub fn missing(root: &Path, documents: &[&str]) -> anyhow::Result<Vec<String>> {
    let entries = root_entries(root)?;
    let mut found = Vec::new();
    for document in documents {
        let file = root.join(document);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let base = Path::new(document).parent().unwrap_or(Path::new(""));
        for reference in references(&text) {
            let (target, exists) = match &reference.kind {
                Kind::Code(span) => match repository_path(span, &entries) {
                    Some(path) => (format!("`{path}`"), root.join(path).exists()),
                    None => continue,
                },
                Kind::Link(target) => match link_path(target) {
                    Some(path) => (
                        format!("link ({target})"),
                        root.join(base).join(path).exists(),
                    ),
                    None => continue,
                },
            };
            if !exists {
                found.push(format!(
                    "{document}:{}: {target} does not exist",
                    reference.line
                ));
            }
        }
    }
    Ok(found)
}

fn root_entries(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let listing = std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    Ok(listing
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !NOT_SOURCES.contains(&name.as_str()))
        .collect())
}

/// The repository path a code span names, if it names one (see the module's header).
fn repository_path<'s>(span: &'s str, root_entries: &BTreeSet<String>) -> Option<&'s str> {
    let path_like = span
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !path_like || !span.contains('/') || span.starts_with('/') {
        return None;
    }
    let first = span.split('/').next().unwrap_or_default();
    let at_root = root_entries.contains(first);
    let file_like = FILE_ENDINGS.iter().any(|ending| span.ends_with(ending));
    (at_root || file_like).then_some(span)
}

/// The file a link points at, for relative links (no scheme, not an anchor of this page).
fn link_path(target: &str) -> Option<&str> {
    if target.is_empty() || target.starts_with('#') || target.contains("://") {
        return None;
    }
    if target.starts_with("mailto:") {
        return None;
    }
    let path = target.split('#').next().unwrap_or_default();
    (!path.is_empty()).then_some(path)
}

#[derive(Debug, PartialEq)]
enum Kind {
    /// The text of a code span, trimmed.
    Code(String),
    /// The target of an inline link.
    Link(String),
}

#[derive(Debug, PartialEq)]
struct Reference {
    /// 1-based line where it starts.
    line: usize,
    kind: Kind,
}

/// Code spans and link targets of a Markdown text, outside fenced code blocks.
fn references(text: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    for (first_line, paragraph) in paragraphs(text) {
        // Link syntax inside code spans is text: look for links where spans are blanked.
        let mut prose: Vec<char> = paragraph.chars().collect();
        let chars: Vec<char> = paragraph.chars().collect();
        for (start, end) in code_spans(&chars) {
            let inner: String = chars[start..end].iter().collect();
            let line = first_line + chars[..start].iter().filter(|c| **c == '\n').count();
            found.push(Reference {
                line,
                kind: Kind::Code(inner.trim().to_string()),
            });
            for c in prose.iter_mut().take(end).skip(start) {
                *c = ' ';
            }
        }
        let prose: String = prose.into_iter().collect();
        for (offset, target) in link_targets(&prose) {
            let line = first_line + prose[..offset].matches('\n').count();
            found.push(Reference {
                line,
                kind: Kind::Link(target),
            });
        }
    }
    found.sort_by_key(|r| r.line);
    found
}

/// Paragraphs (runs of non-blank lines) outside fenced code blocks, with their first line.
fn paragraphs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    // The fence's character and length while inside a fenced block.
    let mut fence: Option<(char, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        let marker = fence_marker(line);
        if let Some((c, n)) = fence {
            if marker.is_some_and(|(mc, mn)| mc == c && mn >= n) {
                fence = None;
            }
            continue;
        }
        if let Some(opened) = marker {
            fence = Some(opened);
            out.extend(current.take());
            continue;
        }
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        match &mut current {
            Some((_, text)) => {
                text.push('\n');
                text.push_str(line);
            }
            None => current = Some((index + 1, line.to_string())),
        }
    }
    out.extend(current);
    out
}

/// A line that opens or closes a fenced code block: up to three spaces, then three or more
/// backticks or tildes.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let c = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = rest.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// The code spans of a paragraph as char ranges of their content: a run of backticks opens
/// one that the next run of the same length closes; a run that nothing closes is literal.
fn code_spans(chars: &[char]) -> Vec<(usize, usize)> {
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let open = run_at(i);
        let start = i + open;
        let mut j = start;
        let mut closed = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let run = run_at(j);
                if run == open {
                    closed = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => {
                spans.push((start, end));
                i = end + open;
            }
            None => i = start,
        }
    }
    spans
}

/// Inline link targets `[text](target "title")`, with the byte offset of each.
fn link_targets(prose: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = prose[from..].find("](") {
        let start = from + found + 2;
        let Some(close) = prose[start..].find(')') else {
            break;
        };
        let inside = prose[start..start + close].trim();
        let target = inside.split_whitespace().next().unwrap_or_default();
        let target = target.trim_start_matches('<').trim_end_matches('>');
        out.push((start, target.to_string()));
        from = start + close;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(files: &[(&str, &str)]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-docs-check-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (file, text) in files {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn missing_in(files: &[(&str, &str)]) -> Vec<String> {
        let dir = repository(files);
        let found = missing(&dir, &["docs/ARCHITECTURE.md", "README.md"]).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        found
    }

    #[test]
    fn a_path_that_does_not_exist_is_named_with_its_line() {
        let found = missing_in(&[
            ("core/src/host/netns.rs", ""),
            ("waypoint/src/route/mod.rs", ""),
            (
                "docs/ARCHITECTURE.md",
                "# A\n\nThe socket thread: `core/src/host/netns.rs`,\nnot `core/src/host/netns_sockets.rs`; routes in `waypoint/src/route/`.\n",
            ),
            ("README.md", "See `waypoint/src/rout/`.\n"),
        ]);
        assert_eq!(
            found,
            [
                "docs/ARCHITECTURE.md:4: `core/src/host/netns_sockets.rs` does not exist",
                "README.md:1: `waypoint/src/rout/` does not exist",
            ]
        );
    }

    #[test]
    fn a_moved_crate_is_caught_by_its_file_names() {
        // `host/` is not (or no longer) at the root: a file path under it still counts.
        let found = missing_in(&[
            ("core/src/lib.rs", ""),
            (
                "docs/ARCHITECTURE.md",
                "`host/src/netns.rs` and `host/src/`\n",
            ),
            ("README.md", ""),
        ]);
        assert_eq!(
            found,
            ["docs/ARCHITECTURE.md:1: `host/src/netns.rs` does not exist"]
        );
    }

    #[test]
    fn spans_that_are_not_repository_paths_are_left_alone() {
        let found = missing_in(&[
            ("deploy/base/agent.yaml", ""),
            (
                "docs/ARCHITECTURE.md",
                concat!(
                    "Labels `istio.io/use-waypoint`, groups `gateway.networking.k8s.io/v1`, ",
                    "`HTTP/2`, `ALLOW/DENY`, pins `/sys/fs/bpf/weft` and `pods/<uid>/<program>`, ",
                    "`deploy/images/*.Dockerfile`, `spiffe://cluster.local/ns/a/sa/b`, ",
                    "`cargo xtask test`, `fwmark 0x574600/0xffff00 lookup 15006`.\n\n",
                    "```text\nnode-agent/src/gone.rs\n```\n\n",
                    "~~~~\n`deploy/gone.yaml`\n~~~~\n",
                    "`` `deploy/base/agent.yaml` `` and a lone ` backtick.\n",
                ),
            ),
            ("README.md", ""),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn code_spans_may_wrap_and_links_are_checked_from_their_file() {
        let found = missing_in(&[
            ("ca/src/main.rs", ""),
            (
                "docs/ARCHITECTURE.md",
                "A span that wraps `ca/src/\nmain.rs` is no path; `ca/src/gone.rs` on line 2.\n\n[up](../README.md), [gone](../GONE.md), [web](https://istio.io/x), [here](#tests)\n",
            ),
            (
                "README.md",
                "[doc](docs/ARCHITECTURE.md) and [`ca`](ca/src/main.rs#L1)\n",
            ),
        ]);
        assert_eq!(
            found,
            [
                "docs/ARCHITECTURE.md:2: `ca/src/gone.rs` does not exist",
                "docs/ARCHITECTURE.md:4: link (../GONE.md) does not exist",
            ]
        );
    }

    /// The repository's own documents: what `cargo xtask test` checks, also under
    /// `cargo test -p xtask`.
    #[test]
    fn the_documentation_names_only_paths_that_exist() {
        let found = missing(&crate::workspace_root(), &DOCUMENTS).expect("read");
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}
