//! Trusting the control plane by a pin, as `kubeadm join --discovery-token-ca-cert-hash`
//! does: the control plane serves a certificate issued by its own CA, and every node, the
//! CLI and the lab carry that CA's SHA-256 ([`CaPin`], `sha256:` and 64 hexadecimal
//! digits). No public CA is needed, and no other CA is accepted.
//!
//! [`pinned_client_config`] accepts a server whose certificate chain holds a certificate
//! with the pinned hash and whose leaf that certificate issued, for the name asked (or that
//! is itself the pinned certificate). Anything else fails the handshake with an error that
//! names the pin.
//!
//! ```
//! use kokoa_agent::CaPin;
//!
//! let pin: CaPin = "sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
//!     .parse()?;
//! assert_eq!(pin, CaPin::of(b"test"));
//! assert!(pin.to_string().starts_with("sha256:9f86d081"));
//! assert!("sha256:abc".parse::<CaPin>().is_err());
//! # Ok::<(), kokoa_agent::InvalidPin>(())
//! ```

use std::{fmt, str::FromStr, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a CA certificate (its DER bytes), written `sha256:` and 64 lower-case
/// hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of the certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A CA pin that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid CA pin {0:?}: expected \"sha256:\" and 64 hexadecimal digits, as \
     `kokoa-control init` prints"
)]
pub struct InvalidPin(String);

impl FromStr for CaPin {
    type Err = InvalidPin;

    fn from_str(text: &str) -> Result<Self, InvalidPin> {
        let invalid = || InvalidPin(text.chars().take(100).collect());
        let digits = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        let mut bytes = [0; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for CaPin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CaPin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A TLS client configuration that trusts only the CA pinned by `pin`.
pub fn pinned_client_config(pin: CaPin) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin, provider }))
        .with_no_client_auth()
}

/// Verifies a server's chain against the pinned CA.
#[derive(Debug)]
struct PinnedCa {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if CaPin::of(end_entity) == self.pin {
            // The pinned certificate itself: the handshake's signature proves its key.
            return Ok(ServerCertVerified::assertion());
        }
        let ca = intermediates
            .iter()
            .find(|cert| CaPin::of(cert) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate chain holds no certificate with the pinned \
                     {}: it is not the control plane the pin names (another CA, or someone \
                     in between)",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_pin_reads_back_what_it_writes(bytes in any::<[u8; 32]>()) {
            let pin = CaPin(bytes);
            prop_assert_eq!(pin.to_string().parse::<CaPin>(), Ok(pin));
            let json = serde_json::to_string(&pin).unwrap();
            prop_assert_eq!(serde_json::from_str::<CaPin>(&json).unwrap(), pin);
        }

        #[test]
        fn anything_but_a_pin_is_refused_with_the_text(text in "\\PC{0,80}") {
            prop_assume!(text.len() != 71 || !text.starts_with("sha256:"));
            let error = text.parse::<CaPin>().unwrap_err();
            let quoted = format!("{text:?}");
            prop_assert!(error.to_string().contains(&quoted));
        }
    }
}
