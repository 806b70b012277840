//! The error type of `kokoa-dns`.

use std::time::Duration;

use kokoa_core::{DnsName, Hostname};

/// What went wrong talking to a DNS provider or planning records.
///
/// Every variant names the provider (`cloudflare`, `powerdns`, ...) and, in `detail`, the call
/// that failed and what the provider said. Credentials are never part of a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The provider refused the credentials (HTTP 401/403).
    #[error(
        "{provider}: the credentials were refused ({detail}); check the API token or key and its permissions"
    )]
    Auth {
        /// Provider name.
        provider: &'static str,
        /// The call and the provider's message.
        detail: String,
    },

    /// The zone or record does not exist.
    #[error("{provider}: not found: {detail}")]
    NotFound {
        /// Provider name.
        provider: &'static str,
        /// What was looked for, and by which call.
        detail: String,
    },

    /// The change clashes with what the provider holds, e.g. an identical record exists.
    #[error("{provider}: conflict: {detail}")]
    Conflict {
        /// Provider name.
        provider: &'static str,
        /// The call and the provider's message.
        detail: String,
    },

    /// The provider asked us to slow down (HTTP 429).
    #[error("{provider}: rate limited{}", match retry_after {
        Some(wait) => format!(", retry after {} s", wait.as_secs()),
        None => String::new(),
    })]
    RateLimited {
        /// Provider name.
        provider: &'static str,
        /// How long the provider asked us to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },

    /// A failure that may pass: HTTP 5xx, a timeout, a refused connection.
    #[error("{provider}: temporary failure: {detail}")]
    Transient {
        /// Provider name.
        provider: &'static str,
        /// The call and what failed.
        detail: String,
    },

    /// The provider does not offer this operation.
    #[error("{provider} does not support {operation}")]
    Unsupported {
        /// Provider name.
        provider: &'static str,
        /// The operation asked for, e.g. `enable_health_check`.
        operation: &'static str,
    },

    /// A record id this provider could not have issued.
    #[error("{provider}: {id:?} is not a record id of this provider: {reason}")]
    InvalidRecordId {
        /// Provider name.
        provider: &'static str,
        /// The id given (cut to 300 characters).
        id: String,
        /// Why it is not one.
        reason: &'static str,
    },

    /// A name the reconciler or a provider was asked to manage lies outside its zone.
    #[error(
        "{name} is not in the zone {zone}: manage it in its own zone or set its records by hand"
    )]
    OutsideZone {
        /// The name (a host name, or a record name such as `_acme-challenge.app.hoge.com`).
        name: DnsName,
        /// The zone the reconciler manages.
        zone: Hostname,
    },

    /// Any other provider failure: a rejected request, an answer we could not read.
    #[error("{provider}: {source}")]
    Other {
        /// Provider name.
        provider: &'static str,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether trying again later may succeed ([`RateLimited`](Self::RateLimited) and
    /// [`Transient`](Self::Transient)).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    /// Whether the zone or record does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rate_limits_and_transient_failures_are_retryable() {
        let rate = Error::RateLimited {
            provider: "cloudflare",
            retry_after: Some(Duration::from_secs(7)),
        };
        assert!(rate.is_retryable());
        assert_eq!(
            rate.to_string(),
            "cloudflare: rate limited, retry after 7 s"
        );
        let auth = Error::Auth {
            provider: "powerdns",
            detail: "GET /api/v1/servers/localhost/zones: HTTP 401".into(),
        };
        assert!(!auth.is_retryable());
        assert!(auth.to_string().contains("HTTP 401"));
        assert!(
            Error::NotFound {
                provider: "memory",
                detail: "record 7".into()
            }
            .is_not_found()
        );
    }
}
