//! `/api/v1/edge-nodes`: the Internet-facing nodes, and their tunnels to origins.

use std::net::IpAddr;

use axum::{Json, extract::State, http::StatusCode};
use kokoa_core::{
    EdgeNode, EdgeNodeId, EdgeStatus, EdgeTunnel, Name, OriginId, Timestamp, WgPublicKey,
};
use kokoa_store::NewTunnel;

use super::{
    ApiJson, ApiPath, ApiQuery, CheckView, DeletionStarted, EdgeCreated, EdgeList, EdgeRequest,
    EdgeView, HealthHistory, LimitQuery, RotationStarted, RotationView, TunnelView, path_id, valid,
};
use crate::{
    auth::{Admin, Reader},
    error::{ApiError, ErrorBody},
    runtime::{
        lifecycle::{self, NewEdge},
        rotation::{self, Subject},
    },
    state::AppState,
};

/// What `POST /api/v1/edge-nodes` promises (SPEC §6).
const ESTIMATED_PROVISIONING_SECONDS: u32 = 120;
/// How long the enrollment token of a manual edge stays valid.
const MANUAL_ENROLLMENT_SECONDS: i64 = 24 * 3600;
/// Longest free-text provisioning field accepted.
const MAX_PROVISIONING_TEXT: usize = 16 * 1024;

/// Creates the edge's tunnel to an origin: the address and listen port allocated by the
/// store (the keys are the edge's and the origin's own).
pub(crate) async fn create_tunnel(
    state: &AppState,
    edge: &EdgeNodeId,
    origin: &OriginId,
) -> Result<EdgeTunnel, ApiError> {
    let store = state.store();
    let created = store
        .create_tunnel(NewTunnel {
            edge_node_id: edge.clone(),
            origin_id: origin.clone(),
            created_at: Timestamp::now(),
        })
        .await;
    match created {
        // Made a moment ago from the other side: an edge registered while the origin was
        // created both find each other.
        Err(kokoa_core::Error::Conflict {
            what: "edge tunnel",
            ..
        }) => {
            if let Some(tunnel) = store
                .list_tunnels(Some(edge), Some(origin))
                .await?
                .into_iter()
                .next()
            {
                return Ok(tunnel);
            }
            Err(created.unwrap_err().into())
        }
        other => Ok(other?),
    }
}

/// The API view of an edge and its tunnels.
pub(super) fn edge_view(edge: EdgeNode, tunnels: Vec<EdgeTunnel>, now: Timestamp) -> EdgeView {
    let health = crate::metrics::edge_health(&edge);
    let serving = matches!(edge.status, EdgeStatus::Active | EdgeStatus::Unhealthy);
    let uptime_seconds = if serving {
        u64::try_from(now.as_unix() - edge.created_at.as_unix()).unwrap_or(0)
    } else {
        0
    };
    EdgeView {
        id: edge.id,
        name: edge.name,
        origin_id: edge.origin_id,
        provider: edge.provider,
        region: edge.region,
        public_ip: edge.public_ip,
        status: edge.status,
        health: health.to_owned(),
        uptime_seconds,
        last_heartbeat: edge.last_heartbeat,
        health_check_failures: edge.health_check_failures,
        agent_error: super::agent::agent_error(edge.last_metrics.as_ref()),
        created_at: edge.created_at,
        deleted_at: edge.deleted_at,
        tunnels: tunnels
            .into_iter()
            .map(|t| TunnelView {
                origin_id: t.origin_id,
                wireguard_ip: t.wireguard_ip,
                listen_port: t.listen_port.get(),
                public_key: edge.wireguard_public_key.clone(),
            })
            .collect(),
        wireguard_public_key: edge.wireguard_public_key,
        instance_id: edge.instance_id,
        lifecycle: edge.lifecycle,
    }
}

/// Views of `edges`, with their tunnels (one query for all of them).
pub(super) async fn edge_views(
    state: &AppState,
    edges: Vec<EdgeNode>,
) -> Result<Vec<EdgeView>, ApiError> {
    let mut tunnels = state.store().list_tunnels(None, None).await?;
    let now = Timestamp::now();
    Ok(edges
        .into_iter()
        .map(|edge| {
            let (own, rest) = tunnels.drain(..).partition(|t| t.edge_node_id == edge.id);
            tunnels = rest;
            edge_view(edge, own, now)
        })
        .collect())
}

fn optional_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > MAX_PROVISIONING_TEXT => Err(ApiError::invalid(
            field,
            format!(
                "{field} is {} bytes long, the limit is {MAX_PROVISIONING_TEXT}",
                v.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Registers an edge node and creates its tunnels: one per origin it serves.
///
/// For `provider: "manual"` the answer carries a single-use enrollment token and the command
/// to run on the server. For a configured cloud provider the edge automation creates the VPS
/// (with `size` and `ssh_key`, the provider's SSH key id), follows it until it enrolls, its
/// tunnels are up and its checks pass, then puts it into DNS; each step is an event.
#[utoipa::path(
    post,
    path = "/api/v1/edge-nodes",
    tag = "edge-nodes",
    request_body = EdgeRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the edge is provisioning", body = EdgeCreated),
        (status = 404, description = "Unknown origin", body = ErrorBody),
        (status = 409, description = "An origin's subnet has no free edge address", body = ErrorBody),
    )
)]
pub(super) async fn create_edge(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<EdgeRequest>,
) -> Result<(StatusCode, Json<EdgeCreated>), ApiError> {
    let provider = valid("provider", Name::parse(&body.provider))?;
    let region = valid("region", Name::parse(&body.region))?;
    optional_text("size", body.size.as_deref())?;
    optional_text("ssh_key", body.ssh_key.as_deref())?;
    let origin_id = body
        .origin_id
        .as_deref()
        .map(|o| valid("origin_id", OriginId::parse(o)))
        .transpose()?;
    let public_ip = body
        .public_ip
        .as_deref()
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|_| {
                ApiError::invalid(
                    "public_ip",
                    format!("{ip:?} is not an IPv4 or IPv6 address"),
                )
            })
        })
        .transpose()?;
    let name = body
        .name
        .as_deref()
        .map(|n| valid("name", Name::parse(n)))
        .transpose()?;
    let (edge, token) = lifecycle::register(
        &state,
        NewEdge {
            name,
            origin_id,
            provider,
            region,
            public_ip,
            size: body.size,
            ssh_key_id: body.ssh_key,
            replaces: None,
        },
        MANUAL_ENROLLMENT_SECONDS,
    )
    .await?;
    let id = edge.id;
    // An edge on another machine cannot follow a loopback URL: no command that cannot work
    // is handed out unless the edge is on this machine, as asked.
    let mut warnings = Vec::new();
    let loopback = is_loopback_url(state.public_url());
    if token.is_some() && loopback && !body.allow_loopback_url {
        warnings.push(format!(
            "no enroll command: the control plane's public URL {} is a loopback address, which \
             an edge on another machine cannot reach; restart it with --public-url \
             https://HOST (the address edges reach it at), or ask again with \
             allow_loopback_url (kokoa edge add --allow-loopback-url) for an edge on this \
             machine",
            state.public_url()
        ));
    }
    // The token goes in the environment, not the arguments: a command line is visible to
    // every user in `ps` while it runs.
    let enroll_command = token
        .as_ref()
        .filter(|_| !loopback || body.allow_loopback_url)
        .map(|token| {
            let pin = state
                .ca_pin()
                .map(|pin| format!(" --ca-pin {pin}"))
                .unwrap_or_default();
            format!(
                "KOKOA_ENROLL_TOKEN={} kokoa-edge enroll --control-plane {}{pin}",
                token.as_str(),
                state.public_url()
            )
        });
    let enrollment_token = token.map(|t| t.to_string());
    Ok((
        StatusCode::ACCEPTED,
        Json(EdgeCreated {
            id,
            status: EdgeStatus::Provisioning,
            estimated_time_seconds: ESTIMATED_PROVISIONING_SECONDS,
            enrollment_token,
            enroll_command,
            warnings,
        }),
    ))
}

/// Whether `url` (an `http://` or `https://` URL) names a loopback host: `localhost`, a
/// name under it, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Lists every edge node, deleted ones included.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes",
    tag = "edge-nodes",
    security(("bearer" = [])),
    responses((status = 200, description = "All edge nodes, oldest first", body = EdgeList))
)]
pub(super) async fn list_edges(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<EdgeList>, ApiError> {
    let edges = state.store().list_edges().await?;
    Ok(Json(EdgeList {
        edge_nodes: edge_views(&state, edges).await?,
    }))
}

/// One edge node.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/{id}",
    tag = "edge-nodes",
    params(("id" = String, Path, description = "Edge node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The edge node", body = EdgeView),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
    )
)]
pub(super) async fn get_edge(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EdgeView>, ApiError> {
    let id: EdgeNodeId = path_id("edge node", &id)?;
    let store = state.store();
    let edge = store.get_edge(&id).await?;
    let tunnels = store.list_tunnels(Some(&id), None).await?;
    Ok(Json(edge_view(edge, tunnels, Timestamp::now())))
}

/// Rotates the edge's WireGuard key (SPEC §10.3) without cutting traffic: the edge makes
/// a new key pair and registers its public half, every origin it reaches learns it, then
/// the edge switches to it, then the old key is removed. Done when the edge shows another
/// `wireguard_public_key` (and a `wireguard.key_rotated` event).
#[utoipa::path(
    post,
    path = "/api/v1/edge-nodes/{id}/rotate-keys",
    tag = "edge-nodes",
    params(("id" = String, Path, description = "Edge node id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = RotationStarted),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
        (status = 409, description = "Deleted, without a key yet, or rotating already", body = ErrorBody),
    )
)]
pub(super) async fn rotate_edge_keys(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<RotationStarted>), ApiError> {
    let id: EdgeNodeId = path_id("edge node", &id)?;
    let store = state.store();
    let edge = store.get_edge(&id).await?;
    let key = match (&edge.wireguard_public_key, edge.status) {
        (Some(key), status) if status != EdgeStatus::Deleted => key.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("edge node {id} has no key to rotate (deleted, or not enrolled yet)"),
            ));
        }
    };
    rotation::start(&state, &Subject::Edge(id), &key, "manual").await?;
    Ok((StatusCode::ACCEPTED, Json(rotation_started(key))))
}

/// The answer to a rotation request of the key `current`.
pub(super) fn rotation_started(current: WgPublicKey) -> RotationStarted {
    RotationStarted {
        message: "Key rotation started: the node makes a new key and registers it, the peers \
                  learn it, then the node switches to it, then the old key is removed"
            .into(),
        rotations: vec![RotationView {
            public_key: current,
        }],
    }
}

/// Deletes an edge node in the safe order (SPEC §9): it leaves DNS at once, the records'
/// TTL runs out, then its VPS is destroyed, its credentials revoked and its tunnels
/// removed. Each step is an event (`edge.removal_started`, `edge.destroyed`) and shows in
/// the edge's `lifecycle`.
#[utoipa::path(
    delete,
    path = "/api/v1/edge-nodes/{id}",
    tag = "edge-nodes",
    params(("id" = String, Path, description = "Edge node id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Deletion started", body = DeletionStarted),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
    )
)]
pub(super) async fn delete_edge(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeletionStarted>), ApiError> {
    let id: EdgeNodeId = path_id("edge node", &id)?;
    lifecycle::request_removal(&state, &id).await?;
    tracing::info!(edge = %id, "edge node deletion requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(DeletionStarted {
            message: "Edge node deletion initiated".into(),
            steps: lifecycle::removal_steps(&state).await,
        }),
    ))
}

/// An edge node's health check history.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/{id}/health-history",
    tag = "edge-nodes",
    params(("id" = String, Path, description = "Edge node id"), LimitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Checks, newest first", body = HealthHistory),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
    )
)]
pub(super) async fn health_history(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<HealthHistory>, ApiError> {
    let id: EdgeNodeId = path_id("edge node", &id)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is outside 1-1000"),
        ));
    }
    let store = state.store();
    store.get_edge(&id).await?;
    let checks = store.health_history(&id, limit).await?;
    Ok(Json(HealthHistory {
        checks: checks
            .into_iter()
            .map(|c| CheckView {
                timestamp: c.checked_at,
                status: c.status,
                response_time_ms: c.response_time_ms,
                error_message: c.error_message,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loopback_urls_are_told_apart_from_reachable_ones() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "https://localhost/",
            "http://app.localhost:80",
            "http://LOCALHOST.",
            "http://[::1]:8080",
            "http://user@127.0.0.1:8080/x",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://control.example.com",
            "http://10.99.0.1:8080",
            "http://[2001:db8::1]:8080",
            "http://0.0.0.0:8080",
            "https://localhost.example.com",
            "http://128.0.0.1",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
