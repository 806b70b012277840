//! `GET /api/v1/routes/{id}/traffic` and `GET /api/v1/edge-nodes/{id}/traffic`: the
//! built-in traffic analytics (see [`crate::runtime::traffic`]).

use axum::{Json, extract::State};
use kokoa_core::{EdgeNodeId, RouteId, Timestamp, TrafficCounts, TrafficResolution, TrafficScope};

use super::{ApiPath, ApiQuery, RangeQuery, TrafficBucket, TrafficFigures, TrafficSeries, path_id};
use crate::{
    auth::Reader,
    error::{ApiError, ErrorBody},
    state::AppState,
};

fn parse_range(range: Option<&str>) -> Result<(TrafficResolution, i64), ApiError> {
    match range.unwrap_or("1h") {
        "1h" => Ok((TrafficResolution::Minute, 60)),
        "24h" => Ok((TrafficResolution::Minute, 24 * 60)),
        "30d" => Ok((TrafficResolution::Hour, 30 * 24)),
        other => Err(ApiError::invalid(
            "range",
            format!("unknown range {other:?}: use 1h, 24h or 30d"),
        )),
    }
}

async fn series(
    state: &AppState,
    scope: TrafficScope,
    range: Option<String>,
) -> Result<TrafficSeries, ApiError> {
    let (resolution, count) = parse_range(range.as_deref())?;
    let step = resolution.seconds();
    let from = resolution
        .bucket_start(Timestamp::now())
        .plus_secs(-step * (count - 1));
    let stored = state
        .store()
        .traffic_series(resolution, &scope, from)
        .await?;
    let mut total = TrafficCounts::default();
    let mut stored = stored.into_iter().peekable();
    let buckets = (0..count)
        .map(|i| {
            let start = from.plus_secs(step * i);
            let counts = match stored.next_if(|p| p.start <= start) {
                Some(point) if point.start == start => point.counts,
                _ => TrafficCounts::default(),
            };
            total.add(&counts);
            TrafficBucket {
                start,
                figures: TrafficFigures::from(&counts),
            }
        })
        .collect();
    Ok(TrafficSeries {
        range: range.unwrap_or_else(|| "1h".to_owned()),
        step_seconds: step,
        buckets,
        total: TrafficFigures::from(&total),
    })
}

/// A route's traffic over every edge: requests, 5xx errors and the 95th percentile
/// latency, by minute or by hour.
#[utoipa::path(
    get,
    path = "/api/v1/routes/{id}/traffic",
    tag = "routes",
    params(("id" = String, Path, description = "Route id"), RangeQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The series", body = TrafficSeries),
        (status = 404, description = "Unknown route", body = ErrorBody),
        (status = 422, description = "Unknown range", body = ErrorBody),
    )
)]
pub(super) async fn route_traffic(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<TrafficSeries>, ApiError> {
    let id: RouteId = path_id("route", &id)?;
    let route = state.store().get_route(&id).await?;
    let scope = TrafficScope::Host(route.hostname.as_str().to_ascii_lowercase());
    Ok(Json(series(&state, scope, query.range).await?))
}

/// An edge's traffic over every host name it serves.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/{id}/traffic",
    tag = "edge-nodes",
    params(("id" = String, Path, description = "Edge node id"), RangeQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The series", body = TrafficSeries),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
        (status = 422, description = "Unknown range", body = ErrorBody),
    )
)]
pub(super) async fn edge_traffic(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<TrafficSeries>, ApiError> {
    let id: EdgeNodeId = path_id("edge node", &id)?;
    state.store().get_edge(&id).await?;
    Ok(Json(
        series(&state, TrafficScope::Edge(id), query.range).await?,
    ))
}
