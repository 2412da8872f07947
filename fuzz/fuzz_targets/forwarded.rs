//! The `Forwarded` header an HBONE peer sends (`parse_forwarded_for`): the address read
//! from any value, written in ztunnel's form (`forwarded_for`), reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_core::hbone::headers::{forwarded_for, parse_forwarded_for};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ip) = parse_forwarded_for(text) {
        let written = forwarded_for(ip);
        assert_eq!(
            parse_forwarded_for(&written),
            Some(ip),
            "{text:?} gave {ip}, written {written:?}"
        );
    }
});
