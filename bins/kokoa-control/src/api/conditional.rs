//! Conditional and long-polling fetches of a node's configuration (SPEC §4 [beyond]).
//!
//! The `ETag` is the configuration hash. A request whose `If-None-Match` holds the current
//! hash gets `304 Not Modified`; with `?wait=N` the answer is held until the configuration
//! changes (then `200` with the new one) or N seconds pass (then `304`). Every change that
//! can alter a payload wakes the waiting requests, which recompute their node's payload and
//! compare hashes, so a change reaches a waiting node in the time one payload takes to
//! build.

use std::{future::Future, time::Duration};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::IntoParams;

use crate::{error::ApiError, state::AppState};

/// The longest a request may wait, in seconds.
pub(super) const MAX_WAIT_SECONDS: u64 = 60;

/// `?wait=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// With `If-None-Match`: hold the request up to this many seconds (at most 60) until the
    /// configuration changes.
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// Answers with the body `compute` returns, its hash as `ETag`, honouring `If-None-Match`
/// and `wait`.
pub(super) async fn conditional<T, F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    query: &WaitQuery,
    mut compute: F,
) -> Result<Response, ApiError>
where
    T: IntoResponse,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(String, T), ApiError>>,
{
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECONDS));
    let deadline = Instant::now() + wait;
    // Subscribed before the first computation, so a change made while it runs still
    // wakes the wait below.
    let mut changes = state.subscribe_changes();
    loop {
        let (hash, body) = compute().await?;
        let etag =
            HeaderValue::try_from(format!("\"{hash}\"")).map_err(|e| ApiError::internal(&e))?;
        if !known.as_deref().is_some_and(|k| matches(k, &hash)) {
            return Ok(([(header::ETAG, etag)], body).into_response());
        }
        // Nothing to wait for: answer now rather than on the timer's next tick (up to a
        // millisecond, most of a cached 304's time).
        if Instant::now() >= deadline {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
        }
        let _held = state.http_metrics().long_poll();
        let changed = tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                matches!(changed, Ok(Ok(())))
            }
            () = state.shutting_down() => false,
        };
        if !changed {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
        }
    }
}

/// Whether an `If-None-Match` value names `hash`: `*`, or a list of (possibly weak) tags.
/// A bare hash without quotes is accepted too, for clients that send `config_hash` as is.
fn matches(if_none_match: &str, hash: &str) -> bool {
    if_none_match.split(',').any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == hash
    })
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn if_none_match_forms() {
        assert!(matches("\"abc\"", "abc"));
        assert!(matches("abc", "abc"));
        assert!(matches("W/\"abc\"", "abc"));
        assert!(matches("\"x\", \"abc\"", "abc"));
        assert!(matches("*", "abc"));
        assert!(!matches("\"abcd\"", "abc"));
        assert!(!matches("", "abc"));
    }
}
