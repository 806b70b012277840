//! The error type of this crate.

use std::time::Duration;

use kokoa_core::{Hostname, Timestamp};

use crate::ChallengeMethod;

/// The error a challenge publisher or solver returns; boxed so that any provider's own error
/// type fits.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong while obtaining, checking or scheduling certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `obtain` was called on an instance that is not the leader.
    #[error(
        "not the leader: only the leading control plane instance orders certificates \
         (asked for {})", join(.domains)
    )]
    NotLeader {
        /// The names that were asked for.
        domains: Vec<Hostname>,
    },
    /// An order for exactly these names is running already.
    #[error(
        "an order for {} is already in progress; its result will be stored by the caller \
         that started it", join(.domains)
    )]
    AlreadyInProgress {
        /// The names of the running order.
        domains: Vec<Hostname>,
    },
    /// `obtain` was called with an empty list of names.
    #[error("no domain names given: a certificate needs at least one")]
    NoDomains,
    /// HTTP-01 cannot prove control of a wildcard name.
    #[error("{hostname} is a wildcard name: ACME validates wildcard names only with dns-01")]
    WildcardNeedsDns01 {
        /// The wildcard name.
        hostname: Hostname,
    },
    /// The manager was built without a publisher (HTTP-01) or solver (DNS-01).
    #[error(
        "no {method} handler configured: build the certificate manager with {}",
        match .method { ChallengeMethod::Http01 => "`http01(publisher)`", ChallengeMethod::Dns01 => "`dns01(solver)`" }
    )]
    NoChallengeHandler {
        /// The method that was asked for.
        method: ChallengeMethod,
    },
    /// The ACME server did not offer the asked challenge type for a name.
    #[error("the ACME server offers no {method} challenge for {hostname}; try the other method")]
    ChallengeNotOffered {
        /// The name being authorised.
        hostname: String,
        /// The method that was asked for.
        method: ChallengeMethod,
    },
    /// The ACME server sent a challenge token that is not base64url text. It would become a
    /// file name or URL path on the edges, so it is refused.
    #[error("the ACME server sent the challenge token {token:?}, which is not base64url text")]
    InvalidToken {
        /// The token, cut to 100 characters.
        token: String,
    },
    /// The publisher or solver failed to put a challenge response in place.
    #[error("placing the {method} challenge response for {hostname} failed: {source}")]
    PlaceChallenge {
        /// The name being authorised.
        hostname: String,
        /// The method in use.
        method: ChallengeMethod,
        /// What the publisher or solver reported.
        #[source]
        source: BoxError,
    },
    /// The ACME server could not validate the names.
    #[error("the ACME server did not validate {}: {detail}", join(.domains))]
    ValidationFailed {
        /// The names of the order.
        domains: Vec<Hostname>,
        /// The server's explanation, per name where it gave one.
        detail: String,
    },
    /// The order did not become ready or valid in time.
    #[error(
        "the order for {} was not done after {}s; check that the challenge response is \
         reachable by the ACME server", join(.domains), .after.as_secs()
    )]
    OrderTimeout {
        /// The names of the order.
        domains: Vec<Hostname>,
        /// How long we waited.
        after: Duration,
    },
    /// A call to the ACME server failed.
    #[error("ACME {step} failed: {source}")]
    Acme {
        /// Which step: "account creation", "new order", "finalize", ...
        step: &'static str,
        /// What the ACME client reported.
        #[source]
        source: instant_acme::Error,
    },
    /// The stored account secret is not what [`AccountSecret`](crate::AccountSecret) holds.
    #[error("the stored ACME account secret cannot be read: {0}")]
    InvalidAccountSecret(#[source] serde_json::Error),
    /// The stored account was created at another ACME server than the configured one.
    #[error(
        "the stored ACME account belongs to {stored}, but the configured directory is \
         {configured}; create a new account for the new issuer"
    )]
    AccountIssuerMismatch {
        /// Directory URL stored with the account.
        stored: String,
        /// Directory URL of the configured issuer.
        configured: String,
    },
    /// The ACME server creates accounts only with an external account binding, and none
    /// was configured.
    #[error(
        "the ACME server {directory_url} requires an external account binding to create an \
         account: configure the key id and HMAC key shown in the CA's account dashboard"
    )]
    ExternalAccountRequired {
        /// The directory URL of the server.
        directory_url: String,
    },
    /// The ACME server refused the external account binding: unknown key id, or an HMAC
    /// key that does not belong to it.
    #[error(
        "the ACME server refused the external account binding with key id {key_id}: {detail}; \
         check that the key id and HMAC key are the pair the CA issued (the HMAC key is not \
         shown here)"
    )]
    ExternalAccountRejected {
        /// The key id that was sent.
        key_id: String,
        /// The server's explanation.
        detail: String,
    },
    /// The HMAC key of an external account binding is not base64url.
    #[error("the HMAC key of the external account binding {key_id} is not base64url text")]
    InvalidEabKey {
        /// The key id the HMAC key came with.
        key_id: String,
    },
    /// A certificate has no identifier for ACME Renewal Information: it lacks the authority
    /// key identifier extension that the identifier is made of (RFC 9773 §4.1).
    #[error(
        "cannot ask the CA for the renewal window of the certificate for {}: {detail}",
        names_or_none(.names)
    )]
    NoCertificateId {
        /// The DNS names in the certificate.
        names: Vec<Hostname>,
        /// Why no identifier could be made.
        detail: String,
    },
    /// The CA's renewal information cannot be used.
    #[error("the CA's renewal information cannot be used: {detail}")]
    InvalidRenewalInfo {
        /// What is wrong with it.
        detail: String,
    },
    /// The certificate chain is not PEM encoded X.509.
    #[error("the certificate chain is not valid: {detail}")]
    InvalidChain {
        /// What was wrong, with the position of the certificate.
        detail: String,
    },
    /// The private key is not a PEM key we can read.
    #[error(
        "the private key is not valid: {detail} (expected PEM \"PRIVATE KEY\", \
         \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\", not encrypted)"
    )]
    InvalidKey {
        /// What the key parser reported.
        detail: String,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error(
        "the private key does not match the certificate {subject} (the server's own \
         certificate must come first in the chain)"
    )]
    KeyMismatch {
        /// Subject of the first certificate.
        subject: String,
    },
    /// A certificate in the chain is not signed by the certificate that follows it.
    #[error(
        "certificate {position} of the chain ({subject}, issued by {issuer}) is not signed \
         by the next certificate ({next}); put each certificate right before its issuer"
    )]
    ChainOrder {
        /// 1-based position of the certificate not followed by its issuer.
        position: usize,
        /// Its subject.
        subject: String,
        /// Its issuer.
        issuer: String,
        /// The subject of the certificate that follows it.
        next: String,
    },
    /// The certificate does not cover the host name it is meant for.
    #[error("the certificate covers {}, not {hostname}", names_or_none(.names))]
    NameMismatch {
        /// The host name it should cover.
        hostname: Hostname,
        /// The DNS names in the certificate.
        names: Vec<Hostname>,
    },
    /// The certificate has expired.
    #[error("the certificate for {} expired at {not_after}", names_or_none(.names))]
    Expired {
        /// The DNS names in the certificate.
        names: Vec<Hostname>,
        /// End of its validity.
        not_after: Timestamp,
    },
    /// The certificate is not valid yet.
    #[error("the certificate for {} is not valid before {not_before}", names_or_none(.names))]
    NotYetValid {
        /// The DNS names in the certificate.
        names: Vec<Hostname>,
        /// Start of its validity.
        not_before: Timestamp,
    },
    /// Generating a key or a certificate signing request failed.
    #[cfg(feature = "cloudflare-origin-ca")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare-origin-ca")))]
    #[error("generating the key or the certificate request failed: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Cloudflare's API answered with an error.
    #[cfg(feature = "cloudflare-origin-ca")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare-origin-ca")))]
    #[error("Cloudflare Origin CA answered HTTP {status}: {errors}")]
    Cloudflare {
        /// HTTP status code.
        status: u16,
        /// The errors of the response envelope, `code: message`, or the body's start.
        errors: String,
    },
    /// The Origin CA validity is not one Cloudflare offers.
    #[cfg(feature = "cloudflare-origin-ca")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare-origin-ca")))]
    #[error("{days} days is not an Origin CA validity; use one of 7, 30, 90, 365, 730, 1095, 5475")]
    InvalidValidity {
        /// The number of days asked for.
        days: u16,
    },
    /// An HTTP request to Cloudflare failed.
    #[cfg(feature = "cloudflare-origin-ca")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare-origin-ca")))]
    #[error("request to Cloudflare Origin CA failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Anything else, from a provider.
    #[error(transparent)]
    Other(BoxError),
}

impl Error {
    /// Whether trying again later may succeed without a change of configuration: the CA,
    /// the network or a challenge handler had a problem, or another order was running.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::AlreadyInProgress { .. }
            | Self::PlaceChallenge { .. }
            | Self::ValidationFailed { .. }
            | Self::OrderTimeout { .. }
            | Self::Acme { .. } => true,
            #[cfg(feature = "cloudflare-origin-ca")]
            Self::Cloudflare { status, .. } => *status == 429 || *status >= 500,
            #[cfg(feature = "cloudflare-origin-ca")]
            Self::Http(_) => true,
            _ => false,
        }
    }

    /// Whether the CA refused the request's anti-replay nonce (RFC 8555 §6.5) even after the
    /// ACME client's own retries. The CA did nothing with such a request, so the whole
    /// order can be tried again at once.
    pub(crate) fn is_bad_nonce(&self) -> bool {
        matches!(
            self,
            Self::Acme { source: instant_acme::Error::Api(problem), .. }
                if problem.r#type.as_deref() == Some(BAD_NONCE)
        )
    }
}

/// The problem type of a refused nonce.
pub(crate) const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";

pub(crate) fn join(names: &[Hostname]) -> String {
    let names: Vec<&str> = names.iter().map(Hostname::as_str).collect();
    names.join(", ")
}

fn names_or_none(names: &[Hostname]) -> String {
    if names.is_empty() {
        "no DNS name".to_owned()
    } else {
        join(names)
    }
}
