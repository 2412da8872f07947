//! Header values as Envoy reads them in `request_headers_to_add` and
//! `response_headers_to_add`, where pilot puts a VirtualService's `headers` values
//! unchanged: `%NAME%` is one of Envoy's command operators, replaced per request, and
//! `%%` is a literal `%`. weft evaluates the subset below; a value naming any other
//! variable (or with a `%` left open, which Envoy refuses) is warned about and its
//! operation skipped, never sent literally.
use std::fmt;

/// A variable weft evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`: the client's IP address.
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the address the client dialed (ip:port), at a
    /// waypoint the service's, at a gateway the listener's.
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`.
    DownstreamLocalAddressWithoutPort,
    /// `%DOWNSTREAM_LOCAL_PORT%`.
    DownstreamLocalPort,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`, …
    Protocol,
    /// `%START_TIME%`: when the request arrived, `YYYY-MM-DDTHH:MM:SS.mmmZ` (Envoy's
    /// default format; a format in parentheses is not supported).
    StartTime,
    /// `%REQ(name)%` or `%REQ(name?alternative)%`: a request header's (first) value;
    /// request headers only.
    Req(Vec<String>),
}

/// One piece of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Var(Var),
}

/// Why a value cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// `%NAME%` that weft does not evaluate (or `REQ` in a response header).
    Unsupported(String),
    /// A `%` with no closing `%` (Envoy refuses the configuration).
    Unterminated,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Unsupported(var) => write!(
                f,
                "%{var}% is not a header variable weft evaluates (it does \
                 DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_ADDRESS, \
                 DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_PORT, PROTOCOL, \
                 START_TIME, and REQ(name) in request headers): the operation is skipped"
            ),
            FormatError::Unterminated => f.write_str(
                "a % opens a variable that is never closed (write %% for a literal %): the \
                 operation is skipped",
            ),
        }
    }
}

/// Which headers a value is for: `REQ` reads the request, so only request headers use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// The parts of `value`.
pub fn parse(value: &str, side: Side) -> Result<Vec<Part>, FormatError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            literal.push('%');
            rest = tail;
            continue;
        }
        let end = after.find('%').ok_or(FormatError::Unterminated)?;
        let var = variable(&after[..end], side)?;
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Var(var));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn variable(name: &str, side: Side) -> Result<Var, FormatError> {
    let unsupported = || FormatError::Unsupported(name.to_string());
    Ok(match name {
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Var::DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Var::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Var::DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_LOCAL_PORT" => Var::DownstreamLocalPort,
        "PROTOCOL" => Var::Protocol,
        "START_TIME" => Var::StartTime,
        _ => {
            let Some(inner) = name
                .strip_prefix("REQ(")
                .and_then(|n| n.strip_suffix(')'))
                .filter(|_| side == Side::Request)
            else {
                return Err(unsupported());
            };
            let names: Vec<String> = inner
                .split('?')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect();
            if names.is_empty() || names.len() > 2 || names.iter().any(String::is_empty) {
                return Err(unsupported());
            }
            Var::Req(names)
        }
    })
}

/// Whether `value` is just text (no variable): what most values are.
pub fn is_literal(parts: &[Part]) -> bool {
    parts.iter().all(|p| matches!(p, Part::Literal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Literal(s.into())
    }

    #[test]
    fn variables_escapes_and_what_is_refused() {
        assert_eq!(parse("plain", Side::Request), Ok(vec![lit("plain")]));
        assert_eq!(parse("100%%", Side::Request), Ok(vec![lit("100%")]));
        assert_eq!(
            parse(
                "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;p=%PROTOCOL%",
                Side::Response
            ),
            Ok(vec![
                lit("ip="),
                Part::Var(Var::DownstreamRemoteAddressWithoutPort),
                lit(";p="),
                Part::Var(Var::Protocol),
            ])
        );
        assert_eq!(
            parse("%REQ(X-User?:authority)%", Side::Request),
            Ok(vec![Part::Var(Var::Req(vec![
                "x-user".into(),
                ":authority".into()
            ]))])
        );
        assert_eq!(
            parse("%REQ(x-user)%", Side::Response),
            Err(FormatError::Unsupported("REQ(x-user)".into()))
        );
        assert_eq!(
            parse("%UPSTREAM_CLUSTER%", Side::Request),
            Err(FormatError::Unsupported("UPSTREAM_CLUSTER".into()))
        );
        assert_eq!(
            parse("50% off", Side::Request),
            Err(FormatError::Unterminated)
        );
    }
}
