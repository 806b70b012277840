//! Endpoints the edge and origin agents call: enroll, register WireGuard keys, pull
//! configuration, report ready, send heartbeats.

use axum::{Json, extract::State, http::HeaderMap, response::Response};
use kokoa_core::{
    EdgeNodeId, EdgeStatus, NodeCredentialId, NodeRef, OriginStatus, Severity, Timestamp,
    TokenHash, WgPublicKey, secret::new_token,
};
use serde_json::{Value, json};

use super::{
    ApiJson, ApiPath, ApiQuery, EdgeBundle, EdgeConfigDoc, EdgeView, EnrollRequest, Enrolled,
    HeartbeatAnswer, HeartbeatRequest, NodeView, OriginConfigDoc, WireguardKeyRequest,
    conditional::{WaitQuery, conditional},
    edges::edge_view,
    path_id, valid,
};
use crate::{
    auth::{Bearer, EdgeAgent, NODE_CREDENTIAL_PREFIX, NodeAgent, Principal},
    error::{ApiError, ErrorBody},
    events::kinds,
    payload, payload_cache,
    runtime::{
        lifecycle,
        rotation::{self, Registered},
    },
    state::AppState,
};

/// Seconds between heartbeats of an edge (SPEC §8.4).
const EDGE_HEARTBEAT_SECONDS: u32 = 5;
/// Seconds between heartbeats of an origin (SPEC §8.4).
const ORIGIN_HEARTBEAT_SECONDS: u32 = 30;

impl From<&NodeRef> for NodeView {
    fn from(node: &NodeRef) -> Self {
        Self {
            kind: node.kind().to_owned(),
            id: node.id().to_owned(),
        }
    }
}

/// Trades a single-use enrollment token for the node's long-lived credential, and
/// registers the public half of the WireGuard key the node made (its private half never
/// leaves the node). The token is the authentication: no bearer header is needed.
#[utoipa::path(
    post,
    path = "/api/v1/enroll",
    tag = "agents",
    request_body = EnrollRequest,
    responses(
        (status = 200, description = "Enrolled; the credential is shown once", body = Enrolled),
        (status = 401, description = "Unknown, expired or used-up token", body = ErrorBody),
        (status = 422, description = "The WireGuard public key is not one", body = ErrorBody),
    )
)]
pub(super) async fn enroll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Json<Enrolled>, ApiError> {
    // Checked before the token is spent.
    let key = body
        .wireguard_public_key
        .as_deref()
        .map(|k| valid("wireguard_public_key", WgPublicKey::parse(k)))
        .transpose()?;
    let secret = new_token(NODE_CREDENTIAL_PREFIX);
    let credential = state
        .store()
        .redeem_enrollment(
            &TokenHash::of(&body.token),
            Timestamp::now(),
            &NodeCredentialId::new(),
            &TokenHash::of(&secret),
        )
        .await?;
    tracing::info!(node = %credential.node, credential = %credential.id, "node enrolled");
    if let Some(key) = &key {
        rotation::enrolled(&state, &credential.node, key).await?;
    }
    Ok(Json(Enrolled {
        node: (&credential.node).into(),
        credential: secret.to_string(),
    }))
}

/// The calling edge's configuration (SPEC §4): its routes, host names, tunnels, limits and
/// the public half of the key its interfaces use (the edge holds the private half). `ETag`
/// is the `config_hash`; send it back in `If-None-Match` to get `304` while nothing changed,
/// and add `?wait=N` to hold the request until a change.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/me/config",
    tag = "agents",
    params(WaitQuery, ("If-None-Match" = Option<String>, Header, description = "The config_hash already applied")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The configuration", body = EdgeConfigDoc,
            headers(("ETag" = String, description = "Quoted config_hash"))),
        (status = 304, description = "Unchanged"),
    )
)]
pub(super) async fn edge_own_config(
    State(state): State<AppState>,
    EdgeAgent(id): EdgeAgent,
    ApiQuery(query): ApiQuery<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    conditional(&state, &headers, &query, || async {
        let config = payload_cache::edge_config(&state, &id).await?;
        Ok((config.config.config_hash().to_string(), config))
    })
    .await
}

/// The calling origin's configuration: its `wg0.conf` (one peer per edge), local proxy,
/// routes and services. Conditional and long-polling like the edges' configuration.
#[utoipa::path(
    get,
    path = "/api/v1/origins/me/config",
    tag = "agents",
    params(WaitQuery, ("If-None-Match" = Option<String>, Header, description = "The config_hash already applied")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The configuration", body = OriginConfigDoc,
            headers(("ETag" = String, description = "Quoted config_hash"))),
        (status = 304, description = "Unchanged"),
    )
)]
pub(super) async fn origin_own_config(
    State(state): State<AppState>,
    NodeAgent(node): NodeAgent,
    ApiQuery(query): ApiQuery<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let NodeRef::Origin(id) = node else {
        return Err(ApiError::forbidden(
            "this endpoint is for origins; an edge credential cannot use it",
        ));
    };
    conditional(&state, &headers, &query, || async {
        let config = payload::origin_config(&state, &id).await?;
        Ok((config.config_hash.clone(), Json(config)))
    })
    .await
}

/// What a new edge unpacks at first boot: its configuration, and where to enroll. Takes
/// that edge's enrollment token (before it is redeemed) or its credential, or an admin
/// token.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/{id}/config",
    tag = "agents",
    params(("id" = String, Path, description = "Edge node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The bundle", body = EdgeBundle),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
    )
)]
pub(super) async fn edge_bundle(
    State(state): State<AppState>,
    Bearer(principal): Bearer,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EdgeBundle>, ApiError> {
    let allowed = match &principal {
        Principal::Api(token) => token.role == kokoa_core::Role::Admin,
        Principal::User(user) => user.0.role == kokoa_core::Role::Admin,
        Principal::Node(credential) => credential.node.id() == id,
        Principal::Enrollment(enrollment) => enrollment.node.id() == id,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "this token may not read the bundle of edge node {id:?}"
        )));
    }
    let id: EdgeNodeId = path_id("edge node", &id)?;
    let store = state.store();
    let edge = store.get_edge(&id).await?;
    let tunnels = store.list_tunnels(Some(&id), None).await?;
    let config = payload::edge_config(&state, &id).await?;
    Ok(Json(EdgeBundle {
        edge_node: edge_view(edge, tunnels, Timestamp::now()),
        config,
        control_plane_url: state.public_url().to_owned(),
        enroll_url: format!("{}/api/v1/enroll", state.public_url()),
    }))
}

/// The edge reports that it applied its configuration and serves. The edge automation
/// then waits for its tunnels and its checks before it becomes `active` and goes into DNS.
#[utoipa::path(
    post,
    path = "/api/v1/edge-nodes/{id}/ready",
    tag = "agents",
    params(("id" = String, Path, description = "Edge node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The edge", body = EdgeView),
        (status = 404, description = "Unknown edge node", body = ErrorBody),
        (status = 409, description = "The edge was deleted", body = ErrorBody),
    )
)]
pub(super) async fn edge_ready(
    State(state): State<AppState>,
    EdgeAgent(caller): EdgeAgent,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EdgeView>, ApiError> {
    if caller.as_str() != id {
        return Err(ApiError::forbidden(format!(
            "edge node {caller} cannot report for edge node {id:?}"
        )));
    }
    let store = state.store();
    let edge = store.get_edge(&caller).await?;
    if edge.status == EdgeStatus::Deleted {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!("edge node {caller} was deleted; it cannot report ready"),
        ));
    }
    let now = Timestamp::now();
    // Noted apart from the edge's row, which the edge automation alone writes: it moves the
    // edge on from here (tunnels up, checks passed, into DNS).
    let first = store
        .kv_get(lifecycle::READY, caller.as_str(), now)
        .await?
        .is_none();
    store
        .kv_put(lifecycle::READY, caller.as_str(), &now.to_string(), None)
        .await?;
    if first {
        tracing::info!(edge = %caller, "edge node reported ready");
        state.wakers().edges.notify_one();
    }
    let tunnels = store.list_tunnels(Some(&caller), None).await?;
    Ok(Json(edge_view(edge, tunnels, now)))
}

/// Registers the public half of a WireGuard key the calling node made: its first key (a
/// node enrolled without one), or the next key its key rotation asks for. Registering a key
/// again changes nothing; any other key is refused with 409 (a node's key is replaced only
/// through a rotation or a new enrollment).
#[utoipa::path(
    post,
    path = "/api/v1/wireguard-key",
    tag = "agents",
    request_body = WireguardKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Registered (or registered already)", body = Object,
            example = json!({"status": "next"})),
        (status = 409, description = "The node has another key and no rotation asks for one", body = ErrorBody),
        (status = 422, description = "Not a WireGuard public key", body = ErrorBody),
    )
)]
pub(super) async fn register_key(
    State(state): State<AppState>,
    NodeAgent(node): NodeAgent,
    ApiJson(body): ApiJson<WireguardKeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let key = valid("public_key", WgPublicKey::parse(&body.public_key))?;
    let status = match rotation::register(&state, &node, &key).await? {
        Registered::Key => "registered",
        Registered::Next => "next",
        Registered::Unchanged => "unchanged",
    };
    Ok(Json(json!({ "status": status })))
}

/// Host names one heartbeat may count traffic for.
const MAX_TRAFFIC_ENTRIES: usize = 1_000;
/// Requests one heartbeat may count for a host name: far above what an edge serves
/// between two heartbeats, and low enough that the stored sums never overflow.
const MAX_TRAFFIC_REQUESTS: u64 = 1_000_000_000;

/// A node's heartbeat (SPEC §6, §8.4): edges every 5 s, origins every 30 s.
#[utoipa::path(
    post,
    path = "/api/v1/heartbeat",
    tag = "agents",
    request_body = HeartbeatRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Recorded", body = HeartbeatAnswer))
)]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    NodeAgent(node): NodeAgent,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    if body.node_id != node.id() {
        return Err(ApiError::forbidden(format!(
            "the credential belongs to {node}, not to node_id {:?}",
            body.node_id
        ))
        .with_field("node_id"));
    }
    if !matches!(body.status.as_str(), "healthy" | "degraded" | "unhealthy") {
        return Err(ApiError::invalid(
            "status",
            format!(
                "unknown status {:?}: use \"healthy\", \"degraded\" or \"unhealthy\"",
                body.status
            ),
        ));
    }
    if body.traffic.len() > MAX_TRAFFIC_ENTRIES {
        return Err(ApiError::invalid(
            "traffic",
            format!(
                "{} entries; at most {MAX_TRAFFIC_ENTRIES} host names are counted per heartbeat",
                body.traffic.len()
            ),
        ));
    }
    if let Some(bad) = body.traffic.iter().find(|t| {
        t.counts.requests > MAX_TRAFFIC_REQUESTS
            || t.counts.errors > t.counts.requests
            || t.counts.timed() > t.counts.requests
            || t.hostname.is_empty()
            || t.hostname.len() > 253
    }) {
        return Err(ApiError::invalid(
            "traffic",
            format!(
                "the figures of {:?} do not add up: {} requests (at most \
                 {MAX_TRAFFIC_REQUESTS}), {} errors, {} timed",
                bad.hostname,
                bad.counts.requests,
                bad.counts.errors,
                bad.counts.timed()
            ),
        ));
    }
    // Kept as one flat object: the metrics, the other reported fields, and the status.
    let mut metrics = body.extra;
    metrics.extend(body.metrics);
    metrics.insert("status".into(), Value::String(body.status));
    let now = Timestamp::now();
    let store = state.store();
    let next_check_in = match &node {
        NodeRef::Edge(id) => {
            let before = store.get_edge(id).await?;
            let metrics = Value::Object(metrics);
            let error = agent_error(Some(&metrics));
            store.record_edge_heartbeat(id, now, Some(metrics)).await?;
            state.traffic().record(id, now, &body.traffic);
            // An event when the agent starts or stops reporting an error; not for every
            // heartbeat, nor when the wording of an error changes while it lasts.
            let change = match (agent_error(before.last_metrics.as_ref()), error) {
                (None, Some(error)) => Some((
                    kinds::EDGE_AGENT_ERROR,
                    Severity::Warning,
                    format!("edge {}'s agent reports: {error}", before.name),
                    json!({ "error": error }),
                )),
                (Some(_), None) => Some((
                    kinds::EDGE_AGENT_RECOVERED,
                    Severity::Info,
                    format!("edge {}'s agent reports no error any more", before.name),
                    json!({}),
                )),
                _ => None,
            };
            if let Some((kind, severity, message, data)) = change {
                state
                    .events()
                    .emit(kind, severity, Some(id.as_str()), message, data)
                    .await;
            }
            EDGE_HEARTBEAT_SECONDS
        }
        NodeRef::Origin(id) => {
            let before = store.get_origin(id).await?;
            let metrics = Value::Object(metrics);
            let changed = payload::ports_down(before.last_metrics.as_ref())
                != payload::ports_down(Some(&metrics));
            let check_changed = payload::application_port(before.last_metrics.as_ref())
                != payload::application_port(Some(&metrics));
            store
                .record_origin_heartbeat(id, now, OriginStatus::Active, Some(metrics))
                .await?;
            if changed {
                // The health judge decides at once whether edges mark the routes of a
                // service that went down (or came back), damped against flapping.
                state.wakers().health.notify_one();
            }
            if check_changed {
                // The edges' configurations gain (or lose) the origin's application check.
                state.notify_changed();
            }
            ORIGIN_HEARTBEAT_SECONDS
        }
    };
    Ok(Json(HeartbeatAnswer {
        message: "Heartbeat received".into(),
        next_check_in,
    }))
}

/// What an edge's agent reported failing in its last heartbeat (`last_error`), if anything.
pub(crate) fn agent_error(metrics: Option<&Value>) -> Option<String> {
    metrics
        .and_then(|m| m.get("last_error"))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
}
