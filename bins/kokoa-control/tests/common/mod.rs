//! Test harness: the API served on 127.0.0.1:0 over a real database, called with reqwest.
//!
//! Every test runs against SQLite (a file in a temporary directory) and against PostgreSQL
//! when `KOKOA_TEST_POSTGRES_URL` is set; without it the tests fail with a hint, unless
//! `KOKOA_SKIP_POSTGRES=1` says to skip PostgreSQL on purpose.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part of the harness

pub mod pebble;
pub mod standin;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use kokoa_control::{
    AppState, api,
    runtime::{ProvisionerEntry, RuntimeSettings},
};
use kokoa_core::{Name, Role, SubnetPool};
use kokoa_store::{MasterKey, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A database to run against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        })
    }
}

/// The backends this run covers.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    match std::env::var("KOKOA_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => all.push(Backend::Postgres(url)),
        _ if std::env::var("KOKOA_SKIP_POSTGRES").as_deref() == Ok("1") => {}
        _ => panic!(
            "KOKOA_TEST_POSTGRES_URL is not set, so the PostgreSQL backend cannot be tested. \
             Start a server with `scripts/start-postgres` (it prints the URL; install with \
             `apt-get install -y --no-install-recommends postgresql`) and export \
             KOKOA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5433/postgres, or set \
             KOKOA_SKIP_POSTGRES=1 to test SQLite only."
        ),
    }
    all
}

/// A fresh PostgreSQL database, dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    fn create(admin_url: &str) -> Self {
        let name = format!("kokoa_ctl_{}", &kokoa_core::OriginId::new().as_str()[4..20]);
        psql(admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("KOKOA_TEST_POSTGRES_URL ends in /DATABASE");
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The whole database as SQL text.
    pub fn dump(&self) -> String {
        let out = Command::new("pg_dump")
            .arg("--data-only")
            .arg(&self.url)
            .output()
            .expect("pg_dump runs (apt-get install -y --no-install-recommends postgresql-client)");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("dump is UTF-8")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.admin_url, "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-qc", sql])
        .output()
        .expect("psql runs (apt-get install -y --no-install-recommends postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The API served over one backend, with an admin and a viewer token.
pub struct Server {
    pub backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub admin: String,
    pub viewer: String,
    pub dir: TempDir,
    pub pg: Option<PgDatabase>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a store of `backend` inside `dir`.
pub async fn open_store(backend: &Backend, dir: &Path) -> (Arc<dyn Store>, Option<PgDatabase>) {
    use kokoa_control::config::Database;
    match backend {
        Backend::Sqlite => (
            kokoa_control::open_store(&Database::Sqlite(sqlite_path(dir)))
                .await
                .expect("SQLite store opens"),
            None,
        ),
        Backend::Postgres(admin) => {
            let db = PgDatabase::create(admin);
            let store = kokoa_control::open_store(&Database::Postgres(db.url.clone()))
                .await
                .expect("PostgreSQL store opens");
            (store, Some(db))
        }
    }
}

/// Where the SQLite database of a server lives.
pub fn sqlite_path(dir: &Path) -> PathBuf {
    dir.join("kokoa.db")
}

/// The duties' settings of a test server: DigitalOcean and Vultr are configured (pointed
/// at a closed port: the duties run only when a test ticks them, and no test here makes
/// them create a VPS).
pub fn settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    // Tests that tick the automation create the edges they want themselves.
    settings.edges.management.min_active_nodes = 0;
    let token = kokoa_provision::Secret::new("test-token");
    let client = reqwest::Client::new();
    let closed = "http://127.0.0.1:9";
    let entries: [(&str, Arc<dyn kokoa_provision::Provisioner>); 2] = [
        (
            "digitalocean",
            Arc::new(
                kokoa_provision::digitalocean::DigitalOcean::with_client(
                    client.clone(),
                    closed,
                    &token,
                )
                .unwrap(),
            ),
        ),
        (
            "vultr",
            Arc::new(kokoa_provision::vultr::Vultr::with_client(client, closed, &token).unwrap()),
        ),
    ];
    for (name, provisioner) in entries {
        settings.edges.provisioners.insert(
            name.to_owned(),
            ProvisionerEntry {
                provisioner,
                image: "debian-12".into(),
                size: "small".into(),
                ssh_key_id: None,
            },
        );
    }
    settings
}

impl Server {
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, settings()).await
    }

    /// A server whose duties use `settings`.
    pub async fn start_with(backend: &Backend, settings: RuntimeSettings) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (store, pg) = open_store(backend, dir.path()).await;
        let state = AppState::with_settings(
            store,
            MasterKey::generate(),
            SubnetPool::default(),
            "https://cp.example.com",
            settings,
        );
        let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
            .await
            .expect("admin token");
        let (_, viewer) =
            api::issue_api_token(&state, Name::parse("viewer").unwrap(), Role::Viewer)
                .await
                .expect("viewer token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let router = api::router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("server runs");
        });
        Self {
            backend: backend.clone(),
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(90))
                .build()
                .unwrap(),
            state,
            admin: admin.to_string(),
            viewer: viewer.to_string(),
            dir,
            pg,
            task,
        }
    }

    /// A request; the answer's status and JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, token, body, &[]).await;
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, json)
    }

    /// A request with extra headers; the raw response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request reaches the server")
    }

    /// `call` with the admin token, asserting the status.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, json) = self
            .call(method.clone(), path, Some(&self.admin), body)
            .await;
        assert_eq!(
            status.as_u16(),
            want,
            "[{}] {method} {path}: {json}",
            self.backend
        );
        json
    }

    /// Creates an origin named `name` with one web service, whose agent has enrolled and
    /// registered its WireGuard key (edges reach it); returns its JSON as created.
    pub async fn origin(&self, name: &str) -> Value {
        let origin = self.new_origin(name.to_owned()).await;
        let id = kokoa_core::OriginId::parse(origin["id"].as_str().unwrap()).unwrap();
        let key = kokoa_wg::PrivateKey::generate().public_key().to_string();
        self.state
            .store()
            .set_origin_key(&id, &kokoa_core::WgPublicKey::parse(&key).unwrap())
            .await
            .unwrap();
        origin
    }

    /// Creates an origin named `name` with one web service, whose agent has not enrolled
    /// yet (it has no key); returns its JSON.
    pub async fn new_origin(&self, name: String) -> Value {
        self.admin(
            Method::POST,
            "/api/v1/origins",
            Some(json!({
                "name": name,
                "domain": "app.example.com",
                "services": [{"name": "web", "port": 8001, "protocol": "http"}],
            })),
            201,
        )
        .await
    }

    /// Creates a manual edge (serving every origin unless `origin` is given) and enrolls
    /// it; returns its id and node credential.
    pub async fn enrolled_edge(&self, origin: Option<&str>) -> (String, String) {
        let created = self
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({
                    "origin_id": origin,
                    "provider": "manual",
                    "region": "sgp1",
                    "public_ip": "203.0.113.10",
                })),
                202,
            )
            .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["enrollment_token"].as_str().unwrap();
        let credential = self.enroll(token).await;
        (id, credential)
    }

    /// Sends a node's heartbeat `body` with its `credential`; it must be recorded.
    pub async fn heartbeat(&self, credential: &str, body: Value) {
        let (status, answer) = self
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(credential),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "[{}] heartbeat: {answer}", self.backend);
    }

    /// Redeems an enrollment token with a new WireGuard public key, as an agent does;
    /// returns the credential.
    pub async fn enroll(&self, token: &str) -> String {
        let key = kokoa_wg::PrivateKey::generate().public_key().to_string();
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token, "wireguard_public_key": key})),
            )
            .await;
        assert_eq!(status, 200, "[{}] enroll: {body}", self.backend);
        body["credential"].as_str().unwrap().to_owned()
    }

    /// Enrolls origin `id` through a fresh enrollment; returns its credential.
    pub async fn enrolled_origin(&self, id: &str) -> String {
        let issued = self
            .admin(
                Method::POST,
                "/api/v1/enrollments",
                Some(json!({"node_kind": "origin", "node_id": id})),
                201,
            )
            .await;
        self.enroll(issued["token"].as_str().unwrap()).await
    }
}

/// Asserts the documented error shape and returns the error object.
pub fn assert_error(body: &Value, code: &str) -> Value {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error"], "{body}");
    error.clone()
}
