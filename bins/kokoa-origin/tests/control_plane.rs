//! The origin agent against the real control plane (its router served on 127.0.0.1 over a
//! temporary SQLite database): enroll from a real bundle's `credentials.json`, receive the
//! configuration, follow edges as they come and go, and report services in heartbeats.
//!
//! The WireGuard interface is a recording stand-in: bringing up a real one would need a
//! network namespace the control plane on 127.0.0.1 is not reachable from. kokoa-wg's own
//! tests cover the interface itself.

use std::{
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use kokoa_control::{AppState, api, config::Database};
use kokoa_core::{Name, OriginId, Role, SubnetPool};
use kokoa_origin::{
    Agent, BundleCredentials, Checker, ControlPlane, Error, Firewall, Settings, StateDir, Timing,
    Tunnel,
};
use kokoa_store::{MasterKey, Store};
use kokoa_wg::{InterfaceConfig, InterfaceName};
use serde_json::{Value, json};

/// Records what the agent applies.
#[derive(Clone, Default)]
struct RecordingTunnel {
    applied: Arc<Mutex<Vec<InterfaceConfig>>>,
    stopped: Arc<AtomicBool>,
}

impl Tunnel for RecordingTunnel {
    fn apply(&self, wanted: &InterfaceConfig) -> Result<(), Error> {
        self.applied.lock().unwrap().push(wanted.clone());
        Ok(())
    }

    fn edges_connected(&self, _: &InterfaceName) -> usize {
        self.applied
            .lock()
            .unwrap()
            .last()
            .map_or(0, |c| c.config.peers.len())
    }

    fn stop(&self, _: &InterfaceName) -> Result<(), Error> {
        self.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl RecordingTunnel {
    /// The endpoints of the peers last applied.
    fn endpoints(&self) -> Option<Vec<String>> {
        let applied = self.applied.lock().unwrap();
        let last = applied.last()?;
        let mut endpoints: Vec<String> = last
            .config
            .peers
            .iter()
            .map(|p| {
                p.endpoint
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
            .collect();
        endpoints.sort();
        Some(endpoints)
    }
}

struct ControlPlaneServer {
    base: String,
    admin: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl ControlPlaneServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = kokoa_control::open_store(&Database::Sqlite(dir.path().join("kokoa.db")))
            .await
            .expect("SQLite store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // The duties run (a deleted edge goes in the safe order), without health checks:
        // the edges here are addresses nobody answers on.
        let mut settings = kokoa_control::runtime::RuntimeSettings::default();
        settings
            .modules
            .insert(kokoa_control::runtime::Module::HealthChecker, false);
        let state = AppState::with_settings(
            Arc::clone(&store),
            MasterKey::generate(),
            SubnetPool::default(),
            base.clone(),
            settings,
        );
        let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
            .await
            .unwrap();
        let router = api::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        tokio::spawn(kokoa_control::runtime::run(state, std::future::pending()));
        Self {
            base,
            admin: admin.to_string(),
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response
    }

    /// A manual edge, enrolled with a key of its own as its agent would.
    async fn manual_edge(&self, public_ip: &str) -> String {
        let created: Value = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "sgp1", "public_ip": public_ip})),
            )
            .await
            .json()
            .await
            .unwrap();
        let key = kokoa_wg::PrivateKey::generate().public_key().to_string();
        let enrolled = reqwest::Client::new()
            .post(format!("{}/api/v1/enroll", self.base))
            .json(&json!({"token": created["enrollment_token"], "wireguard_public_key": key}))
            .send()
            .await
            .unwrap();
        assert!(enrolled.status().is_success(), "{}", enrolled.status());
        created["id"].as_str().unwrap().to_owned()
    }
}

/// A local HTTP service whose `/health` answers 200 while `healthy` is set, else 503.
async fn http_service(healthy: Arc<AtomicBool>) -> u16 {
    let app = Router::new()
        .route(
            "/health",
            get(|State(up): State<Arc<AtomicBool>>| async move {
                if up.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .with_state(healthy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Extracts `credentials.json` from the gzip-compressed tar `bundle` into `dir`.
fn extract_credentials(bundle: &[u8], dir: &Path) -> std::path::PathBuf {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().as_os_str() == "credentials.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let path = dir.join("credentials.json");
            std::fs::write(&path, text).unwrap();
            return path;
        }
    }
    panic!("the bundle has no credentials.json");
}

/// Polls `probe` every 50 ms until it gives a value, for at most `limit`.
async fn within<T>(limit: Duration, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_enrolls_from_its_bundle_follows_edges_and_reports_services() {
    let cp = ControlPlaneServer::start().await;
    let web_up = Arc::new(AtomicBool::new(true));
    let web_port = http_service(Arc::clone(&web_up)).await;
    let db = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db_port = db.local_addr().unwrap().port();

    let origin: Value = cp
        .admin(
            reqwest::Method::POST,
            "/api/v1/origins",
            Some(json!({
                "name": "home-server",
                "services": [
                    {"name": "web", "port": web_port, "protocol": "http", "health_check_path": "/health"},
                    {"name": "db", "port": db_port, "protocol": "tcp"},
                ],
            })),
        )
        .await
        .json()
        .await
        .unwrap();
    let origin_id = OriginId::parse(origin["id"].as_str().unwrap()).unwrap();
    let first_edge = cp.manual_edge("203.0.113.10").await;

    // The administrator downloads the bundle; the agent enrolls with its credentials.json.
    let bundle = cp
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/origins/{origin_id}/config"),
            None,
        )
        .await
        .bytes()
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let credentials = BundleCredentials::read(&extract_credentials(&bundle, work.path())).unwrap();
    assert_eq!(credentials.origin_id, origin_id);
    assert_eq!(credentials.control_plane_url, cp.base);
    let state = StateDir::open(work.path().join("state")).unwrap();
    let key = state.keys().unwrap().newest().to_string();
    let credential = ControlPlane::enroll(
        &credentials.control_plane_url,
        None,
        &credentials.enrollment_token,
        &key,
    )
    .await
    .unwrap();
    assert_eq!(credential.node_id, origin_id);
    // The control plane knows the public half of the key the origin made, and nothing more.
    let registered = cp.store.get_origin(&origin_id).await.unwrap();
    assert_eq!(
        registered
            .wireguard_public_key
            .map(|k| k.as_str().to_owned()),
        Some(key.clone())
    );
    assert_eq!(
        mode(&state.path().join(kokoa_agent::keys::KEYS_FILE)),
        0o600
    );
    state.write_credential(&credential).unwrap();
    assert_eq!(mode(&state.credential_path()), 0o600);
    // The token was single-use.
    let again = ControlPlane::enroll(
        &credentials.control_plane_url,
        None,
        &credentials.enrollment_token,
        &key,
    )
    .await
    .unwrap_err();
    assert!(again.is_unauthorized(), "{again}");

    let tunnel = RecordingTunnel::default();
    let settings = Settings {
        interface: InterfaceName::new("wg0").unwrap(),
        forwarder: None,
        // An nft that is not there: the agent must serve and report why the rules are
        // missing (the rules themselves are tested in tests/firewall.rs).
        firewall: Some(Firewall::with_command(vec!["/nonexistent/nft".into()])),
        checker: Checker::new("127.0.0.1".parse().unwrap(), Duration::from_secs(1)).unwrap(),
        application: None,
        timing: Timing {
            long_poll: Duration::from_secs(10),
            poll_interval: Duration::from_millis(200),
            check_interval: Duration::from_millis(200),
            // Longer than the test: every heartbeat seen here was sent because a service
            // changed state.
            heartbeat_interval: Duration::from_secs(600),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            reconnect: Duration::from_secs(1),
        },
        stop_on_exit: false,
        disk: "/".into(),
    };
    let agent = Agent::new(
        ControlPlane::new(&credential).unwrap(),
        tunnel.clone(),
        state.clone(),
        settings,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    // The configuration arrives: wg0 dials out to the edge.
    let endpoints = within(Duration::from_secs(5), "wg0 applied", async || {
        tunnel.endpoints()
    })
    .await;
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].starts_with("203.0.113.10:"), "{endpoints:?}");
    {
        let applied = tunnel.applied.lock().unwrap();
        let wg0 = applied.last().unwrap();
        assert_eq!(wg0.name.as_str(), "wg0");
        assert_eq!(
            wg0.config.interface.private_key.public_key().to_string(),
            key,
            "wg0 uses the origin's own key"
        );
        assert_eq!(
            wg0.config.interface.addresses[0].addr().to_string(),
            origin["wireguard_ip"].as_str().unwrap()
        );
        let allowed = &wg0.config.peers[0].allowed_ips;
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].prefix_len(), 32);
    }
    assert_eq!(mode(&state.last_good_path()), 0o600);

    // The first heartbeat reports both services up.
    let metrics_of = async || {
        let origin = cp.store.get_origin(&origin_id).await.unwrap();
        origin.last_heartbeat.and(origin.last_metrics)
    };
    let service = |m: &Value, name: &str| {
        m["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .map(|s| s["status"].as_str().unwrap_or_default().to_owned())
    };
    let metrics = within(Duration::from_secs(5), "first heartbeat", async || {
        metrics_of()
            .await
            .filter(|m| m["services"].as_array().is_some_and(|s| s.len() == 2))
    })
    .await;
    assert_eq!(service(&metrics, "web").as_deref(), Some("up"), "{metrics}");
    assert_eq!(service(&metrics, "db").as_deref(), Some("up"), "{metrics}");
    assert_eq!(metrics["status"], "healthy", "{metrics}");
    assert_eq!(metrics["edges_connected"], 1, "{metrics}");
    let firewall = metrics["firewall"].as_str().unwrap_or_default();
    assert!(
        firewall.starts_with("failed: /nonexistent/nft not found"),
        "{metrics}"
    );
    let web = metrics["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web");
    assert_eq!(web.unwrap()["port"], web_port, "{metrics}");
    for field in ["cpu_percent", "memory_percent", "disk_percent"] {
        let value = metrics[field].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&value), "{field}: {metrics}");
    }
    let origin_view: Value = cp
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/origins/{origin_id}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(origin_view["status"], "active");
    assert!(origin_view["last_heartbeat"].is_string(), "{origin_view}");

    // A service goes down: reported at once, not at the next 30 s heartbeat.
    web_up.store(false, Ordering::SeqCst);
    let down = Instant::now();
    let metrics = within(
        Duration::from_secs(3),
        "heartbeat after web went down",
        async || {
            metrics_of()
                .await
                .filter(|m| service(m, "web").as_deref() == Some("down"))
        },
    )
    .await;
    assert_eq!(metrics["status"], "degraded", "{metrics}");
    assert_eq!(service(&metrics, "db").as_deref(), Some("up"), "{metrics}");
    eprintln!("service down reported in {:?}", down.elapsed());

    // Edges come and go: the interface follows without a restart.
    let second_edge = cp.manual_edge("203.0.113.11").await;
    within(Duration::from_secs(3), "second edge added", async || {
        tunnel.endpoints().filter(|e| e.len() == 2)
    })
    .await;
    // Deleted in the safe order: out of DNS, the TTL (1 s in this zone), then gone.
    cp.admin(
        reqwest::Method::POST,
        "/api/v1/dns/zones",
        Some(json!({"name": "example.net", "provider": "manual", "ttl": 1})),
    )
    .await;
    cp.admin(
        reqwest::Method::DELETE,
        &format!("/api/v1/edge-nodes/{first_edge}"),
        None,
    )
    .await;
    let endpoints = within(Duration::from_secs(8), "first edge removed", async || {
        tunnel.endpoints().filter(|e| e.len() == 1)
    })
    .await;
    assert!(
        endpoints[0].starts_with("203.0.113.11:"),
        "{endpoints:?} ({second_edge})"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
    assert!(
        !tunnel.stopped.load(Ordering::SeqCst),
        "the tunnel outlives the agent"
    );
    drop(db);
}
