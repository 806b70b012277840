//! Certificate manager of Kokoa Proxy: obtains TLS certificates over ACME, checks uploaded
//! ones and decides when to renew them.
//!
//! - [`CertificateManager`] keeps one ACME account ([`Issuer`]: Let's Encrypt, its staging
//!   server, ZeroSSL with external account binding, or any other ACME server) and orders
//!   certificates with a fresh key, proving control through HTTP-01 (an
//!   [`Http01Publisher`] puts the token on every edge) or DNS-01 (a [`Dns01Solver`] sets the
//!   TXT record). Only the leader orders ([`Leadership`]), and never two orders for the same
//!   names at once.
//! - [`parse_manual`] checks an uploaded chain and key: it parses, the key matches, the names
//!   cover the host, it is valid now.
//! - [`RenewalPolicy`] and [`CertificateStatus`] plan renewals on an injected clock:
//!   `renew_days_before` ahead of expiry, or at a random time in the CA's renewal window
//!   (ACME Renewal Information, RFC 9773: [`CertificateManager::refresh_renewal`]), with
//!   a doubling backoff after failures.
//! - `cloudflare::OriginCaClient` (feature `cloudflare-origin-ca`) gets certificates from
//!   Cloudflare's Origin CA, for origins behind Cloudflare's proxy.
//!
//! # Example
//!
//! When is a 90-day certificate renewed, and what happens after a failed attempt?
//!
//! ```
//! use kokoa_acme::{CertificateStatus, RenewalPolicy};
//! use kokoa_core::Timestamp;
//!
//! let policy = RenewalPolicy::renew_days_before(30);
//! let issued = Timestamp::parse_rfc3339("2025-01-21T10:30:00Z")?;
//! let expires = Timestamp::parse_rfc3339("2025-04-21T10:30:00Z")?;
//! let mut status = CertificateStatus::new(
//!     ["app.hoge.com".parse()?].into(), "CN=R11".into(), issued, expires, &policy);
//!
//! // Thirty days before expiry, not a second earlier.
//! assert_eq!(status.next_renewal.to_string(), "2025-03-22T10:30:00Z");
//! assert!(!status.is_due(Timestamp::parse_rfc3339("2025-03-22T10:29:59Z")?));
//!
//! // The attempt fails: retry in 1 minute, then 2, 4, ... at most 6 hours apart.
//! let now = Timestamp::parse_rfc3339("2025-03-22T10:30:00Z")?;
//! assert!(status.is_due(now));
//! status.record_failure(&policy, "DNS provider unreachable", now);
//! assert_eq!(status.next_renewal.to_string(), "2025-03-22T10:31:00Z");
//! assert_eq!(policy.retry_delay(20).as_secs(), 6 * 3600);
//!
//! // What the API shows.
//! let json = serde_json::to_value(&status)?;
//! assert_eq!(json["last_error"], "DNS provider unreachable");
//! assert_eq!(json["not_after"], "2025-04-21T10:30:00Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cloudflare-origin-ca` | no | `cloudflare::OriginCaClient`, a client of Cloudflare's Origin CA API (pulls in `reqwest`). |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod certificate;
mod challenge;
#[cfg(feature = "cloudflare-origin-ca")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudflare-origin-ca")))]
pub mod cloudflare;
mod error;
mod issuer;
mod manager;
mod renewal;

pub use certificate::{IssuedCertificate, PrivateKeyPem, parse_manual};
pub use challenge::{ChallengeMethod, Dns01Solver, Http01Publisher};
pub use error::{BoxError, Error};
pub use issuer::{ExternalAccountBinding, Issuer};
pub use manager::{
    AccountSecret, AlwaysLeader, CertificateManager, CertificateManagerBuilder, Leadership,
    RandomSource,
};
pub use renewal::{AriWindow, CertificateStatus, RenewalInfo, RenewalPolicy};

/// Runs the README's example as a doctest so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
