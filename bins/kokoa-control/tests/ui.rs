//! The Web UI in a real headless Chromium driven over WebDriver (chromedriver): sign in
//! with password and TOTP (the code computed here), create an origin and a route, see the
//! route listed with its status, a viewer changes nothing, sign-out ends the session.
//!
//! Single sign-on runs against a real OpenID provider started here (the npm package
//! `oidc-provider`, installed by `scripts/install-test-npm`).
//!
//! Needs Debian's `chromium` and `chromium-driver`. With `KOKOA_SCREENSHOTS=DIR` the
//! screenshots of the main pages are written to DIR (`scripts/screenshots` refreshes
//! `docs/screenshots`).

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use kokoa_control::{
    AppState, api,
    auth::totp,
    runtime::{self, RuntimeSettings},
};
use kokoa_core::{
    CheckStatus, EdgeStatus, Email, HealthCheck, OriginStatus, Role, Severity, SubnetPool,
    Timestamp, TrafficCounts, TrafficResolution, TrafficRow, TrafficScope,
};
use kokoa_store::{MasterKey, Store};
use serde_json::{Value, json};
use test_ports::tcp as free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(15);

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install it with `apt-get install -y --no-install-recommends \
             {package}` (scripts/install-deps does)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver {
        child,
        url,
        _profile: tempfile::tempdir().unwrap(),
    };
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

/// A new browser window (its own profile, so no cookies are shared).
async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    browser_with(driver, width, height, &[]).await
}

/// A new browser window with extra command-line switches.
async fn browser_with(driver: &Driver, width: u32, height: u32, extra: &[&str]) -> Client {
    let profile = tempfile::tempdir().unwrap().keep();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
                // Nothing but loopback resolves, so no page can reach beyond this machine.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        }
    });
    let mut caps = caps;
    let args = caps["goog:chromeOptions"]["args"].as_array_mut().unwrap();
    args.extend(extra.iter().map(|a| json!(a)));
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// The control plane with its UI on 127.0.0.1, public URL `http://` (no `Secure` cookies).
struct Plane {
    base: String,
    state: AppState,
    store: Arc<dyn Store>,
    key: MasterKey,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    duties: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(duties) = &self.duties {
            duties.abort();
        }
    }
}

async fn plane() -> Plane {
    plane_on(0, None, |_| {}).await
}

/// The control plane on `port` (0: any free one); with `duties`, its background duties
/// (health checks, edge automation, DNS) run too.
async fn plane_on(
    port: u16,
    duties: Option<RuntimeSettings>,
    configure: impl FnOnce(&AppState),
) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = common::open_store(&common::Backend::Sqlite, dir.path()).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key = MasterKey::generate();
    let settings = duties.clone().unwrap_or_default();
    let (state, task) = serve(listener, &store, &key, &base, settings, configure);
    let duties = duties.map(|_| tokio::spawn(runtime::run(state.clone(), std::future::pending())));
    Plane {
        base,
        state,
        store,
        key,
        _dir: dir,
        task,
        duties,
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    store: &Arc<dyn Store>,
    key: &MasterKey,
    base: &str,
    settings: RuntimeSettings,
    configure: impl FnOnce(&AppState),
) -> (AppState, tokio::task::JoinHandle<()>) {
    let state = AppState::with_settings(
        Arc::clone(store),
        key.clone(),
        SubnetPool::default(),
        base.to_owned(),
        settings,
    );
    configure(&state);
    let router = api::router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (state, task)
}

impl Plane {
    /// Stops the control plane (its event streams end) and starts it again on the same
    /// address and database, as a restart does.
    async fn restart(&mut self) {
        self.state.begin_shutdown();
        self.task.abort();
        let address = self.base.trim_start_matches("http://").to_owned();
        let started = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(&address).await {
                Ok(l) => break l,
                Err(e) if started.elapsed() < WAIT => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {address} again: {e}"),
            }
        };
        let (state, task) = serve(
            listener,
            &self.store,
            &self.key,
            &self.base,
            RuntimeSettings::default(),
            |_| {},
        );
        self.state = state;
        self.task = task;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits until the element `css` holds `want` in its text (ignoring case: headings are
/// shown in capitals).
async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
            && text.to_lowercase().contains(&want.to_lowercase())
        {
            return text;
        }
        if started.elapsed() > WAIT {
            let page = c.source().await.unwrap_or_default();
            panic!("{css} never showed {want:?}; the page: {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element `css` holds exactly `want`.
async fn wait_exact(c: &Client, css: &str, want: &str) {
    wait_exact_within(c, css, want, WAIT).await;
}

async fn wait_exact_within(c: &Client, css: &str, want: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
            && text.trim() == want
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{css} never showed exactly {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens an application page and waits until its data is drawn.
async fn open(c: &Client, base: &str, path: &str) {
    c.goto(&format!("{base}{path}")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#app[data-ready]"))
        .await
        .unwrap_or_else(|e| panic!("{path} did not finish drawing: {e}"));
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Writes a screenshot to `$KOKOA_SCREENSHOTS/name.png` when that is set; always checks
/// that the browser produced a PNG.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    if let Some(dir) = std::env::var_os("KOKOA_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// Signs in with password and TOTP; returns the TOTP secret. `secret`: the one set up
/// before with the time step to use, or `None` to set it up (first sign-in).
async fn sign_in(
    c: &Client,
    base: &str,
    email: &str,
    password: &str,
    secret: Option<(&str, u64)>,
) -> String {
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        path_of(c).await,
        "/login",
        "signed-out pages send to /login"
    );
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "button[type=submit]").await;
    let secret = match secret {
        Some((known, step)) => {
            c.wait()
                .at_most(WAIT)
                .for_element(Locator::Css("form[action='/login/second-factor']"))
                .await
                .unwrap();
            fill(c, "#code", &totp::code_at_step(known, step).unwrap()).await;
            click(c, "button[type=submit]").await;
            known.to_owned()
        }
        None => {
            let key = c
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css("#totp-secret"))
                .await
                .unwrap();
            let secret = key.attr("data-secret").await.unwrap().unwrap();
            assert!(
                c.find(Locator::Css("img.qr")).await.is_ok(),
                "the QR code is on the page"
            );
            if email.starts_with("admin") {
                screenshot(c, "enroll").await;
            }
            let code = totp::code_at_step(&secret, totp::step_of(Timestamp::now())).unwrap();
            fill(c, "#code", &code).await;
            click(c, "button[type=submit]").await;
            let codes = c
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css("#recovery-codes"))
                .await
                .unwrap();
            let shown = codes.find_all(Locator::Css("li")).await.unwrap();
            assert_eq!(
                shown.len(),
                totp::RECOVERY_CODES,
                "recovery codes shown once"
            );
            click(c, "a.button").await;
            secret
        }
    };
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#app[data-ready]"))
        .await
        .unwrap();
    assert_eq!(path_of(c).await, "/");
    secret
}

async fn sign_out(c: &Client) {
    click(c, "header form[action='/logout'] button").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#email"))
        .await
        .unwrap();
}

/// Runs `fetch` inside the page with the page's CSRF token; returns the answer's status.
async fn fetch_status(c: &Client, method: &str, path: &str, body: Value, csrf: bool) -> u64 {
    let script = "const [method, path, body, csrf, done] = arguments;
        const headers = {'Content-Type': 'application/json'};
        if (csrf) headers['X-CSRF-Token'] = document.querySelector('meta[name=csrf-token]').content;
        fetch(path, {method, headers, body: JSON.stringify(body)}).then(r => done(r.status));";
    c.execute_async(script, vec![json!(method), json!(path), body, json!(csrf)])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_person_runs_the_control_plane_from_the_browser() {
    let plane = plane().await;
    let base = plane.base.as_str();
    let store = plane.state.store();
    for (email, role) in [
        ("admin@kokoa.test", Role::Admin),
        ("viewer@kokoa.test", Role::Viewer),
    ] {
        kokoa_control::add_user(
            store,
            Email::parse(email).unwrap(),
            role,
            Some("correct horse battery staple"),
        )
        .await
        .unwrap();
    }
    let driver = start_driver().await;
    let c = browser(&driver, 1280, 860).await;

    // The sign-in page, then password and first TOTP set-up.
    c.goto(&format!("{base}/login")).await.unwrap();
    wait_text(&c, "h1", "Sign in").await;
    screenshot(&c, "login").await;
    fill(&c, "#email", "admin@kokoa.test").await;
    fill(&c, "#password", "wrong password here").await;
    click(&c, "button[type=submit]").await;
    wait_text(&c, ".error", "Sign-in failed").await;
    let secret = sign_in(
        &c,
        base,
        "admin@kokoa.test",
        "correct horse battery staple",
        None,
    )
    .await;

    // An origin with a service.
    open(&c, base, "/ui/origins").await;
    fill(&c, "[data-field=name]", "home-server").await;
    fill(&c, "[data-field=domain]", "app.kokoa.test").await;
    fill(&c, "[data-field='services[0].name']", "web").await;
    fill(&c, "[data-field='services[0].port']", "8080").await;
    click(&c, "form[aria-label='New origin'] button[type=submit]").await;
    wait_text(&c, "#app table", "home-server").await;
    wait_text(&c, ".notice", "Download its configuration bundle").await;
    // Its agent registered its key; its tunnel's firewall as its heartbeat says; its key
    // rotated from the page.
    let origin = store.list_origins().await.unwrap().remove(0);
    let key = kokoa_wg::PrivateKey::generate().public_key().to_string();
    store
        .set_origin_key(&origin.id, &kokoa_core::WgPublicKey::parse(&key).unwrap())
        .await
        .unwrap();
    let beat = json!({"status": "healthy", "firewall": "on"});
    store
        .record_origin_heartbeat(
            &origin.id,
            Timestamp::now(),
            OriginStatus::Active,
            Some(beat),
        )
        .await
        .unwrap();
    open(&c, base, "/ui/origins").await;
    wait_text(&c, "#app table tbody", "firewall on").await;
    c.execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    click(&c, "button[data-action=rotate-keys]").await;
    wait_text(&c, "button[data-action=rotate-keys]", "Rotation started").await;
    let started = api_get(&plane, "/api/v1/events?type=wireguard.rotation_started").await;
    assert_eq!(started["events"].as_array().unwrap().len(), 1, "{started}");

    // A route: the API's validation error is shown at the field, then it is listed.
    open(&c, base, "/ui/routes").await;
    fill(&c, "[data-field=hostname]", "not a host name").await;
    fill(&c, "[data-field=target_port]", "8080").await;
    click(&c, "form[aria-label='New route'] button[type=submit]").await;
    let error = wait_text(&c, "[data-error-for=hostname]", "invalid hostname").await;
    assert!(error.contains("not a host name"), "{error}");
    fill(&c, "[data-field=hostname]", "app.kokoa.test").await;
    click(&c, "form[aria-label='New route'] button[type=submit]").await;
    // This control plane has no [acme]: the page says the certificate will not come.
    wait_text(
        &c,
        ".notice.warning",
        "no certificate will be ordered for app.kokoa.test",
    )
    .await;
    let row = wait_text(&c, "#app table tbody", "app.kokoa.test").await;
    assert!(
        row.contains("home-server") && row.contains("8080") && row.contains("http-01"),
        "{row}"
    );
    // Certificate and DNS columns say what this control plane knows.
    let headers = wait_text(&c, "#app table thead", "Certificate").await;
    assert!(headers.to_lowercase().contains("dns"), "{headers}");
    // Outside every managed DNS zone, the route's records are to be set by hand.
    wait_text(&c, "#app table tbody", "set by hand").await;
    let routes = api_get(&plane, "/api/v1/routes").await;
    assert_eq!(routes["routes"][0]["hostname"], "app.kokoa.test");

    // A state-changing request without the session's CSRF token is refused.
    let body = json!({"hostname": "csrf.kokoa.test", "origin_id": routes["routes"][0]["origin_id"], "target_port": 1});
    assert_eq!(
        fetch_status(&c, "POST", "/api/v1/routes", body.clone(), false).await,
        403
    );

    // A manual edge: the enrollment command is shown once; the control plane's URL is a
    // loopback one, so only for an edge said to be on this machine.
    open(&c, base, "/ui/edges").await;
    fill(&c, "[data-field=region]", "lab").await;
    fill(&c, "[data-field=public_ip]", "192.0.2.10").await;
    click(&c, "form[aria-label='New edge node'] button[type=submit]").await;
    wait_text(&c, "#app .notice.warning", "no enroll command").await;
    assert!(c.find(Locator::Css("code.enroll-command")).await.is_err());
    wait_text(&c, "#app table", "edge-lab-01").await;
    fill(&c, "[data-field=region]", "lab").await;
    fill(&c, "[data-field=public_ip]", "192.0.2.11").await;
    click(&c, "[data-field=allow_loopback_url]").await;
    click(&c, "form[aria-label='New edge node'] button[type=submit]").await;
    let command = wait_text(&c, "code.enroll-command", "kokoa-edge enroll").await;
    assert!(command.contains("kk_enr_"), "{command}");
    wait_text(&c, "#app table", "edge-lab-02").await;
    screenshot(&c, "edges").await;

    // Health history drawn as a chart on the edge's page.
    let edge = store.list_edges().await.unwrap().remove(0);
    let now = Timestamp::now().as_unix();
    for i in 0..30i64 {
        let failed = (18..21).contains(&i);
        store
            .record_health_check(
                &HealthCheck {
                    edge_node_id: edge.id.clone(),
                    check: "http".into(),
                    status: if failed {
                        CheckStatus::Failure
                    } else {
                        CheckStatus::Success
                    },
                    response_time_ms: (!failed).then_some(40 + ((i * 37) % 25) as u32),
                    error_message: failed.then(|| "timed out after 5 s".to_owned()),
                    checked_at: Timestamp::from_unix(now - 300 + i * 10).unwrap(),
                },
                None,
            )
            .await
            .unwrap();
    }
    open(&c, base, &format!("/ui/edges/{}", edge.id)).await;
    wait_text(&c, "figcaption", "30 checks, 3 failed").await;
    assert!(c.find(Locator::Css("svg.chart path.line")).await.is_ok());
    screenshot(&c, "edge").await;

    open(&c, base, "/ui/routes").await;
    screenshot(&c, "routes").await;

    // A route's traffic, as edges reported it over the last 40 minutes, with a burst of
    // 200 requests, 50 of them failing, two minutes ago.
    let route = store.list_routes().await.unwrap().remove(0);
    let minute = TrafficResolution::Minute.bucket_start(Timestamp::now());
    let mut rows = Vec::new();
    let mut total = (0, 0);
    for ago in 0..40i64 {
        let (requests, errors) = match ago {
            2 => (200, 50),
            _ => (20 + ((ago * 7) % 13) as u64, u64::from(ago == 17)),
        };
        total = (total.0 + requests, total.1 + errors);
        let mut counts = TrafficCounts {
            requests,
            errors,
            ..TrafficCounts::default()
        };
        // Most within 50 ms; the burst's failures slow (250–500 ms).
        let slow = if ago == 2 { 40 } else { 1 };
        counts.latency[3] = requests - slow;
        counts.latency[if ago == 2 { 6 } else { 5 }] = slow;
        rows.push(TrafficRow {
            resolution: TrafficResolution::Minute,
            scope: TrafficScope::Host(route.hostname.to_string()),
            start: minute.plus_secs(-60 * ago),
            counts,
        });
    }
    store.add_traffic(&rows).await.unwrap();
    open(&c, base, &format!("/ui/routes/{}", route.id)).await;
    wait_text(&c, "#title", "app.kokoa.test").await;
    let caption = wait_text(
        &c,
        "figcaption[data-traffic-total]",
        &format!("{} requests, {} errors", total.0, total.1),
    )
    .await;
    assert!(caption.contains("p95"), "{caption}");
    assert!(
        c.find(Locator::Css("svg.traffic rect.errors"))
            .await
            .is_ok()
    );
    assert!(c.find(Locator::Css("svg.traffic path.line")).await.is_ok());
    screenshot(&c, "route-traffic").await;
    open(&c, base, "/ui/origins").await;
    screenshot(&c, "origins").await;
    open(&c, base, "/ui/users").await;
    wait_text(&c, "#app", "viewer@kokoa.test").await;
    screenshot(&c, "users").await;
    // A certificate uploaded by hand through its page; the route shows it valid.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.kokoa.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    open(&c, base, "/ui/certificates").await;
    fill(&c, "[data-field=certificate_pem]", &cert.pem()).await;
    fill(&c, "[data-field=private_key_pem]", &key.serialize_pem()).await;
    click(
        &c,
        "form[aria-label='Upload a certificate'] button[type=submit]",
    )
    .await;
    let row = wait_text(&c, "#app table tbody", "app.kokoa.test").await;
    assert!(row.contains("valid") && row.contains("manual"), "{row}");
    screenshot(&c, "certificates").await;
    open(&c, base, "/ui/routes").await;
    wait_text(&c, "#app table tbody", "valid").await;

    open(&c, base, "/ui/dns").await;
    wait_text(&c, "#app", "Set these records by hand").await;
    wait_text(&c, "#app", "app.kokoa.test").await;
    screenshot(&c, "dns").await;

    // Settings > Modules: switching one off takes effect at once, and is an event.
    open(&c, base, "/ui/settings/modules").await;
    wait_text(&c, "#app table", "dns manager").await;
    screenshot(&c, "modules").await;
    let enabled = |modules: &Value| {
        modules["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "health_checker")
            .unwrap()["enabled"]
            .as_bool()
            .unwrap()
    };
    let before = enabled(&api_get(&plane, "/api/v1/modules").await);
    click(&c, "input[aria-label='health_checker enabled']").await;
    let started = Instant::now();
    while enabled(&api_get(&plane, "/api/v1/modules").await) == before {
        assert!(
            started.elapsed() < WAIT,
            "the switch did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    open(&c, base, "/ui/events").await;
    wait_text(&c, "#app table", "module.changed").await;
    screenshot(&c, "events").await;

    open(&c, base, "/").await;
    wait_text(&c, ".grid", "Routes").await;
    wait_text(&c, ".attention", "must be set by hand").await;
    screenshot(&c, "dashboard").await;

    // Sign-out ends the session on the server: its cookie no longer works.
    let cookie = c.get_named_cookie("kokoa_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let token = cookie.value().to_owned();
    sign_out(&c).await;
    let after = reqwest::Client::new()
        .get(format!("{base}/api/v1/routes"))
        .header("cookie", format!("kokoa_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    c.goto(&format!("{base}/ui/routes")).await.unwrap();
    assert_eq!(path_of(&c).await, "/login");

    // The same person again: password, then a TOTP code. The code of the step used at
    // set-up is spent, so the code of the next step (accepted one step ahead) is typed.
    let (admin, secrets) = store
        .find_user_by_email(&Email::parse("admin@kokoa.test").unwrap())
        .await
        .unwrap()
        .unwrap();
    let spent = secrets.totp_last_step.expect("the set-up code was used");
    let step = (spent + 1).max(totp::step_of(Timestamp::now()));
    sign_in(
        &c,
        base,
        "admin@kokoa.test",
        "correct horse battery staple",
        Some((&secret, step)),
    )
    .await;
    assert_eq!(
        store.get_user(&admin.id).await.unwrap().1.totp_last_step,
        Some(step)
    );

    // Readable at phone width.
    c.set_window_size(390, 844).await.unwrap();
    open(&c, base, "/ui/routes").await;
    wait_text(&c, "#app table", "app.kokoa.test").await;
    screenshot(&c, "routes-phone").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(false),
        "no sideways scrolling at phone width"
    );
    c.set_window_size(1280, 860).await.unwrap();
    sign_out(&c).await;

    // A viewer sees everything and can change nothing, in the page or behind it.
    sign_in(
        &c,
        base,
        "viewer@kokoa.test",
        "correct horse battery staple",
        None,
    )
    .await;
    open(&c, base, "/ui/routes").await;
    wait_text(&c, "#app table", "app.kokoa.test").await;
    for css in [
        "form[aria-label='New route']",
        "[data-edit]",
        "button.danger",
    ] {
        assert!(
            c.find(Locator::Css(css)).await.is_err(),
            "a viewer sees {css}"
        );
    }
    assert_eq!(
        fetch_status(&c, "POST", "/api/v1/routes", body, true).await,
        403
    );
    let route_id = routes["routes"][0]["id"].as_str().unwrap();
    let path = format!("/api/v1/routes/{route_id}");
    assert_eq!(
        fetch_status(&c, "DELETE", &path, json!(null), true).await,
        403
    );
    assert_eq!(
        api_get(&plane, "/api/v1/routes").await["routes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    open(&c, base, "/ui/users").await;
    assert!(
        c.find(Locator::Css("form[aria-label='New API token']"))
            .await
            .is_err()
    );
    sign_out(&c).await;
    c.close().await.unwrap();
}

/// A GET with a fresh admin API token, as the CLI would do it.
async fn api_get(plane: &Plane, path: &str) -> Value {
    let (_, token) = api::issue_api_token(
        &plane.state,
        kokoa_core::Name::parse("check").unwrap(),
        Role::Viewer,
    )
    .await
    .unwrap();
    reqwest::Client::new()
        .get(format!("{}{path}", plane.base))
        .bearer_auth(token.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The local OpenID provider (node), stopped when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CLIENT_ID: &str = "kokoa-control";
const CLIENT_SECRET: &str = "a-client-secret-for-this-test-only";

async fn start_provider(redirect_uri: &str, groups: Value) -> Provider {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the OpenID provider package is not installed: run scripts/install-test-npm \
         (needs node and npm: apt-get install -y --no-install-recommends nodejs npm)"
    );
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("ISSUER", &issuer)
        .env("PORT", port.to_string())
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", redirect_uri)
        .env("GROUPS", groups.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install -y --no-install-recommends nodejs)");
    let provider = Provider { child, issuer };
    let discovery = format!("{}/.well-known/openid-configuration", provider.issuer);
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(&discovery).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the OpenID provider did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    provider
}

/// Signs in at the provider as `login` from the control plane's sign-in page, through
/// its login and consent pages; returns once back at the control plane.
async fn single_sign_on(c: &Client, base: &str, login: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    click(c, "a[href='/login/oidc']").await;
    fill(c, "input[name=login]", login).await;
    fill(
        c,
        "input[name=password]",
        "not checked by the test provider",
    )
    .await;
    click(c, "button[type=submit]").await;
    let started = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        if url.as_str().starts_with(base) {
            return;
        }
        // The consent page: continue.
        if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
            let _ = button.click().await;
        }
        assert!(started.elapsed() < WAIT, "stuck at the provider: {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn single_sign_on_through_a_local_openid_provider() {
    use kokoa_control::auth::oidc::{Oidc, OidcConfig};
    // The control plane's address is needed before the provider starts, and the
    // provider's before the control plane's sign-in is configured: reserve the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cp_port = listener.local_addr().unwrap().port();
    drop(listener);
    let redirect = format!("http://127.0.0.1:{cp_port}/login/oidc/callback");
    let provider = start_provider(
        &redirect,
        json!({"amy@kokoa.test": ["ops", "ops-admins"], "bob@kokoa.test": ["ops"]}),
    )
    .await;
    let config = OidcConfig {
        issuer: provider.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.to_owned().into()),
        allowed_emails: vec!["carol@kokoa.test".into()],
        allowed_groups: vec!["ops".into()],
        admin_groups: vec!["ops-admins".into()],
        default_role: "viewer".into(),
        groups_claim: "groups".into(),
        require_totp: false,
        label: "Sign in with the test provider".into(),
    };
    config.check().unwrap();
    let plane = plane_on(cp_port, None, |state| {
        assert!(state.set_oidc(Oidc::with_default_client(config, state.public_url()).unwrap()));
    })
    .await;
    let base = plane.base.as_str();
    let store = plane.state.store();
    let driver = start_driver().await;

    // A member of the admin group: a new admin, signed in, no password of ours.
    let c = browser(&driver, 1280, 860).await;
    c.goto(&format!("{base}/login")).await.unwrap();
    wait_text(&c, "a[href='/login/oidc']", "test provider").await;
    screenshot(&c, "login-sso").await;
    single_sign_on(&c, base, "amy@kokoa.test").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#app[data-ready]"))
        .await
        .expect("the dashboard after single sign-on");
    wait_text(&c, ".who", "amy@kokoa.test").await;
    let (amy, secrets) = store
        .find_user_by_email(&Email::parse("amy@kokoa.test").unwrap())
        .await
        .unwrap()
        .expect("the user was created");
    assert_eq!(amy.role, Role::Admin);
    assert_eq!(secrets.password_hash, None);
    // The session works for the API behind the pages.
    let body = json!({"name": "from-sso"});
    assert_eq!(
        fetch_status(&c, "POST", "/api/v1/origins", body, true).await,
        201
    );
    c.close().await.unwrap();

    // A member of an allowed group only: a viewer.
    let c = browser(&driver, 1280, 860).await;
    single_sign_on(&c, base, "bob@kokoa.test").await;
    wait_text(&c, ".who", "viewer").await;
    c.close().await.unwrap();

    // Someone neither listed nor in an allowed group is refused, and no user is made.
    let c = browser(&driver, 1280, 860).await;
    single_sign_on(&c, base, "eve@kokoa.test").await;
    wait_text(&c, ".error", "not allowed").await;
    assert_eq!(path_of(&c).await, "/login/oidc/callback");
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(path_of(&c).await, "/login", "no session");
    assert!(
        store
            .find_user_by_email(&Email::parse("eve@kokoa.test").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn pages_follow_the_event_stream_across_a_restart() {
    let mut plane = plane().await;
    let base = plane.base.clone();
    kokoa_control::add_user(
        plane.state.store(),
        Email::parse("admin@kokoa.test").unwrap(),
        Role::Admin,
        Some("correct horse battery staple"),
    )
    .await
    .unwrap();
    let driver = start_driver().await;
    // The system asks for dark colours: the pages follow (prefers-color-scheme).
    let c = browser_with(&driver, 1280, 860, &["--force-dark-mode"]).await;
    sign_in(
        &c,
        &base,
        "admin@kokoa.test",
        "correct horse battery staple",
        None,
    )
    .await;
    open(&c, &base, "/ui/edges").await;
    fill(&c, "[data-field=region]", "lab").await;
    click(&c, "[data-field=allow_loopback_url]").await;
    click(&c, "form[aria-label='New edge node'] button[type=submit]").await;
    wait_text(&c, "code.enroll-command", "kokoa-edge enroll").await;
    let mut edge = plane.store.list_edges().await.unwrap().remove(0);
    let health = format!("[data-edge-health='{}']", edge.id);
    wait_text(&c, &health, "unknown").await;
    wait_text(&c, "#live", "Live").await;
    // A mark in the page: it stays as long as the page is not loaded again.
    c.execute("window.kokoaMark = 'same page';", vec![])
        .await
        .unwrap();
    let same_page = || async {
        c.execute("return window.kokoaMark || null;", vec![])
            .await
            .unwrap()
            == json!("same page")
    };

    // The health checker's verdict reaches the open page through the event stream.
    edge.set_status(EdgeStatus::Active, Timestamp::now())
        .unwrap();
    edge.set_status(EdgeStatus::Unhealthy, Timestamp::now())
        .unwrap();
    plane.store.update_edge(&edge).await.unwrap();
    plane
        .state
        .events()
        .emit(
            "edge_node_unhealthy",
            Severity::Critical,
            Some(edge.id.as_str()),
            "edge-lab-01 failed 3 checks in a row",
            json!({"failure_count": 3}),
        )
        .await
        .expect("recorded");
    wait_text(&c, &health, "unhealthy").await;
    assert!(same_page().await, "updated without a reload");
    let background = c
        .execute(
            "return getComputedStyle(document.documentElement).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(background, json!("rgb(22, 20, 19)"), "the dark theme");
    screenshot(&c, "edges-dark").await;

    // After a restart of the control plane the page reconnects and follows again.
    plane.restart().await;
    wait_text(&c, "#live", "Live").await;
    edge.set_status(EdgeStatus::Active, Timestamp::now())
        .unwrap();
    plane.store.update_edge(&edge).await.unwrap();
    plane
        .state
        .events()
        .emit(
            "edge.recovered",
            Severity::Info,
            Some(edge.id.as_str()),
            "edge-lab-01 passes its checks again",
            json!({}),
        )
        .await
        .expect("recorded");
    wait_exact(&c, &health, "healthy").await;
    assert!(same_page().await, "updated without a reload");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_answering_turns_unhealthy_on_the_open_page() {
    // The control plane's duties run with short check periods; the edge is a stand-in
    // on 127.0.0.11 that answers /health and sends heartbeats like the agent.
    let port = free_port();
    let mut settings = RuntimeSettings::default();
    settings.health.edge_https_port = port;
    // Room for a loaded machine: one check timing out makes the edge "degraded", and its
    // recovery is no event the page would redraw on.
    settings.health.timeout = Duration::from_secs(3);
    settings.health.recovery_threshold = 2;
    let m = &mut settings.edges.management;
    m.health_check_interval = 1;
    m.health_check_failure_threshold = 2;
    m.auto_destroy_unhealthy_vps = false;
    m.min_active_nodes = 0;
    let plane = plane_on(0, Some(settings), |_| {}).await;
    let base = plane.base.as_str();
    kokoa_control::add_user(
        plane.state.store(),
        Email::parse("admin@kokoa.test").unwrap(),
        Role::Admin,
        Some("correct horse battery staple"),
    )
    .await
    .unwrap();
    let (_, admin) = api::issue_api_token(
        &plane.state,
        kokoa_core::Name::parse("setup").unwrap(),
        Role::Admin,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(admin.as_str())
            .json(&body)
            .send()
    };
    post(
        "/api/v1/origins",
        json!({"name": "home", "services": [{"name": "web", "port": 8080}]}),
    )
    .await
    .unwrap();
    let created: Value = post(
        "/api/v1/edge-nodes",
        json!({"provider": "manual", "region": "lab", "public_ip": "127.0.0.11"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let enrolled: Value = post(
        "/api/v1/enroll",
        json!({"token": created["enrollment_token"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let credential = enrolled["credential"].as_str().unwrap().to_owned();
    let address = SocketAddr::new(std::net::Ipv4Addr::new(127, 0, 0, 11).into(), port);
    let health = common::standin::health_server(address).await;
    let agent = common::standin::agent(base.to_owned(), id.clone(), credential);

    let driver = start_driver().await;
    let c = browser(&driver, 1280, 860).await;
    sign_in(
        &c,
        base,
        "admin@kokoa.test",
        "correct horse battery staple",
        None,
    )
    .await;
    open(&c, base, "/ui/edges").await;
    let cell = format!("[data-edge-health='{id}']");
    c.execute("window.kokoaMark = 'same page';", vec![])
        .await
        .unwrap();
    wait_exact_within(&c, &cell, "healthy", Duration::from_secs(30)).await;

    // The edge stops answering: failed checks make it unhealthy, and the page shows it.
    health.abort();
    wait_exact_within(&c, &cell, "unhealthy", Duration::from_secs(30)).await;
    let mark = c
        .execute("return window.kokoaMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("same page"), "updated without a reload");

    // Deleting it shows the safe-order steps, ticked off as they complete.
    click(
        &c,
        &format!("tr:has([data-edge-health='{id}']) button.danger"),
    )
    .await;
    c.accept_alert().await.unwrap();
    let progress = format!("[data-progress='{id}']");
    wait_text(&c, &progress, "Remove from DNS").await;
    let started = Instant::now();
    while c
        .find(Locator::Css(&format!("{progress} li.done")))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no step completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&c, "edge-deletion").await;
    agent.abort();
    c.close().await.unwrap();
}
