//! The lab's error type.

use std::{path::PathBuf, time::Duration};

/// Why the lab could not be built, run, checked or cleaned up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lab needs root (network namespaces, veths, mounts).
    #[error("kokoa-lab must run as root (it creates network namespaces); try: sudo {0}")]
    NotRoot(String),
    /// A previous lab left processes, namespaces or files behind.
    #[error("a previous lab is still present ({0}); run `kokoa-lab down` first")]
    Leftovers(String),
    /// A program the lab drives is missing.
    #[error("cannot find {name} at {path}: build it (`cargo build -p {name}`) or pass --bin-dir")]
    MissingBinary {
        /// The program's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An external command could not start or failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and standard error, or why it did not start.
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A wait ran out of time.
    #[error("timed out after {:.1} s waiting for {what}", after.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the lab waited.
        after: Duration,
    },
    /// The control plane's API answered something unexpected.
    #[error("control plane: {request} answered {status}: {body}")]
    Api {
        /// Method and path.
        request: String,
        /// The HTTP status (0 when there was no answer).
        status: u16,
        /// The answer's body or the transport error.
        body: String,
    },
    /// A scenario step's assertion failed.
    #[error("step {step} ({name}) failed: {message}")]
    Step {
        /// The step's number or letter.
        step: String,
        /// The step's name.
        name: &'static str,
        /// What was expected and what was seen.
        message: String,
    },
    /// The lab's edge provisioner refused its configuration or failed.
    #[error("lab provisioner: {0}")]
    Provision(#[from] kokoa_provision::Error),
    /// The state file is unreadable.
    #[error("state file {} is not valid: {message}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl Error {
    /// A closure turning an I/O error about `path` into [`Error::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
