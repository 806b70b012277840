use std::{io, path::PathBuf};

use kokoa_core::Hostname;

use crate::CertName;

/// The error type of `kokoa-nginx`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate name is not a safe file stem.
    #[error(
        "invalid certificate name {input:?}: {reason}; use 1-251 characters of a-z, A-Z, 0-9, \
         '.', '_' and '-', starting with a letter, a digit or '_'"
    )]
    InvalidCertName {
        /// The text as it was given (cut to 300 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Two routes name the same hostname; nginx would refuse the map.
    #[error("hostname {0} has more than one route; keep one route per hostname")]
    DuplicateHostname(Hostname),

    /// The request rate or the connection limit is zero, which would refuse every client.
    #[error("rate limit {field} is 0; it must be at least 1")]
    ZeroRateLimit {
        /// The field of [`RateLimits`](crate::RateLimits) that is zero.
        field: &'static str,
    },

    /// A limit is above what nginx accepts.
    #[error("rate limit {field} is {value}; nginx accepts at most {max}")]
    RateLimitTooLarge {
        /// The field of [`RateLimits`](crate::RateLimits).
        field: &'static str,
        /// The value given.
        value: u32,
        /// The largest value nginx accepts.
        max: u32,
    },

    /// A path cannot be written into an nginx configuration safely.
    #[error("path {path:?} cannot be used in an nginx configuration: {reason}")]
    UnsafePath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The worker user name is not a plain system user name.
    #[error(
        "invalid worker user {0:?}: use a-z, A-Z, 0-9, '_' and '-', starting with a letter or '_'"
    )]
    InvalidUser(String),

    /// A certificate that the configuration refers to has no file in the certificate
    /// directory; nginx would fail the TLS handshake for that hostname.
    #[error(
        "certificate {name} is referenced but {path:?} does not exist; write it before applying"
    )]
    MissingCertificate {
        /// The certificate name.
        name: CertName,
        /// The file that is missing.
        path: PathBuf,
    },

    /// `nginx -t` rejected the candidate configuration; the live one was left untouched.
    #[error("nginx rejected the candidate configuration {config:?}: {message}")]
    ConfigRejected {
        /// The candidate main configuration file that was tested.
        config: PathBuf,
        /// What nginx printed.
        message: String,
    },

    /// An nginx command (start, reload, stop) failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line that was run.
        command: String,
        /// What nginx printed, or the exit status when it printed nothing.
        message: String,
    },

    /// nginx did not reach the expected state in time.
    #[error("{what} after {waited_ms} ms")]
    Timeout {
        /// What was waited for, e.g. "nginx did not write its pid file".
        what: String,
        /// How long we waited.
        waited_ms: u128,
    },

    /// The nginx binary could not be run.
    #[error(
        "cannot run nginx binary {binary:?}: {source}; install it with `apt-get install -y --no-install-recommends nginx`"
    )]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Reading or writing a file failed.
    #[error("{action} {path:?}: {source}")]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    /// Whether nginx refused a candidate configuration (the previous one keeps serving).
    pub fn is_config_rejected(&self) -> bool {
        matches!(self, Self::ConfigRejected { .. })
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
