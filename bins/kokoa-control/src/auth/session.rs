//! Web UI sessions: the cookie, its lifetime, and the CSRF token each session carries.
//!
//! The cookie holds a random 256-bit token (`kk_ses_…`); the store keeps only its hash.
//! It is `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites cannot send
//! it) and `Secure` when the control plane's public URL is `https://`. Every
//! state-changing request of a session must also carry the session's CSRF token, in the
//! `X-CSRF-Token` header (scripts) or the `csrf` form field (forms), which a page of
//! another site cannot know.

use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use kokoa_core::{Session, SessionId, SessionStage, Timestamp, TokenHash, User, UserId};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{error::ApiError, state::AppState};

/// The session cookie's name.
pub const COOKIE: &str = "kokoa_session";
/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "kk_ses";
/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends after this long without use.
pub const IDLE_SECONDS: i64 = 12 * 3600;
/// And after this long in any case.
pub const LIFETIME_SECONDS: i64 = 7 * 24 * 3600;
/// A login that stopped at the second factor ends after this long.
pub const SECOND_FACTOR_SECONDS: i64 = 5 * 60;
/// Uses closer together than this do not write the session again.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// A new session of `user` at `stage`; returns it and the cookie's token.
pub async fn create(
    state: &AppState,
    user: &UserId,
    stage: SessionStage,
) -> Result<(Session, Zeroizing<String>), ApiError> {
    let now = Timestamp::now();
    let lifetime = match stage {
        SessionStage::Full => IDLE_SECONDS,
        _ => SECOND_FACTOR_SECONDS,
    };
    let token = kokoa_core::secret::new_token(SESSION_PREFIX);
    let session = Session {
        id: SessionId::new(),
        user_id: user.clone(),
        stage,
        csrf_token: kokoa_core::secret::new_token("csrf").to_string(),
        created_at: now,
        last_seen: now,
        expires_at: after(now, lifetime),
    };
    let store = state.store();
    // Each sign-in sweeps away the sessions that ended.
    store.prune_sessions(now).await?;
    store
        .create_session(&session, &TokenHash::of(&token))
        .await?;
    Ok((session, token))
}

fn after(t: Timestamp, seconds: i64) -> Timestamp {
    Timestamp::from_unix(t.as_unix().saturating_add(seconds)).unwrap_or(t)
}

/// The `Set-Cookie` value that stores `token` in the browser.
pub fn set_cookie(state: &AppState, token: &str) -> HeaderValue {
    cookie(state, token, None)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(state: &AppState) -> HeaderValue {
    cookie(state, "", Some(0))
}

fn cookie(state: &AppState, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if state.secure_cookies() {
        text.push_str("; Secure");
    }
    // Tokens are base64url: always a valid header value.
    HeaderValue::from_str(&text).expect("a cookie of base64url characters")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The request's session and its user, at any stage; `None` without a (live) session
/// cookie. Keeps a full session alive (see [`IDLE_SECONDS`]).
pub async fn current(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<(Session, User)>, ApiError> {
    let Some(token) = cookie_value(headers, COOKIE) else {
        return Ok(None);
    };
    let store = state.store();
    let now = Timestamp::now();
    let Some(mut session) = store.find_session(&TokenHash::of(token), now).await? else {
        return Ok(None);
    };
    let user = match store.get_user(&session.user_id).await {
        Ok((user, _)) => user,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if session.stage == SessionStage::Full
        && now.as_unix() - session.last_seen.as_unix() >= TOUCH_EVERY_SECONDS
    {
        let end = after(now, IDLE_SECONDS).min(after(session.created_at, LIFETIME_SECONDS));
        store.touch_session(&session.id, now, end).await?;
        session.last_seen = now;
        session.expires_at = end;
    }
    Ok(Some((session, user)))
}

/// Whether `given` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(session: &Session, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(session.csrf_token.as_bytes())))
}

/// Refuses a state-changing request of a session that does not carry its CSRF header.
pub fn check_csrf_header(parts: &Parts, session: &Session) -> Result<(), ApiError> {
    if parts.method.is_safe() {
        return Ok(());
    }
    let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if csrf_matches(session, given) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this request is signed in with a Web UI session but does not carry that \
             session's X-CSRF-Token header; reload the page and try again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; kokoa_session=kk_ses_x".parse().unwrap(),
        );
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&headers, COOKIE), Some("kk_ses_x"));
        assert_eq!(cookie_value(&headers, "b"), Some("2"));
        assert_eq!(cookie_value(&headers, "c"), None);
        headers.insert(header::COOKIE, "kokoa_session=".parse().unwrap());
        assert_eq!(cookie_value(&headers, COOKIE), None);
    }
}
