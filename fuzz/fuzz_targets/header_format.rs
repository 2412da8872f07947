//! VirtualService header values with Envoy's `%VAR%` operators
//! (`weft_config::translate::header_format::parse`), for request (first byte even) and
//! response headers (odd): parsed parts printed back in Envoy's syntax parse to the same
//! parts, a value without `%` is one literal, and `REQ(...)` only parses for requests.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_config::translate::header_format::{Part, Side, Var, is_literal, parse};

fn print(parts: &[Part]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => out.push_str(&text.replace('%', "%%")),
            Part::Var(var) => {
                out.push('%');
                out.push_str(&match var {
                    Var::DownstreamRemoteAddressWithoutPort => {
                        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT".to_string()
                    }
                    Var::DownstreamLocalAddress => "DOWNSTREAM_LOCAL_ADDRESS".to_string(),
                    Var::DownstreamLocalAddressWithoutPort => {
                        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT".to_string()
                    }
                    Var::DownstreamLocalPort => "DOWNSTREAM_LOCAL_PORT".to_string(),
                    Var::Protocol => "PROTOCOL".to_string(),
                    Var::StartTime => "START_TIME".to_string(),
                    Var::Req(names) => format!("REQ({})", names.join("?")),
                });
                out.push('%');
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let side = if mode % 2 == 0 {
        Side::Request
    } else {
        Side::Response
    };
    let Ok(parts) = parse(text, side) else {
        assert!(text.contains('%'), "{text:?} refused without a %");
        return;
    };
    if !text.contains('%') {
        assert!(is_literal(&parts));
        assert_eq!(print(&parts), text);
    }
    if side == Side::Response {
        assert!(
            !parts.iter().any(|p| matches!(p, Part::Var(Var::Req(_)))),
            "{text:?}: REQ in a response header"
        );
    }
    let printed = print(&parts);
    assert_eq!(
        parse(&printed, side).as_ref(),
        Ok(&parts),
        "{text:?} → {parts:?} → {printed:?}"
    );
});
