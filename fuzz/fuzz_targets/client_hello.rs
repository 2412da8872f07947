//! The ClientHello reader of TLS routes (`weft_waypoint::client_hello::client_hello`).
//! First byte even: arbitrary bytes, where a decision (complete, not TLS) must not change
//! when more bytes arrive, and a server name is lower case. Odd: a well-formed ClientHello
//! carrying the rest as its server name, split into TLS records where the fuzzer says,
//! whose name must be read back (lower case), and whose shorter prefixes are incomplete.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weft_waypoint::client_hello::{Hello, client_hello};

fn vec16(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A ClientHello handshake message naming `name`, in records of at most `record` bytes.
fn hello(name: &[u8], record: usize) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&vec16(&[0x13, 0x01])); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    let mut server_name = vec![0];
    server_name.extend_from_slice(&vec16(name));
    let mut extension = vec![0, 0]; // server_name
    extension.extend_from_slice(&vec16(&vec16(&server_name)));
    body.extend_from_slice(&vec16(&extension));
    let length = body.len() as u32;
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&length.to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut out = Vec::new();
    for fragment in handshake.chunks(record) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&vec16(fragment));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let first = client_hello(rest);
        if let Hello::Complete { sni: Some(sni) } = &first {
            assert_eq!(*sni, sni.to_ascii_lowercase());
        }
        if first != Hello::Incomplete {
            let mut more = rest.to_vec();
            more.extend_from_slice(b"\x16\x03\x01\x00\x00more");
            assert_eq!(
                client_hello(&more),
                first,
                "a decision changed with more bytes"
            );
        }
        return;
    }
    let Some(name) = rest.get(..rest.len().min(1024)) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(name) else {
        return;
    };
    let record = usize::from(mode / 2).max(1);
    let bytes = hello(name, record);
    assert_eq!(
        client_hello(&bytes),
        Hello::Complete {
            sni: Some(text.to_ascii_lowercase())
        }
    );
    // Every cut near the start and the end, and a spread of those in between.
    let cuts = (0..bytes.len()).filter(|&cut| cut < 64 || cut + 64 > bytes.len() || cut % 29 == 0);
    for cut in cuts {
        assert_eq!(
            client_hello(&bytes[..cut]),
            Hello::Incomplete,
            "a prefix of {cut} bytes of {} was decided",
            bytes.len()
        );
    }
});
