//! Decodes arbitrary bytes as a DNS message, as the RFC 2136 provider decodes every answer
//! it receives. No input may make the decoder panic; whatever decodes must encode, and the
//! encoding must decode to the same message (so the encoder and decoder agree on every
//! field the decoder accepts). Every owner name the provider would read as a `DnsName`
//! goes back to the same wire name.
#![no_main]

use kokoa_core::DnsName;
use kokoa_dns::rfc2136::wire::{Message, Name};
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
    let records = message.answers.iter().chain(&message.authorities);
    for record in records.chain(&message.additionals) {
        if let Some(name) = record.name.to_dns_name() {
            let back = Name::from_dns_name(&name);
            assert!(back.eq_ignore_case(&record.name), "{name} changed on the way back");
            assert_eq!(DnsName::parse(name.as_str()).ok().as_ref(), Some(&name));
        }
    }
});
