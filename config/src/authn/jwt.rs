//! One JSON Web Token (RFC 7519, compact JWS form): decoding, and the checks Envoy's JWT
//! filter makes, in its order — issuer, time (`nbf`, `exp`, with its 60 s clock skew),
//! audiences, then the signature against a key set.
//!
//! Algorithms (ring): RS256/384/512 and PS256/384/512 (RSA keys of 2048 to 8192 bits),
//! ES256, ES384, EdDSA (Ed25519), HS256/384/512 (oct keys). ES512 (P-521), which Envoy also
//! accepts, is not available in ring: such tokens fail verification. `none` never verifies.
//!
//! The error texts are Envoy's, so a client sees the body it would get from Istio.
use ring::{hmac, signature};
use serde_json::{Map, Value};

use super::jwks::{Curve, Jwk, JwkSet, Key, decode_base64url};

/// Envoy's default `clock_skew_seconds`.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt header is an invalid Base64url encoded or an invalid JSON")]
    BadHeader,
    #[error("Jwt header [alg] field is required and must be a string")]
    NoAlg,
    #[error("Jwt header [alg] field value is invalid")]
    UnsupportedAlg,
    #[error("Jwt payload is an invalid Base64url encoded or an invalid JSON")]
    BadPayload,
    #[error("Jwt payload [{0}] field is not of the expected type")]
    BadClaim(&'static str),
    #[error("Jwt signature is an invalid Base64url encoded")]
    BadSignatureEncoding,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt not before")]
    NotYetValid,
    #[error("Jwt is expired")]
    Expired,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwt verification fails")]
    VerificationFailed,
    #[error("Jwks remote fetch is failed")]
    KeysUnavailable,
    #[error("Jwt is missing")]
    Missing,
}

/// A decoded, not yet verified token.
#[derive(Clone, Debug)]
pub struct Token<'t> {
    pub alg: String,
    pub kid: Option<String>,
    pub payload: Map<String, Value>,
    /// The payload as it was sent (base64url): what `outputPayloadToHeader` passes on.
    pub payload_base64url: &'t str,
    signing_input: &'t str,
    signature: Vec<u8>,
}

/// Splits and decodes `raw`; nothing is verified yet.
pub fn decode(raw: &str) -> Result<Token<'_>, JwtError> {
    let mut parts = raw.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let header: Value = decode_base64url(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(Value::is_object)
        .ok_or(JwtError::BadHeader)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::NoAlg)?
        .to_string();
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::BadHeader),
    };
    let claims = decode_base64url(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .ok_or(JwtError::BadPayload)?;
    let Value::Object(claims) = claims else {
        return Err(JwtError::BadPayload);
    };
    let signature = decode_base64url(sig).map_err(|_| JwtError::BadSignatureEncoding)?;
    let signing_input = &raw[..header_len(raw, payload)];
    let token = Token {
        alg,
        kid,
        payload: claims,
        payload_base64url: payload,
        signing_input,
        signature,
    };
    // Type checks Envoy makes while parsing.
    for name in ["iss", "sub"] {
        if token.payload.get(name).is_some_and(|v| !v.is_string()) {
            return Err(JwtError::BadClaim(name));
        }
    }
    token.time("exp")?;
    token.time("nbf")?;
    token.audiences()?;
    Ok(token)
}

/// The length of `header.payload` in `raw`.
fn header_len(raw: &str, payload: &str) -> usize {
    raw.find('.').map_or(0, |dot| dot + 1 + payload.len())
}

impl Token<'_> {
    pub fn issuer(&self) -> Option<&str> {
        self.payload.get("iss").and_then(Value::as_str)
    }

    /// A NumericDate claim; `None` when absent.
    fn time(&self, name: &'static str) -> Result<Option<u64>, JwtError> {
        match self.payload.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(JwtError::BadClaim(name)),
            Some(_) => Err(JwtError::BadClaim(name)),
        }
    }

    /// `aud` as a list (a single string is a list of one).
    pub fn audiences(&self) -> Result<Vec<&str>, JwtError> {
        match self.payload.get("aud") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(aud)) => Ok(vec![aud.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or(JwtError::BadClaim("aud")))
                .collect(),
            Some(_) => Err(JwtError::BadClaim("aud")),
        }
    }

    /// `nbf` and `exp` against `now` (seconds since the epoch), with `skew` seconds of grace.
    pub fn check_time(&self, now: u64, skew: u64) -> Result<(), JwtError> {
        if let Some(nbf) = self.time("nbf")?
            && nbf > now.saturating_add(skew)
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(exp) = self.time("exp")?
            && now > exp.saturating_add(skew)
        {
            return Err(JwtError::Expired);
        }
        Ok(())
    }

    /// With `allowed` empty any audience passes; otherwise one of the token's must be
    /// allowed. Envoy compares them without an `http://`/`https://` scheme and a trailing `/`.
    pub fn check_audiences(&self, allowed: &[String]) -> Result<(), JwtError> {
        if allowed.is_empty() {
            return Ok(());
        }
        let ours: Vec<&str> = allowed.iter().map(|a| sanitize_audience(a)).collect();
        if self
            .audiences()?
            .into_iter()
            .any(|aud| ours.contains(&sanitize_audience(aud)))
        {
            Ok(())
        } else {
            Err(JwtError::AudienceNotAllowed)
        }
    }

    /// The signature against the keys that fit the token's `kid` and `alg`.
    pub fn verify_signature(&self, keys: &JwkSet) -> Result<(), JwtError> {
        let Some(algorithm) = Algorithm::from_name(&self.alg) else {
            return Err(JwtError::UnsupportedAlg);
        };
        let mut tried = false;
        for jwk in keys.keys.iter().filter(|k| self.fits(k)) {
            let Some(ok) = algorithm.verify(&jwk.key, self.signing_input, &self.signature) else {
                continue;
            };
            tried = true;
            if ok {
                return Ok(());
            }
        }
        Err(if tried {
            JwtError::VerificationFailed
        } else {
            JwtError::NoMatchingKey
        })
    }

    fn fits(&self, jwk: &Jwk) -> bool {
        let kid_fits = match (&self.kid, &jwk.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        kid_fits && jwk.alg.as_ref().is_none_or(|alg| *alg == self.alg)
    }
}

fn sanitize_audience(audience: &str) -> &str {
    let audience = audience
        .strip_prefix("https://")
        .or_else(|| audience.strip_prefix("http://"))
        .unwrap_or(audience);
    audience.strip_suffix('/').unwrap_or(audience)
}

#[derive(Clone, Copy, Debug)]
enum Algorithm {
    RsaPkcs1(&'static signature::RsaParameters),
    RsaPss(&'static signature::RsaParameters),
    Ecdsa(Curve, &'static signature::EcdsaVerificationAlgorithm),
    EdDsa,
    Hmac(hmac::Algorithm),
}

impl Algorithm {
    fn from_name(alg: &str) -> Option<Self> {
        Some(match alg {
            "RS256" => Self::RsaPkcs1(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Self::RsaPkcs1(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Self::RsaPkcs1(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Self::RsaPss(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Self::RsaPss(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Self::RsaPss(&signature::RSA_PSS_2048_8192_SHA512),
            "ES256" => Self::Ecdsa(Curve::P256, &signature::ECDSA_P256_SHA256_FIXED),
            "ES384" => Self::Ecdsa(Curve::P384, &signature::ECDSA_P384_SHA384_FIXED),
            "EdDSA" => Self::EdDsa,
            "HS256" => Self::Hmac(hmac::HMAC_SHA256),
            "HS384" => Self::Hmac(hmac::HMAC_SHA384),
            "HS512" => Self::Hmac(hmac::HMAC_SHA512),
            _ => return None,
        })
    }

    /// `None` when the key is not of this algorithm's type.
    fn verify(self, key: &Key, message: &str, sig: &[u8]) -> Option<bool> {
        let message = message.as_bytes();
        let ok = match (self, key) {
            (Self::RsaPkcs1(params) | Self::RsaPss(params), Key::Rsa { n, e }) => {
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (Self::Ecdsa(curve, algorithm), Key::Ec { curve: c, point }) if curve == *c => {
                signature::UnparsedPublicKey::new(algorithm, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Self::EdDsa, Key::Ed25519(x)) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, sig)
                    .is_ok()
            }
            (Self::Hmac(algorithm), Key::Oct(secret)) => {
                hmac::verify(&hmac::Key::new(algorithm, secret), message, sig).is_ok()
            }
            _ => return None,
        };
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::authn::jwks;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unsigned(header: &str, payload: &str) -> String {
        format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()))
    }

    /// An ES256 key pair: the signer for these unit tests (the e2e test signs with PyJWT).
    fn es256() -> (EcdsaKeyPair, JwkSet) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .expect("key pair");
        let public = pair.public_key().as_ref();
        let set = jwks::parse(&format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            b64(&public[1..33]),
            b64(&public[33..])
        ))
        .expect("jwks");
        (pair, set)
    }

    fn sign_es256(pair: &EcdsaKeyPair, header: &str, payload: &str) -> String {
        let input = unsigned(header, payload);
        let sig = pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }

    #[test]
    fn es256_signature_kid_and_tampering() {
        let (pair, keys) = es256();
        let raw = sign_es256(
            &pair,
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"a","sub":"b"}"#,
        );
        let token = decode(&raw).expect("decodes");
        assert_eq!(token.issuer(), Some("a"));
        assert_eq!(token.verify_signature(&keys), Ok(()));

        let other_kid = sign_es256(
            &pair,
            r#"{"alg":"ES256","kid":"k2"}"#,
            r#"{"iss":"a","sub":"b"}"#,
        );
        assert_eq!(
            decode(&other_kid).expect("decodes").verify_signature(&keys),
            Err(JwtError::NoMatchingKey)
        );

        // The payload swapped for another: the signature no longer fits.
        let (head, rest) = raw.split_once('.').expect("dots");
        let (_, sig) = rest.split_once('.').expect("dots");
        let forged = format!("{head}.{}.{sig}", b64(br#"{"iss":"a","sub":"admin"}"#));
        assert_eq!(
            decode(&forged).expect("decodes").verify_signature(&keys),
            Err(JwtError::VerificationFailed)
        );
        // Another key pair's signature.
        let (other, _) = es256();
        let foreign = sign_es256(&other, r#"{"alg":"ES256"}"#, r#"{"iss":"a"}"#);
        assert_eq!(
            decode(&foreign).expect("decodes").verify_signature(&keys),
            Err(JwtError::VerificationFailed)
        );
        // alg none, or an HMAC over the public key (the classic confusion): never.
        let none = format!("{}.", unsigned(r#"{"alg":"none"}"#, r#"{"iss":"a"}"#));
        assert_eq!(
            decode(&none).expect("decodes").verify_signature(&keys),
            Err(JwtError::UnsupportedAlg)
        );
        let hs = format!(
            "{}.{}",
            unsigned(r#"{"alg":"HS256"}"#, r#"{"iss":"a"}"#),
            b64(b"x")
        );
        assert_eq!(
            decode(&hs).expect("decodes").verify_signature(&keys),
            Err(JwtError::NoMatchingKey)
        );
    }

    #[test]
    fn eddsa_and_hmac() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let keys = jwks::parse(&format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}"}},{{"kty":"oct","k":"{}"}}]}}"#,
            b64(pair.public_key().as_ref()),
            b64(b"shared secret")
        ))
        .expect("jwks");
        let input = unsigned(r#"{"alg":"EdDSA"}"#, r#"{"iss":"a"}"#);
        let raw = format!("{input}.{}", b64(pair.sign(input.as_bytes()).as_ref()));
        assert_eq!(
            decode(&raw).expect("decodes").verify_signature(&keys),
            Ok(())
        );

        let input = unsigned(r#"{"alg":"HS256"}"#, r#"{"iss":"a"}"#);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"shared secret"),
            input.as_bytes(),
        );
        let raw = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            decode(&raw).expect("decodes").verify_signature(&keys),
            Ok(())
        );
    }

    #[test]
    fn time_and_audiences() {
        let token = |payload: &str| format!("{}.c2ln", unsigned(r#"{"alg":"ES256"}"#, payload));
        let raw = token(r#"{"exp":1000,"nbf":500,"aud":["https://api.example.com/","other"]}"#);
        let t = decode(&raw).expect("decodes");
        assert_eq!(t.check_time(700, 60), Ok(()));
        assert_eq!(t.check_time(1060, 60), Ok(()), "within the skew");
        assert_eq!(t.check_time(1061, 60), Err(JwtError::Expired));
        assert_eq!(t.check_time(440, 60), Ok(()));
        assert_eq!(t.check_time(439, 60), Err(JwtError::NotYetValid));
        assert_eq!(t.check_audiences(&[]), Ok(()));
        assert_eq!(t.check_audiences(&["api.example.com".into()]), Ok(()));
        assert_eq!(
            t.check_audiences(&["http://api.example.com".into()]),
            Ok(())
        );
        assert_eq!(
            t.check_audiences(&["elsewhere".into()]),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(
            decode(&token(r#"{"exp":"soon"}"#)).err(),
            Some(JwtError::BadClaim("exp"))
        );
        assert_eq!(decode("a.b").err(), Some(JwtError::BadFormat));
        assert_eq!(decode("a.b.c.d").err(), Some(JwtError::BadFormat));
        assert_eq!(decode("!!.b.c").err(), Some(JwtError::BadHeader));
    }
}
