//! Time-based one-time passwords (RFC 6238 over HOTP, RFC 4226): HMAC-SHA1, 30-second
//! steps, 6 digits — what every authenticator app implements — and the recovery codes that
//! stand in for a lost authenticator.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use kokoa_core::Timestamp;
use rand_core::{OsRng, RngCore};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one, for clocks that drift.
pub const SKEW_STEPS: u64 = 1;
/// Recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect secrets.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..symbols {
            out.push(BASE32[((bits >> (35 - 5 * i)) & 31) as usize] as char);
        }
    }
    out
}

/// Decodes [`base32_encode`]'s output (case and `=` padding ignored); `None` for other text.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut bits, mut count) = (0u64, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let value = BASE32.iter().position(|b| *b == c.to_ascii_uppercase())?;
        bits = (bits << 5) | value as u64;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// A fresh 160-bit secret (the size RFC 4226 recommends), base32.
pub fn new_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 20]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(base32_encode(bytes.as_ref()))
}

/// The HOTP value of `key` at `counter`, `digits` long (RFC 4226 §5.3).
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!(
        "{:0width$}",
        value % 10u32.pow(digits),
        width = digits as usize
    )
}

/// The time step of `at`.
pub fn step_of(at: Timestamp) -> u64 {
    u64::try_from(at.as_unix()).unwrap_or(0) / STEP_SECONDS
}

/// The code of `secret` (base32) at time step `step`; `None` if the secret is not base32.
pub fn code_at_step(secret: &str, step: u64) -> Option<String> {
    let key = Zeroizing::new(base32_decode(secret)?);
    Some(hotp(&key, step, DIGITS))
}

/// The steps around `now` whose code is `code`, latest first: the caller accepts the first
/// one not used before. Compared in constant time.
pub fn matching_steps(secret: &str, code: &str, now: Timestamp) -> Vec<u64> {
    let code = code.trim().replace(' ', "");
    let current = step_of(now);
    (current.saturating_sub(SKEW_STEPS)..=current + SKEW_STEPS)
        .rev()
        .filter(|step| {
            code_at_step(secret, *step)
                .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(code.as_bytes())))
        })
        .collect()
}

/// The `otpauth://` URI an authenticator app reads from the QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    let label = format!("{issuer}:{account}");
    format!(
        "otpauth://totp/{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent_encode(&label),
        percent_encode(issuer)
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The QR code of `text` as an SVG document, drawn here (nothing leaves the machine).
pub fn qr_svg(text: &str) -> Option<String> {
    use qrcode::{QrCode, render::svg};
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

/// Fresh recovery codes: 80 random bits each, as `XXXX-XXXX-XXXX-XXXX` in base32.
pub fn new_recovery_codes() -> Vec<Zeroizing<String>> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = Zeroizing::new([0u8; 10]);
            OsRng.fill_bytes(bytes.as_mut());
            let plain = Zeroizing::new(base32_encode(bytes.as_ref()));
            Zeroizing::new(
                plain
                    .as_bytes()
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("-"),
            )
        })
        .collect()
}

/// A recovery code as typed, in the form its hash was taken of: upper case, without dashes
/// or spaces. (80 random bits make a plain SHA-256 enough, as for tokens.)
pub fn normalise_recovery_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn base32_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn totp_matches_the_rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B: the ASCII key "12345678901234567890", 8 digits.
        let key = b"12345678901234567890";
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(hotp(key, time / STEP_SECONDS, 8), code, "T = {time}");
        }
        // And 6 digits from the base32 form of the same key.
        let secret = base32_encode(key);
        let at = Timestamp::from_unix(59).unwrap();
        assert_eq!(code_at_step(&secret, step_of(at)).unwrap(), "287082");
    }

    #[test]
    fn codes_are_accepted_one_step_either_side() {
        let secret = new_secret();
        let now = Timestamp::from_unix(1_800_000_015).unwrap();
        let step = step_of(now);
        for (delta, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = code_at_step(&secret, step.wrapping_add_signed(delta)).unwrap();
            let steps = matching_steps(&secret, &code, now);
            assert_eq!(!steps.is_empty(), accepted, "delta {delta}");
        }
        assert!(matching_steps(&secret, "12345", now).is_empty());
        assert!(matching_steps(&secret, "abcdef", now).is_empty());
    }

    #[test]
    fn the_uri_names_issuer_and_account() {
        let uri = otpauth_uri("Kokoa Proxy", "admin@example.com", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Kokoa%20Proxy%3Aadmin@example.com?secret=JBSWY3DPEHPK3PXP\
             &issuer=Kokoa%20Proxy&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.contains("#000000"), "{svg}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalise() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<&str> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 19, "{}", code.as_str());
        let typed = code.to_lowercase().replace('-', " ");
        assert_eq!(normalise_recovery_code(&typed), code.replace('-', ""));
    }

    proptest! {
        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
    }
}
