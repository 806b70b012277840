//! Why a duty's step, or a request a duty answers, failed.

/// Why a duty's step, or a request a duty answers (a node's payload, a key rotation),
/// failed. A web API maps [`Store`](Self::Store) by the store's error (not found,
/// conflict, ...), [`Conflict`](Self::Conflict) to 409 and [`Internal`](Self::Internal)
/// to 500.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] kokoa_core::Error),
    /// What was asked conflicts with the current state, e.g. a key rotation already
    /// running; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// Something that should not happen did: stored data that does not build a
    /// configuration, a value that does not serialise.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An [`Internal`](Self::Internal) error caused by `cause`.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Self::Internal(cause.to_string())
    }

    /// Whether the store found no such row.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Store(kokoa_core::Error::NotFound { .. }))
    }
}
