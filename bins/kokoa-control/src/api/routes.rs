//! `/api/v1/routes`: published host names and the origin port each goes to.

use axum::{Json, extract::State, http::StatusCode};
use kokoa_core::{CertificateMode, Hostname, OriginId, Port, Route, RouteId, Timestamp};

use super::{ApiJson, ApiPath, RouteList, RouteRequest, RouteView, path_id, valid};
use crate::{
    auth::{Admin, Reader},
    error::ApiError,
    state::AppState,
};

impl From<Route> for RouteView {
    fn from(r: Route) -> Self {
        Self {
            id: r.id,
            hostname: r.hostname,
            origin_id: r.origin_id,
            target_port: r.target_port,
            certificate: r.certificate,
            created_at: r.created_at,
            warnings: Vec::new(),
        }
    }
}

/// Validates a request into a route with the given id and creation time.
fn route(body: RouteRequest, id: RouteId, created_at: Timestamp) -> Result<Route, ApiError> {
    let route = Route {
        id,
        hostname: valid("hostname", Hostname::parse(&body.hostname))?,
        origin_id: valid("origin_id", OriginId::parse(&body.origin_id))?,
        target_port: valid("target_port", Port::try_from(body.target_port))?,
        certificate: body
            .certificate
            .as_deref()
            .map(|c| valid("certificate", c.parse()))
            .transpose()?
            .unwrap_or_default(),
        created_at,
    };
    if route.hostname.is_wildcard() && route.certificate == CertificateMode::Http01 {
        return Err(ApiError::invalid(
            "certificate",
            format!(
                "{} is a wildcard name: ACME validates wildcard names only with dns-01; use \
                 \"certificate\": \"dns-01\" (with the name's zone managed), \"manual\" or \"none\"",
                route.hostname
            ),
        ));
    }
    Ok(route)
}

/// A route changed: edges, DNS and certificates follow at once.
fn changed(state: &AppState) {
    state.notify_changed();
    state.wakers().everywhere(state);
}

/// An unknown origin in the body is reported against the `origin_id` field.
fn origin_field(e: kokoa_core::Error) -> ApiError {
    let not_found = e.is_not_found();
    let err = ApiError::from(e);
    if not_found {
        err.with_field("origin_id")
    } else {
        err
    }
}

/// Creates a route.
#[utoipa::path(
    post,
    path = "/api/v1/routes",
    tag = "routes",
    request_body = RouteRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = RouteView),
        (status = 404, description = "Unknown origin", body = crate::error::ErrorBody),
        (status = 409, description = "The host name has a route already", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn create_route(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<RouteRequest>,
) -> Result<(StatusCode, Json<RouteView>), ApiError> {
    let route = route(body, RouteId::new(), Timestamp::now())?;
    state
        .store()
        .create_route(&route)
        .await
        .map_err(origin_field)?;
    changed(&state);
    tracing::info!(route = %route.id, hostname = %route.hostname, "route created");
    let ordered = matches!(
        route.certificate,
        CertificateMode::Http01 | CertificateMode::Dns01
    );
    let warning = (ordered && state.acme().is_none()).then(|| {
        format!(
            "no certificate will be ordered for {}: this control plane has no [acme] section, \
             so the edges present their fallback certificate for it (configure [acme], upload \
             one with POST /api/v1/certificates, or create the route with certificate \"none\")",
            route.hostname
        )
    });
    let mut view = RouteView::from(route);
    view.warnings.extend(warning);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists every route.
#[utoipa::path(
    get,
    path = "/api/v1/routes",
    tag = "routes",
    security(("bearer" = [])),
    responses((status = 200, description = "All routes, by host name", body = RouteList))
)]
pub(super) async fn list_routes(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<RouteList>, ApiError> {
    let routes = state.store().list_routes().await?;
    Ok(Json(RouteList {
        routes: routes.into_iter().map(Into::into).collect(),
    }))
}

/// One route.
#[utoipa::path(
    get,
    path = "/api/v1/routes/{id}",
    tag = "routes",
    params(("id" = String, Path, description = "Route id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The route", body = RouteView),
        (status = 404, description = "Unknown route", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn get_route(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RouteView>, ApiError> {
    let id: RouteId = path_id("route", &id)?;
    Ok(Json(state.store().get_route(&id).await?.into()))
}

/// Replaces a route's host name, origin and port.
#[utoipa::path(
    put,
    path = "/api/v1/routes/{id}",
    tag = "routes",
    params(("id" = String, Path, description = "Route id")),
    request_body = RouteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated route", body = RouteView),
        (status = 404, description = "Unknown route or origin", body = crate::error::ErrorBody),
        (status = 409, description = "The host name has another route", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn update_route(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RouteRequest>,
) -> Result<Json<RouteView>, ApiError> {
    let id: RouteId = path_id("route", &id)?;
    let current = state.store().get_route(&id).await?;
    let route = route(body, id, current.created_at)?;
    state
        .store()
        .update_route(&route)
        .await
        .map_err(origin_field)?;
    changed(&state);
    tracing::info!(route = %route.id, hostname = %route.hostname, "route updated");
    Ok(Json(route.into()))
}

/// Deletes a route.
#[utoipa::path(
    delete,
    path = "/api/v1/routes/{id}",
    tag = "routes",
    params(("id" = String, Path, description = "Route id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown route", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn delete_route(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: RouteId = path_id("route", &id)?;
    state.store().delete_route(&id).await?;
    changed(&state);
    tracing::info!(route = %id, "route deleted");
    Ok(StatusCode::NO_CONTENT)
}
