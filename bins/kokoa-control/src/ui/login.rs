//! Sign-in: e-mail address and password, then the TOTP second factor (set up at the first
//! sign-in: QR code, then recovery codes shown once), sign-out.
//!
//! Guessing is slowed per client address ([`LoginLimiter`](crate::auth::limit)) and
//! stopped per account: [`MAX_FAILURES`] wrong passwords or codes in a row lock the
//! account for [`LOCK_SECONDS`]. The sign-in form is protected against cross-site
//! submission by a double-submit cookie; later forms by the session's CSRF token.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

use axum::{
    Form, Router,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use kokoa_core::{Email, Session, SessionStage, Timestamp, TokenHash, User};
use kokoa_store::seal::totp_secret_context;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{document, esc};
use crate::{
    auth::{password, session, totp},
    error::ApiError,
    state::AppState,
};

/// Wrong passwords or codes in a row that lock an account.
pub(super) const MAX_FAILURES: u32 = 5;
/// How long a locked account stays locked.
pub(super) const LOCK_SECONDS: i64 = 15 * 60;
/// The cookie of the double-submit check on the sign-in form.
const LOGIN_COOKIE: &str = "kokoa_login";
/// The name authenticator apps show for the account.
const ISSUER: &str = "Kokoa Proxy";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route(
            "/login/second-factor",
            get(second_factor_page).post(second_factor),
        )
        .route("/login/enroll", get(enroll_page).post(enroll))
        .route("/login/oidc", get(oidc_start))
        .route("/login/oidc/callback", get(oidc_callback))
}

/// The client's address: the peer of the connection (when the server was started with
/// connection info), or, when that peer is a trusted reverse proxy, the address it
/// reports in `X-Forwarded-For`.
struct ClientIp(IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            state.trusted_proxies(),
        )))
    }
}

/// The first address from the right of `X-Forwarded-For` that is not one of `trusted`,
/// when the request came through one of them; else `peer`. (Entries further left were
/// written by the client itself and prove nothing.)
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: Zeroizing<String>,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct CodeForm {
    code: Zeroizing<String>,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// A sign-in page: a card with a heading, an optional message and a form.
fn card(title: &str, message: Option<&str>, content: &str) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        "<main id=\"main\" class=\"signin\"><div class=\"card\">\
         <p class=\"brand\">Kokoa Proxy</p><h1>{}</h1>{message}{content}</div></main>",
        esc(title)
    )
}

fn page(status: StatusCode, title: &str, body: String) -> Response {
    let mut response = document(title, &body, None);
    *response.status_mut() = status;
    response
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    csrf: &str,
    email: &str,
    message: Option<&str>,
) -> Response {
    let sso = state
        .oidc()
        .map(|o| {
            format!(
                "<p class=\"or\">or</p><p><a class=\"button secondary wide\" href=\"/login/oidc\">{}</a></p>",
                esc(&o.config().label)
            )
        })
        .unwrap_or_default();
    let form = format!(
        "<form method=\"post\" action=\"/login\" class=\"stack\">\
           <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
           <label for=\"email\">E-mail address</label>\
           <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required \
             autofocus value=\"{email}\">\
           <label for=\"password\">Password</label>\
           <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required>\
           <button type=\"submit\">Sign in</button>\
         </form>{sso}",
        csrf = esc(csrf),
        email = esc(email),
    );
    page(status, "Sign in", card("Sign in", message, &form))
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some((s, _))) = session::current(&headers, &state).await
        && s.stage == SessionStage::Full
    {
        return Redirect::to("/").into_response();
    }
    let (token, cookie) = match session::cookie_value(&headers, LOGIN_COOKIE) {
        Some(t) => (t.to_owned(), None),
        None => {
            let t = kokoa_core::secret::new_token("login").to_string();
            let mut c = format!("{LOGIN_COOKIE}={t}; Path=/login; HttpOnly; SameSite=Strict");
            if state.secure_cookies() {
                c.push_str("; Secure");
            }
            (t, Some(c))
        }
    };
    let mut response = login_form(&state, StatusCode::OK, &token, "", None);
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response
}

fn too_many(wait: std::time::Duration) -> String {
    format!(
        "Too many sign-in attempts from your address; try again in {} seconds.",
        wait.as_secs().max(1)
    )
}

const FAILED: &str = "Sign-in failed: the e-mail address or password is wrong, or the account \
                      is locked after too many failures (it opens again after 15 minutes).";

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let cookie = session::cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    let same = !cookie.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            cookie.as_bytes(),
            form.csrf.as_bytes(),
        ));
    if !same {
        return Ok(login_form(
            &state,
            StatusCode::FORBIDDEN,
            cookie,
            &form.email,
            Some("The sign-in form expired; please sign in again."),
        ));
    }
    if let Err(wait) = state.login_limiter().attempt(ip, Instant::now()) {
        return Ok(login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            cookie,
            &form.email,
            Some(&too_many(wait)),
        ));
    }
    let store = state.store();
    let now = Timestamp::now();
    let found = match Email::parse(form.email.trim()) {
        Ok(email) => store.find_user_by_email(&email).await?,
        Err(_) => None,
    };
    let Some((user, secrets)) = found else {
        password::verify(&form.password, None);
        tracing::info!(%ip, "sign-in refused: unknown e-mail address");
        return Ok(login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            cookie,
            &form.email,
            Some(FAILED),
        ));
    };
    if user.is_locked(now) || !password::verify(&form.password, secrets.password_hash.as_deref()) {
        if !user.is_locked(now) {
            failure(&state, &user).await?;
        }
        tracing::info!(user = %user.id, %ip, "sign-in refused: wrong password or locked");
        return Ok(login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            cookie,
            &form.email,
            Some(FAILED),
        ));
    }
    let (_, token) = session::create(&state, &user.id, SessionStage::SecondFactor).await?;
    let next = if user.totp_enabled {
        "/login/second-factor"
    } else {
        "/login/enroll"
    };
    Ok(with_cookie(
        Redirect::to(next),
        session::set_cookie(&state, &token),
    ))
}

fn with_cookie(response: impl IntoResponse, cookie: HeaderValue) -> Response {
    let mut response = response.into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Counts a wrong password or code; a lock ends the user's sessions.
async fn failure(state: &AppState, user: &User) -> Result<(), ApiError> {
    let lock_until = Timestamp::from_unix(Timestamp::now().as_unix() + LOCK_SECONDS)?;
    let now = state
        .store()
        .record_login_failure(&user.id, MAX_FAILURES, lock_until)
        .await?;
    if now.locked_until.is_some() && now.locked_until != user.locked_until {
        state.store().delete_user_sessions(&user.id).await?;
        tracing::warn!(user = %user.id, "account locked after {MAX_FAILURES} failed sign-ins");
    }
    Ok(())
}

/// The session of a sign-in waiting for its second factor.
async fn pending(state: &AppState, headers: &HeaderMap) -> Result<(Session, User), Response> {
    match session::current(headers, state).await {
        Ok(Some((_, u))) if u.is_locked(Timestamp::now()) => {
            Err(Redirect::to("/login").into_response())
        }
        Ok(Some((s, u))) if s.stage == SessionStage::SecondFactor => Ok((s, u)),
        Ok(Some(_)) => Err(Redirect::to("/").into_response()),
        Ok(None) => Err(Redirect::to("/login").into_response()),
        Err(e) => Err(e.into_response()),
    }
}

fn code_form(action: &str, csrf: &str, hint: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\" class=\"stack\">\
           <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
           <label for=\"code\">{hint}</label>\
           <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" required autofocus \
             spellcheck=\"false\" autocapitalize=\"none\">\
           <button type=\"submit\">Continue</button>\
         </form>\
         <p><a href=\"/login\">Start again</a></p>",
        csrf = esc(csrf),
        hint = esc(hint),
    )
}

fn second_factor_form(status: StatusCode, session: &Session, message: Option<&str>) -> Response {
    let form = code_form(
        "/login/second-factor",
        &session.csrf_token,
        "The 6-digit code of your authenticator app, or one of your recovery codes",
    );
    page(
        status,
        "Second factor",
        card("Second factor", message, &form),
    )
}

async fn second_factor_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match pending(&state, &headers).await {
        Ok((_, user)) if !user.totp_enabled => Redirect::to("/login/enroll").into_response(),
        Ok((session, _)) => second_factor_form(StatusCode::OK, &session, None),
        Err(redirect) => redirect,
    }
}

/// Ends the pending session and starts the full one.
async fn finish(state: &AppState, pending: &Session, user: &User) -> Result<HeaderValue, ApiError> {
    let store = state.store();
    store.delete_session(&pending.id).await?;
    store.record_login_success(&user.id).await?;
    let (_, token) = session::create(state, &user.id, SessionStage::Full).await?;
    tracing::info!(user = %user.id, "signed in");
    Ok(session::set_cookie(state, &token))
}

/// Checks a TOTP code against `secret`, accepting each step once.
async fn accept_code(
    state: &AppState,
    user: &User,
    secret: &str,
    code: &str,
) -> Result<bool, ApiError> {
    for step in totp::matching_steps(secret, code, Timestamp::now()) {
        if state.store().use_totp_step(&user.id, step).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn totp_secret(state: &AppState, user: &User) -> Result<Option<Zeroizing<String>>, ApiError> {
    let (_, secrets) = state.store().get_user(&user.id).await?;
    secrets
        .totp_secret
        .map(|s| state.master_key().open(&s, &totp_secret_context(&user.id)))
        .transpose()
        .map_err(Into::into)
}

async fn second_factor(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Result<Response, ApiError> {
    let (session, user) = match pending(&state, &headers).await {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    if !session::csrf_matches(&session, Some(&form.csrf)) {
        return Ok(second_factor_form(
            StatusCode::FORBIDDEN,
            &session,
            Some("The form expired; please enter the code again."),
        ));
    }
    if let Err(wait) = state.login_limiter().attempt(ip, Instant::now()) {
        return Ok(second_factor_form(
            StatusCode::TOO_MANY_REQUESTS,
            &session,
            Some(&too_many(wait)),
        ));
    }
    let secret = totp_secret(&state, &user).await?;
    let code = form.code.trim();
    let accepted = match &secret {
        Some(secret) if user.totp_enabled && code.len() == totp::DIGITS as usize => {
            accept_code(&state, &user, secret, code).await?
        }
        Some(_) if user.totp_enabled => {
            let hash = TokenHash::of(&totp::normalise_recovery_code(code));
            let used = state.store().use_recovery_code(&user.id, &hash).await?;
            if used {
                tracing::warn!(user = %user.id, "signed in with a recovery code");
            }
            used
        }
        _ => return Ok(Redirect::to("/login/enroll").into_response()),
    };
    if !accepted {
        failure(&state, &user).await?;
        return Ok(second_factor_form(
            StatusCode::UNAUTHORIZED,
            &session,
            Some("That code is wrong or was used already; wait for the next code and try again."),
        ));
    }
    let cookie = finish(&state, &session, &user).await?;
    Ok(with_cookie(Redirect::to("/"), cookie))
}

fn enroll_form(
    status: StatusCode,
    session: &Session,
    user: &User,
    secret: &str,
    message: Option<&str>,
) -> Response {
    use base64::Engine as _;
    let uri = totp::otpauth_uri(ISSUER, user.email.as_str(), secret);
    let qr = totp::qr_svg(&uri)
        .map(|svg| {
            format!(
                "<img class=\"qr\" alt=\"QR code of the authenticator setup\" width=\"200\" \
                 height=\"200\" src=\"data:image/svg+xml;base64,{}\">",
                base64::engine::general_purpose::STANDARD.encode(svg)
            )
        })
        .unwrap_or_default();
    let grouped: Vec<&str> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let content = format!(
        "<p>Scan this code with an authenticator app (any app for time-based codes), then \
         enter the code it shows.</p>{qr}\
         <p>Or type the key by hand: <code id=\"totp-secret\" data-secret=\"{secret}\">{grouped}</code></p>{form}",
        secret = esc(secret),
        grouped = esc(&grouped.join(" ")),
        form = code_form("/login/enroll", &session.csrf_token, "Code from the app"),
    );
    page(
        status,
        "Set up the second factor",
        card("Set up the second factor", message, &content),
    )
}

async fn enroll_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (session, user) = match pending(&state, &headers).await {
        Ok((_, u)) if u.totp_enabled => {
            return Ok(Redirect::to("/login/second-factor").into_response());
        }
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let secret = match totp_secret(&state, &user).await? {
        Some(secret) => secret,
        None => {
            let secret = totp::new_secret();
            let sealed = state
                .master_key()
                .seal(&secret, &totp_secret_context(&user.id));
            state
                .store()
                .set_user_totp(&user.id, Some(&sealed), false, &[])
                .await?;
            secret
        }
    };
    Ok(enroll_form(StatusCode::OK, &session, &user, &secret, None))
}

async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Result<Response, ApiError> {
    let (session, user) = match pending(&state, &headers).await {
        Ok((_, u)) if u.totp_enabled => {
            return Ok(Redirect::to("/login/second-factor").into_response());
        }
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let Some(secret) = totp_secret(&state, &user).await? else {
        return Ok(Redirect::to("/login/enroll").into_response());
    };
    let refuse = |status, message: String| {
        Ok(enroll_form(
            status,
            &session,
            &user,
            &secret,
            Some(&message),
        ))
    };
    if !session::csrf_matches(&session, Some(&form.csrf)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "The form expired; enter the code again.".into(),
        );
    }
    if let Err(wait) = state.login_limiter().attempt(ip, Instant::now()) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, too_many(wait));
    }
    if !accept_code(&state, &user, &secret, &form.code).await? {
        failure(&state, &user).await?;
        return refuse(
            StatusCode::UNAUTHORIZED,
            "That code is wrong; check the phone's clock and enter the current code.".into(),
        );
    }
    let codes = totp::new_recovery_codes();
    let hashes: Vec<TokenHash> = codes
        .iter()
        .map(|c| TokenHash::of(&totp::normalise_recovery_code(c)))
        .collect();
    let sealed = state
        .master_key()
        .seal(&secret, &totp_secret_context(&user.id));
    let store = state.store();
    store
        .set_user_totp(&user.id, Some(&sealed), true, &hashes)
        .await?;
    // The code just used stays used.
    for step in totp::matching_steps(&secret, &form.code, Timestamp::now()) {
        if store.use_totp_step(&user.id, step).await? {
            break;
        }
    }
    tracing::info!(user = %user.id, "second factor set up");
    let cookie = finish(&state, &session, &user).await?;
    let list: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", esc(c)))
        .collect();
    let content = format!(
        "<p>Your second factor is set up. These recovery codes each sign you in once if you \
         lose the authenticator. <strong>They are shown only now</strong>: store them \
         somewhere safe.</p><ol id=\"recovery-codes\" class=\"codes\">{list}</ol>\
         <p><a class=\"button\" href=\"/\">Continue to the dashboard</a></p>"
    );
    Ok(with_cookie(
        page(
            StatusCode::OK,
            "Recovery codes",
            card("Recovery codes", None, &content),
        ),
        cookie,
    ))
}

/// Ends the session (the form carries its CSRF token) and forgets the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, ApiError> {
    if let Some((session, user)) = session::current(&headers, &state).await? {
        if !session::csrf_matches(&session, Some(&form.csrf)) {
            return Err(ApiError::forbidden(
                "the sign-out form does not carry this session's CSRF token; reload the page",
            ));
        }
        state.store().delete_session(&session.id).await?;
        tracing::info!(user = %user.id, "signed out");
    }
    Ok(with_cookie(
        Redirect::to("/login"),
        session::clear_cookie(&state),
    ))
}

/// The cookie that ties a sign-in at the provider to this browser. `SameSite=Lax`: the
/// provider's redirect back is a cross-site navigation, which a `Strict` cookie would miss.
const OIDC_COOKIE: &str = "kokoa_oidc";

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sso_failed(message: &str) -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "Single sign-on failed",
        card(
            "Single sign-on failed",
            Some(message),
            "<p><a class=\"button\" href=\"/login\">Back to sign-in</a></p>",
        ),
    )
}

/// Sends the browser to the provider, remembering the sign-in. Each start writes a row
/// (state, nonce, verifier) before anyone signed in, so starts are limited per address
/// like sign-in attempts, and the rows expire (the leader deletes them).
async fn oidc_start(State(state): State<AppState>, ClientIp(ip): ClientIp) -> Response {
    let Some(oidc) = state.oidc() else {
        return Redirect::to("/login").into_response();
    };
    if let Err(wait) = state.login_limiter().attempt(ip, Instant::now()) {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Single sign-on failed",
            card(
                "Single sign-on failed",
                Some(&too_many(wait)),
                "<p><a class=\"button\" href=\"/login\">Back to sign-in</a></p>",
            ),
        );
    }
    match oidc.start(state.store()).await {
        Ok((url, pending)) => {
            let mut cookie = format!(
                "{OIDC_COOKIE}={pending}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age={}",
                crate::auth::oidc::PENDING_SECONDS
            );
            if state.secure_cookies() {
                cookie.push_str("; Secure");
            }
            match HeaderValue::from_str(&cookie) {
                Ok(c) => with_cookie(Redirect::to(&url), c),
                Err(_) => sso_failed("the sign-in could not be started"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on cannot start");
            sso_failed(&e.to_string())
        }
    }
}

/// Where the provider sends the browser back: the identity is checked, the user found or
/// created, and a session started.
async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let Some(oidc) = state.oidc() else {
        return Ok(Redirect::to("/login").into_response());
    };
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or_default();
        return Ok(sso_failed(&format!(
            "the provider answered {error}: {detail}"
        )));
    }
    let (Some(code), Some(pending)) = (&query.code, &query.state) else {
        return Ok(sso_failed("the provider sent no code; start again"));
    };
    let store = state.store();
    let identity = match oidc
        .finish(
            store,
            session::cookie_value(&headers, OIDC_COOKIE),
            pending,
            code,
        )
        .await
        .and_then(|who| oidc.allows(&who).map(|()| who))
    {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on refused");
            return Ok(sso_failed(&e.to_string()));
        }
    };
    let Ok(email) = Email::parse(&identity.email) else {
        return Ok(sso_failed(&format!(
            "the provider's e-mail address {:?} cannot be used",
            identity.email
        )));
    };
    let user = match store.find_user_by_email(&email).await? {
        Some((user, _)) => user,
        None => {
            let user = User::new(email, oidc.role_of(&identity), Timestamp::now());
            store.create_user(&user, None).await?;
            tracing::info!(user = %user.id, email = %user.email, role = ?user.role, "user created at first single sign-on");
            user
        }
    };
    if user.is_locked(Timestamp::now()) {
        return Ok(sso_failed(
            "this account is locked after too many failed sign-ins; try again in 15 minutes",
        ));
    }
    let second_factor = user.totp_enabled || oidc.config().require_totp;
    let (stage, next) = match (second_factor, user.totp_enabled) {
        (false, _) => (SessionStage::Full, "/"),
        (true, true) => (SessionStage::SecondFactor, "/login/second-factor"),
        (true, false) => (SessionStage::SecondFactor, "/login/enroll"),
    };
    if stage == SessionStage::Full {
        store.record_login_success(&user.id).await?;
        tracing::info!(user = %user.id, subject = %identity.subject, "signed in through single sign-on");
    }
    let (_, token) = session::create(&state, &user.id, stage).await?;
    // A page rather than a redirect: the browser arrived here from the provider's site, and
    // only a navigation started by this site's own page sends the SameSite=Strict cookie.
    let content = format!(
        "<p>Signed in as {}.</p><p><a class=\"button\" id=\"continue\" href=\"{next}\">Continue</a></p>",
        esc(user.email.as_str())
    );
    let mut response = page(
        StatusCode::OK,
        "Signed in",
        card("Signed in", None, &content),
    );
    if let Ok(refresh) = HeaderValue::from_str(&format!("0; url={next}")) {
        response.headers_mut().insert("refresh", refresh);
    }
    let mut clear = format!("{OIDC_COOKIE}=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    if state.secure_cookies() {
        clear.push_str("; Secure");
    }
    if let Ok(c) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(with_cookie(response, session::set_cookie(&state, &token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("127.0.0.1");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.5".parse().unwrap(),
        );
        assert_eq!(
            client_ip(ip("192.0.2.1"), &headers, &[proxy]),
            ip("192.0.2.1")
        );
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
        assert_eq!(client_ip(proxy, &headers, &[proxy]), ip("203.0.113.5"));
        let chain = [proxy, ip("203.0.113.5")];
        assert_eq!(client_ip(proxy, &headers, &chain), ip("198.51.100.7"));
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
