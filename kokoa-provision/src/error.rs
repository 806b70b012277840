//! The error type of `kokoa-provision`.

use std::time::Duration;

use crate::{InstanceId, InstanceStatus};

/// What went wrong creating, inspecting or destroying an edge VPS, or in a setting.
///
/// Provider variants name the provider (`digitalocean`, `vultr`, ...) and, in `detail`, the
/// call that failed (`POST /v2/droplets`) and what the provider said. API tokens and
/// enrollment tokens are never part of a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The provider refused the API token (HTTP 401, or 403 for a token without the
    /// permission).
    #[error(
        "{provider}: the API token was refused ({detail}); check the token and that it may create and delete servers"
    )]
    Auth {
        /// Provider name.
        provider: &'static str,
        /// The call and the provider's message.
        detail: String,
    },

    /// The instance (or another resource named in the call) does not exist.
    #[error("{provider}: not found: {detail}")]
    NotFound {
        /// Provider name.
        provider: &'static str,
        /// The call and the provider's message.
        detail: String,
    },

    /// The request clashes with what the provider holds, e.g. a server of that name exists.
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
        /// How long the provider asked us to wait (`Retry-After`, or the time until its
        /// rate-limit window resets), when it said.
        retry_after: Option<Duration>,
    },

    /// A failure that may pass: HTTP 5xx, a locked resource, a timeout, a refused
    /// connection.
    #[error("{provider}: temporary failure: {detail}")]
    Transient {
        /// Provider name.
        provider: &'static str,
        /// The call and what failed.
        detail: String,
    },

    /// The provider refused the request as given (HTTP 400, 422, ...): an unknown region,
    /// size or image, a malformed field. Retrying the same request will not help.
    #[error("{provider}: request refused: {detail}; check the region, size and image")]
    Rejected {
        /// Provider name.
        provider: &'static str,
        /// The call, the status and the provider's message.
        detail: String,
    },

    /// The account may not have more servers (or vCPUs) there: a limit the provider only
    /// raises on request. Retrying soon will not help; another provider or region may.
    #[error(
        "{provider}: account limit reached: {detail}; ask the provider to raise the limit, or place the edge at another provider or region"
    )]
    Quota {
        /// Provider name.
        provider: &'static str,
        /// The call, the provider's message and what was asked for.
        detail: String,
    },

    /// The instance has no address to reach yet (or any more).
    #[error("instance {instance} is {status}, not running with a public address")]
    NotRunning {
        /// The instance.
        instance: InstanceId,
        /// What the provider reports.
        status: InstanceStatus,
    },

    /// A value in a configuration or request is not acceptable.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidConfig {
        /// Which field, e.g. `region`, `control_plane_url`.
        field: &'static str,
        /// The value given (cut to 100 characters; secrets are replaced by a placeholder).
        value: String,
        /// What is wrong with it and what is expected.
        reason: &'static str,
    },

    /// The provider cannot do this at all, e.g. list its instances by tag: a provider
    /// written before [`Provisioner::list_instances`](crate::Provisioner::list_instances)
    /// existed.
    #[error("{provider}: {operation} is not supported by this provider")]
    Unsupported {
        /// Provider name (owned: it comes from [`Provisioner::name`](crate::Provisioner::name)).
        provider: String,
        /// What was asked, e.g. `listing instances by tag`.
        operation: &'static str,
    },

    /// Any other provider failure, e.g. an answer that could not be read.
    #[error("{provider}: {source}")]
    Other {
        /// Provider name.
        provider: &'static str,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether trying again later may succeed: rate limits, temporary failures, and an
    /// instance that is still being provisioned.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transient { .. } => true,
            Self::NotRunning { status, .. } => *status == InstanceStatus::Provisioning,
            _ => false,
        }
    }

    /// Whether the instance or resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether the provider cannot do this at all ([`Unsupported`](Self::Unsupported)).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }

    /// An [`InvalidConfig`](Self::InvalidConfig) error, cutting `value` so a megabyte of
    /// input does not end up in a log line.
    pub(crate) fn invalid(field: &'static str, value: &str, reason: &'static str) -> Self {
        Self::InvalidConfig {
            field,
            value: value.chars().take(100).collect(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        let rate = Error::RateLimited {
            provider: "vultr",
            retry_after: Some(Duration::from_secs(7)),
        };
        assert!(rate.is_retryable());
        assert_eq!(rate.to_string(), "vultr: rate limited, retry after 7 s");
        let id = InstanceId::parse("42").unwrap();
        let provisioning = Error::NotRunning {
            instance: id.clone(),
            status: InstanceStatus::Provisioning,
        };
        assert!(provisioning.is_retryable());
        let gone = Error::NotRunning {
            instance: id,
            status: InstanceStatus::Gone,
        };
        assert!(!gone.is_retryable());
        assert_eq!(
            gone.to_string(),
            "instance 42 is gone, not running with a public address"
        );
        let auth = Error::Auth {
            provider: "hetzner",
            detail: "GET /v1/servers/1: HTTP 401: unauthorized".into(),
        };
        assert!(!auth.is_retryable() && !auth.is_not_found());
        let unsupported = Error::Unsupported {
            provider: "custom".into(),
            operation: "listing instances by tag",
        };
        assert!(unsupported.is_unsupported() && !unsupported.is_retryable());
        assert_eq!(
            unsupported.to_string(),
            "custom: listing instances by tag is not supported by this provider"
        );
    }

    #[test]
    fn invalid_values_are_cut() {
        let err = Error::invalid("image", &"x".repeat(10_000), "too long");
        assert!(err.to_string().len() < 200, "{err}");
        assert!(err.to_string().starts_with("invalid image \"xxx"), "{err}");
    }
}
