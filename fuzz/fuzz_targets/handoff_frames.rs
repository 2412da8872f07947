//! The agent's upgrade handoff frames (`weft_host::handoff`), as they arrive from the peer
//! on the handoff socket, in pieces of a size the first byte chooses: every frame read
//! encodes back to itself, and garbage ends in an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    weft_host::handoff::fuzz_frames(rest, usize::from(piece));
});
