//! Request authentication (JWT) at the waypoint, as Istio answers it: a valid token is
//! served (200) and its token stripped or kept and its payload passed on as the
//! RequestAuthentication says; an expired token, one of an unknown issuer or audience, one
//! signed by an unpublished key, one whose keys cannot be fetched get 401; no token where
//! an AuthorizationPolicy requires a request principal gets 403; a JWT claim routes.
//!
//! Keys and tokens come from PyJWT with the cryptography package (`tests/jwt/mint.py`, in
//! the virtual environment `cargo xtask setup` makes), not from weft's own code; the JWKS is
//! served by Python's http.server from a pod outside the mesh, which the waypoint fetches.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use weft_e2e::{bin_dir, manifests, testapp_json, unique_lab_name};
use weft_lab::{Lab, LabOptions, Runtime};

const REVIEWS: &str = "http://reviews.shop.svc.cluster.local:9080";
const RATINGS: &str = "http://ratings.shop.svc.cluster.local:9080";
const ISSUER: &str = "https://idp.lab.example";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs PyJWT: keys into `dir`, tokens by name.
fn mint(dir: &Path) -> BTreeMap<String, String> {
    let python = workspace().join("target/xtask/jwt-tools/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let output = Command::new(&python)
        .arg(workspace().join("tests/jwt/mint.py"))
        .arg(dir)
        .args([ISSUER, "reviews"])
        .output()
        .expect("running mint.py");
    assert!(
        output.status.success(),
        "mint.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("mint.py prints a JSON object of tokens")
}

/// The lab of `tests/manifests/jwt`, with the key server's directory and the inline JWKS
/// filled in. The returned directory holds the keys; it is removed by the caller.
fn lab_up(work: &Path) -> Lab {
    let template = std::fs::read_to_string(manifests("jwt").join("app.yaml")).expect("app.yaml");
    let inline = std::fs::read_to_string(work.join("inline.json")).expect("inline.json");
    let filled = template
        .replace("@JWKS_DIR@", &work.display().to_string())
        .replace("@INLINE_JWKS@", &inline);
    let lab_dir = work.join("manifests");
    std::fs::create_dir_all(&lab_dir).expect("manifest dir");
    std::fs::write(lab_dir.join("app.yaml"), filled).expect("write app.yaml");
    let bins = bin_dir();
    let runtime = Runtime {
        bin_dir: Some(bins.clone()),
        agent: Some(bins.join("weft-agent")),
        ca: Some(bins.join("weft-ca")),
        agent_log: Some("debug".into()),
        agent_args: Vec::new(),
        agent_image: None,
        app_image: None,
    };
    let options = LabOptions::new(unique_lab_name("jwt")).nodes(2);
    match Lab::up_from_dir(&options, &lab_dir, &runtime) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {} did not come up: {e}", options.name),
    }
}

/// One request from shop/client; `token` goes in `Authorization: Bearer`.
fn get(lab: &Lab, url: &str, token: Option<&str>, extra: &[&str]) -> Value {
    let bearer = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["get", url];
    if let Some(bearer) = &bearer {
        args.extend(["-H", bearer.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut lines = testapp_json(lab, "shop/client", &args);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

fn status(line: &Value) -> u64 {
    line["status"].as_u64().unwrap_or(0)
}

/// A header the upstream received, as echoed by weft-testapp.
fn upstream_header<'l>(line: &'l Value, name: &str) -> Option<&'l str> {
    line["body"]["headers"][name][0].as_str()
}

fn version(line: &Value) -> &str {
    line["body"]["version"].as_str().unwrap_or("none")
}

#[test]
fn jwt_tokens_are_verified_authorized_and_routed_on() {
    let work = workspace()
        .join("target/e2e-jwt")
        .join(unique_lab_name("keys"));
    std::fs::create_dir_all(&work).expect("work dir");
    let tokens = mint(&work);
    let token = |name: &str| tokens[name].as_str();
    let lab = lab_up(&work);

    // A valid RS256 token (keys fetched from the key server): served; the token does not
    // reach the upstream (forwardOriginalToken is false), its payload does.
    let valid = get(
        &lab,
        &format!("{REVIEWS}/secure"),
        Some(token("valid")),
        &[],
    );
    assert_eq!(status(&valid), 200, "{valid}");
    assert_eq!(upstream_header(&valid, "authorization"), None, "{valid}");
    let payload = token("valid")
        .split('.')
        .nth(1)
        .expect("a JWT has a payload");
    assert_eq!(
        upstream_header(&valid, "x-jwt-payload"),
        Some(payload),
        "outputPayloadToHeader: {valid}"
    );
    // ES256, from the same key set.
    let es256 = get(
        &lab,
        &format!("{REVIEWS}/secure"),
        Some(token("valid_es256")),
        &[],
    );
    assert_eq!(status(&es256), 200, "{es256}");

    // Invalid tokens: 401, Envoy's reason and challenge.
    for (name, reason) in [
        ("expired", "Jwt is expired"),
        ("wrong_issuer", "Jwt issuer is not configured"),
        ("wrong_audience", "Audiences in Jwt are not allowed"),
        ("bad_signature", "Jwt verification fails"),
        ("unfetchable", "Jwks remote fetch is failed"),
    ] {
        let refused = get(&lab, &format!("{REVIEWS}/public"), Some(token(name)), &[]);
        assert_eq!(status(&refused), 401, "{name}: {refused}");
        assert_eq!(refused["body"], reason, "{name}: {refused}");
        assert!(
            refused["headers"]["www-authenticate"][0]
                .as_str()
                .is_some_and(|c| c.starts_with("Bearer realm=") && c.contains("invalid_token")),
            "{name}: {refused}"
        );
    }
    let garbage = get(&lab, &format!("{REVIEWS}/public"), Some("not.a.jwt"), &[]);
    assert_eq!(status(&garbage), 401, "{garbage}");

    // No token: passes authentication without a principal; the AuthorizationPolicy wants
    // one on /secure only.
    let anonymous_secure = get(&lab, &format!("{REVIEWS}/secure"), None, &[]);
    assert_eq!(status(&anonymous_secure), 403, "{anonymous_secure}");
    let anonymous_public = get(&lab, &format!("{REVIEWS}/public"), None, &[]);
    assert_eq!(status(&anonymous_public), 200, "{anonymous_public}");
    // A client cannot forge the payload header.
    let forged = get(
        &lab,
        &format!("{REVIEWS}/public"),
        None,
        &["-H", "x-jwt-payload: eyJzdWIiOiJhZG1pbiJ9"],
    );
    assert_eq!(status(&forged), 200, "{forged}");
    assert_eq!(upstream_header(&forged, "x-jwt-payload"), None, "{forged}");

    // Claim-based routing: group=beta to v2, everyone else to v1.
    for _ in 0..10 {
        let beta = get(&lab, REVIEWS, Some(token("beta")), &[]);
        assert_eq!((status(&beta), version(&beta)), (200, "v2"), "{beta}");
        let plain = get(&lab, REVIEWS, Some(token("valid")), &[]);
        assert_eq!((status(&plain), version(&plain)), (200, "v1"), "{plain}");
        let anonymous = get(&lab, REVIEWS, None, &[]);
        assert_eq!(version(&anonymous), "v1", "{anonymous}");
    }

    // ratings: an inline JWKS (the EC key alone) and forwardOriginalToken.
    let inline = get(&lab, RATINGS, Some(token("valid_es256")), &[]);
    assert_eq!(status(&inline), 200, "{inline}");
    assert_eq!(
        upstream_header(&inline, "authorization"),
        Some(format!("Bearer {}", token("valid_es256")).as_str()),
        "forwardOriginalToken keeps the token: {inline}"
    );
    // The RSA key is not in the inline set.
    let not_inline = get(&lab, RATINGS, Some(token("valid")), &[]);
    assert_eq!(status(&not_inline), 401, "{not_inline}");
    assert_eq!(
        not_inline["body"], "Jwks doesn't have key to match kid or alg from Jwt",
        "{not_inline}"
    );

    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}
