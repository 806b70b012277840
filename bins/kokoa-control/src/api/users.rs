//! `/api/v1/users`: the people who sign in to the Web UI, with their role.

use axum::{Json, extract::State, http::StatusCode};
use kokoa_core::{Email, Role, Timestamp, User, UserId};
use kokoa_store::Store;

use super::{ApiJson, ApiPath, UserList, UserRequest, UserRoleRequest, UserView, path_id, valid};
use crate::{
    auth::{Admin, Reader, password},
    error::{ApiError, ErrorBody},
    state::AppState,
};

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email.to_string(),
            role: u.role,
            totp_enabled: u.totp_enabled,
            locked_until: u.locked_until,
            created_at: u.created_at,
        }
    }
}

/// `admin` or `viewer`, as a request spells it.
pub(crate) fn parse_role(field: &str, text: &str) -> Result<Role, ApiError> {
    match text {
        "admin" => Ok(Role::Admin),
        "viewer" => Ok(Role::Viewer),
        other => Err(ApiError::invalid(
            field,
            format!("unknown role {other:?}: use \"admin\" or \"viewer\""),
        )),
    }
}

/// Creates a user; with a password they sign in with it (and set up their second factor
/// at the first sign-in), without one only through the OpenID provider.
pub async fn create_user(
    store: &dyn Store,
    email: Email,
    role: Role,
    password_text: Option<&str>,
) -> Result<User, ApiError> {
    let hash = password_text
        .map(|p| {
            password::check_new(p)
                .map(|()| password::hash(p))
                .map_err(|problem| ApiError::invalid("password", problem))
        })
        .transpose()?;
    let user = User::new(email, role, Timestamp::now());
    store
        .create_user(&user, hash.as_deref())
        .await
        .map_err(|e| ApiError::from(e).with_field("email"))?;
    Ok(user)
}

/// Refuses a change that would leave no admin who can sign in.
async fn keep_an_admin(state: &AppState, changed: &UserId) -> Result<(), ApiError> {
    let others = state
        .store()
        .list_users()
        .await?
        .into_iter()
        .any(|u| &u.id != changed && u.role == Role::Admin);
    if others {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("user {changed} is the last admin; make another user admin first"),
        ))
    }
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = UserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 409, description = "The e-mail address has a user already", body = ErrorBody),
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<UserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let email = valid("email", Email::parse(&body.email))?;
    let role = parse_role("role", body.role.as_deref().unwrap_or("viewer"))?;
    let user = create_user(state.store(), email, role, body.password.as_deref()).await?;
    tracing::info!(user = %user.id, email = %user.email, by = %caller.id(), "user created");
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Lists users.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = [])),
    responses((status = 200, description = "Every user, by e-mail address", body = UserList))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<UserList>, ApiError> {
    let users = state.store().list_users().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(Into::into).collect(),
    }))
}

/// Changes a user's role; it applies to their open sessions at once.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = UserRoleRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 409, description = "It would leave no admin", body = ErrorBody),
    )
)]
pub(super) async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserRoleRequest>,
) -> Result<Json<UserView>, ApiError> {
    let id: UserId = path_id("user", &id)?;
    let role = parse_role("role", &body.role)?;
    let store = state.store();
    store.get_user(&id).await?;
    if role != Role::Admin {
        keep_an_admin(&state, &id).await?;
    }
    store.set_user_role(&id, role).await?;
    tracing::info!(user = %id, ?role, by = %caller.id(), "user role changed");
    Ok(Json(store.get_user(&id).await?.0.into()))
}

/// Deletes a user and ends their sessions.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 409, description = "It is the last admin", body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: UserId = path_id("user", &id)?;
    let (user, _) = state.store().get_user(&id).await?;
    if user.role == Role::Admin {
        keep_an_admin(&state, &id).await?;
    }
    state.store().delete_user(&id).await?;
    tracing::info!(user = %id, by = %caller.id(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user's second factor and ends their sessions: they set it up again at their
/// next sign-in.
#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/reset-totp",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Reset"),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub(super) async fn reset_totp(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: UserId = path_id("user", &id)?;
    reset_second_factor(state.store(), &id).await?;
    tracing::info!(user = %id, by = %caller.id(), "second factor reset");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the second factor of `id` and ends their sessions.
pub async fn reset_second_factor(store: &dyn Store, id: &UserId) -> Result<(), ApiError> {
    store.set_user_totp(id, None, false, &[]).await?;
    store.delete_user_sessions(id).await?;
    Ok(())
}
