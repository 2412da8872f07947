//! DNS messages from the network: what a pod sends the agent's DNS proxy and what a
//! nameserver answers (`weft_core::dns::read_answer`, the lookups of ServiceEntry hosts).
//! - an answer is read or refused, never a panic, and its TTL is at most a minute;
//! - a message that parses is encoded again (as the proxy does when it answers with the
//!   question repeated) to bytes that parse, and encoding those gives the same bytes.
#![no_main]
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use libfuzzer_sys::fuzz_target;
use weft_core::dns::read_answer;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = read_answer(data) {
        assert!(answer.ttl <= Duration::from_secs(60));
    }
    let Ok(message) = Message::from_vec(data) else {
        return;
    };
    // The proxy's error replies repeat the question.
    let mut reply = Message::error_msg(
        message.metadata.id,
        message.metadata.op_code,
        ResponseCode::FormErr,
    );
    reply.queries = message.queries.clone();
    let _ = reply.to_vec();
    let Ok(bytes) = message.to_vec() else {
        return;
    };
    let again = Message::from_vec(&bytes)
        .unwrap_or_else(|e| panic!("{message:?} encoded to bytes that do not parse: {e}"));
    if let Ok(second) = again.to_vec() {
        assert_eq!(second, bytes, "encoding is not stable");
    }
});
