//! The Web UI: server-rendered sign-in pages, and an application shell whose pages a small
//! hand-written script (`assets/app.js`) fills from the same REST API the CLI uses, kept
//! current by the control plane's event stream. Everything is embedded in the binary and
//! nothing is loaded from elsewhere.
//!
//! Every response carries security headers: a content security
//! policy that allows scripts, styles and connections to this server only (no inline
//! script), no framing, and no referrer.

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use kokoa_core::{Role, Session, SessionStage, User};

use crate::{auth::session, error::ApiError, state::AppState};

mod login;

/// The pages of the application shell: path, page name (what the script renders), title.
const PAGES: &[(&str, &str, &str)] = &[
    ("/", "dashboard", "Dashboard"),
    ("/ui/origins", "origins", "Origins"),
    ("/ui/routes", "routes", "Routes"),
    ("/ui/edges", "edges", "Edge nodes"),
    ("/ui/certificates", "certificates", "Certificates"),
    ("/ui/dns", "dns", "DNS"),
    ("/ui/events", "events", "Events"),
    ("/ui/settings/modules", "modules", "Modules"),
    ("/ui/users", "users", "Users and API tokens"),
];

/// The content security policy of every response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, merged into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/edges/{id}", get(edge_detail))
        .route("/ui/routes/{id}", get(route_detail))
        .route("/logout", post(login::logout))
        .merge(login::routes());
    for &(path, page, title) in PAGES {
        router = router.route(
            path,
            get(
                move |State(state): State<AppState>, headers: HeaderMap| async move {
                    shell(&state, &headers, page, title, None).await
                },
            ),
        );
    }
    router
}

/// Adds the security headers to a response.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn edge_detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shell(&state, &headers, "edge", "Edge node", Some(&id)).await
}

async fn route_detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shell(&state, &headers, "route", "Route", Some(&id)).await
}

/// The signed-in user of a page request, or where to send the browser instead.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<(Session, User), Response> {
    match session::current(headers, state).await {
        Ok(Some((s, u))) if s.stage == SessionStage::Full => Ok((s, u)),
        Ok(Some(_)) => Err(Redirect::to("/login/second-factor").into_response()),
        Ok(None) => Err(Redirect::to("/login").into_response()),
        Err(e) => Err(e.into_response()),
    }
}

async fn shell(
    state: &AppState,
    headers: &HeaderMap,
    page: &str,
    title: &str,
    id: Option<&str>,
) -> Response {
    let (session, user) = match signed_in(state, headers).await {
        Ok(found) => found,
        Err(redirect) => return redirect,
    };
    let nav: String = PAGES
        .iter()
        .map(|&(path, name, label)| {
            let current = if name == page
                || (page == "edge" && name == "edges")
                || (page == "route" && name == "routes")
            {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<li><a href=\"{path}\"{current}>{label}</a></li>")
        })
        .collect();
    let role = match user.role {
        Role::Admin => "admin",
        _ => "viewer",
    };
    let body = format!(
        "<header class=\"top\">\
           <a class=\"brand\" href=\"/\">Kokoa Proxy</a>\
           <nav aria-label=\"Main\"><ul>{nav}</ul></nav>\
           <div class=\"who\"><span>{email} <span class=\"badge\">{role}</span></span>\
             <form method=\"post\" action=\"/logout\">\
               <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
               <button type=\"submit\" class=\"link\">Sign out</button>\
             </form></div>\
         </header>\
         <main id=\"main\" tabindex=\"-1\">\
           <div class=\"heading\"><h1 id=\"title\">{title}</h1>\
             <span id=\"live\" class=\"live\" role=\"status\" aria-live=\"polite\"></span></div>\
           <div id=\"app\" data-page=\"{page}\" data-role=\"{role}\" data-id=\"{id}\" \
             data-event-kinds=\"{kinds}\">\
             <p class=\"muted\">Loading…</p></div>\
           <noscript><p>These pages need JavaScript (a script of this server only).</p></noscript>\
         </main>",
        email = esc(user.email.as_str()),
        csrf = esc(&session.csrf_token),
        title = esc(title),
        id = esc(id.unwrap_or_default()),
        kinds = crate::events::kinds::ALL.join(" "),
    );
    document(title, &body, Some(&session.csrf_token))
}

/// A whole HTML page. `csrf`, for signed-in pages, goes where the script reads it.
fn document(title: &str, body: &str, csrf: Option<&str>) -> Response {
    let meta = csrf
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">", esc(t)))
        .unwrap_or_default();
    let script = if csrf.is_some() {
        "<script src=\"/ui/assets/app.js\" defer></script>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · Kokoa Proxy</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\">\
         <link rel=\"icon\" href=\"/ui/assets/favicon.svg\" type=\"image/svg+xml\">{meta}{script}\
         </head><body><a class=\"skip\" href=\"#main\">Skip to content</a>{body}</body></html>",
        title = esc(title),
    );
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(html),
    )
        .into_response()
}

/// The static files, compiled in.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        "favicon.svg" => (include_str!("assets/favicon.svg"), "image/svg+xml"),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file")
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn escaped_text_opens_no_tag_or_attribute(text in "\\PC{0,80}") {
            let out = esc(&text);
            prop_assert!(!out.contains(['<', '>', '"', '\'']));
            let back = out
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            prop_assert_eq!(back, text);
        }
    }
}
