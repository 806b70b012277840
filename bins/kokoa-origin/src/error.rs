use std::{io, path::PathBuf};

/// The error type of the origin agent.
///
/// No variant ever holds the node credential, an enrollment token or a WireGuard private
/// key: errors end up in logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
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

    /// A state file or the bundle's `credentials.json` does not hold what it should.
    #[error("{path:?} is not valid: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The agent has not been enrolled yet.
    #[error(
        "no credential at {path:?}; run `kokoa-origin enroll --bundle credentials.json` \
         (or `--control-plane URL --token TOKEN`) first"
    )]
    NotEnrolled {
        /// Where the credential was expected.
        path: PathBuf,
    },

    /// `enroll` was given neither a bundle nor a control plane URL and token.
    #[error("give --bundle FILE, or both --control-plane URL and --token TOKEN")]
    EnrollArguments,

    /// The control plane URL cannot be used.
    #[error("invalid control plane URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A request to the control plane did not complete (connection refused, timeout, ...).
    #[error("request to {url} failed: {message}")]
    Http {
        /// The URL asked.
        url: String,
        /// The cause, with its own causes.
        message: String,
    },

    /// The control plane answered with an error status.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's error message (or the start of the body).
        message: String,
    },

    /// The control plane's answer is not what the API promises.
    #[error("{url} sent an answer that cannot be read: {message}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        message: String,
    },

    /// Enrollment made a credential for something other than an origin.
    #[error("the token enrolls a node of kind {kind:?}; use an origin enrollment token")]
    WrongNodeKind {
        /// The kind the control plane returned.
        kind: String,
    },

    /// The configuration cannot be used: its `wg0.conf` does not parse or names no address.
    #[error("refused configuration {hash}: {reason}")]
    Refused {
        /// Its `config_hash`.
        hash: String,
        /// Why.
        reason: String,
    },

    /// The firewall rules (SPEC §10.5) cannot be made or installed; the agent keeps
    /// serving without them and reports this in its heartbeat.
    #[error("{message}")]
    Firewall {
        /// What went wrong, with nft's own message.
        message: String,
    },

    /// WireGuard could not be set up.
    #[error(transparent)]
    WireGuard(#[from] kokoa_wg::Error),
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

    /// Whether the control plane refused the credential (401 or 403): retrying cannot help.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 401 | 403,
                ..
            }
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
