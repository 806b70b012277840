//! Issued certificates: reading a PEM chain and key, and the checks of a manual upload.

use std::{collections::BTreeSet, fmt};

use instant_acme::CertificateIdentifier;
use kokoa_core::{Hostname, Timestamp};
use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, pem::Pem};
use zeroize::Zeroizing;

use crate::Error;

/// A PEM private key. `Debug` does not show it and the memory is wiped when dropped.
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text, to be written to a key file or sealed for the database.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// A certificate chain with its private key, checked to belong together.
///
/// Made by [`CertificateManager::obtain`](crate::CertificateManager::obtain),
/// [`parse_manual`] or [`IssuedCertificate::from_pem`], so the fields always describe the
/// chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuedCertificate {
    /// The DNS names of the first certificate's subject alternative names. Names that are
    /// not valid host names (IP addresses, underscores) are left out: no route can use them.
    pub domains: BTreeSet<Hostname>,
    /// Distinguished name of the issuer of the first certificate, e.g. `C=US, O=Let's
    /// Encrypt, CN=R11`.
    pub issuer: String,
    /// Start of the first certificate's validity.
    pub not_before: Timestamp,
    /// End of the first certificate's validity.
    pub not_after: Timestamp,
    /// The chain as PEM: the server's own certificate first, then its issuers.
    pub chain_pem: String,
    /// The private key of the first certificate.
    pub key_pem: PrivateKeyPem,
}

impl IssuedCertificate {
    /// Reads a PEM chain and key and checks that every block is an X.509 certificate, that
    /// each certificate is followed by (and signed by) its issuer and that the key belongs to the first one.
    /// Names and dates are not checked: see [`parse_manual`].
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let blocks = pem_blocks(chain_pem)?;
        let certs = blocks
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                pem.parse_x509().map_err(|e| Error::InvalidChain {
                    detail: format!("certificate {} is not X.509: {e}", i + 1),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_order(&certs)?;
        let leaf = &certs[0];
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::InvalidKey {
            detail: e.to_string(),
        })?;
        // The raw key bits, not the whole SubjectPublicKeyInfo: encoders differ in the
        // algorithm parameters (RSA with or without NULL), the key itself does not.
        if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch {
                subject: leaf.subject().to_string(),
            });
        }
        let validity = leaf.validity();
        let time = |seconds: i64| {
            Timestamp::from_unix(seconds).map_err(|e| Error::InvalidChain {
                detail: format!("certificate 1 has a validity date out of range: {e}"),
            })
        };
        Ok(Self {
            domains: dns_names(leaf)?,
            issuer: leaf.issuer().to_string(),
            not_before: time(validity.not_before.timestamp())?,
            not_after: time(validity.not_after.timestamp())?,
            chain_pem: chain_pem.to_owned(),
            key_pem: PrivateKeyPem::new(key_pem.to_owned()),
        })
    }

    /// Whether one of the certificate's names covers `hostname` (a wildcard covers exactly
    /// one label below it).
    pub fn covers(&self, hostname: &Hostname) -> bool {
        self.domains.iter().any(|name| name.covers(hostname))
    }

    /// The certificate's identifier for ACME Renewal Information (RFC 9773 §4.1):
    /// base64url of the authority key identifier's `keyIdentifier`, a dot, base64url of the
    /// serial number's DER content bytes. Fails for a certificate without that extension.
    pub fn ari_certificate_id(&self) -> Result<String, Error> {
        Ok(self.certificate_id()?.to_string())
    }

    pub(crate) fn certificate_id(&self) -> Result<CertificateIdentifier<'static>, Error> {
        let no_id = |detail: String| Error::NoCertificateId {
            names: self.names(),
            detail,
        };
        // `from_pem` checked the chain, so its first block is there and is X.509.
        let leaf = pem_blocks(&self.chain_pem)?.swap_remove(0);
        CertificateIdentifier::try_from(&CertificateDer::from(leaf.contents))
            .map(CertificateIdentifier::into_owned)
            .map_err(no_id)
    }

    fn names(&self) -> Vec<Hostname> {
        self.domains.iter().cloned().collect()
    }

    pub(crate) fn check_covers(&self, hostname: &Hostname) -> Result<(), Error> {
        if self.covers(hostname) {
            Ok(())
        } else {
            Err(Error::NameMismatch {
                hostname: hostname.clone(),
                names: self.names(),
            })
        }
    }
}

/// Checks an uploaded certificate for `hostname`: the chain parses and is in order, the
/// key belongs to the first certificate, its names cover `hostname`, and it is valid at
/// `now` (neither expired nor valid only later).
///
/// ```
/// use kokoa_acme::parse_manual;
/// use kokoa_core::{Hostname, Timestamp};
///
/// let key = rcgen::KeyPair::generate()?;
/// let cert = rcgen::CertificateParams::new(vec!["*.hoge.com".into()])?.self_signed(&key)?;
/// let host = Hostname::parse("app.hoge.com")?;
///
/// let checked = parse_manual(&cert.pem(), &key.serialize_pem(), &host, Timestamp::now())?;
/// assert!(checked.covers(&host));
///
/// let other = Hostname::parse("a.b.hoge.com")?;
/// let err = parse_manual(&cert.pem(), &key.serialize_pem(), &other, Timestamp::now());
/// assert_eq!(err.unwrap_err().to_string(), "the certificate covers *.hoge.com, not a.b.hoge.com");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_manual(
    chain_pem: &str,
    key_pem: &str,
    hostname: &Hostname,
    now: Timestamp,
) -> Result<IssuedCertificate, Error> {
    let cert = IssuedCertificate::from_pem(chain_pem, key_pem)?;
    cert.check_covers(hostname)?;
    if now < cert.not_before {
        return Err(Error::NotYetValid {
            names: cert.names(),
            not_before: cert.not_before,
        });
    }
    if now > cert.not_after {
        return Err(Error::Expired {
            names: cert.names(),
            not_after: cert.not_after,
        });
    }
    Ok(cert)
}

fn pem_blocks(chain_pem: &str) -> Result<Vec<Pem>, Error> {
    let mut blocks = Vec::new();
    for (i, block) in Pem::iter_from_buffer(chain_pem.as_bytes()).enumerate() {
        let block = block.map_err(|e| Error::InvalidChain {
            detail: format!("PEM block {} cannot be read: {e}", i + 1),
        })?;
        if block.label != "CERTIFICATE" {
            return Err(Error::InvalidChain {
                detail: format!(
                    "PEM block {} is a {:?}, expected only CERTIFICATE blocks",
                    i + 1,
                    block.label
                ),
            });
        }
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err(Error::InvalidChain {
            detail: "no \"-----BEGIN CERTIFICATE-----\" block found".to_owned(),
        });
    }
    Ok(blocks)
}

/// A server that sends its chain in the wrong order or with a foreign intermediate fails
/// in some clients and not others; refusing it here saves a confusing hunt later. The
/// signature is checked, not only the names: two CAs can share a name.
fn check_order(certs: &[X509Certificate<'_>]) -> Result<(), Error> {
    for (i, pair) in certs.windows(2).enumerate() {
        if pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .is_err()
        {
            return Err(Error::ChainOrder {
                position: i + 1,
                subject: pair[0].subject().to_string(),
                issuer: pair[0].issuer().to_string(),
                next: pair[1].subject().to_string(),
            });
        }
    }
    Ok(())
}

fn dns_names(leaf: &X509Certificate<'_>) -> Result<BTreeSet<Hostname>, Error> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| Error::InvalidChain {
            detail: format!("certificate 1 has an unreadable subject alternative name: {e}"),
        })?;
    Ok(san
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Hostname::parse(dns).ok(),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests;
