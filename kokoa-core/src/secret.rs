//! Secrets at rest and bearer tokens.
//!
//! Private keys are stored [`Sealed`] (SPEC §10.3): AES-256-GCM under a master key kept
//! outside the database (`kokoa_store::MasterKey` seals and opens them), with the record
//! the key belongs to as associated data, so a sealed value copied to another row does not
//! open. Tokens (API tokens, enrollment tokens, node credentials) are stored only as a
//! [`TokenHash`].

use std::fmt;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::{ContentHash, Error};

/// The nonce that starts a sealed value.
pub const NONCE_LEN: usize = 12;
/// The authentication tag that ends it.
const TAG_LEN: usize = 16;

/// A secret sealed by `kokoa_store::MasterKey::seal`: base64 of the nonce followed by the ciphertext
/// and its tag. `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(String);

impl Sealed {
    /// Checks the form of a stored sealed value (whether it opens is only known with the key).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let long_enough = STANDARD
            .decode(input)
            .is_ok_and(|bytes| bytes.len() >= NONCE_LEN + TAG_LEN);
        if long_enough {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::InvalidSealed {
                length: input.len(),
            })
        }
    }

    /// The text to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} characters)", self.0.len())
    }
}

/// A random bearer token: `prefix`, `_`, then 256 random bits in unpadded base64url, e.g.
/// `kk_adm_Vt1…` (43 characters after the prefix).
///
/// The prefix tells a person (and a secret scanner) what kind of token they look at.
///
/// ```
/// use kokoa_core::{TokenHash, secret::new_token};
/// let token = new_token("kk_adm");
/// assert!(token.starts_with("kk_adm_") && token.len() == 7 + 43);
/// assert_ne!(*token, *new_token("kk_adm"));
/// assert_eq!(TokenHash::of(&token), TokenHash::of(&token.clone()));
/// ```
pub fn new_token(prefix: &str) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(format!(
        "{prefix}_{}",
        URL_SAFE_NO_PAD.encode(bytes.as_ref())
    ))
}

/// The SHA-256 of a token, in hex: all the store keeps of a token.
///
/// A plain fast hash is the right tool here, unlike for passwords: tokens carry 256 random
/// bits, so there is nothing to guess by trying many inputs, and a fast hash keeps the lookup
/// on every request cheap.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(ContentHash);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        Self(ContentHash::of(token.as_bytes()))
    }

    /// A hash as stored: 64 lowercase hex characters.
    pub fn parse(input: &str) -> Result<Self, Error> {
        ContentHash::parse(input).map(Self)
    }

    /// The 64 hex characters.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_checked_for_form_and_shown_by_length() {
        let text = STANDARD.encode([5u8; NONCE_LEN + TAG_LEN + 3]);
        let sealed = Sealed::parse(&text).unwrap();
        assert_eq!(sealed.as_str(), text);
        assert_eq!(
            format!("{sealed:?}"),
            format!("Sealed({} characters)", text.len())
        );
        for bad in ["", "abc", "%%%%", &STANDARD.encode([0u8; 27])] {
            assert!(Sealed::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_hashes_are_hex_sha256() {
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = new_token("kk_node");
        let rest = token.strip_prefix("kk_node_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(rest).unwrap().len(), 32);
        let hash = TokenHash::of(&token);
        assert_eq!(TokenHash::parse(hash.as_str()).unwrap(), hash);
        assert!(TokenHash::parse("ABC").is_err());
    }
}
