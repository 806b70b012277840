//! Request and operation ids, from an API request to the duties' work and the events both emit.
//!
//! Every API request gets an id: the client's `X-Request-Id` when it is a short token
//! (1–64 of `A-Z a-z 0-9 - _ . :`), otherwise a new `req_…`. The answer carries it in
//! `X-Request-Id`, the request's log lines in a `request` span, and every event emitted
//! while serving it in `data.request_id`. Work a request starts and a duty finishes later
//! keeps the id with what it acts on (an edge's creation or removal, in its lifecycle),
//! so the duty's events carry it too. An action the automation takes on its own (an
//! unhealthy edge removed and replaced) begins an operation id, `op_…`, the same way.

use std::{cell::RefCell, future::Future};

use rand_core::{OsRng, RngCore};
use tracing::Instrument as _;

tokio::task_local! {
    static CURRENT: RefCell<Option<String>>;
}

/// The id of the request or operation the running task works for, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.borrow().clone()).ok().flatten()
}

/// Runs `work` as part of request or operation `id` (none: of nothing yet; an operation
/// may [`begin`] inside).
pub async fn scope<F: Future>(id: Option<String>, work: F) -> F::Output {
    let span = tracing::info_span!("operation", request_id = tracing::field::Empty);
    if let Some(id) = &id {
        span.record("request_id", id.as_str());
    }
    CURRENT.scope(RefCell::new(id), work.instrument(span)).await
}

/// Begins a new operation in the current [`scope`], which it belongs to from now on;
/// returns its id, to be kept with what it acts on.
pub fn begin() -> String {
    let id = generate("op");
    let _ = CURRENT.try_with(|current| *current.borrow_mut() = Some(id.clone()));
    tracing::Span::current().record("request_id", id.as_str());
    id
}

fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The id of a request whose client sent `offered` (e.g. its `X-Request-Id`): taken as it
/// is when acceptable, otherwise a new `req_…`.
pub fn of_request(offered: Option<&str>) -> String {
    offered
        .filter(|id| acceptable(id))
        .map_or_else(|| generate("req"), str::to_owned)
}

/// Runs `work` as part of request `id`, in the caller's span.
pub async fn within<F: Future>(id: String, work: F) -> F::Output {
    CURRENT.scope(RefCell::new(Some(id)), work).await
}

/// Whether a client's id is taken as it is.
fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_ids_are_short_tokens() {
        assert!(acceptable("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(acceptable("req_1.2:3-x"));
        assert!(!acceptable(""));
        assert!(!acceptable(&"a".repeat(65)));
        assert!(!acceptable("a b"));
        assert!(!acceptable("a\"b"));
        assert!(generate("req").starts_with("req_"));
        assert_eq!(generate("op").len(), "op_".len() + 16);
    }

    #[tokio::test]
    async fn an_operation_begun_inside_a_scope_is_current_from_then_on() {
        assert_eq!(current(), None, "outside any scope");
        scope(None, async {
            assert_eq!(current(), None);
            let id = begin();
            assert_eq!(current(), Some(id));
        })
        .await;
        scope(Some("req_1".into()), async {
            assert_eq!(current().as_deref(), Some("req_1"));
        })
        .await;
        assert!(
            begin().starts_with("op_"),
            "outside a scope it only makes an id"
        );
        assert_eq!(current(), None);
    }
}
