//! `weftctl certs`: the agent's trust bundle (its roots) and the certificates it holds.
use serde_json::Value;

use super::table::{Table, duration, items, text, yes_no};

/// `valid`, `expiring` (less than a quarter of its lifetime left: rotation, due at about
/// half of it, is late) or `expired`; the agent's `/status` counts by the same rule.
pub fn state(cert: &Value) -> &'static str {
    let left = cert["expires_in_seconds"].as_i64().unwrap_or_default();
    let lifetime = cert["not_after_unix"].as_i64().unwrap_or_default()
        - cert["not_before_unix"].as_i64().unwrap_or_default();
    if left <= 0 {
        "expired"
    } else if left < lifetime / 4 {
        "expiring"
    } else {
        "valid"
    }
}

/// The first four bytes: enough to tell roots apart at a glance; `-o json` has it whole.
fn short_fingerprint(fingerprint: &Value) -> String {
    match fingerprint.as_str() {
        Some(f) if f.len() > 11 => format!("{}…", &f[..11]),
        Some(f) if !f.is_empty() => f.to_string(),
        _ => "-".into(),
    }
}

/// `/certs` of this agent: `{trust_bundle, certificates}` (an agent before trust bundle
/// rotation answered the certificates' list alone).
pub fn render(answer: &Value) -> String {
    let (bundle, certs) = match answer {
        Value::Array(_) => (None, answer),
        _ => (Some(&answer["trust_bundle"]), &answer["certificates"]),
    };
    let mut out = String::new();
    if let Some(bundle) = bundle {
        out.push_str(&render_bundle(bundle));
        out.push('\n');
    }
    out.push_str(&render_certificates(certs));
    out
}

fn render_bundle(bundle: &Value) -> String {
    let mut table = Table::new(&["TRUSTED ROOT SHA-256", "SUBJECT", "NOT AFTER"]);
    for root in items(&bundle["roots"]) {
        table.row(vec![
            text(&root["fingerprint_sha256"]),
            text(&root["subject"]),
            text(&root["not_after"]),
        ]);
    }
    let mut out = table.render();
    if let Some(reason) = bundle["refused"].as_str() {
        out.push_str(&format!(
            "the trust bundle's file was refused, the roots above stay in force: {reason}\n"
        ));
    }
    out
}

fn render_certificates(certs: &Value) -> String {
    let mut table = Table::new(&[
        "IDENTITY",
        "STATE",
        "SERIAL",
        "NOT AFTER",
        "EXPIRES IN",
        "CHAIN",
        "ROOT SHA-256",
        "TRUSTED",
        "PODS",
    ]);
    for c in items(certs) {
        table.row(vec![
            text(&c["identity"]),
            state(c).into(),
            text(&c["serial"]),
            text(&c["not_after"]),
            c["expires_in_seconds"]
                .as_i64()
                .map_or_else(|| "-".into(), duration),
            text(&c["chain_length"]),
            short_fingerprint(&c["root_fingerprint_sha256"]),
            c["chains_to_bundle"]
                .as_bool()
                .map_or_else(|| "-".into(), |b| yes_no(b).to_string()),
            text(&c["pods"]),
        ]);
    }
    if table.is_empty() {
        return "no certificates held (no mesh pod on this node, or the CA has not answered yet)\n"
            .into();
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_trust_bundle_comes_first_then_a_row_per_certificate() {
        let answer = json!({
            "trust_bundle": {
                "roots": [
                    {"fingerprint_sha256": "AB:CD:EF:01:23:45", "subject": "O=cluster.local",
                     "not_after": "2036-01-01T00:00:00Z", "not_after_unix": 2_082_758_400},
                    {"fingerprint_sha256": "01:02:03:04:05:06", "subject": "O=new",
                     "not_after": "2036-06-01T00:00:00Z", "not_after_unix": 2_095_977_600}
                ],
                "changes": 1,
                "refused": "the trust bundle /etc/weft/trust/root-cert.pem is refused: …"
            },
            "certificates": [
                {"identity": "spiffe://cluster.local/ns/mesh/sa/client", "serial": "0a1b",
                 "not_before": "2026-01-01T00:00:00Z", "not_before_unix": 1_767_225_600,
                 "not_after": "2026-01-02T00:00:00Z", "not_after_unix": 1_767_312_000,
                 "expires_in_seconds": 80_000, "chain_length": 2,
                 "root_fingerprint_sha256": "01:02:03:04:05:06", "chains_to_bundle": true,
                 "pods": ["mesh/client"]}
            ]
        });
        assert_eq!(
            render(&answer),
            "\
TRUSTED ROOT SHA-256   SUBJECT           NOT AFTER
AB:CD:EF:01:23:45      O=cluster.local   2036-01-01T00:00:00Z
01:02:03:04:05:06      O=new             2036-06-01T00:00:00Z
the trust bundle's file was refused, the roots above stay in force: the trust bundle /etc/weft/trust/root-cert.pem is refused: …

IDENTITY                                   STATE   SERIAL   NOT AFTER              EXPIRES IN   CHAIN   ROOT SHA-256   TRUSTED   PODS
spiffe://cluster.local/ns/mesh/sa/client   valid   0a1b     2026-01-02T00:00:00Z   22h13m       2       01:02:03:04…   yes       mesh/client
"
        );
    }

    #[test]
    fn one_row_per_certificate_with_its_state() {
        let certs = json!([
            {"identity": "spiffe://cluster.local/ns/mesh/sa/client", "serial": "0a1b",
             "not_before": "2026-01-01T00:00:00Z", "not_before_unix": 1_767_225_600,
             "not_after": "2026-01-02T00:00:00Z", "not_after_unix": 1_767_312_000,
             "expires_in_seconds": 80_000, "chain_length": 2,
             "root_fingerprint_sha256": "AB:CD:EF:01:23:45", "pods": ["mesh/client"]},
            {"identity": "spiffe://cluster.local/ns/mesh/sa/late", "serial": "ff",
             "not_before": "2026-01-01T00:00:00Z", "not_before_unix": 1_767_225_600,
             "not_after": "2026-01-02T00:00:00Z", "not_after_unix": 1_767_312_000,
             "expires_in_seconds": 3_600, "chain_length": 2,
             "root_fingerprint_sha256": "AB:CD:EF:01:23:45", "pods": []}
        ]);
        assert_eq!(
            render(&certs),
            "\
IDENTITY                                   STATE      SERIAL   NOT AFTER              EXPIRES IN   CHAIN   ROOT SHA-256   TRUSTED   PODS
spiffe://cluster.local/ns/mesh/sa/client   valid      0a1b     2026-01-02T00:00:00Z   22h13m       2       AB:CD:EF:01…   -         mesh/client
spiffe://cluster.local/ns/mesh/sa/late     expiring   ff       2026-01-02T00:00:00Z   1h0m         2       AB:CD:EF:01…   -         -
"
        );
        assert!(render(&json!([])).starts_with("no certificates held"));
    }
}
