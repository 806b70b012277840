//! Decodes arbitrary bytes as a DNS message, as the RFC 2136 provider decodes every answer
//! it receives. No input may make the decoder panic; whatever decodes must encode, and the
//! encoding must decode to the same message (so the encoder and decoder agree on every
//! field the decoder accepts).
#![no_main]

use kokoa_dns::rfc2136::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = message
        .encode()
        .unwrap_or_else(|e| panic!("a decoded message does not encode: {e}\n{message:?}"));
    let again = Message::decode(&encoded)
        .unwrap_or_else(|e| panic!("an encoded message does not decode: {e}\n{message:?}"));
    assert_eq!(again, message, "encode then decode changed the message");
});
