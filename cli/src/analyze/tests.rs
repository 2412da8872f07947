//! Each broken configuration of `cli/tests/analyze/` gets the message istioctl gives it
//! (or weft's own code), on the right object and field.
use std::path::{Path, PathBuf};

use weft_config::translate::MeshSettings;

use super::message::{self as code, Level, Message};
use super::*;

fn settings() -> MeshSettings {
    MeshSettings {
        secrets_namespace: Some("istio-system".into()),
        ..Default::default()
    }
}

/// What a case file says it must bring: `# expect: <Level> <CODE> <Kind> <ns/name> <field>`
/// (`-` for no object or no field).
struct Expected {
    level: Level,
    code: String,
    object: Option<String>,
    field: String,
}

fn cases() -> Vec<(PathBuf, Expected)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cli/tests/analyze")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("a case");
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            let [level, code, kind, name, field] = words[..] else {
                panic!(
                    "{}: `# expect: {line}` is not <Level> <CODE> <Kind> <ns/name> <field>",
                    file.display()
                )
            };
            let level = match level {
                "Error" => Level::Error,
                "Warning" => Level::Warning,
                "Info" => Level::Info,
                other => panic!("{}: no level {other}", file.display()),
            };
            let object = (kind != "-").then(|| format!("{kind} {name}"));
            let field = if field == "-" {
                String::new()
            } else {
                field.to_string()
            };
            (
                file,
                Expected {
                    level,
                    code: code.to_string(),
                    object,
                    field,
                },
            )
        })
        .collect()
}

fn found(messages: &[Message], expected: &Expected) -> bool {
    messages.iter().any(|m| {
        m.level == expected.level
            && m.code == expected.code
            && m.object.as_ref().map(ToString::to_string) == expected.object
            && m.field == expected.field
    })
}

fn listed(messages: &[Message]) -> String {
    messages
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_broken_configuration_gets_its_code_on_its_object_and_field() {
    let cases = cases();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (file, expected) in &cases {
        let (messages, _) = analyze_files(std::slice::from_ref(file), &settings());
        if !found(&messages, expected) {
            wrong.push(format!(
                "{}: no {} [{}] ({:?}) {:?} among:\n{}",
                file.display(),
                expected.level,
                expected.code,
                expected.object,
                expected.field,
                listed(&messages)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn the_examples_of_the_repository_have_no_error() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (messages, objects) = analyze_files(&[examples], &settings());
    assert!(objects > 20, "{objects} objects read");
    let errors: Vec<&Message> = messages
        .iter()
        .filter(|m| m.level == Level::Error)
        .collect();
    assert!(errors.is_empty(), "{}", listed(&messages));
}

#[test]
fn an_agents_refusals_and_warnings_get_the_same_codes() {
    let dump = serde_json::json!({
        "refused": [{"kind": "VirtualService", "namespace": "shop", "name": "bad",
                     "field": "spec.http[0].route[1].weight",
                     "reason": "the weights of the 2 destinations sum to 90, not 100",
                     "origin": "/etc/weft/config/bad.yaml:1"}],
        "warnings": [
            {"kind": "DestinationRule", "namespace": "shop", "name": "r", "field": "spec.host",
             "reason": "\"ratings\" names no known Service or ServiceEntry host"},
            {"kind": "DestinationRule", "namespace": "shop", "name": "r", "field": "spec.exportTo",
             "reason": "accepted but not supported by weft: ignored (the rule applies to clients of every namespace)"},
            {"kind": "VirtualService", "namespace": "shop", "name": "v", "field": "spec.http[0].rout",
             "reason": "unknown field \"spec.http[0].rout\": not in the VirtualService schema, ignored (misspelt?)"}
        ]
    });
    let messages = analyze_dump(&dump);
    let codes: Vec<(Level, &str, &str)> = messages
        .iter()
        .map(|m| (m.level, m.code, m.field.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (Level::Error, "IST0106", "spec.http[0].route[1].weight"),
            (Level::Warning, "IST0174", "spec.host"),
            (Level::Warning, "WEFT0001", "spec.exportTo"),
            (Level::Warning, "IST0133", "spec.http[0].rout"),
        ]
    );
    assert_eq!(
        messages[0].to_string(),
        "Error [IST0106] (VirtualService shop/bad /etc/weft/config/bad.yaml:1) spec.http[0].route[1].weight: the weights of the 2 destinations sum to 90, not 100"
    );
}

#[test]
fn thresholds_choose_what_is_printed_and_what_fails() {
    assert!(Threshold::Warning.admits(Level::Error));
    assert!(Threshold::Warning.admits(Level::Warning));
    assert!(!Threshold::Warning.admits(Level::Info));
    assert!(!Threshold::Error.admits(Level::Warning));
    assert!(Threshold::Info.admits(Level::Info));
}

#[test]
fn every_code_is_in_the_readme_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let missing: Vec<&str> = code::ALL
        .iter()
        .filter(|c| !readme.contains(&format!("| {} | {} |", c.code, c.name)))
        .map(|c| c.code)
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's table of weftctl analyze's codes lacks {missing:?}"
    );
}
