//! `/api/v1/origins`: private networks running services, each with its own /24.

use std::collections::HashMap;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use kokoa_core::{
    EdgeStatus, HealthCheckPath, Hostname, Name, NodeRef, Origin, OriginId, OriginService, Port,
    Protocol, Timestamp,
};
use kokoa_store::{NewOrigin, NewService};

use super::{
    ApiJson, ApiPath, ApiQuery, EdgeList, ForceQuery, OriginList, OriginRequest, OriginView,
    RotationStarted, ServiceView,
    edges::{create_tunnel, edge_views},
    path_id,
    tokens::issue_enrollment,
    valid,
};
use crate::{
    auth::{Admin, Reader},
    bundle::{self, Credentials},
    error::{ApiError, ErrorBody},
    payload,
    runtime::rotation::{self, Subject},
    state::AppState,
};

/// How long the enrollment token in an origin bundle stays valid.
const BUNDLE_ENROLLMENT_SECONDS: i64 = 7 * 24 * 3600;

impl From<OriginService> for ServiceView {
    fn from(s: OriginService) -> Self {
        Self {
            id: s.id,
            name: s.name,
            port: s.port,
            protocol: s.protocol,
            health_check_path: s.health_check_path,
        }
    }
}

fn origin_view(
    origin: Origin,
    services: Vec<OriginService>,
    edge_nodes_count: usize,
) -> OriginView {
    let down = payload::ports_down(origin.last_metrics.as_ref());
    let services_down = services
        .iter()
        .filter(|s| down.contains(&s.port.get()))
        .map(|s| s.name.to_string())
        .collect();
    let firewall = origin
        .last_metrics
        .as_ref()
        .and_then(|m| m.get("firewall"))
        .and_then(|f| f.as_str())
        .map(|f| f.chars().take(300).collect());
    OriginView {
        services_down,
        firewall,
        config_download_url: format!("/api/v1/origins/{}/config", origin.id),
        id: origin.id,
        name: origin.name,
        domain: origin.domain,
        status: origin.status,
        edge_nodes_count,
        last_heartbeat: origin.last_heartbeat,
        network_cidr: origin.network_cidr,
        wireguard_ip: origin.wireguard_ip,
        wireguard_public_key: origin.wireguard_public_key,
        services: services.into_iter().map(Into::into).collect(),
        created_at: origin.created_at,
    }
}

fn new_services(body: &OriginRequest) -> Result<Vec<NewService>, ApiError> {
    body.services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = |name: &str| format!("services[{i}].{name}");
            let protocol = match s.protocol.as_deref().unwrap_or("http") {
                "http" => Protocol::Http,
                "https" => Protocol::Https,
                "tcp" => Protocol::Tcp,
                other => {
                    return Err(ApiError::invalid(
                        field("protocol"),
                        format!("unknown protocol {other:?}: use \"http\", \"https\" or \"tcp\""),
                    ));
                }
            };
            Ok(NewService {
                name: valid(&field("name"), Name::parse(&s.name))?,
                port: valid(&field("port"), Port::try_from(s.port))?,
                protocol,
                health_check_path: s
                    .health_check_path
                    .as_deref()
                    .map(|p| valid(&field("health_check_path"), HealthCheckPath::parse(p)))
                    .transpose()?,
            })
        })
        .collect()
}

/// Creates an origin: allocates its /24 and gives every edge that serves all origins a
/// tunnel to it. Its WireGuard key is made by its agent, which registers the public half
/// when it enrolls (`wireguard_public_key` is null until then).
#[utoipa::path(
    post,
    path = "/api/v1/origins",
    tag = "origins",
    request_body = OriginRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = OriginView),
        (status = 409, description = "The name is taken, two services share a name, or no subnet is left", body = ErrorBody),
    )
)]
pub(super) async fn create_origin(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<OriginRequest>,
) -> Result<(StatusCode, Json<OriginView>), ApiError> {
    let name = valid("name", Name::parse(&body.name))?;
    let domain = body
        .domain
        .as_deref()
        .map(|d| valid("domain", Hostname::parse(d)))
        .transpose()?;
    let services = new_services(&body)?;
    let id = OriginId::new();
    let store = state.store();
    let origin = store
        .create_origin(
            state.subnet_pool(),
            NewOrigin {
                id,
                name,
                domain,
                services,
                created_at: Timestamp::now(),
            },
        )
        .await
        .map_err(|e| match &e {
            kokoa_core::Error::Conflict { what, .. } if what.contains("service") => {
                ApiError::from(e).with_field("services")
            }
            kokoa_core::Error::Conflict { .. } => ApiError::from(e).with_field("name"),
            _ => ApiError::from(e),
        })?;
    let mut edge_count = 0;
    for edge in store.list_edges().await? {
        if edge.origin_id.is_none() && edge.status != EdgeStatus::Deleted {
            if let Err(e) = create_tunnel(&state, &edge.id, &origin.id).await {
                // Undo, so a failed request leaves no origin behind.
                if let Err(undo) = store.delete_origin(&origin.id, true).await {
                    tracing::error!(origin = %origin.id, error = %undo, "cannot undo origin creation");
                }
                return Err(e);
            }
            edge_count += 1;
        }
    }
    state.notify_changed();
    tracing::info!(origin = %origin.id, name = %origin.name, subnet = %origin.network_cidr, "origin created");
    let services = store.origin_services(&origin.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(origin_view(origin, services, edge_count)),
    ))
}

/// Lists every origin.
#[utoipa::path(
    get,
    path = "/api/v1/origins",
    tag = "origins",
    security(("bearer" = [])),
    responses((status = 200, description = "All origins, by name", body = OriginList))
)]
pub(super) async fn list_origins(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<OriginList>, ApiError> {
    let store = state.store();
    let mut counts: HashMap<OriginId, usize> = HashMap::new();
    for tunnel in store.list_tunnels(None, None).await? {
        *counts.entry(tunnel.origin_id).or_default() += 1;
    }
    let mut origins = Vec::new();
    for origin in store.list_origins().await? {
        let services = store.origin_services(&origin.id).await?;
        let count = counts.get(&origin.id).copied().unwrap_or(0);
        origins.push(origin_view(origin, services, count));
    }
    Ok(Json(OriginList { origins }))
}

/// One origin.
#[utoipa::path(
    get,
    path = "/api/v1/origins/{id}",
    tag = "origins",
    params(("id" = String, Path, description = "Origin id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The origin", body = OriginView),
        (status = 404, description = "Unknown origin", body = ErrorBody),
    )
)]
pub(super) async fn get_origin(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OriginView>, ApiError> {
    let id: OriginId = path_id("origin", &id)?;
    let store = state.store();
    let origin = store.get_origin(&id).await?;
    let services = store.origin_services(&id).await?;
    let count = store.list_tunnels(None, Some(&id)).await?.len();
    Ok(Json(origin_view(origin, services, count)))
}

/// Deletes an origin, its services and the edges' tunnels to it.
#[utoipa::path(
    delete,
    path = "/api/v1/origins/{id}",
    tag = "origins",
    params(("id" = String, Path, description = "Origin id"), ForceQuery),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown origin", body = ErrorBody),
        (status = 409, description = "Routes still use it (retry with ?force=true)", body = ErrorBody),
    )
)]
pub(super) async fn delete_origin(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ForceQuery>,
) -> Result<StatusCode, ApiError> {
    let id: OriginId = path_id("origin", &id)?;
    state.store().delete_origin(&id, query.force).await?;
    state.notify_changed();
    tracing::info!(origin = %id, force = query.force, "origin deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates the origin's WireGuard key (SPEC §10.3) without cutting traffic: the origin
/// makes a new key pair and registers its public half, every edge learns it, then the
/// origin switches to it, then the old key is removed. Done when the origin shows another
/// `wireguard_public_key`.
#[utoipa::path(
    post,
    path = "/api/v1/origins/{id}/rotate-keys",
    tag = "origins",
    params(("id" = String, Path, description = "Origin id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = RotationStarted),
        (status = 404, description = "Unknown origin", body = ErrorBody),
        (status = 409, description = "Not enrolled yet, or rotating already", body = ErrorBody),
    )
)]
pub(super) async fn rotate_origin_key(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<RotationStarted>), ApiError> {
    let id: OriginId = path_id("origin", &id)?;
    let Some(key) = state.store().get_origin(&id).await?.wireguard_public_key else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("origin {id} has no key to rotate (its agent has not enrolled yet)"),
        ));
    };
    rotation::start(&state, &Subject::Origin(id), &key, "manual").await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(super::edges::rotation_started(key)),
    ))
}

/// Downloads the origin's installation bundle, `origin-config.tar.gz`: `wireguard/wg0.conf`
/// (without a private key: the agent makes its own), `nginx/nginx.conf`,
/// `scripts/install.sh`, `systemd/kokoa-origin.service`, `credentials.json` and, when this
/// control plane hands out the agent, `agent.conf`. It holds a fresh single-use enrollment
/// token, so it needs an admin token.
#[utoipa::path(
    get,
    path = "/api/v1/origins/{id}/config",
    tag = "origins",
    params(("id" = String, Path, description = "Origin id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The bundle", content_type = "application/gzip", body = Vec<u8>),
        (status = 404, description = "Unknown origin", body = ErrorBody),
    )
)]
pub(super) async fn origin_bundle(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: OriginId = path_id("origin", &id)?;
    let store = state.store();
    let origin = store.get_origin(&id).await?;
    let (wg0, _) = payload::origin_wg0(&state, &origin).await?;
    let routes = payload::origin_routes(&state, &id).await?;
    let nginx = kokoa_nginx::OriginProxy::new(origin.wireguard_ip, routes).render();
    let now = Timestamp::now();
    let (enrollment, token) = issue_enrollment(
        &state,
        NodeRef::Origin(id.clone()),
        BUNDLE_ENROLLMENT_SECONDS,
        1,
    )
    .await?;
    let credentials = Credentials {
        control_plane_url: state.public_url().to_owned(),
        origin_id: id.clone(),
        enrollment_token: token.to_string(),
        ca_pin: state.ca_pin(),
    };
    let agent = state.download_of("kokoa-origin");
    let agent = agent
        .as_ref()
        .map(|(url, sha256)| (url.as_str(), sha256.as_str()));
    let archive = bundle::origin_archive(&wg0, &nginx, &credentials, agent, now)
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(origin = %id, enrollment = %enrollment.id, "origin bundle issued");
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"origin-config.tar.gz\"",
            ),
        ],
        archive,
    ))
}

/// The edges with a tunnel to an origin.
#[utoipa::path(
    get,
    path = "/api/v1/origins/{origin_id}/edge-nodes",
    tag = "origins",
    params(("origin_id" = String, Path, description = "Origin id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its edges, oldest first", body = EdgeList),
        (status = 404, description = "Unknown origin", body = ErrorBody),
    )
)]
pub(super) async fn origin_edge_nodes(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(origin_id): ApiPath<String>,
) -> Result<Json<EdgeList>, ApiError> {
    let id: OriginId = path_id("origin", &origin_id)?;
    let store = state.store();
    store.get_origin(&id).await?;
    let tunnels = store.list_tunnels(None, Some(&id)).await?;
    let edges = store
        .list_edges()
        .await?
        .into_iter()
        .filter(|e| tunnels.iter().any(|t| t.edge_node_id == e.id))
        .collect();
    Ok(Json(EdgeList {
        edge_nodes: edge_views(&state, edges).await?,
    }))
}
