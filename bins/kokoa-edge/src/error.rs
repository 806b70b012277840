use std::{io, path::PathBuf};

use kokoa_agent::{ApiError, with_causes};

/// The error type of the edge agent.
///
/// No variant ever holds the node credential or a WireGuard private key: errors end up in
/// logs and in heartbeats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the state directory (or the nginx prefix) could not be read or written.
    #[error("cannot {action} {path:?}: {source}")]
    Io {
        /// What was being done: `"read"`, `"write"`, `"create directory"`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A state file exists but does not hold what it should.
    #[error("{path:?} is not valid: {message}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The agent has not been enrolled yet.
    #[error(
        "no credential at {path:?}; run `kokoa-edge enroll --control-plane URL --token TOKEN` first"
    )]
    NotEnrolled {
        /// Where the credential was expected.
        path: PathBuf,
    },

    /// The control plane URL cannot be used.
    #[error("invalid control plane URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A request to the control plane did not complete (connection refused, timeout, ...).
    #[error("request to {url} failed: {}", with_causes(source))]
    Http {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },

    /// The control plane does not accept the credential or enrollment token.
    #[error(
        "{url} answered {status}: the credential or token is not accepted; \
         issue a new enrollment token and run `kokoa-edge enroll` again"
    )]
    Unauthorized {
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
    },

    /// The control plane answered with an unexpected status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },

    /// The control plane's answer is not what the API promises.
    #[error("{url} sent an answer that cannot be read: {message}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        message: String,
    },

    /// Enrollment made this credential for something other than an edge.
    #[error("the token enrolls a node of kind {kind:?}; use an edge enrollment token")]
    WrongNodeKind {
        /// The kind the control plane returned.
        kind: String,
    },

    /// A configuration payload was refused: it does not match its hash, does not parse, or
    /// cannot be turned into nginx and WireGuard settings. The previous one keeps serving.
    #[error("refused configuration {hash}: {reason}")]
    Refused {
        /// The `config_hash` the payload stated (or `unknown` when it had none).
        hash: String,
        /// Why.
        reason: String,
    },

    /// nginx refused or failed to take the configuration.
    #[error(transparent)]
    Nginx(#[from] kokoa_nginx::Error),

    /// WireGuard could not be set up.
    #[error(transparent)]
    WireGuard(#[from] kokoa_wg::Error),

    /// The fallback certificate could not be generated.
    #[error("cannot generate the fallback certificate: {0}")]
    Certificate(String),

    /// The nginx worker user is not in `/etc/passwd`.
    #[error("user {0:?} does not exist; create it or pass another --nginx-user")]
    UnknownUser(String),
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidUrl { url, reason } => Self::InvalidUrl { url, reason },
            ApiError::Http { url, source } => Self::Http { url, source },
            ApiError::Status {
                url,
                status: status @ (401 | 403),
                ..
            } => Self::Unauthorized { url, status },
            ApiError::Status { url, status, body } => Self::Status {
                url,
                status,
                body: body.chars().take(300).collect(),
            },
            ApiError::BadAnswer { url, message } => Self::BadAnswer { url, message },
            ApiError::WrongNodeKind { kind } => Self::WrongNodeKind { kind },
        }
    }
}

impl Error {
    /// Whether the control plane could not be reached at all (no answer, or a proxy in
    /// front of it saying it has no backend): it is restarting or moving, and is asked
    /// again within a second rather than after a growing back-off.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Http { .. }
                | Self::Status {
                    status: 502..=504,
                    ..
                }
        )
    }

    /// Whether the payload itself is at fault (trying it again cannot help), as opposed to a
    /// failure of this host that a retry may fix.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. }
                | Self::Nginx(
                    kokoa_nginx::Error::ConfigRejected { .. }
                        | kokoa_nginx::Error::DuplicateHostname(_)
                        | kokoa_nginx::Error::ZeroRateLimit { .. }
                )
        )
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
