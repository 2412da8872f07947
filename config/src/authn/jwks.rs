//! JSON Web Key Sets (RFC 7517) as Envoy's JWT filter reads them: the public keys a JWT's
//! signature is checked against.
//!
//! Keys of a type weft cannot use (an EC key on P-521, an X25519 key, a key marked
//! `"use": "enc"`) are skipped, as Envoy skips key types it does not implement; a key of a
//! supported type with a malformed field makes the whole set invalid, and so does a set left
//! without any usable key. The same parser serves validation (an inline `jwks` that does
//! not parse is refused) and the waypoint (inline and fetched sets).
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// A parsed key set. Keys keep their order: verification tries them in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The `alg` the key is restricted to, when the set says so.
    pub alg: Option<String>,
    pub key: Key,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// RSA modulus and exponent, big-endian.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (`0x04 || x || y`).
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    /// A symmetric key (HS256/384/512).
    Oct(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JSON Web Key Set: {0}")]
    NotJson(String),
    #[error("a JSON Web Key Set must be an object with a `keys` array")]
    NoKeys,
    #[error("key {index}: {reason}")]
    BadKey { index: usize, reason: String },
    #[error("no usable key (weft verifies RSA, EC P-256/P-384, Ed25519 and oct keys){}", skipped_text(.0))]
    NoValidKeys(Vec<String>),
}

fn skipped_text(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; skipped: {}", skipped.join("; "))
    }
}

/// Parses a JWKS document.
pub fn parse(text: &str) -> Result<JwkSet, JwksError> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let Some(keys) = document.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::NoKeys);
    };
    let mut parsed = Vec::new();
    let mut skipped = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        match parse_key(key) {
            Ok(Some(jwk)) => parsed.push(jwk),
            Ok(None) => skipped.push(format!("key {index}: {}", describe(key))),
            Err(reason) => return Err(JwksError::BadKey { index, reason }),
        }
    }
    if parsed.is_empty() {
        return Err(JwksError::NoValidKeys(skipped));
    }
    Ok(JwkSet { keys: parsed })
}

fn describe(key: &Value) -> String {
    let field = |name: &str| key.get(name).and_then(Value::as_str).unwrap_or("-");
    format!(
        "kty {} crv {} use {}",
        field("kty"),
        field("crv"),
        field("use")
    )
}

fn text_field<'k>(key: &'k Value, name: &str) -> Result<Option<&'k str>, String> {
    match key.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("[{name}] is not a string")),
    }
}

fn bytes_field(key: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = text_field(key, name)?.ok_or_else(|| format!("[{name}] is missing"))?;
    let bytes = decode_base64url(text).map_err(|_| format!("[{name}] is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("[{name}] is empty"));
    }
    Ok(bytes)
}

/// base64url without padding, as JOSE writes it; padded input is accepted too.
pub(crate) fn decode_base64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

/// `Ok(None)` for a key of a type weft does not use.
fn parse_key(key: &Value) -> Result<Option<Jwk>, String> {
    if !key.is_object() {
        return Err("not a JSON object".into());
    }
    if text_field(key, "use")? == Some("enc") {
        return Ok(None);
    }
    let kid = text_field(key, "kid")?.map(str::to_string);
    let alg = text_field(key, "alg")?.map(str::to_string);
    let kty = text_field(key, "kty")?.ok_or("[kty] is missing")?;
    let material = match kty {
        "RSA" => {
            if let Some(alg) = &alg
                && !(alg.starts_with("RS") || alg.starts_with("PS"))
            {
                return Err(format!("alg {alg:?} does not fit an RSA key"));
            }
            Key::Rsa {
                n: bytes_field(key, "n")?,
                e: bytes_field(key, "e")?,
            }
        }
        "EC" => {
            let curve = match text_field(key, "crv")?.ok_or("[crv] is missing")? {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                _ => return Ok(None),
            };
            let x = bytes_field(key, "x")?;
            let y = bytes_field(key, "y")?;
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(format!("[x] and [y] must be {len} bytes for this curve"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Key::Ec { curve, point }
        }
        "OKP" => {
            if text_field(key, "crv")? != Some("Ed25519") {
                return Ok(None);
            }
            let x = bytes_field(key, "x")?;
            if x.len() != 32 {
                return Err("[x] must be 32 bytes for Ed25519".into());
            }
            Key::Ed25519(x)
        }
        "oct" => Key::Oct(bytes_field(key, "k")?),
        _ => return Ok(None),
    };
    Ok(Some(Jwk {
        kid,
        alg,
        key: material,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // An RSA key and an EC P-256 key (public parts only), as an identity provider serves them.
    const SET: &str = r#"{"keys":[
      {"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","e":"AQAB",
       "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
      {"kty":"EC","kid":"e1","crv":"P-256",
       "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
       "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
      {"kty":"EC","crv":"P-521","x":"AA","y":"AA"},
      {"kty":"RSA","use":"enc","e":"AQAB","n":"AA"}
    ]}"#;

    #[test]
    fn parses_supported_keys_and_skips_others() {
        let set = parse(SET).expect("valid set");
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].kid.as_deref(), Some("r1"));
        assert!(matches!(set.keys[0].key, Key::Rsa { .. }));
        match &set.keys[1].key {
            Key::Ec { curve, point } => {
                assert_eq!(*curve, Curve::P256);
                assert_eq!(point.len(), 65);
                assert_eq!(point[0], 4);
            }
            other => panic!("expected an EC key, got {other:?}"),
        }
    }

    #[test]
    fn malformed_sets_are_errors() {
        assert!(matches!(parse("{"), Err(JwksError::NotJson(_))));
        assert_eq!(parse(r#"{"kids":[]}"#), Err(JwksError::NoKeys));
        assert!(matches!(
            parse(r#"{"keys":[]}"#),
            Err(JwksError::NoValidKeys(_))
        ));
        assert!(matches!(
            parse(r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#),
            Err(JwksError::NoValidKeys(skipped)) if skipped.len() == 1
        ));
        assert_eq!(
            parse(r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"not base64!"}]}"#),
            Err(JwksError::BadKey {
                index: 0,
                reason: "[n] is not base64url".into()
            })
        );
        assert!(matches!(
            parse(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}"#),
            Err(JwksError::BadKey { index: 0, .. })
        ));
        assert!(matches!(
            parse(r#"{"keys":[{"kty":"RSA","alg":"ES256","e":"AQAB","n":"AQAB"}]}"#),
            Err(JwksError::BadKey { index: 0, .. })
        ));
    }
}
