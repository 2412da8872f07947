//! Request authentication: Istio's RequestAuthentication (JWT) as Envoy's `jwt_authn`
//! filter applies the configuration istiod generates for it, as pure functions — where a
//! request carries tokens, whether they verify, and what a verified token says. The waypoint
//! selects the policies, holds the keys (`jwks` inline, `jwksUri` fetched) and calls these.
//!
//! - **Locations.** A rule without `fromHeaders`, `fromParams` or `fromCookies` looks in
//!   `Authorization: Bearer <token>` (scheme case-insensitive), then the `access_token`
//!   query parameter. A `fromHeaders` entry with a `prefix` takes only values starting with
//!   it; other values carry no token.
//! - **Decision.** No token anywhere: the request passes without a principal (Istio's
//!   answer; an AuthorizationPolicy requiring `requestPrincipals` then denies it, 403). A
//!   token is checked against the rules that look where it was found and name its `iss`; none
//!   → "Jwt issuer is not configured"; it must pass one of them (time with 60 s skew,
//!   `audiences`, signature): otherwise the request is refused (401). Every token found must
//!   verify; the first verified one is the request's identity.
//! - **`failureMode`.** `STRICT`: a request without a verified token is refused ("Jwt is
//!   missing"). `IGNORE`: a token that fails only rules in this mode is ignored.
//! - **Keys.** A rule whose `jwksUri` could not be fetched has no keys: its tokens fail, as
//!   with the placeholder key istiod inlines when it cannot fetch.
//! - **Headers.** Before the request goes on, every rule's `outputPayloadToHeader` and
//!   `outputClaimToHeaders` headers are removed from it (a client cannot forge them); after a
//!   verification they are written from the token, and the token's header is removed unless
//!   `forwardOriginalToken`.
pub mod jwks;
pub mod jwt;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Map, Value};

use self::jwks::JwkSet;
use self::jwt::{CLOCK_SKEW_SECONDS, JwtError};
use crate::api::security::{JwtFailureMode, JwtRule};

/// The keys of one rule, as the caller has them.
#[derive(Clone, Debug)]
pub enum Keys {
    Ready(Arc<JwkSet>),
    /// Not fetched (yet), or the inline set did not parse: tokens for this rule fail.
    Unavailable,
}

/// One `jwtRules` entry in force, with its keys.
#[derive(Clone, Debug)]
pub struct Provider<'a> {
    pub rule: &'a JwtRule,
    pub keys: Keys,
}

/// Where a token was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A header (lowercase name) and the prefix before the token.
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

const DEFAULT_PARAM: &str = "access_token";
const BEARER: &str = "Bearer ";

impl Location {
    /// The places `rule` looks in, in order.
    pub fn of(rule: &JwtRule) -> Vec<Location> {
        if rule.from_headers.is_empty()
            && rule.from_params.is_empty()
            && rule.from_cookies.is_empty()
        {
            return vec![
                Location::Header {
                    name: header::AUTHORIZATION.as_str().to_string(),
                    prefix: BEARER.to_string(),
                },
                Location::Param(DEFAULT_PARAM.to_string()),
            ];
        }
        let headers = rule.from_headers.iter().map(|h| Location::Header {
            name: h.name.to_ascii_lowercase(),
            prefix: h.prefix.clone(),
        });
        let params = rule.from_params.iter().cloned().map(Location::Param);
        let cookies = rule.from_cookies.iter().cloned().map(Location::Cookie);
        headers.chain(params).chain(cookies).collect()
    }

    /// The token at this location, if the request has one.
    fn extract(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        match self {
            Location::Header { name, prefix } => {
                headers.get_all(name.as_str()).iter().find_map(|v| {
                    let value = v.to_str().ok()?;
                    let token = if prefix.is_empty() {
                        value
                    } else if name == header::AUTHORIZATION.as_str() && prefix == BEARER {
                        // RFC 7235: the scheme is case-insensitive.
                        let head = value.get(..prefix.len())?;
                        head.eq_ignore_ascii_case(prefix)
                            .then(|| &value[prefix.len()..])?
                    } else {
                        value.strip_prefix(prefix.as_str())?
                    };
                    let token = token.trim();
                    (!token.is_empty()).then(|| token.to_string())
                })
            }
            Location::Param(name) => query?.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key == name && !value.is_empty()).then(|| value.to_string())
            }),
            Location::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
                v.to_str().ok()?.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    let value = value.trim().trim_matches('"');
                    (key.trim() == name && !value.is_empty()).then(|| value.to_string())
                })
            }),
        }
    }
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq)]
pub struct Authenticated {
    /// `request.auth.principal`: `<iss>/<sub>`; `None` when the token lacks either.
    pub principal: Option<String>,
    /// `request.auth.audiences`.
    pub audiences: Vec<String>,
    /// `request.auth.presenter`: the `azp` claim.
    pub presenter: Option<String>,
    /// `request.auth.claims`: the whole payload.
    pub claims: Map<String, Value>,
    /// The payload as sent (base64url), for `outputPayloadToHeader`.
    pub payload_base64url: String,
}

impl Authenticated {
    fn from_token(token: &jwt::Token<'_>) -> Self {
        let text = |name: &str| token.payload.get(name).and_then(Value::as_str);
        Self {
            principal: text("iss")
                .zip(text("sub"))
                .map(|(iss, sub)| format!("{iss}/{sub}")),
            audiences: token
                .audiences()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string)
                .collect(),
            presenter: text("azp").map(str::to_string),
            claims: token.payload.clone(),
            payload_base64url: token.payload_base64url.to_string(),
        }
    }

    /// The claim at `path` (nested objects, outermost name first).
    pub fn claim<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.claims.get(first.as_ref())?;
        for name in rest {
            value = value.as_object()?.get(name.as_ref())?;
        }
        Some(value)
    }

    /// The strings a claim holds, as Istio matches them: a string, or each string of a list.
    pub fn claim_strings<S: AsRef<str>>(&self, path: &[S]) -> Vec<&str> {
        match self.claim(path) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// No token (or only ignored ones): no request principal.
    Anonymous,
    Verified {
        auth: Box<Authenticated>,
        /// The provider (index into the slice given) that verified it.
        provider: usize,
        location: Location,
    },
    /// Refused: Istio answers 401 with this reason.
    Rejected(JwtError),
}

/// Seconds since the Unix epoch, the clock tokens are checked against.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Authenticates a request with `headers` and `query` at time `now`.
pub fn authenticate(
    providers: &[Provider<'_>],
    headers: &HeaderMap,
    query: Option<&str>,
    now: u64,
) -> Outcome {
    // Each location once, with the providers that look there.
    let mut found: Vec<(Location, String, Vec<usize>)> = Vec::new();
    for (index, provider) in providers.iter().enumerate() {
        for location in Location::of(provider.rule) {
            if let Some((_, _, looking)) = found.iter_mut().find(|(l, _, _)| *l == location) {
                looking.push(index);
            } else if let Some(token) = location.extract(headers, query) {
                found.push((location, token, vec![index]));
            }
        }
    }
    let strict = providers
        .iter()
        .any(|p| p.rule.failure_mode == Some(JwtFailureMode::Strict));
    let mut verified = None;
    for (location, raw, looking) in found {
        match verify(providers, &looking, &raw, now) {
            Ok((provider, auth)) => {
                verified.get_or_insert((provider, auth, location));
            }
            Err((error, candidates)) => {
                let ignored = candidates
                    .iter()
                    .all(|&i| providers[i].rule.failure_mode == Some(JwtFailureMode::Ignore));
                if !ignored {
                    return Outcome::Rejected(error);
                }
            }
        }
    }
    match verified {
        Some((provider, auth, location)) => Outcome::Verified {
            auth: Box::new(auth),
            provider,
            location,
        },
        None if strict => Outcome::Rejected(JwtError::Missing),
        None => Outcome::Anonymous,
    }
}

/// One token against the providers looking where it was found. On failure, the error and
/// the providers it failed (for `failureMode`).
fn verify(
    providers: &[Provider<'_>],
    looking: &[usize],
    raw: &str,
    now: u64,
) -> Result<(usize, Authenticated), (JwtError, Vec<usize>)> {
    let token = jwt::decode(raw).map_err(|e| (e, looking.to_vec()))?;
    let issuer = token.issuer().unwrap_or_default();
    let candidates: Vec<usize> = looking
        .iter()
        .copied()
        .filter(|&i| providers[i].rule.issuer == issuer)
        .collect();
    if candidates.is_empty() {
        return Err((JwtError::UnknownIssuer, looking.to_vec()));
    }
    let mut last = JwtError::VerificationFailed;
    for &i in &candidates {
        let provider = &providers[i];
        let checked = token
            .check_time(now, CLOCK_SKEW_SECONDS)
            .and_then(|()| token.check_audiences(&provider.rule.audiences))
            .and_then(|()| match &provider.keys {
                Keys::Ready(keys) => token.verify_signature(keys),
                Keys::Unavailable => Err(JwtError::KeysUnavailable),
            });
        match checked {
            Ok(()) => return Ok((i, Authenticated::from_token(&token))),
            Err(e) => last = e,
        }
    }
    Err((last, candidates))
}

/// Rewrites the request's headers for the upstream: output headers of every provider
/// removed (clients cannot set them), then, for a verified token, the token removed unless
/// `forwardOriginalToken`, the payload and claims written where the rule says.
pub fn apply(providers: &[Provider<'_>], outcome: &Outcome, headers: &mut HeaderMap) {
    for provider in providers {
        let rule = provider.rule;
        for name in rule
            .output_payload_to_header
            .iter()
            .chain(rule.output_claim_to_headers.iter().map(|c| &c.header))
        {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    let Outcome::Verified {
        auth,
        provider,
        location,
    } = outcome
    else {
        return;
    };
    let Some(rule) = providers.get(*provider).map(|p| p.rule) else {
        return;
    };
    if !rule.forward_original_token
        && let Location::Header { name, .. } = location
    {
        headers.remove(name.as_str());
    }
    if let Some(name) = &rule.output_payload_to_header
        && let Ok(name) = HeaderName::from_bytes(name.as_bytes())
        && let Ok(value) = HeaderValue::from_str(&auth.payload_base64url)
    {
        headers.insert(name, value);
    }
    for output in &rule.output_claim_to_headers {
        let path: Vec<&str> = output.claim.split('.').collect();
        let text = match auth.claim(&path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        if let Ok(name) = HeaderName::from_bytes(output.header.as_bytes())
            && let Ok(value) = HeaderValue::from_str(&text)
        {
            headers.insert(name, value);
        }
    }
}

/// A claim path as AuthorizationPolicy keys write it: `request.auth.claims[a][b]` →
/// `[a, b]`; `None` when malformed.
pub fn condition_claim_path(key: &str) -> Option<Vec<&str>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() {
            return None;
        }
        path.push(name);
        rest = &inner[end + 1..];
    }
    (!path.is_empty()).then_some(path)
}

/// A claim path as VirtualService header matches write it: `@request.auth.claims.a.b`,
/// `@request.auth.claims[a.b]` or a mix (`.` separates names outside brackets); `None`
/// when malformed.
pub fn route_claim_path(name: &str) -> Option<Vec<String>> {
    let mut rest = name.strip_prefix("@request.auth.claims")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            path.push(inner[..end].to_string());
            rest = &inner[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            path.push(after[..end].to_string());
            rest = &after[end..];
        } else {
            return None;
        }
    }
    (!path.is_empty() && path.iter().all(|p| !p.is_empty())).then_some(path)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::hmac;

    use super::*;
    use crate::api::security::{ClaimToHeader, JwtHeader};

    const SECRET: &[u8] = b"a test secret of some length";

    fn keys() -> Keys {
        Keys::Ready(Arc::new(
            jwks::parse(&format!(
                r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#,
                URL_SAFE_NO_PAD.encode(SECRET)
            ))
            .expect("jwks"),
        ))
    }

    /// An HS256 token: the unit tests' signer (the e2e test signs with PyJWT).
    fn token(payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload.as_bytes())
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn rule(issuer: &str) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            ..Default::default()
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn no_token_passes_and_bad_tokens_are_refused() {
        let rule = rule("https://issuer.example");
        let providers = [Provider {
            rule: &rule,
            keys: keys(),
        }];
        assert_eq!(
            authenticate(&providers, &HeaderMap::new(), None, NOW),
            Outcome::Anonymous
        );
        let good = token(r#"{"iss":"https://issuer.example","sub":"alice","exp":1800000100}"#);
        let Outcome::Verified { auth, provider, .. } =
            authenticate(&providers, &bearer(&good), None, NOW)
        else {
            panic!("a good token verifies");
        };
        assert_eq!(provider, 0);
        assert_eq!(
            auth.principal.as_deref(),
            Some("https://issuer.example/alice")
        );

        let expired = token(r#"{"iss":"https://issuer.example","sub":"a","exp":1799999000}"#);
        assert_eq!(
            authenticate(&providers, &bearer(&expired), None, NOW),
            Outcome::Rejected(JwtError::Expired)
        );
        let stranger = token(r#"{"iss":"https://other.example","sub":"a"}"#);
        assert_eq!(
            authenticate(&providers, &bearer(&stranger), None, NOW),
            Outcome::Rejected(JwtError::UnknownIssuer)
        );
        assert_eq!(
            authenticate(&providers, &bearer("garbage"), None, NOW),
            Outcome::Rejected(JwtError::BadFormat)
        );
        let no_keys = [Provider {
            rule: &rule,
            keys: Keys::Unavailable,
        }];
        assert_eq!(
            authenticate(&no_keys, &bearer(&good), None, NOW),
            Outcome::Rejected(JwtError::KeysUnavailable)
        );
        // The default second location: `access_token`.
        assert!(matches!(
            authenticate(
                &providers,
                &HeaderMap::new(),
                Some(&format!("a=1&access_token={good}")),
                NOW
            ),
            Outcome::Verified {
                location: Location::Param(_),
                ..
            }
        ));
        // A scheme that is not Bearer carries no token for the default location.
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(
            authenticate(&providers, &basic, None, NOW),
            Outcome::Anonymous
        );
    }

    #[test]
    fn several_rules_choose_by_issuer_and_custom_locations() {
        let mut a = rule("issuer-a");
        a.audiences = vec!["shop".into()];
        let mut b = rule("issuer-b");
        b.from_headers = vec![JwtHeader {
            name: "X-Jwt".into(),
            prefix: "Token ".into(),
        }];
        b.from_cookies = vec!["session".into()];
        let providers = [
            Provider {
                rule: &a,
                keys: keys(),
            },
            Provider {
                rule: &b,
                keys: keys(),
            },
        ];
        let for_b = token(r#"{"iss":"issuer-b","sub":"bob"}"#);
        // issuer-b's token in the default location: only issuer-a looks there.
        assert_eq!(
            authenticate(&providers, &bearer(&for_b), None, NOW),
            Outcome::Rejected(JwtError::UnknownIssuer)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-jwt",
            HeaderValue::from_str(&format!("Token {for_b}")).expect("header"),
        );
        assert!(matches!(
            authenticate(&providers, &headers, None, NOW),
            Outcome::Verified { provider: 1, .. }
        ));
        let mut cookie = HeaderMap::new();
        cookie.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; session={for_b}")).expect("header"),
        );
        assert!(matches!(
            authenticate(&providers, &cookie, None, NOW),
            Outcome::Verified { provider: 1, .. }
        ));
        // Without the prefix the header carries no token.
        let mut bare = HeaderMap::new();
        bare.insert("x-jwt", HeaderValue::from_str(&for_b).expect("header"));
        assert_eq!(
            authenticate(&providers, &bare, None, NOW),
            Outcome::Anonymous
        );

        let wrong_aud = token(r#"{"iss":"issuer-a","sub":"x","aud":"elsewhere"}"#);
        assert_eq!(
            authenticate(&providers, &bearer(&wrong_aud), None, NOW),
            Outcome::Rejected(JwtError::AudienceNotAllowed)
        );
    }

    #[test]
    fn failure_modes() {
        let mut strict = rule("i");
        strict.failure_mode = Some(JwtFailureMode::Strict);
        let providers = [Provider {
            rule: &strict,
            keys: keys(),
        }];
        assert_eq!(
            authenticate(&providers, &HeaderMap::new(), None, NOW),
            Outcome::Rejected(JwtError::Missing)
        );
        let mut ignore = rule("i");
        ignore.failure_mode = Some(JwtFailureMode::Ignore);
        let providers = [Provider {
            rule: &ignore,
            keys: keys(),
        }];
        let expired = token(r#"{"iss":"i","sub":"a","exp":1}"#);
        assert_eq!(
            authenticate(&providers, &bearer(&expired), None, NOW),
            Outcome::Anonymous
        );
    }

    #[test]
    fn headers_for_the_upstream() {
        let mut r = rule("i");
        r.output_payload_to_header = Some("x-jwt-payload".into());
        r.output_claim_to_headers = vec![
            ClaimToHeader {
                header: "x-group".into(),
                claim: "org.group".into(),
            },
            ClaimToHeader {
                header: "x-admin".into(),
                claim: "admin".into(),
            },
        ];
        let providers = [Provider {
            rule: &r,
            keys: keys(),
        }];
        let payload = r#"{"iss":"i","sub":"a","org":{"group":"beta"},"admin":true}"#;
        let raw = token(payload);
        let mut headers = bearer(&raw);
        headers.insert("x-group", HeaderValue::from_static("forged"));
        let outcome = authenticate(&providers, &headers, None, NOW);
        apply(&providers, &outcome, &mut headers);
        assert!(
            headers.get(header::AUTHORIZATION).is_none(),
            "token removed"
        );
        assert_eq!(headers["x-group"], "beta");
        assert_eq!(headers["x-admin"], "true");
        let sent = URL_SAFE_NO_PAD
            .decode(headers["x-jwt-payload"].as_bytes())
            .expect("base64url");
        assert_eq!(sent, payload.as_bytes());

        r.forward_original_token = true;
        let providers = [Provider {
            rule: &r,
            keys: keys(),
        }];
        let mut headers = bearer(&raw);
        let outcome = authenticate(&providers, &headers, None, NOW);
        apply(&providers, &outcome, &mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_some(), "token kept");

        // Without a token, forged output headers are still removed.
        let mut headers = HeaderMap::new();
        headers.insert("x-jwt-payload", HeaderValue::from_static("e30"));
        apply(&providers, &Outcome::Anonymous, &mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn claims_and_paths() {
        let rule = rule("i");
        let providers = [Provider {
            rule: &rule,
            keys: keys(),
        }];
        let raw = token(
            r#"{"iss":"i","sub":"a","aud":["x","y"],"azp":"web","groups":["dev","ops"],"org":{"team":"core"}}"#,
        );
        let Outcome::Verified { auth, .. } = authenticate(&providers, &bearer(&raw), None, NOW)
        else {
            panic!("verifies");
        };
        assert_eq!(auth.audiences, ["x", "y"]);
        assert_eq!(auth.presenter.as_deref(), Some("web"));
        assert_eq!(auth.claim_strings(&["groups"]), ["dev", "ops"]);
        assert_eq!(auth.claim_strings(&["org", "team"]), ["core"]);
        assert!(auth.claim_strings(&["org"]).is_empty());

        assert_eq!(
            condition_claim_path("request.auth.claims[org][team]"),
            Some(vec!["org", "team"])
        );
        assert_eq!(condition_claim_path("request.auth.claims[]"), None);
        assert_eq!(condition_claim_path("request.auth.claims.org"), None);
        assert_eq!(
            route_claim_path("@request.auth.claims.org.team"),
            Some(vec!["org".to_string(), "team".to_string()])
        );
        assert_eq!(
            route_claim_path("@request.auth.claims[foo.com/name]"),
            Some(vec!["foo.com/name".to_string()])
        );
        assert_eq!(route_claim_path("@request.auth.claims"), None);
        assert_eq!(route_claim_path("@request.auth.claimsx"), None);
    }
}
