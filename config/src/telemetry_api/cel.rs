//! The subset of CEL (Common Expression Language) Istio documents for the Telemetry API:
//! access-log `filter.expression` (`response.code >= 400`) and metric `tagOverrides`
//! values (`request.headers['x-user']`, `request.host`).
//!
//! Envoy's attributes weft knows ([`Attribute`]), literals (integers, strings, booleans),
//! `!`, `&&`, `||`, `==`, `!=`, `<`, `<=`, `>`, `>=` and parentheses. Anything else (function
//! calls, `in`, other attributes) is refused by [`parse`], so an expression weft accepts is
//! one it evaluates as Envoy would. Evaluation follows CEL: a missing attribute (a header
//! the request lacks) is an error, and `&&` / `||` absorb an error when their other side
//! decides (`false && error` is false, `true || error` is true).
use std::fmt;

/// A value an expression computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The type of a value, checked when an expression is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    Str,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Str => "string",
            Type::Bool => "bool",
        })
    }
}

/// Envoy's attributes (as Istio's Telemetry API documents them) weft can fill.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// `request.headers['name']` (names compare case-insensitively).
    RequestHeader(String),
    /// `request.host`: the `:authority` (or `Host`).
    RequestHost,
    RequestMethod,
    /// `request.path`: path and query.
    RequestPath,
    /// `request.url_path`: the path without its query.
    RequestUrlPath,
    RequestScheme,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`.
    RequestProtocol,
    /// `request.id`: the `x-request-id`.
    RequestId,
    RequestUserAgent,
    /// `response.code`: the HTTP status.
    ResponseCode,
    /// `response.headers['name']`.
    ResponseHeader(String),
    /// `response.grpc_status`.
    ResponseGrpcStatus,
    /// `connection.mtls`: whether the downstream connection was mutual TLS.
    ConnectionMtls,
    SourceAddress,
    SourcePort,
    DestinationAddress,
    DestinationPort,
}

impl Attribute {
    fn of_path(path: &str) -> Option<Attribute> {
        Some(match path {
            "request.host" => Attribute::RequestHost,
            "request.method" => Attribute::RequestMethod,
            "request.path" => Attribute::RequestPath,
            "request.url_path" => Attribute::RequestUrlPath,
            "request.scheme" => Attribute::RequestScheme,
            "request.protocol" => Attribute::RequestProtocol,
            "request.id" => Attribute::RequestId,
            "request.useragent" => Attribute::RequestUserAgent,
            "response.code" => Attribute::ResponseCode,
            "response.grpc_status" => Attribute::ResponseGrpcStatus,
            "connection.mtls" => Attribute::ConnectionMtls,
            "source.address" => Attribute::SourceAddress,
            "source.port" => Attribute::SourcePort,
            "destination.address" => Attribute::DestinationAddress,
            "destination.port" => Attribute::DestinationPort,
            _ => return None,
        })
    }

    pub fn value_type(&self) -> Type {
        match self {
            Attribute::ResponseCode
            | Attribute::ResponseGrpcStatus
            | Attribute::SourcePort
            | Attribute::DestinationPort => Type::Int,
            Attribute::ConnectionMtls => Type::Bool,
            _ => Type::Str,
        }
    }
}

/// Where evaluation reads attributes: a request at a waypoint, a connection at an agent.
pub trait Attributes {
    /// The attribute's value; `None` when this traffic has none (a header not sent, a
    /// response code on a TCP connection).
    fn attribute(&self, attribute: &Attribute) -> Option<Value>;
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    Attribute(Attribute),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
}

/// Why an expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at character {at} of {expression:?})")]
pub struct CelError {
    pub expression: String,
    pub at: usize,
    pub reason: String,
}

/// Why evaluation gave no value (CEL's errors): the access log then writes no line, a tag
/// says `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("no value for {0:?}")]
    Missing(Attribute),
    #[error("no comparison of {0} with {1}")]
    Mismatch(Type, Type),
}

impl Expr {
    /// The expression's type (checked by [`parse`]).
    pub fn value_type(&self) -> Type {
        match self {
            Expr::Literal(Value::Int(_)) => Type::Int,
            Expr::Literal(Value::Str(_)) => Type::Str,
            Expr::Literal(Value::Bool(_)) => Type::Bool,
            Expr::Attribute(a) => a.value_type(),
            _ => Type::Bool,
        }
    }

    pub fn eval(&self, attributes: &dyn Attributes) -> Result<Value, EvalError> {
        match self {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Attribute(a) => attributes
                .attribute(a)
                .ok_or_else(|| EvalError::Missing(a.clone())),
            Expr::Not(inner) => match inner.eval(attributes)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                other => Err(EvalError::Mismatch(type_of(&other), Type::Bool)),
            },
            Expr::And(a, b) => {
                let left = truth(a.eval(attributes));
                if left == Ok(false) {
                    return Ok(Value::Bool(false));
                }
                let right = truth(b.eval(attributes));
                match (left, right) {
                    (_, Ok(false)) => Ok(Value::Bool(false)),
                    (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    _ => Ok(Value::Bool(false)),
                }
            }
            Expr::Or(a, b) => {
                let left = truth(a.eval(attributes));
                if left == Ok(true) {
                    return Ok(Value::Bool(true));
                }
                let right = truth(b.eval(attributes));
                match (left, right) {
                    (_, Ok(true)) => Ok(Value::Bool(true)),
                    (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    _ => Ok(Value::Bool(false)),
                }
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (a.eval(attributes)?, b.eval(attributes)?);
                compare(*op, &a, &b).map(Value::Bool)
            }
        }
    }

    /// An access-log filter's verdict: true writes the line; an evaluation error does not
    /// (as Envoy's CEL filter).
    pub fn matches(&self, attributes: &dyn Attributes) -> bool {
        matches!(self.eval(attributes), Ok(Value::Bool(true)))
    }
}

fn type_of(v: &Value) -> Type {
    match v {
        Value::Int(_) => Type::Int,
        Value::Str(_) => Type::Str,
        Value::Bool(_) => Type::Bool,
    }
}

fn truth(v: Result<Value, EvalError>) -> Result<bool, EvalError> {
    match v? {
        Value::Bool(b) => Ok(b),
        other => Err(EvalError::Mismatch(type_of(&other), Type::Bool)),
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, EvalError> {
    let ordering = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => x.cmp(y),
        _ => return Err(EvalError::Mismatch(type_of(a), type_of(b))),
    };
    Ok(match op {
        CmpOp::Eq => ordering.is_eq(),
        CmpOp::Ne => ordering.is_ne(),
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
    })
}

/// Parses `expression`, refusing what weft cannot evaluate, and checks its types.
pub fn parse(expression: &str) -> Result<Expr, CelError> {
    let mut parser = Parser {
        source: expression,
        tokens: tokenize(expression)?,
        next: 0,
    };
    let expr = parser.or()?;
    if let Some((at, token)) = parser.peek() {
        return Err(parser.error(*at, format!("unexpected {token}")));
    }
    Ok(expr)
}

/// Parses an access-log filter: an expression of type bool.
pub fn parse_filter(expression: &str) -> Result<Expr, CelError> {
    let expr = parse(expression)?;
    if expr.value_type() != Type::Bool {
        return Err(CelError {
            expression: expression.to_string(),
            at: 0,
            reason: format!("a filter must be a bool, this is a {}", expr.value_type()),
        });
    }
    Ok(expr)
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(CmpOp),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Int(i) => write!(f, "{i}"),
            Token::Str(s) => write!(f, "'{s}'"),
            Token::Dot => f.write_str("'.'"),
            Token::LBracket => f.write_str("'['"),
            Token::RBracket => f.write_str("']'"),
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::Not => f.write_str("'!'"),
            Token::And => f.write_str("'&&'"),
            Token::Or => f.write_str("'||'"),
            Token::Cmp(op) => write!(f, "{op:?}"),
        }
    }
}

fn tokenize(source: &str) -> Result<Vec<(usize, Token)>, CelError> {
    let error = |at: usize, reason: String| CelError {
        expression: source.to_string(),
        at,
        reason,
    };
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = bytes.get(i..i + 2);
        let start = i;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => Token::Dot,
            b'[' => Token::LBracket,
            b']' => Token::RBracket,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            _ if two == Some(b"&&") => Token::And,
            _ if two == Some(b"||") => Token::Or,
            _ if two == Some(b"==") => Token::Cmp(CmpOp::Eq),
            _ if two == Some(b"!=") => Token::Cmp(CmpOp::Ne),
            _ if two == Some(b"<=") => Token::Cmp(CmpOp::Le),
            _ if two == Some(b">=") => Token::Cmp(CmpOp::Ge),
            b'<' => Token::Cmp(CmpOp::Lt),
            b'>' => Token::Cmp(CmpOp::Gt),
            b'!' => Token::Not,
            b'\'' | b'"' => {
                let end = source[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| error(i, "unterminated string".into()))?;
                let text = &source[i + 1..i + 1 + end];
                if text.contains('\\') {
                    return Err(error(i, "escapes in strings are not supported".into()));
                }
                i += end + 2;
                tokens.push((start, Token::Str(text.to_string())));
                continue;
            }
            b'0'..=b'9' => {
                let len = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let text = &source[i..i + len];
                let value = text
                    .parse::<i64>()
                    .map_err(|_| error(i, format!("{text} is out of range")))?;
                i += len;
                tokens.push((start, Token::Int(value)));
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                tokens.push((start, Token::Ident(source[i..i + len].to_string())));
                i += len;
                continue;
            }
            _ => {
                let ch = source[i..].chars().next().unwrap_or('?');
                return Err(error(i, format!("unexpected character {ch:?}")));
            }
        };
        i += match token {
            Token::And | Token::Or => 2,
            Token::Cmp(CmpOp::Eq | CmpOp::Ne | CmpOp::Le | CmpOp::Ge) => 2,
            _ => 1,
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<(usize, Token)>,
    next: usize,
}

impl Parser<'_> {
    fn error(&self, at: usize, reason: impl Into<String>) -> CelError {
        CelError {
            expression: self.source.to_string(),
            at,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.next)
    }

    fn end(&self) -> usize {
        self.source.len()
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek().is_some_and(|(_, t)| t == token) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn bool_operand(&self, expr: &Expr, at: usize, op: &str) -> Result<(), CelError> {
        if expr.value_type() == Type::Bool {
            Ok(())
        } else {
            Err(self.error(
                at,
                format!("{op} needs bool operands, not {}", expr.value_type()),
            ))
        }
    }

    fn or(&mut self) -> Result<Expr, CelError> {
        let mut left = self.and()?;
        while let Some((at, Token::Or)) = self.peek().cloned() {
            self.next += 1;
            let right = self.and()?;
            self.bool_operand(&left, at, "||")?;
            self.bool_operand(&right, at, "||")?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, CelError> {
        let mut left = self.comparison()?;
        while let Some((at, Token::And)) = self.peek().cloned() {
            self.next += 1;
            let right = self.comparison()?;
            self.bool_operand(&left, at, "&&")?;
            self.bool_operand(&right, at, "&&")?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, CelError> {
        let left = self.unary()?;
        let Some((at, Token::Cmp(op))) = self.peek().cloned() else {
            return Ok(left);
        };
        self.next += 1;
        let right = self.unary()?;
        let (lt, rt) = (left.value_type(), right.value_type());
        if lt != rt {
            return Err(self.error(at, format!("cannot compare {lt} with {rt}")));
        }
        if lt == Type::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(self.error(at, "bools are only compared with == and !="));
        }
        if let Some((at, Token::Cmp(_))) = self.peek() {
            return Err(self.error(*at, "comparisons do not chain: use && and parentheses"));
        }
        Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
    }

    fn unary(&mut self) -> Result<Expr, CelError> {
        if let Some((at, Token::Not)) = self.peek().cloned() {
            self.next += 1;
            let inner = self.unary()?;
            self.bool_operand(&inner, at, "!")?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, CelError> {
        let Some((at, token)) = self.peek().cloned() else {
            return Err(self.error(self.end(), "the expression ends too early"));
        };
        self.next += 1;
        match token {
            Token::Int(i) => Ok(Expr::Literal(Value::Int(i))),
            Token::Str(s) => Ok(Expr::Literal(Value::Str(s))),
            Token::LParen => {
                let inner = self.or()?;
                if !self.eat(&Token::RParen) {
                    let at = self.peek().map_or(self.end(), |(at, _)| *at);
                    return Err(self.error(at, "expected ')'"));
                }
                Ok(inner)
            }
            Token::Ident(name) if name == "true" => Ok(Expr::Literal(Value::Bool(true))),
            Token::Ident(name) if name == "false" => Ok(Expr::Literal(Value::Bool(false))),
            Token::Ident(name) => self.attribute(at, name),
            other => Err(self.error(at, format!("unexpected {other}"))),
        }
    }

    /// `a.b.c`, or `request.headers['x']` / `response.headers['x']`.
    fn attribute(&mut self, at: usize, first: String) -> Result<Expr, CelError> {
        let mut path = first;
        while self.eat(&Token::Dot) {
            match self.peek().cloned() {
                Some((_, Token::Ident(part))) => {
                    self.next += 1;
                    path.push('.');
                    path.push_str(&part);
                }
                _ => return Err(self.error(at, format!("{path}. needs a name after the dot"))),
            }
        }
        if let Some((_, Token::LParen)) = self.peek() {
            return Err(self.error(
                at,
                format!("{path}(): function calls are not supported by weft"),
            ));
        }
        if self.eat(&Token::LBracket) {
            let key = match self.peek().cloned() {
                Some((_, Token::Str(key))) => key,
                _ => return Err(self.error(at, format!("{path}[...] needs a string key"))),
            };
            self.next += 1;
            if !self.eat(&Token::RBracket) {
                return Err(self.error(at, format!("{path}[...] needs a closing ']'")));
            }
            let name = key.to_ascii_lowercase();
            return match path.as_str() {
                "request.headers" => Ok(Expr::Attribute(Attribute::RequestHeader(name))),
                "response.headers" => Ok(Expr::Attribute(Attribute::ResponseHeader(name))),
                _ => Err(self.error(at, format!("{path} is not a map weft knows"))),
            };
        }
        Attribute::of_path(&path)
            .map(Expr::Attribute)
            .ok_or_else(|| self.error(at, format!("{path} is not an attribute weft evaluates")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Facts(HashMap<Attribute, Value>);

    impl Attributes for Facts {
        fn attribute(&self, attribute: &Attribute) -> Option<Value> {
            self.0.get(attribute).cloned()
        }
    }

    fn facts(pairs: &[(Attribute, Value)]) -> Facts {
        Facts(pairs.iter().cloned().collect())
    }

    fn code(status: i64) -> Facts {
        facts(&[(Attribute::ResponseCode, Value::Int(status))])
    }

    #[test]
    fn istio_documented_filter_keeps_errors_only() {
        let filter = parse_filter("response.code >= 400").expect("parses");
        assert!(!filter.matches(&code(200)));
        assert!(!filter.matches(&code(399)));
        assert!(filter.matches(&code(400)));
        assert!(filter.matches(&code(503)));
        // No response code (a TCP connection): CEL's error, no line.
        assert!(!filter.matches(&Facts::default()));
    }

    #[test]
    fn headers_strings_and_boolean_operators() {
        let filter = parse_filter(
            "request.headers['X-Debug'] == 'on' && !(response.code == 200) || connection.mtls == false",
        )
        .expect("parses");
        let debug_500 = facts(&[
            (
                Attribute::RequestHeader("x-debug".into()),
                Value::Str("on".into()),
            ),
            (Attribute::ResponseCode, Value::Int(500)),
            (Attribute::ConnectionMtls, Value::Bool(true)),
        ]);
        assert!(filter.matches(&debug_500));
        let plain_500 = facts(&[
            (Attribute::ResponseCode, Value::Int(500)),
            (Attribute::ConnectionMtls, Value::Bool(true)),
        ]);
        // The header is missing (an error) and `||`'s other side is false: no line.
        assert!(!filter.matches(&plain_500));
        let plaintext = facts(&[(Attribute::ConnectionMtls, Value::Bool(false))]);
        // An error on the left of `||` is absorbed by a true right side, as in CEL.
        assert!(filter.matches(&plaintext));
    }

    #[test]
    fn false_and_error_is_false_true_or_error_is_true() {
        let and =
            parse_filter("request.headers['a'] == 'x' && response.code > 500").expect("valid");
        assert_eq!(and.eval(&code(200)), Ok(Value::Bool(false)));
        let or = parse_filter("request.headers['a'] == 'x' || response.code > 500").expect("valid");
        assert_eq!(or.eval(&code(503)), Ok(Value::Bool(true)));
        assert!(or.eval(&code(200)).is_err());
    }

    #[test]
    fn a_tag_value_is_an_attribute() {
        let host = parse("request.host").expect("valid");
        let request = facts(&[(Attribute::RequestHost, Value::Str("reviews:9080".into()))]);
        assert_eq!(host.eval(&request), Ok(Value::Str("reviews:9080".into())));
        let header = parse("request.headers[\"x-user\"]").expect("valid");
        assert!(header.eval(&request).is_err());
    }

    #[test]
    fn what_weft_cannot_evaluate_is_refused_with_a_reason() {
        for (expression, reason) in [
            ("response.code >= '400'", "cannot compare int with string"),
            ("request.size > 10", "request.size is not an attribute"),
            ("has(request.headers.x)", "function calls are not supported"),
            ("response.code in [200]", "unexpected \"in\""),
            ("response.code == 200 && x", "x is not an attribute"),
            ("response.code >= 400 &&", "ends too early"),
            ("response.code", "a filter must be a bool"),
            ("1 < 2 < 3", "comparisons do not chain"),
            ("filter_state['x'] == 'y'", "not a map weft knows"),
            ("response.code >= 400 && 'x'", "&& needs bool operands"),
        ] {
            let error = parse_filter(expression).expect_err(expression);
            assert!(
                error.reason.contains(reason),
                "{expression}: {} does not say {reason}",
                error.reason
            );
        }
    }
}
