//! Errors: [`ApiError`] is what an API client sees, [`Error`] is what stops the program
//! (bad configuration, unreadable key file, database that cannot be opened).

use std::{io, path::PathBuf};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to an API client as
/// `{"error":{"code":"…","message":"…","field":"…"}}` with the matching status.
///
/// Messages name the offending value (never a secret). Storage failures are logged in
/// full and answered with a generic message, so database details do not leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the request field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the body is not JSON or a parameter cannot be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no bearer token, or one nobody issued.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid token that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for an unknown id.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} with id {id:?}"),
        )
    }

    /// 422: `field` holds a value that is not acceptable; `problem` says why and quotes it.
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            problem.to_string(),
        )
        .with_field(field)
    }

    /// 500, after logging `cause`.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the control plane's log has the details",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code, e.g. `not_found`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `invalid_value`, `internal`.
    pub code: String,
    /// What was wrong, quoting the offending value, and what to do.
    pub message: String,
    /// The request field at fault, e.g. `hostname` or `services[1].port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<kokoa_runtime::Error> for ApiError {
    fn from(e: kokoa_runtime::Error) -> Self {
        match e {
            kokoa_runtime::Error::Store(e) => e.into(),
            kokoa_runtime::Error::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            e => Self::internal(&e),
        }
    }
}

impl From<kokoa_core::Error> for ApiError {
    fn from(e: kokoa_core::Error) -> Self {
        use kokoa_core::Error as E;
        match &e {
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            E::Conflict { what, .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string()).with_field(*what)
            }
            E::InUse { .. } => Self::new(StatusCode::CONFLICT, "in_use", e.to_string()),
            E::IllegalTransition { .. }
            | E::PoolExhausted { .. }
            | E::SubnetFull { .. }
            | E::NoFreePort { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::EnrollmentRefused { .. } => Self::unauthorized(e.to_string()),
            _ => Self::internal(&e),
        }
    }
}

/// Why the program could not start or finish a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `init` was pointed at a directory that already holds files.
    #[error(
        "data directory {} already exists and is not empty; choose a new directory, or \
         run `kokoa-control serve --data-dir {}` to use the existing one",
        .0.display(), .0.display()
    )]
    DataDirNotEmpty(PathBuf),

    /// No data directory was given by flag, environment or configuration file.
    #[error(
        "no data directory: pass --data-dir DIR, set KOKOA_DATA_DIR or `data_dir` in the \
         configuration file"
    )]
    NoDataDir,

    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `cannot read master key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// The configuration file is not valid.
    #[error("invalid configuration file {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },

    /// A setting holds a value that cannot be used.
    #[error("invalid setting {setting}: {message}")]
    Setting {
        /// The setting, e.g. `public_url`.
        setting: &'static str,
        /// What is wrong, quoting the value.
        message: String,
    },

    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },

    /// The store or a domain rule failed.
    #[error(transparent)]
    Core(#[from] kokoa_core::Error),

    /// A sign-in through the OpenID provider failed.
    #[error("single sign-on failed at the {step} step: {message}")]
    Oidc {
        /// The step: `discovery`, `token`, `ID token`, `access`, ...
        step: &'static str,
        /// What went wrong (never a token or secret).
        message: String,
    },

    /// The server stopped with an error.
    #[error("server error: {0}")]
    Serve(io::Error),

    /// The control plane's TLS cannot be set up.
    #[error("cannot set up TLS: {message}")]
    Tls {
        /// What went wrong, naming the file or value.
        message: String,
    },
}
