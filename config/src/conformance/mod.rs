//! Which fields of the Istio and Gateway API kinds weft reads it supports, partly supports
//! or does not support (and then whether it warns or refuses): one line per field in
//! [`table::TABLE`], rendered as `docs/CONFORMANCE.md` by [`markdown`]. The tests in
//! `config/tests/conformance.rs` keep the table in step with the types (every field of
//! [`schema::fields`] has its line), with the validation (a field marked unsupported is
//! warned about or refused when set, one marked supported is not warned about as
//! unsupported) and with the committed document.
pub mod schema;
mod status;
pub mod table;

pub use status::{Line, Status};

use std::fmt::Write;

use crate::api::Kind;

/// The document the table is rendered into, relative to the repository's root.
pub const DOCUMENT: &str = "docs/CONFORMANCE.md";

/// The command that rewrites [`DOCUMENT`] (printed when the committed file is stale).
pub const REGENERATE_COMMAND: &str =
    "cargo run -p weftctl -- conformance --out docs/CONFORMANCE.md";

/// How a kind is titled in the document: Istio's and the Gateway API's Gateway share a name.
pub fn title(kind: Kind) -> String {
    format!("{} ({})", kind.name(), kind.group())
}

/// `docs/CONFORMANCE.md`: a summary, then one table per kind.
pub fn markdown() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Istio and Gateway API conformance\n\n\
         Every field of every Istio and Gateway API kind weft reads, and what weft does with \
         it. Generated from `config/src/conformance/table.rs` by `{REGENERATE_COMMAND}`; do \
         not edit (a test fails when this file is stale, or when a field of weft's types \
         has no line in the table).\n\n\
         - **supported**: Istio's (or the Gateway API's) behaviour.\n\
         - **partial**: part of it, as the note says; the rest is warned about.\n\
         - **unsupported (warned)**: not acted on; an object that sets it is accepted with a \
         warning naming the field (`weftctl validate`, `weftctl analyze`, the agent's \
         `/config_dump`).\n\
         - **unsupported (refused)**: not acted on; an object that sets it is refused, or \
         the traffic it concerns fails closed — never silently let through.\n\
         - **unsupported (not warned)**: not acted on, and not warned about either: a gap \
         against weft's rule that nothing accepted is ignored, listed until it is closed.\n\n\
         Fields weft's types do not have at all are warned about as unknown fields \
         (`unknown field \"spec.…\"`; the Gateway API's routes refuse them, as their CRDs \
         do). `[]` stands for any index of a list.\n"
    );
    let kinds = kinds();
    let _ = writeln!(
        out,
        "| Kind | Fields | supported | partial | unsupported (warned) | unsupported (refused) | unsupported (not warned) |\n\
         |---|---|---|---|---|---|---|"
    );
    for kind in &kinds {
        let lines: Vec<&Line> = table::TABLE.iter().filter(|l| l.0 == *kind).collect();
        let count = |label: &str| lines.iter().filter(|l| l.2.label() == label).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            title(*kind),
            lines.len(),
            count("supported"),
            count("partial"),
            count("unsupported (warned)"),
            count("unsupported (refused)"),
            count("unsupported (not warned)"),
        );
    }
    for kind in &kinds {
        let _ = writeln!(
            out,
            "\n## {}\n\n| Field | Status | Note |\n|---|---|---|",
            title(*kind)
        );
        for (_, field, status) in table::TABLE.iter().filter(|l| l.0 == *kind) {
            let _ = writeln!(
                out,
                "| `{field}` | {} | {} |",
                status.label(),
                status.note().replace('|', "\\|")
            );
        }
    }
    out
}

/// The kinds of the table, in its order.
pub fn kinds() -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Vec::new();
    for (kind, _, _) in table::TABLE {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

/// The line of `field` of `kind`, if the table has one.
pub fn line(kind: Kind, field: &str) -> Option<&'static Line> {
    table::TABLE
        .iter()
        .find(|(k, f, _)| *k == kind && *f == field)
}
