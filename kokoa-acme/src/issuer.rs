//! Which ACME server issues the certificates.

use std::{fmt, path::PathBuf};

use base64::{
    Engine,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use instant_acme::{Account, AccountBuilder, ExternalAccountKey, LetsEncrypt, ZeroSsl};
use zeroize::Zeroizing;

use crate::Error;

/// An ACME certificate authority.
///
/// ```
/// use kokoa_acme::{ExternalAccountBinding, Issuer};
///
/// assert!(Issuer::LetsEncryptStaging.directory_url().contains("staging"));
/// let zerossl = Issuer::ZeroSsl(ExternalAccountBinding::new("kid-1", "c2VjcmV0LWhtYWM")?);
/// assert!(!format!("{zerossl:?}").contains("c2VjcmV0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Issuer {
    /// Let's Encrypt's production directory.
    LetsEncrypt,
    /// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
    LetsEncryptStaging,
    /// ZeroSSL, which requires an external account binding from its dashboard.
    ZeroSsl(ExternalAccountBinding),
    /// Any other ACME server, e.g. step-ca, pebble, Google Trust Services or SSL.com.
    Custom {
        /// The directory URL, e.g. `https://ca.internal:9000/acme/acme/directory`.
        directory_url: String,
        /// A PEM file with the root certificate of the server's own TLS certificate. When
        /// given, it is the only root trusted for talking to the server (only the first
        /// certificate of the file is read); otherwise the system's roots are used.
        trusted_root: Option<PathBuf>,
        /// The external account binding, for servers that require one to create an account.
        external_account: Option<ExternalAccountBinding>,
    },
}

impl Issuer {
    /// The ACME directory URL.
    pub fn directory_url(&self) -> &str {
        match self {
            Self::LetsEncrypt => LetsEncrypt::Production.url(),
            Self::LetsEncryptStaging => LetsEncrypt::Staging.url(),
            Self::ZeroSsl(_) => ZeroSsl::Production.url(),
            Self::Custom { directory_url, .. } => directory_url,
        }
    }

    pub(crate) fn external_account_key(&self) -> Option<ExternalAccountKey> {
        self.external_account_binding()
            .map(|eab| ExternalAccountKey::new(eab.key_id.clone(), &eab.hmac_key))
    }

    /// The external account binding new accounts are created with, if any.
    pub fn external_account_binding(&self) -> Option<&ExternalAccountBinding> {
        match self {
            Self::ZeroSsl(eab)
            | Self::Custom {
                external_account: Some(eab),
                ..
            } => Some(eab),
            _ => None,
        }
    }

    pub(crate) fn account_builder(&self) -> Result<AccountBuilder, Error> {
        // instant-acme builds its TLS client from rustls' process-wide crypto provider. A
        // program that links both of rustls' providers (ring through one dependency,
        // aws-lc-rs through another) has no default and rustls would panic; pick aws-lc-rs,
        // the one instant-acme itself uses, unless the program chose already.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another thread installing one is fine: either will do.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let builder = match self {
            Self::Custom {
                trusted_root: Some(root),
                ..
            } => Account::builder_with_root(root),
            _ => Account::builder(),
        };
        builder.map_err(|source| Error::Acme {
            step: "HTTP client setup",
            source,
        })
    }
}

/// Base64url as providers show HMAC keys: with or without `=` padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// External account binding (RFC 8555 §7.3.4): ties a new ACME account to an account the
/// user already has at the certificate authority.
#[derive(Clone)]
pub struct ExternalAccountBinding {
    key_id: String,
    hmac_key: Zeroizing<Vec<u8>>,
}

impl ExternalAccountBinding {
    /// `key_id` and the base64url `hmac_key`, as the CA's dashboard shows them.
    pub fn new(key_id: impl Into<String>, hmac_key: &str) -> Result<Self, Error> {
        let key_id = key_id.into();
        match BASE64URL.decode(hmac_key.trim()) {
            Ok(bytes) if !bytes.is_empty() => Ok(Self {
                key_id,
                hmac_key: Zeroizing::new(bytes),
            }),
            _ => Err(Error::InvalidEabKey { key_id }),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_key_accepts_padded_and_unpadded_base64url_and_names_the_key_id() {
        // `-` and `_` are where base64url differs from standard base64.
        let unpadded = ExternalAccountBinding::new("kid", "-_8").unwrap();
        let padded = ExternalAccountBinding::new("kid", "-_8=").unwrap();
        assert_eq!(*unpadded.hmac_key, vec![0xfb, 0xff]);
        assert_eq!(*padded.hmac_key, vec![0xfb, 0xff]);
        let err = ExternalAccountBinding::new("kid-7", "not base64!").unwrap_err();
        assert!(err.to_string().contains("kid-7"), "{err}");
        assert!(ExternalAccountBinding::new("kid", "").is_err());
    }

    #[test]
    fn directory_urls_are_the_documented_ones() {
        assert_eq!(
            Issuer::LetsEncrypt.directory_url(),
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(
            Issuer::LetsEncryptStaging.directory_url(),
            "https://acme-staging-v02.api.letsencrypt.org/directory"
        );
        let custom = Issuer::Custom {
            directory_url: "https://127.0.0.1:14000/dir".into(),
            trusted_root: None,
            external_account: None,
        };
        assert_eq!(custom.directory_url(), "https://127.0.0.1:14000/dir");
    }
}
