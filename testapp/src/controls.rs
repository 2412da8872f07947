//! Pure parsing of the per-request controls (`status`, `delay_ms`, `fail_rate`) and of the
//! `/bytes?n=` size. Kept free of I/O so the rules can be unit-tested exhaustively; the server
//! only maps a `ControlError` to a 400.

use std::fmt;

/// `delay_ms` is capped so a typo cannot park a request (and a test) for hours.
pub const MAX_DELAY_MS: u64 = 60_000;

/// `/bytes` is capped so a typo cannot stream forever; 1 GiB is plenty for throughput tests.
pub const MAX_BYTES: u64 = 1 << 30;

/// Statuses a request may ask for. 1xx are not final responses, so hyper cannot send them as
/// the answer; above 599 is not a status class clients understand.
const STATUS_RANGE: std::ops::RangeInclusive<u16> = 200..=599;

/// Server-wide defaults (from `serve --fail-rate/--delay-ms`), overridden per request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Defaults {
    pub fail_rate: f64,
    pub delay_ms: u64,
}

/// What one request asked for, after applying defaults and caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controls {
    pub status: u16,
    pub delay_ms: u64,
    pub fail_rate: f64,
}

/// Where a control value came from, so the 400 names exactly what the caller sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Query,
    Header,
    Flag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// The name as the caller spelled it: query key, header name or flag.
    pub param: String,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected {}",
            self.param, self.value, self.expected
        )
    }
}

impl std::error::Error for ControlError {}

/// One control: its query key and the header carrying the same value.
struct Param {
    query: &'static str,
    header: &'static str,
    flag: &'static str,
}

const STATUS: Param = Param {
    query: "status",
    header: "x-testapp-status",
    flag: "--status",
};
const DELAY: Param = Param {
    query: "delay_ms",
    header: "x-testapp-delay-ms",
    flag: "--delay-ms",
};
const FAIL: Param = Param {
    query: "fail_rate",
    header: "x-testapp-fail-rate",
    flag: "--fail-rate",
};

impl Param {
    fn name(&self, source: Source) -> &'static str {
        match source {
            Source::Query => self.query,
            Source::Header => self.header,
            Source::Flag => self.flag,
        }
    }
}

/// First value of `key` in a raw query string. Values are numbers, so no percent-decoding is
/// needed; an encoded value simply fails to parse and is reported as-is.
pub fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// The query parameter wins over the header so a URL alone can override what a client library
/// or a proxy injected as a header.
fn lookup(
    param: &Param,
    query: Option<&str>,
    header: &impl Fn(&str) -> Option<String>,
) -> Option<(Source, String)> {
    if let Some(v) = query_value(query, param.query) {
        return Some((Source::Query, v.to_owned()));
    }
    header(param.header).map(|v| (Source::Header, v))
}

fn error(param: &Param, source: Source, value: &str, expected: &'static str) -> ControlError {
    ControlError {
        param: param.name(source).to_owned(),
        value: value.to_owned(),
        expected,
    }
}

pub fn parse_status(value: &str, source: Source) -> Result<u16, ControlError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| STATUS_RANGE.contains(s))
        .ok_or_else(|| {
            error(
                &STATUS,
                source,
                value,
                "an integer HTTP status in 200..=599",
            )
        })
}

pub fn parse_delay_ms(value: &str, source: Source) -> Result<u64, ControlError> {
    value
        .trim()
        .parse::<u64>()
        .map(|ms| ms.min(MAX_DELAY_MS))
        .map_err(|_| {
            error(
                &DELAY,
                source,
                value,
                "a non-negative integer (milliseconds)",
            )
        })
}

pub fn parse_fail_rate(value: &str, source: Source) -> Result<f64, ControlError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| error(&FAIL, source, value, "a probability between 0.0 and 1.0"))
}

/// Resolves the controls of one request. `header` returns a header's value (lossily decoded:
/// a non-UTF-8 value then fails to parse and yields a 400 rather than being ignored).
pub fn parse(
    query: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
    defaults: Defaults,
) -> Result<Controls, ControlError> {
    let status = match lookup(&STATUS, query, &header) {
        Some((source, v)) => parse_status(&v, source)?,
        None => 200,
    };
    let delay_ms = match lookup(&DELAY, query, &header) {
        Some((source, v)) => parse_delay_ms(&v, source)?,
        None => defaults.delay_ms.min(MAX_DELAY_MS),
    };
    let fail_rate = match lookup(&FAIL, query, &header) {
        Some((source, v)) => parse_fail_rate(&v, source)?,
        None => defaults.fail_rate,
    };
    Ok(Controls {
        status,
        delay_ms,
        fail_rate,
    })
}

/// Size asked of `/bytes`; capped rather than refused, the response's content-length says
/// what is actually sent.
pub fn parse_bytes_n(query: Option<&str>) -> Result<u64, ControlError> {
    let invalid = |value: &str| ControlError {
        param: "n".to_owned(),
        value: value.to_owned(),
        expected: "a non-negative integer byte count",
    };
    let value = query_value(query, "n").ok_or_else(|| invalid(""))?;
    value
        .trim()
        .parse::<u64>()
        .map(|n| n.min(MAX_BYTES))
        .map_err(|_| invalid(value))
}

/// clap value parsers for the server-wide defaults, so bad flags fail at startup with the same
/// wording as a bad request.
pub fn fail_rate_flag(value: &str) -> Result<f64, ControlError> {
    parse_fail_rate(value, Source::Flag)
}

pub fn delay_ms_flag(value: &str) -> Result<u64, ControlError> {
    parse_delay_ms(value, Source::Flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_apply_without_controls() {
        let d = Defaults {
            fail_rate: 0.25,
            delay_ms: 10,
        };
        let c = parse(None, no_headers, d);
        assert_eq!(
            c,
            Ok(Controls {
                status: 200,
                delay_ms: 10,
                fail_rate: 0.25
            })
        );
        let c = parse(Some("a=1&b"), no_headers, Defaults::default());
        assert_eq!(
            c,
            Ok(Controls {
                status: 200,
                delay_ms: 0,
                fail_rate: 0.0
            })
        );
    }

    #[test]
    fn query_controls_parse() {
        let c = parse(
            Some("x=1&status=503&delay_ms=20&fail_rate=0.5"),
            no_headers,
            Defaults::default(),
        );
        assert_eq!(
            c,
            Ok(Controls {
                status: 503,
                delay_ms: 20,
                fail_rate: 0.5
            })
        );
    }

    #[test]
    fn header_controls_parse() {
        let h = headers(&[
            ("x-testapp-status", "418"),
            ("x-testapp-delay-ms", "5"),
            ("x-testapp-fail-rate", "1"),
        ]);
        let c = parse(None, h, Defaults::default());
        assert_eq!(
            c,
            Ok(Controls {
                status: 418,
                delay_ms: 5,
                fail_rate: 1.0
            })
        );
    }

    #[test]
    fn query_overrides_header_and_default() {
        let h = headers(&[("x-testapp-status", "500"), ("x-testapp-delay-ms", "7")]);
        let d = Defaults {
            fail_rate: 0.9,
            delay_ms: 100,
        };
        let c = parse(Some("status=201&fail_rate=0"), h, d);
        assert_eq!(
            c,
            Ok(Controls {
                status: 201,
                delay_ms: 7,
                fail_rate: 0.0
            })
        );
    }

    #[test]
    fn first_query_value_wins() {
        assert_eq!(
            query_value(Some("status=201&status=500"), "status"),
            Some("201")
        );
        assert_eq!(query_value(Some("statusx=1"), "status"), None);
        assert_eq!(query_value(Some("status"), "status"), Some(""));
        assert_eq!(query_value(None, "status"), None);
    }

    #[test]
    fn delay_is_capped() {
        let c = parse(Some("delay_ms=99999999"), no_headers, Defaults::default());
        assert_eq!(c.map(|c| c.delay_ms), Ok(MAX_DELAY_MS));
        let d = Defaults {
            fail_rate: 0.0,
            delay_ms: u64::MAX,
        };
        assert_eq!(
            parse(None, no_headers, d).map(|c| c.delay_ms),
            Ok(MAX_DELAY_MS)
        );
    }

    #[test]
    fn invalid_values_name_the_parameter() {
        let cases: &[(&str, &str)] = &[
            ("status=abc", "status"),
            ("status=99", "status"),
            ("status=600", "status"),
            ("status=", "status"),
            ("delay_ms=-1", "delay_ms"),
            ("delay_ms=1.5", "delay_ms"),
            ("fail_rate=1.5", "fail_rate"),
            ("fail_rate=-0.1", "fail_rate"),
            ("fail_rate=NaN", "fail_rate"),
            ("fail_rate=x", "fail_rate"),
        ];
        for (query, param) in cases {
            let err = parse(Some(query), no_headers, Defaults::default())
                .expect_err(&format!("{query} must be rejected"));
            assert_eq!(err.param, *param, "{query}");
            assert!(err.to_string().contains(param), "{err}");
        }
    }

    #[test]
    fn invalid_header_names_the_header() {
        let h = headers(&[("x-testapp-delay-ms", "soon")]);
        let err = parse(None, h, Defaults::default()).expect_err("must be rejected");
        assert_eq!(err.param, "x-testapp-delay-ms");
        assert_eq!(
            err.to_string(),
            r#"invalid x-testapp-delay-ms "soon": expected a non-negative integer (milliseconds)"#
        );
    }

    #[test]
    fn bytes_n() {
        assert_eq!(parse_bytes_n(Some("n=0")), Ok(0));
        assert_eq!(parse_bytes_n(Some("n=1024")), Ok(1024));
        assert_eq!(parse_bytes_n(Some("n=99999999999999")), Ok(MAX_BYTES));
        assert_eq!(
            parse_bytes_n(None).map_err(|e| e.param),
            Err("n".to_owned())
        );
        assert_eq!(
            parse_bytes_n(Some("n=-5")).map_err(|e| e.param),
            Err("n".to_owned())
        );
    }

    #[test]
    fn flags_use_flag_names() {
        assert_eq!(fail_rate_flag("0.1"), Ok(0.1));
        assert_eq!(
            fail_rate_flag("2").map_err(|e| e.param),
            Err("--fail-rate".to_owned())
        );
        assert_eq!(delay_ms_flag("70000"), Ok(MAX_DELAY_MS));
        assert_eq!(
            delay_ms_flag("x").map_err(|e| e.param),
            Err("--delay-ms".to_owned())
        );
    }
}
