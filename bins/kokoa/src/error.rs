use std::{io, path::PathBuf, process::ExitCode};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The command line, environment or configuration file is not usable.
    #[error("{0}")]
    Usage(String),

    /// The API answered with an error: shown as the API said it.
    #[error("{code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error code, e.g. `conflict`.
        code: String,
        /// The API's message.
        message: String,
    },

    /// The control plane could not be reached.
    #[error("cannot reach {url}: {message}")]
    Http {
        /// The URL asked.
        url: String,
        /// The cause, with its own causes.
        message: String,
    },

    /// The control plane's answer is not what the API promises.
    #[error("{url} answered {status} with a body that cannot be read: {message}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        message: String,
    },

    /// A local file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl Error {
    /// 2 for usage errors, 1 for everything else.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}
