//! Cloudflare Origin CA: certificates that only Cloudflare's proxy trusts, for the hop from
//! Cloudflare to an edge when a zone is proxied ("orange cloud"). They need no challenge
//! and last up to 15 years.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use kokoa_acme::cloudflare::{OriginCaAuth, OriginCaClient, OriginKeyType};
//!
//! let client = OriginCaClient::new(OriginCaAuth::ApiToken("cf-token".to_owned().into()))?;
//! let issued = client
//!     .create_certificate(&["*.hoge.com".parse()?], OriginKeyType::Ecc, 5475)
//!     .await?;
//! println!("{} valid until {}", issued.id, issued.certificate.not_after);
//! # Ok(()) }
//! ```

use std::fmt;

use kokoa_core::Hostname;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, IssuedCertificate};

/// Base URL of Cloudflare's API, version 4.
pub const API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// Validity periods Cloudflare offers, in days.
pub const VALIDITIES: [u16; 7] = [7, 30, 90, 365, 730, 1095, 5475];

/// How the client authenticates. `Debug` does not show the secret.
#[derive(Clone)]
#[non_exhaustive]
pub enum OriginCaAuth {
    /// An API token with the "SSL and Certificates: Edit" permission, sent as a bearer token.
    ApiToken(Zeroizing<String>),
    /// The account's Origin CA key, sent as `X-Auth-User-Service-Key`.
    ServiceKey(Zeroizing<String>),
}

impl fmt::Debug for OriginCaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ApiToken(_) => "ApiToken(<redacted>)",
            Self::ServiceKey(_) => "ServiceKey(<redacted>)",
        })
    }
}

/// The kind of key, and so of signature, of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKeyType {
    /// ECDSA P-256 (`origin-ecc`).
    Ecc,
    /// RSA 2048 (`origin-rsa`).
    Rsa,
}

/// A certificate from the Origin CA.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OriginCertificate {
    /// Cloudflare's id of the certificate, to revoke it later.
    pub id: String,
    /// The certificate with its new key. The chain holds the certificate alone: the Origin
    /// CA root is known to Cloudflare's proxy, which is the only client.
    pub certificate: IssuedCertificate,
}

/// A client of the Origin CA API.
#[derive(Debug, Clone)]
pub struct OriginCaClient {
    http: reqwest::Client,
    base_url: String,
    auth: OriginCaAuth,
}

#[derive(Serialize)]
struct CreateRequest<'a> {
    hostnames: Vec<&'a str>,
    requested_validity: u16,
    request_type: &'static str,
    csr: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiError>,
    result: Option<CreatedCertificate>,
}

#[derive(Deserialize)]
struct ApiError {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct CreatedCertificate {
    id: String,
    certificate: String,
}

impl OriginCaClient {
    /// A client of Cloudflare's API.
    pub fn new(auth: OriginCaAuth) -> Result<Self, Error> {
        Ok(Self::with_http(
            reqwest::Client::builder().build()?,
            API_BASE,
            auth,
        ))
    }

    /// A client of the API at `base_url` (such as [`API_BASE`]) through `http`.
    pub fn with_http(
        http: reqwest::Client,
        base_url: impl Into<String>,
        auth: OriginCaAuth,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into(),
            auth,
        }
    }

    /// Creates a certificate for `hostnames` (zones of the account; wildcards one level
    /// deep) with a fresh key of `key_type`, valid for `validity_days`: 7, 30, 90, 365, 730,
    /// 1095 or 5475.
    pub async fn create_certificate(
        &self,
        hostnames: &[Hostname],
        key_type: OriginKeyType,
        validity_days: u16,
    ) -> Result<OriginCertificate, Error> {
        if !VALIDITIES.contains(&validity_days) {
            return Err(Error::InvalidValidity {
                days: validity_days,
            });
        }
        let first = hostnames.first().ok_or(Error::NoDomains)?;
        let (key, request_type) = match key_type {
            OriginKeyType::Ecc => (KeyPair::generate(), "origin-ecc"),
            OriginKeyType::Rsa => (
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
                "origin-rsa",
            ),
        };
        let key = key.map_err(Error::KeyGeneration)?;
        let names: Vec<String> = hostnames.iter().map(|h| h.as_str().to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(Error::KeyGeneration)?;
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(Error::KeyGeneration)?;

        let request = self
            .http
            .post(format!("{}/certificates", self.base_url))
            .json(&CreateRequest {
                hostnames: hostnames.iter().map(Hostname::as_str).collect(),
                requested_validity: validity_days,
                request_type,
                csr,
            });
        let request = match &self.auth {
            OriginCaAuth::ApiToken(token) => request.bearer_auth(token.as_str()),
            OriginCaAuth::ServiceKey(key) => {
                request.header("X-Auth-User-Service-Key", key.as_str())
            }
        };
        let response = request.send().await?;
        let status = response.status();
        let body = response.text().await?;
        let envelope: Option<Envelope> = serde_json::from_str(&body).ok();
        let created = match envelope {
            Some(Envelope {
                success: true,
                result: Some(created),
                ..
            }) if status.is_success() => created,
            Some(envelope) if !envelope.errors.is_empty() => {
                let errors: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect();
                return Err(Error::Cloudflare {
                    status: status.as_u16(),
                    errors: errors.join("; "),
                });
            }
            _ => {
                return Err(Error::Cloudflare {
                    status: status.as_u16(),
                    errors: format!(
                        "unexpected body: {}",
                        body.chars().take(200).collect::<String>()
                    ),
                });
            }
        };
        let key_pem = Zeroizing::new(key.serialize_pem());
        let certificate = IssuedCertificate::from_pem(&created.certificate, &key_pem)?;
        Ok(OriginCertificate {
            id: created.id,
            certificate,
        })
    }
}
