//! HBONE CONNECT `:authority` (`weft_core::hbone::headers::parse_authority`): an accepted
//! authority is an address with a port other than 0, and its printed form parses back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_core::hbone::headers::parse_authority;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = parse_authority(text) {
        assert_ne!(address.port(), 0, "{text:?} accepted with port 0");
        assert_eq!(
            parse_authority(&address.to_string()),
            Ok(address),
            "{text:?} gave {address}, which does not parse back"
        );
    }
});
