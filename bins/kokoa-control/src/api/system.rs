//! `/health`, `/ready`, `/metrics` and the OpenAPI document.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use utoipa::openapi::OpenApi;

use super::{HealthAnswer, TargetGroup};
use crate::{auth::Reader, error::ApiError, state::AppState};

/// How long the database may take to answer a readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness of the control plane: the process answers. It does not look at the database,
/// so a database outage never gets the control plane restarted.
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

/// Readiness: the control plane can serve, its database answers within 2 s and has the
/// schema this build uses (not a backup of an older one restored under it, nor one a
/// newer version upgraded). A load balancer or orchestrator sends requests only to a ready
/// control plane; edges keep serving their last configuration either way.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "system",
    responses(
        (status = 200, description = "The database answers", body = HealthAnswer),
        (status = 503, description = "The database does not answer, or its schema is not \
            this build's", body = HealthAnswer)
    )
)]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let asked = state.store().schema_versions();
    let reason = match tokio::time::timeout(READY_TIMEOUT, asked).await {
        Ok(Ok((found, built))) if found == built => {
            return Json(HealthAnswer {
                status: "ready".into(),
            })
            .into_response();
        }
        Ok(Ok((found, built))) => {
            tracing::warn!(
                found,
                built,
                "not ready: the database's schema is not this build's"
            );
            format!(
                "not_ready: the database's schema is version {found}, this control plane's \
                 {built}"
            )
        }
        // The detail goes to the log only: this answer is for anyone who asks.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database failed");
            "not_ready: the database failed".to_owned()
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within 2 s");
            "not_ready: the database did not answer within 2 s".to_owned()
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(HealthAnswer { status: reason }),
    )
        .into_response()
}

/// The control plane's metrics in the Prometheus text format (0.0.4): edges by status and
/// health, origins by status, routes, certificate expiry per host name, modules, leadership
/// and the API's requests with their latency histogram. Scrape it with an API token of any
/// role as the bearer token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "No valid token", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Response, ApiError> {
    Ok(crate::metrics::response(
        crate::metrics::render(&state).await?,
    ))
}

/// The edges and origins that serve their own metrics (`--metrics-listen`, told in their
/// heartbeats), in the format of Prometheus's HTTP service discovery (`http_sd_configs`):
/// a replaced edge is scraped without anyone editing Prometheus's configuration. An agent
/// listening on every address is listed at the edge's public address; deleted edges are
/// left out.
#[utoipa::path(
    get,
    path = "/api/v1/prometheus/targets",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One target group per node", body = Vec<TargetGroup>),
        (status = 401, description = "No valid token", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn prometheus_targets(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    Ok(Json(crate::metrics::targets(&state).await?))
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
