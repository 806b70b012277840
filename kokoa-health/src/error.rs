use std::time::Duration;

use crate::CheckKind;

/// Why a check configuration or a threshold was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A threshold of zero would flip the state without any result at all.
    #[error("{name} is 0; it counts consecutive results and must be at least 1")]
    ZeroThreshold {
        /// `threshold` or `recovery_threshold`.
        name: &'static str,
    },
    /// A zero interval or timeout.
    #[error("{name} is 0 s; give it a positive number of seconds")]
    ZeroDuration {
        /// `interval` or `timeout`.
        name: &'static str,
    },
    /// The timeout is longer than the interval, so checks would overlap.
    #[error(
        "timeout {timeout:?} is longer than interval {interval:?}; a check must end before the next one starts"
    )]
    TimeoutExceedsInterval {
        /// The configured timeout.
        timeout: Duration,
        /// The configured interval.
        interval: Duration,
    },
    /// Port 0 cannot be connected to.
    #[error("port 0 is not a port a check can connect to; use 1-65535")]
    PortZero,
    /// A field the check kind needs is missing or empty.
    #[error("the {kind} check needs `{field}`")]
    MissingField {
        /// The kind of the check.
        kind: CheckKind,
        /// The name of the missing field.
        field: &'static str,
    },
    /// The URL does not fit the check kind.
    #[error("url {url:?} of the {kind} check must start with {expected} and name a host")]
    InvalidUrl {
        /// The kind of the check.
        kind: CheckKind,
        /// The offending URL.
        url: String,
        /// The scheme(s) accepted for this kind.
        expected: &'static str,
    },
    /// The URL carries a user name or password, which would end up in every message and
    /// in the check history.
    #[error(
        "the url of the {kind} check carries credentials (`user:password@`); health URLs must not, since they are logged and stored"
    )]
    CredentialsInUrl {
        /// The kind of the check.
        kind: CheckKind,
    },
    /// `expected_status` is not an HTTP status code.
    #[error("expected_status {status} is not an HTTP status code; use 100-599")]
    InvalidStatus {
        /// The offending status.
        status: u16,
    },
    /// `any_status_below` lets no HTTP status through, or every one.
    #[error("any_status_below {limit} is not a useful limit; use 101-600")]
    InvalidStatusLimit {
        /// The limit given.
        limit: u16,
    },
    /// `netns` is neither a namespace name nor an absolute path.
    #[error(
        "netns {netns:?} is neither a namespace name (as `ip netns add` takes) nor an absolute path to a namespace file"
    )]
    InvalidNetns {
        /// The offending value.
        netns: String,
    },
    /// An option was set that this kind of check cannot honour.
    #[error("the {kind} check does not take `{field}`: {instead}")]
    UnusedField {
        /// The kind of the check.
        kind: CheckKind,
        /// The option, as written.
        field: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
    /// A trusted root given to the executor is not a PEM certificate rustls accepts.
    #[error("trusted root certificate {index} of the PEM given is unusable: {reason}")]
    InvalidRootCertificate {
        /// Position of the certificate in the PEM text, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}
