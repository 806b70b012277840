//! Feeds arbitrary text to `Hostname::parse`. Whatever it accepts must be in normal form
//! (parsing it again gives the same name), at most 253 characters, and inert: safe to write
//! between quotes in an nginx or WireGuard file.
#![no_main]

use kokoa_core::Hostname;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let Ok(name) = Hostname::parse(input) else {
        return;
    };
    let text = name.as_str();
    assert!(text.len() <= 253, "{text:?} is too long");
    assert!(
        !text.chars().any(|c| c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '\\' | '#')),
        "{text:?} holds a character that is special in a config file"
    );
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b)),
        "{text:?} is not lowercase ASCII"
    );
    let again = Hostname::parse(text).expect("a normal form parses again");
    assert_eq!(again, name, "normal form is not idempotent");
});
