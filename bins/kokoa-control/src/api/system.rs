//! `/health`, the OpenAPI document, and `/api/v1/internal/events` where modules report
//! events (SPEC §8.7).

use axum::{Json, http::StatusCode};
use utoipa::openapi::OpenApi;

use super::{ApiJson, EventAccepted, EventRequest, HealthAnswer};
use crate::{auth::Admin, error::ApiError};

/// Liveness of the control plane.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The control plane is up", body = HealthAnswer))
)]
pub(super) async fn health() -> Json<HealthAnswer> {
    Json(HealthAnswer {
        status: "ok".into(),
    })
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object))
)]
pub(super) async fn openapi_document() -> Json<&'static OpenApi> {
    Json(super::openapi())
}
/// Longest event type accepted.
const MAX_TYPE_LEN: usize = 100;

/// Accepts a module's event, e.g. `{"type":"dns.record.added","data":{…}}`. Events are
/// logged (type and the names of the data fields, not their values, which may hold
/// secrets); routing them to subscribers comes with the event bus.
#[utoipa::path(
    post,
    path = "/api/v1/internal/events",
    tag = "system",
    request_body = EventRequest,
    security(("bearer" = [])),
    responses((status = 202, description = "Accepted", body = EventAccepted))
)]
pub(super) async fn post_event(
    Admin(caller): Admin,
    ApiJson(event): ApiJson<EventRequest>,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let well_formed = (1..=MAX_TYPE_LEN).contains(&event.kind.len())
        && event
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !well_formed {
        return Err(ApiError::invalid(
            "type",
            format!(
                "event type {:?} is not 1-{MAX_TYPE_LEN} characters of a-z, 0-9, '.', '_' and '-', \
                 like \"dns.record.added\"",
                event
                    .kind
                    .chars()
                    .take(MAX_TYPE_LEN + 1)
                    .collect::<String>()
            ),
        ));
    }
    let fields: Vec<&str> = event.data.keys().map(String::as_str).collect();
    tracing::info!(event = %event.kind, ?fields, by = %caller.id(), "event received");
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            message: "Event accepted".into(),
        }),
    ))
}
