//! Sign-in over plain HTTP, as a browser does it: forms, cookies and headers. The browser
//! suite (`tests/ui.rs`) walks the same flows in Chromium; this one checks what a browser
//! does not show: cookie attributes, security headers, refusals, rate limit and lockout.

mod common;

use common::{Backend, Server};
use kokoa_control::auth::totp;
use kokoa_core::{Email, Role, Timestamp};
use reqwest::{StatusCode, header};

/// A client that does not follow redirects, so each answer can be looked at.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", response.headers()))
}

fn value_of(cookie: &str) -> String {
    cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The value of the hidden `csrf` field of a page.
fn csrf_field(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

struct Signin {
    base: String,
    client: reqwest::Client,
    login_cookie: String,
}

impl Signin {
    async fn new(s: &Server) -> Self {
        let client = client();
        let page = client
            .get(format!("{}/login", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let login_cookie = value_of(&set_cookie(&page, "kokoa_login"));
        Self {
            base: s.base.clone(),
            client,
            login_cookie,
        }
    }

    async fn password(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/login", self.base))
            .header(header::COOKIE, format!("kokoa_login={}", self.login_cookie))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf", &self.login_cookie),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Posts a code form of the pending session `cookie`; returns the answer.
    async fn code(&self, path: &str, cookie: &str, code: &str) -> reqwest::Response {
        let page = self
            .client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, format!("kokoa_session={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let csrf = csrf_field(&page.text().await.unwrap());
        self.client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, format!("kokoa_session={cookie}"))
            .form(&[("code", code), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn password_then_totp_gives_a_session_the_api_accepts() {
    let s = Server::start(&Backend::Sqlite).await;
    let store = s.state.store();
    kokoa_control::add_user(
        store,
        Email::parse("admin@example.com").unwrap(),
        Role::Admin,
        Some("a long admin passphrase"),
    )
    .await
    .unwrap();

    let signin = Signin::new(&s).await;
    let page = client()
        .get(format!("{}/login", s.base))
        .send()
        .await
        .unwrap();
    let headers = page.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");

    // A form posted without the double-submit value is refused.
    let forged = signin
        .client
        .post(format!("{}/login", s.base))
        .form(&[
            ("email", "admin@example.com"),
            ("password", "a long admin passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let answer = signin
        .password("admin@example.com", "a long admin passphrase")
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/login/enroll");
    let cookie = set_cookie(&answer, "kokoa_session");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    let pending = value_of(&cookie);
    // Half signed in is not signed in.
    let (status, _) = call_with_cookie(&s, &pending, "GET", "/api/v1/routes", None).await;
    assert_eq!(status, 401);

    // Enrollment: the page shows the key; the code from it finishes the sign-in.
    let page = signin
        .client
        .get(format!("{}/login/enroll", s.base))
        .header(header::COOKIE, format!("kokoa_session={pending}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page.find("data-secret=\"").unwrap() + 13;
    let secret = &page[start..start + page[start..].find('"').unwrap()];
    assert!(page.contains("data:image/svg+xml;base64,"), "a QR code");
    let wrong = signin.code("/login/enroll", &pending, "000000").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let code = totp::code_at_step(secret, totp::step_of(Timestamp::now())).unwrap();
    let done = signin.code("/login/enroll", &pending, &code).await;
    assert_eq!(done.status(), 200);
    let full = value_of(&set_cookie(&done, "kokoa_session"));
    assert_ne!(full, pending, "a new session after the second factor");
    let html = done.text().await.unwrap();
    assert_eq!(
        html.matches("<li><code>").count(),
        totp::RECOVERY_CODES,
        "{html}"
    );
    let first = html.find("<li><code>").unwrap() + 10;
    let recovery = html[first..first + 19].to_owned();

    // The session reads; a change needs its CSRF header.
    let (status, _) = call_with_cookie(&s, &full, "GET", "/api/v1/routes", None).await;
    assert_eq!(status, 200);
    let body = serde_json::json!({"name": "from-the-ui"});
    let (status, answer) =
        call_with_cookie(&s, &full, "POST", "/api/v1/origins", Some(&body)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );
    let dashboard = signin
        .client
        .get(format!("{}/", s.base))
        .header(header::COOKIE, format!("kokoa_session={full}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = dashboard.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    let csrf = &dashboard[start..start + dashboard[start..].find('"').unwrap()];
    let created = signin
        .client
        .post(format!("{}/api/v1/origins", s.base))
        .header(header::COOKIE, format!("kokoa_session={full}"))
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // The same TOTP code does not work twice; a recovery code works once.
    let again = signin
        .password("admin@example.com", "a long admin passphrase")
        .await;
    assert_eq!(again.headers()["location"], "/login/second-factor");
    let pending = value_of(&set_cookie(&again, "kokoa_session"));
    let replay = signin.code("/login/second-factor", &pending, &code).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let ok = signin
        .code("/login/second-factor", &pending, &recovery.to_lowercase())
        .await;
    assert_eq!(
        ok.status(),
        StatusCode::SEE_OTHER,
        "a recovery code signs in"
    );
    let second = value_of(&set_cookie(&ok, "kokoa_session"));
    let user = store
        .find_user_by_email(&Email::parse("admin@example.com").unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(store.recovery_codes_left(&user.id).await.unwrap(), 9);

    // Sign-out ends the session on the server, not only in the browser.
    let logout = signin
        .client
        .post(format!("{}/logout", s.base))
        .header(header::COOKIE, format!("kokoa_session={second}"))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        logout.status(),
        StatusCode::FORBIDDEN,
        "sign-out needs the CSRF token"
    );
    let dashboard = signin
        .client
        .get(format!("{}/", s.base))
        .header(header::COOKIE, format!("kokoa_session={second}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logout = signin
        .client
        .post(format!("{}/logout", s.base))
        .header(header::COOKIE, format!("kokoa_session={second}"))
        .form(&[("csrf", csrf_field(&dashboard))])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.headers()["location"], "/login");
    assert!(set_cookie(&logout, "kokoa_session").contains("Max-Age=0"));
    let (status, _) = call_with_cookie(&s, &second, "GET", "/api/v1/routes", None).await;
    assert_eq!(status, 401);
}

async fn call_with_cookie(
    s: &Server,
    cookie: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = client()
        .request(method.parse().unwrap(), format!("{}{path}", s.base))
        .header(header::COOKIE, format!("kokoa_session={cookie}"));
    if let Some(b) = body {
        request = request.json(b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_and_one_address_is_slowed_down() {
    let s = Server::start(&Backend::Sqlite).await;
    let store = s.state.store();
    let user = kokoa_control::add_user(
        store,
        Email::parse("admin@example.com").unwrap(),
        Role::Admin,
        Some("a long admin passphrase"),
    )
    .await
    .unwrap();
    let signin = Signin::new(&s).await;

    for _ in 0..5 {
        let answer = signin
            .password("admin@example.com", "not the passphrase")
            .await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        let page = answer.text().await.unwrap();
        assert!(page.contains("Sign-in failed") && !page.contains("not the passphrase"));
    }
    let (locked, _) = store.get_user(&user.id).await.unwrap();
    assert!(
        locked.is_locked(Timestamp::now()),
        "five failures lock the account"
    );
    let answer = signin
        .password("admin@example.com", "a long admin passphrase")
        .await;
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "even the right password is refused while locked"
    );
    // An unknown address gets the same answer as a wrong password.
    let unknown = signin
        .password("nobody@example.com", "whatever it is")
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(unknown.text().await.unwrap().contains("Sign-in failed"));

    // The address has used its burst of attempts by now.
    let mut limited = None;
    for attempt in 0..kokoa_control::auth::limit::BURST {
        let answer = signin
            .password("nobody@example.com", "whatever it is")
            .await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((attempt, answer.text().await.unwrap()));
            break;
        }
    }
    let (_, page) = limited.expect("the address is limited within its burst");
    assert!(page.contains("Too many sign-in attempts"), "{page}");

    // An administrator's new password lifts the lock.
    store
        .set_user_password(&user.id, Some(&kokoa_control::auth::password::hash("x")))
        .await
        .unwrap();
    assert!(
        !store
            .get_user(&user.id)
            .await
            .unwrap()
            .0
            .is_locked(Timestamp::now())
    );
}

#[tokio::test]
async fn wrong_codes_lock_the_account_and_end_the_half_signed_in_session() {
    let s = Server::start(&Backend::Sqlite).await;
    let store = s.state.store();
    let user = kokoa_control::add_user(
        store,
        Email::parse("admin@example.com").unwrap(),
        Role::Admin,
        Some("a long admin passphrase"),
    )
    .await
    .unwrap();
    let secret = totp::new_secret();
    let sealed = s
        .state
        .master_key()
        .seal(&secret, &kokoa_store::seal::totp_secret_context(&user.id));
    store
        .set_user_totp(&user.id, Some(&sealed), true, &[])
        .await
        .unwrap();
    let signin = Signin::new(&s).await;
    let answer = signin
        .password("admin@example.com", "a long admin passphrase")
        .await;
    assert_eq!(answer.headers()["location"], "/login/second-factor");
    let pending = value_of(&set_cookie(&answer, "kokoa_session"));
    let now = totp::step_of(Timestamp::now());
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| (now - 1..=now + 1).all(|step| totp::code_at_step(&secret, step).unwrap() != *c))
        .unwrap();
    for _ in 0..4 {
        let answer = signin.code("/login/second-factor", &pending, &wrong).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let last = signin.code("/login/second-factor", &pending, &wrong).await;
    assert_eq!(last.status(), StatusCode::UNAUTHORIZED);
    assert!(
        store
            .get_user(&user.id)
            .await
            .unwrap()
            .0
            .is_locked(Timestamp::now())
    );
    let gone = signin
        .client
        .get(format!("{}/login/second-factor", s.base))
        .header(header::COOKIE, format!("kokoa_session={pending}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.headers()["location"],
        "/login",
        "the session ended with the lock"
    );
}
