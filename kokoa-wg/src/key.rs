//! WireGuard keys: Curve25519 key pairs and preshared keys, in the base64 form `wg` uses.

use std::{fmt, str::FromStr};

use base64::{
    DecodeError, DecodeSliceError, Engine as _, engine::general_purpose::STANDARD as BASE64,
};
use rand_core::{OsRng, RngCore as _};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{Error, KeyKind, KeyProblem, cut};

/// Length of every key's text form: 32 bytes in padded base64.
const TEXT_LEN: usize = 44;

/// A WireGuard private key (a Curve25519 secret).
///
/// Never shown: `Debug` prints only the matching public key, there is no `Display`, errors
/// never repeat it, and its memory is zeroed when it is dropped.
///
/// ```
/// use kokoa_wg::PrivateKey;
///
/// let key = PrivateKey::generate();
/// let again: PrivateKey = key.to_base64().parse()?;
/// assert_eq!(again, key);
/// assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A new random key from the operating system's generator, clamped like `wg genkey`
    /// output so every tool shows the same bytes back.
    pub fn generate() -> Self {
        let mut bytes = random_bytes();
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        Self(StaticSecret::from(*bytes))
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// Parses the base64 form printed by `wg genkey`.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode(text, KeyKind::Private).map(|bytes| Self::from_bytes(*bytes))
    }

    /// The base64 form, in memory that is zeroed when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        with_base64(self.0.as_bytes(), |text| Zeroizing::new(text.to_owned()))
    }

    /// The matching public key (what `wg pubkey` prints).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Calls `f` with the base64 form, which is zeroed afterwards.
    pub(crate) fn with_base64<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        with_base64(self.0.as_bytes(), f)
    }
}

// Comparing secrets in variable time is fine here: equality is for tests and for telling
// configurations apart, never for checking a secret an attacker supplies.
impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted>, public {})", self.public_key())
    }
}

impl FromStr for PrivateKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_base64(s)
    }
}

/// A WireGuard public key. `Display` prints the base64 form `wg` uses.
///
/// ```
/// use kokoa_wg::PublicKey;
///
/// let key: PublicKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".parse()?;
/// assert_eq!(key.to_string(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
/// let err = "hSDwCYkwp1R0i33ctD73Wg2".parse::<PublicKey>().unwrap_err();
/// assert!(err.to_string().contains("23 characters"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the base64 form printed by `wg pubkey`.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode(text, KeyKind::Public).map(|bytes| Self(*bytes))
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        with_base64(&self.0, |text| f.write_str(text))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_base64(s)
    }
}

/// A WireGuard preshared key: an optional extra symmetric secret per peer pair (what
/// `wg genpsk` prints). Shown nowhere, zeroed on drop, like [`PrivateKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; 32]>);

impl PresharedKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses the base64 form printed by `wg genpsk`.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode(text, KeyKind::Preshared).map(Self)
    }

    /// The base64 form, in memory that is zeroed when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        self.with_base64(|text| Zeroizing::new(text.to_owned()))
    }

    /// Calls `f` with the base64 form, which is zeroed afterwards.
    pub(crate) fn with_base64<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        with_base64(&self.0, f)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_base64(s)
    }
}

fn random_bytes() -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0; 32]);
    OsRng.fill_bytes(&mut *bytes);
    bytes
}

fn with_base64<R>(bytes: &[u8; 32], f: impl FnOnce(&str) -> R) -> R {
    // Reserved up front so the encoder never reallocates and leaves a copy behind.
    let mut text = Zeroizing::new(String::with_capacity(TEXT_LEN));
    BASE64.encode_string(bytes, &mut text);
    f(&text)
}

fn decode(text: &str, kind: KeyKind) -> Result<Zeroizing<[u8; 32]>, Error> {
    let fail = |problem| Error::InvalidKey {
        kind,
        value: (kind == KeyKind::Public).then(|| cut(text, 60)),
        problem,
    };
    let raw = text.as_bytes();
    if raw.len() != TEXT_LEN {
        return Err(fail(KeyProblem::Length(text.chars().count())));
    }
    if raw[TEXT_LEN - 1] != b'=' || raw[TEXT_LEN - 2] == b'=' {
        return Err(fail(KeyProblem::Padding));
    }
    let mut bytes = Zeroizing::new([0; 32]);
    match BASE64.decode_slice(raw, &mut *bytes) {
        Ok(32) => Ok(bytes),
        Err(DecodeSliceError::DecodeError(DecodeError::InvalidByte(at, _))) => {
            Err(fail(KeyProblem::Character(at)))
        }
        Err(DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol(..))) => {
            Err(fail(KeyProblem::NotCanonical))
        }
        // 44 characters ending in a single '=' always hold 32 bytes, so anything else is a
        // padding problem.
        _ => Err(fail(KeyProblem::Padding)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // RFC 7748, section 6.1 (Alice).
    const SECRET_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const PUBLIC_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn bytes(hex_text: &str) -> [u8; 32] {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    #[test]
    fn derives_the_rfc_7748_public_key() {
        let key = PrivateKey::from_bytes(bytes(SECRET_HEX));
        assert_eq!(key.public_key(), PublicKey::from_bytes(bytes(PUBLIC_HEX)));
        assert_eq!(
            key.public_key().to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a, b);
        assert_ne!(a.public_key(), b.public_key());
        let raw = a.0.to_bytes();
        assert_eq!((raw[0] & 7, raw[31] & 192), (0, 64));
        assert_ne!(PresharedKey::generate(), PresharedKey::generate());
    }

    #[test]
    fn secrets_are_not_shown() {
        let key = PrivateKey::from_bytes(bytes(SECRET_HEX));
        let text = key.to_base64();
        let debug = format!("{key:?}");
        assert!(!debug.contains(text.as_str()), "{debug}");
        assert!(debug.contains(&key.public_key().to_string()), "{debug}");
        let psk = PresharedKey::from_bytes([7; 32]);
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");

        // A mistyped secret: the error says what is wrong, never the text.
        let mut typo = text.to_string();
        typo.replace_range(5..6, "!");
        let err = PrivateKey::from_base64(&typo).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid private key (value not shown): the character at position 5 is not base64"
        );
        let err = PresharedKey::from_base64(&typo[1..])
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&typo[10..20]), "{err}");
        assert!(err.contains("43 characters"), "{err}");
    }

    #[test]
    fn rejects_malformed_text_with_the_reason() {
        let problem = |text: &str| match PublicKey::from_base64(text) {
            Err(Error::InvalidKey {
                kind: KeyKind::Public,
                value: Some(v),
                problem,
            }) => {
                assert_eq!(v, text);
                problem
            }
            other => panic!("{text:?}: {other:?}"),
        };
        let good = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        assert_eq!(problem(""), KeyProblem::Length(0));
        assert_eq!(problem(&good[..43]), KeyProblem::Length(43));
        assert_eq!(problem(&format!("{good}=")), KeyProblem::Length(45));
        assert_eq!(problem(&format!("{}==", &good[..42])), KeyProblem::Padding);
        assert_eq!(problem(&format!("{}A", &good[..43])), KeyProblem::Padding);
        assert_eq!(problem(&good.replace('/', "_")), KeyProblem::Character(23));
        // 'p' leaves bits set below the 32nd byte: not what any encoder writes.
        assert_eq!(
            problem(&good.replace("Tmo=", "Tmp=")),
            KeyProblem::NotCanonical
        );
        assert_eq!(
            problem(&format!("é{}", &good[2..])),
            KeyProblem::Character(0)
        );
    }

    proptest! {
        #[test]
        fn keys_round_trip_through_base64(raw in any::<[u8; 32]>()) {
            let public = PublicKey::from_bytes(raw);
            let text = public.to_string();
            prop_assert_eq!(text.len(), TEXT_LEN);
            prop_assert_eq!(PublicKey::from_base64(&text)?, public);

            let private = PrivateKey::from_bytes(raw);
            let again = PrivateKey::from_base64(&private.to_base64())?;
            prop_assert_eq!(again.public_key(), private.public_key());
            prop_assert_eq!(again, private);

            let psk = PresharedKey::from_bytes(raw);
            prop_assert_eq!(PresharedKey::from_base64(&psk.to_base64())?, psk);
        }

        #[test]
        fn arbitrary_text_never_panics_or_leaks(text in "\\PC{0,50}") {
            if let Err(err) = PrivateKey::from_base64(&text) {
                let shown = err.to_string();
                prop_assert!(text.len() < 8 || !shown.contains(&text), "{}", shown);
            }
        }
    }
}
