//! `/api/v1/tokens` (API tokens) and `/api/v1/enrollments` (node enrollment tokens).

use axum::{Json, extract::State, http::StatusCode};
use kokoa_core::{
    ApiToken, ApiTokenId, EdgeNodeId, Enrollment, EnrollmentId, Name, NodeRef, OriginId, Role,
    Timestamp, TokenHash, secret::new_token,
};
use zeroize::Zeroizing;

use super::{
    ApiJson, ApiPath, EnrollmentCreated, EnrollmentRequest, TokenCreated, TokenList, TokenRequest,
    TokenView, path_id, valid,
};
use crate::{
    auth::{API_TOKEN_PREFIX, Admin, ENROLLMENT_PREFIX, Reader},
    error::{ApiError, ErrorBody},
    state::AppState,
};

/// Default lifetime of an enrollment token: one day.
const DEFAULT_ENROLLMENT_SECONDS: i64 = 24 * 3600;
/// Allowed lifetimes: a minute to 30 days.
const ENROLLMENT_SECONDS: std::ops::RangeInclusive<i64> = 60..=30 * 24 * 3600;
/// Allowed numbers of uses.
const ENROLLMENT_USES: std::ops::RangeInclusive<i64> = 1..=100;

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name.to_string(),
            role: t.role,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Creates an API token and stores only its hash; returns the token itself.
pub async fn issue_api_token(
    state: &AppState,
    name: Name,
    role: Role,
) -> Result<(ApiToken, Zeroizing<String>), kokoa_core::Error> {
    let secret = new_token(API_TOKEN_PREFIX);
    let token = ApiToken {
        id: ApiTokenId::new(),
        name,
        role,
        created_at: Timestamp::now(),
        last_used_at: None,
        revoked_at: None,
    };
    state
        .store()
        .create_api_token(&token, &TokenHash::of(&secret))
        .await?;
    Ok((token, secret))
}

/// Issues an enrollment token for `node`, valid for `lifetime_seconds` and `uses` uses.
pub(crate) async fn issue_enrollment(
    state: &AppState,
    node: NodeRef,
    lifetime_seconds: i64,
    uses: u32,
) -> Result<(Enrollment, Zeroizing<String>), ApiError> {
    let now = Timestamp::now();
    let token = new_token(ENROLLMENT_PREFIX);
    let enrollment = Enrollment {
        id: EnrollmentId::new(),
        node,
        expires_at: Timestamp::from_unix(now.as_unix().saturating_add(lifetime_seconds))?,
        uses_left: uses,
        created_at: now,
    };
    state
        .store()
        .create_enrollment(&enrollment, &TokenHash::of(&token))
        .await?;
    Ok((enrollment, token))
}

/// Creates an API token. The token is in the answer only: keep it.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = TokenRequest,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = TokenCreated))
)]
pub(super) async fn create_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let name = valid("name", Name::parse(&body.name))?;
    let role = super::users::parse_role("role", body.role.as_deref().unwrap_or("admin"))?;
    let (token, secret) = issue_api_token(&state, name, role).await?;
    tracing::info!(token = %token.id, name = %token.name, by = %caller.id(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: token.into(),
            secret: secret.to_string(),
        }),
    ))
}

/// Lists API tokens that are not revoked.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses((status = 200, description = "Live tokens, oldest first", body = TokenList))
)]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.store().list_api_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .map(Into::into)
            .collect(),
    }))
}

/// Revokes an API token.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "Unknown token", body = ErrorBody),
    )
)]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: ApiTokenId = path_id("API token", &id)?;
    state
        .store()
        .revoke_api_token(&id, Timestamp::now())
        .await?;
    tracing::info!(token = %id, by = %caller.id(), "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Issues an enrollment token for an edge or an origin.
#[utoipa::path(
    post,
    path = "/api/v1/enrollments",
    tag = "tokens",
    request_body = EnrollmentRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown once", body = EnrollmentCreated),
        (status = 404, description = "Unknown node", body = ErrorBody),
    )
)]
pub(super) async fn create_enrollment(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<EnrollmentRequest>,
) -> Result<(StatusCode, Json<EnrollmentCreated>), ApiError> {
    let node = match body.node_kind.as_str() {
        "edge" => NodeRef::Edge(valid("node_id", EdgeNodeId::parse(&body.node_id))?),
        "origin" => NodeRef::Origin(valid("node_id", OriginId::parse(&body.node_id))?),
        other => {
            return Err(ApiError::invalid(
                "node_kind",
                format!("unknown node kind {other:?}: use \"edge\" or \"origin\""),
            ));
        }
    };
    let seconds = body
        .expires_in_seconds
        .unwrap_or(DEFAULT_ENROLLMENT_SECONDS);
    if !ENROLLMENT_SECONDS.contains(&seconds) {
        return Err(ApiError::invalid(
            "expires_in_seconds",
            format!("expires_in_seconds {seconds} is outside 60-2592000 (a minute to 30 days)"),
        ));
    }
    let uses = body.uses.unwrap_or(1);
    let uses = u32::try_from(uses)
        .ok()
        .filter(|_| ENROLLMENT_USES.contains(&uses))
        .ok_or_else(|| ApiError::invalid("uses", format!("uses {uses} is outside 1-100")))?;
    let (enrollment, token) = issue_enrollment(&state, node, seconds, uses)
        .await
        .map_err(|e| {
            if e.code() == "not_found" {
                e.with_field("node_id")
            } else {
                e
            }
        })?;
    tracing::info!(enrollment = %enrollment.id, node = %enrollment.node, "enrollment issued");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentCreated {
            id: enrollment.id,
            token: token.to_string(),
            node: (&enrollment.node).into(),
            expires_at: enrollment.expires_at,
            uses_left: enrollment.uses_left,
        }),
    ))
}
