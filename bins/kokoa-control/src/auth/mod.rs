//! Authentication (SPEC §10.1): bearer tokens for programs, sessions for people.
//!
//! The REST API accepts either a bearer token or a Web UI session (the `kokoa_session`
//! cookie plus, on state-changing requests, the session's `X-CSRF-Token` header; see
//! [`session`]). The same role rules apply to both: a viewer reads, an admin changes.
//!
//! Three kinds of token, told apart by their prefix so each lookup touches one table:
//! - `kk_api_…`: API tokens of administrators ([`Role::Admin`]) or read-only viewers
//!   ([`Role::Viewer`]);
//! - `kk_node_…`: the long-lived credential of one edge or origin, issued by
//!   `POST /api/v1/enroll`;
//! - `kk_enr_…`: an enrollment token, usable only to enroll and to fetch a new edge's
//!   bundle.
//!
//! All are random 256-bit values stored only as SHA-256 hashes ([`TokenHash`]). A missing or
//! unknown token is 401; a valid token used where it is not allowed is 403. Handlers state
//! what they accept through the extractor they take: [`Reader`], [`Admin`], [`EdgeAgent`],
//! [`NodeAgent`] or [`Bearer`] for the few that decide themselves.
//!
//! People sign in with an e-mail address and a password ([`password`]: Argon2id) and a
//! TOTP second factor ([`totp`]), or through an OpenID provider; [`limit`] slows down
//! guessing.

use std::fmt;

use axum::{extract::FromRequestParts, http::request::Parts};
use kokoa_core::{
    ApiToken, EdgeNodeId, Enrollment, NodeCredential, NodeRef, Role, Session, SessionStage,
    Timestamp, TokenHash, User,
};

use crate::{error::ApiError, state::AppState};

pub mod limit;
pub mod oidc;
pub mod password;
pub mod session;
pub mod totp;

/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "kk_api";
/// Prefix of node credentials.
pub const NODE_CREDENTIAL_PREFIX: &str = "kk_node";
/// Prefix of enrollment tokens.
pub const ENROLLMENT_PREFIX: &str = "kk_enr";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An API token.
    Api(ApiToken),
    /// A node's credential.
    Node(NodeCredential),
    /// An enrollment token that has not been used up.
    Enrollment(Enrollment),
    /// A person signed in to the Web UI (both factors).
    User(Box<(User, Session)>),
}

impl Principal {
    /// The caller of this request: from its `Authorization: Bearer` header, or else from
    /// its session cookie (whose CSRF token a state-changing request must carry).
    pub async fn of(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
            && let Some((session, user)) = session::current(&parts.headers, state).await?
        {
            if session.stage != SessionStage::Full {
                return Err(ApiError::unauthorized(
                    "the sign-in is not finished: enter the second factor at /login first",
                ));
            }
            session::check_csrf_header(parts, &session)?;
            return Ok(Self::User(Box::new((user, session))));
        }
        let token = bearer(parts)?;
        let hash = TokenHash::of(token);
        let store = state.store();
        let found = if token.starts_with(&format!("{API_TOKEN_PREFIX}_")) {
            store.find_api_token(&hash).await?.map(Self::Api)
        } else if token.starts_with(&format!("{NODE_CREDENTIAL_PREFIX}_")) {
            store.find_node_credential(&hash).await?.map(Self::Node)
        } else if token.starts_with(&format!("{ENROLLMENT_PREFIX}_")) {
            store
                .find_enrollment(&hash, Timestamp::now())
                .await?
                .map(Self::Enrollment)
        } else {
            None
        };
        found.ok_or_else(|| {
            ApiError::unauthorized(
                "the bearer token is unknown, revoked or expired; ask an administrator for a new one",
            )
        })
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send `Authorization: Bearer <token>` (or sign \
                 in to the Web UI at /login)",
            )
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not of the form `Bearer <token>`")
        })
}

/// Any authenticated caller; the handler checks what it may do.
#[derive(Debug)]
pub struct Bearer(pub Principal);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Principal::of(parts, state).await.map(Self)
    }
}

/// A person or program allowed to use the management API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An API token.
    Token(ApiToken),
    /// A Web UI user.
    User(Box<(User, Session)>),
}

impl Caller {
    /// What it may do.
    pub fn role(&self) -> Role {
        match self {
            Self::Token(t) => t.role,
            Self::User(u) => u.0.role,
        }
    }

    /// The id of the token or user, for logs.
    pub fn id(&self) -> &str {
        match self {
            Self::Token(t) => t.id.as_str(),
            Self::User(u) => u.0.id.as_str(),
        }
    }

    /// The token's name or the user's e-mail address.
    pub fn name(&self) -> &str {
        match self {
            Self::Token(t) => t.name.as_str(),
            Self::User(u) => u.0.email.as_str(),
        }
    }

    /// The signed-in user, if it is one.
    pub fn user(&self) -> Option<&User> {
        match self {
            Self::Token(_) => None,
            Self::User(u) => Some(&u.0),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(t) => write!(f, "API token {:?}", t.name.as_str()),
            Self::User(u) => write!(f, "user {}", u.0.email),
        }
    }
}

/// An API token or a signed-in user, of any role: allowed to read management data.
#[derive(Debug)]
pub struct Reader(pub Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Principal::of(parts, state).await? {
            Principal::Api(token) => Ok(Self(Caller::Token(token))),
            Principal::User(user) => Ok(Self(Caller::User(user))),
            _ => Err(ApiError::forbidden(
                "this endpoint needs an API token; node and enrollment tokens cannot use it",
            )),
        }
    }
}

/// An API token or a signed-in user with the admin role: allowed to change things.
#[derive(Debug)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Reader(caller) = Reader::from_request_parts(parts, state).await?;
        if caller.role() == Role::Admin {
            Ok(Self(caller))
        } else {
            Err(ApiError::forbidden(format!(
                "{caller} has the viewer role, which may only read (GET)"
            )))
        }
    }
}

/// The credential of an edge node.
#[derive(Debug)]
pub struct EdgeAgent(pub EdgeNodeId);

impl FromRequestParts<AppState> for EdgeAgent {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match NodeAgent::from_request_parts(parts, state).await?.0 {
            NodeRef::Edge(id) => Ok(Self(id)),
            NodeRef::Origin(_) => Err(ApiError::forbidden(
                "this endpoint is for edge nodes; an origin credential cannot use it",
            )),
        }
    }
}

/// The credential of any node (edge or origin).
#[derive(Debug)]
pub struct NodeAgent(pub NodeRef);

impl FromRequestParts<AppState> for NodeAgent {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Principal::of(parts, state).await? {
            Principal::Node(credential) => Ok(Self(credential.node)),
            _ => Err(ApiError::forbidden(
                "this endpoint needs a node credential (from POST /api/v1/enroll)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut req = Request::builder();
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(&parts(Some("Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer(&parts(Some("bearer  abc "))).unwrap(), "abc");
        for bad in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer "),
            Some("abc"),
        ] {
            let err = bearer(&parts(bad)).unwrap_err();
            assert_eq!(err.status(), 401, "{bad:?}");
        }
    }
}
