//! Secrets at rest: WireGuard and certificate private keys, DNS provider credentials and
//! TOTP secrets are stored [`Sealed`] (SPEC §10.3), AES-256-GCM under a [`MasterKey`] kept
//! outside the database, with the record the secret belongs to as associated data, so a
//! sealed value copied to another row does not open.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use kokoa_core::{CertificateId, DnsZoneId, Error, Sealed, UserId, secret::NONCE_LEN};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// The 256-bit key that seals secrets stored in the database.
///
/// It lives in a file next to the database (or in the environment), never in it: a stolen
/// database alone reveals no private key. `Debug` shows `<redacted>` and the bytes are wiped
/// from memory when dropped.
///
/// ```
/// use kokoa_core::CertificateId;
/// use kokoa_store::{MasterKey, seal};
///
/// let key = MasterKey::generate();
/// let certificate = CertificateId::new();
/// let aad = seal::certificate_key_context(&certificate);
/// let sealed = key.seal("-----BEGIN PRIVATE KEY-----", &aad);
/// assert_eq!(key.open(&sealed, &aad)?.as_str(), "-----BEGIN PRIVATE KEY-----");
/// // Sealed for one certificate, it does not open as another's.
/// assert!(key.open(&sealed, &seal::certificate_key_context(&CertificateId::new())).is_err());
/// assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from the contents of a key file: standard base64 of 32 bytes. Surrounding
    /// white space (a trailing newline) is ignored. The error never contains the input.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes =
            Zeroizing::new(
                STANDARD
                    .decode(text.trim())
                    .map_err(|_| Error::InvalidMasterKey {
                        reason: "it is not base64",
                    })?,
            );
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidMasterKey {
                reason: "it does not decode to 32 bytes",
            })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key in standard base64, as [`from_base64`](Self::from_base64) reads it: what to
    /// write into the key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &[u8; 32] = &self.0;
        Aes256Gcm::new(key.into())
    }

    /// Encrypts `plaintext` for the record named by `context` (see
    /// [`certificate_key_context`] and the other `*_context` functions).
    ///
    /// Each call draws a fresh random 96-bit nonce; at the rate keys are created here the
    /// chance of a repeat is negligible.
    pub fn seal(&self, plaintext: &str, context: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = self
            .cipher()
            .encrypt(&Nonce::from(nonce), payload)
            // AES-GCM refuses only messages over 64 GiB; a key is 44 bytes.
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Sealed::parse(&STANDARD.encode(bytes)).expect("a nonce and a tag are long enough")
    }

    /// Decrypts a value sealed by [`seal`](Self::seal) with the same key and context.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Zeroizing<String>, Error> {
        let fail = || Error::Unseal {
            context: context.to_owned(),
        };
        // `Sealed` holds only checked text, so this decodes and is long enough.
        let bytes = STANDARD.decode(sealed.as_str()).map_err(|_| fail())?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(&Nonce::from(nonce), payload)
                .map_err(|_| fail())?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| fail())?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The context a certificate's private key is sealed for.
pub fn certificate_key_context(certificate: &CertificateId) -> String {
    format!("certificate:{certificate}:private-key")
}

/// The context a DNS zone's provider credentials are sealed for.
pub fn dns_zone_credentials_context(zone: &DnsZoneId) -> String {
    format!("dns-zone:{zone}:credentials")
}

/// The context a user's TOTP secret is sealed for.
pub fn totp_secret_context(user: &UserId) -> String {
    format!("user:{user}:totp-secret")
}

/// The context of a secret kept in the store's small shared values (an ACME account key,
/// a notification sink's password), named by its namespace and key.
pub fn value_context(namespace: &str, key: &str) -> String {
    format!("value:{namespace}:{key}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused_without_echo() {
        let key = MasterKey::generate();
        let text = format!("{}\n", key.to_base64().as_str());
        let again = MasterKey::from_base64(&text).unwrap();
        let sealed = key.seal("secret", "ctx");
        assert_eq!(again.open(&sealed, "ctx").unwrap().as_str(), "secret");
        let short = STANDARD.encode([7u8; 31]);
        for (bad, why) in [("not base64!", "not base64"), (short.as_str(), "32 bytes")] {
            let err = MasterKey::from_base64(bad).unwrap_err().to_string();
            assert!(err.contains(why) && !err.contains(bad), "{err}");
        }
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = MasterKey::from_bytes([1; 32]);
        let sealed = key.seal("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "a");
        assert!(!sealed.as_str().contains("yAnz5TF"));
        assert_eq!(
            format!("{sealed:?}"),
            format!("Sealed({} characters)", sealed.as_str().len())
        );
        // Fresh nonce each time: sealing twice gives different texts.
        assert_ne!(key.seal("x", "a"), key.seal("x", "a"));
        let err = key.open(&sealed, "b").unwrap_err().to_string();
        assert!(err.contains("\"b\"") && !err.contains("yAnz5TF"), "{err}");
        assert!(MasterKey::from_bytes([2; 32]).open(&sealed, "a").is_err());
        // One flipped bit anywhere and it does not open.
        let mut bytes = STANDARD.decode(sealed.as_str()).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let altered = Sealed::parse(&STANDARD.encode(&bytes)).unwrap();
            assert!(key.open(&altered, "a").is_err(), "bit flip at {i}");
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn contexts_name_the_record() {
        let certificate = CertificateId::parse("crt_1").unwrap();
        assert_eq!(
            certificate_key_context(&certificate),
            "certificate:crt_1:private-key"
        );
        let user = UserId::parse("usr_1").unwrap();
        assert_eq!(totp_secret_context(&user), "user:usr_1:totp-secret");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn seal_open_round_trips(text in "\\PC{0,200}", context in "[a-z0-9:_]{0,40}") {
            let key = MasterKey::from_bytes([9; 32]);
            let sealed = Sealed::parse(key.seal(&text, &context).as_str()).unwrap();
            let opened = key.open(&sealed, &context).unwrap();
            prop_assert_eq!(opened.as_str(), text.as_str());
        }
    }
}
