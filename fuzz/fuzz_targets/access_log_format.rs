//! meshConfig `accessLogFormat` (`weft_core::access_log::Format`), text (first byte even)
//! or JSON (odd). Every format parses or is refused (JSON only), renders a request whose
//! headers the fuzzer also writes, and:
//! - a text line holds no line break unless the format has one (no log line injection);
//! - a JSON line is one JSON object with the format's keys.
#![no_main]
use http::{HeaderName, HeaderValue, Version};
use libfuzzer_sys::fuzz_target;
use weft_core::access_log::{Encoding, Format, HttpEntry};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // `format` `\0` `header value`: the value goes in the headers the format may name.
    let (format, value) = text.split_once('\0').unwrap_or((text, "v"));
    let encoding = if mode % 2 == 0 {
        Encoding::Text
    } else {
        Encoding::Json
    };
    let Ok(parsed) = Format::parse(encoding, format) else {
        assert_eq!(encoding, Encoding::Json, "a text format refused");
        return;
    };
    let _ = parsed.unknown_operators();
    let mut entry = HttpEntry::started("GET", "/a?b", "web.shop:80", Version::HTTP_11);
    entry.response_code = 200;
    if let Ok(value) = HeaderValue::from_str(value) {
        for name in ["x-a", "user-agent", "x-forwarded-for", "x-request-id"] {
            entry
                .request_headers
                .insert(HeaderName::from_static(name), value.clone());
            entry
                .response_headers
                .insert(HeaderName::from_static(name), value.clone());
        }
    }
    let line = parsed.render(&entry);
    match encoding {
        Encoding::Text => {
            if !format.contains(['\n', '\r']) {
                assert!(!line.contains(['\n', '\r']), "{format:?} → {line:?}");
            }
        }
        Encoding::Json => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(!line.contains('\n'), "{line:?}");
            if !format.trim().is_empty() {
                let keys: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(format).unwrap_or_default();
                assert_eq!(
                    object.keys().collect::<Vec<_>>(),
                    keys.keys().collect::<Vec<_>>()
                );
            }
        }
    }
});
