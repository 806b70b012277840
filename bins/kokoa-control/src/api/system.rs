//! `/health` and the OpenAPI document.

use axum::Json;
use utoipa::openapi::OpenApi;

use super::HealthAnswer;

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
