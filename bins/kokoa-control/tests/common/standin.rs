//! Stand-ins for edges (an HTTPS `/health` on an address of their own, and the agent's
//! ready call and heartbeats), a webhook receiver, and `dig`: what the tests of the
//! control plane's duties run against.

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use kokoa_dns::local::LocalPowerDns;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt as _, net::TcpListener, task::JoinHandle};

/// Where every stand-in edge answers HTTPS (a port the tests choose, not 443).
pub fn free_port() -> u16 {
    test_ports::tcp()
}

/// A TLS acceptor with a self-signed certificate (the edge's fallback certificate is one).
pub fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fallback.invalid".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// Answers every HTTPS request on `address` with `200 ok`, until aborted.
pub async fn health_server(address: SocketAddr) -> JoinHandle<()> {
    let listener = TcpListener::bind(address)
        .await
        .expect("bind the edge address");
    let tls = acceptor();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut stream) = tls.accept(tcp).await {
                    let mut request = [0u8; 2048];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    })
}

/// What an edge's agent tells the control plane: ready once, then a heartbeat every
/// 500 ms with every tunnel up and the configuration it serves.
pub fn agent(base: String, id: String, credential: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let _ = client
            .post(format!("{base}/api/v1/edge-nodes/{id}/ready"))
            .bearer_auth(&credential)
            .send()
            .await;
        loop {
            let config: Value = match client
                .get(format!("{base}/api/v1/edge-nodes/me/config"))
                .bearer_auth(&credential)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let tunnels: Vec<Value> = config["tunnels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| json!({"origin_id": t["origin_id"], "interface": "kk0", "status": "up"}))
                .collect();
            let _ = client
                .post(format!("{base}/api/v1/heartbeat"))
                .bearer_auth(&credential)
                .json(
                    &json!({"node_id": id, "status": "healthy", "tunnels": tunnels,
                              "config_hash": config["config_hash"]}),
                )
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The A records of `name`, as `dig` at the server gets them.
pub fn dig(pdns: &LocalPowerDns, name: &str) -> Vec<String> {
    let dns = pdns.dns_address();
    let output = Command::new("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            name,
            "A",
        ])
        .args(["+short", "+time=2", "+tries=1"])
        .output()
        .expect("run dig (apt-get install -y --no-install-recommends dnsutils)");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A local webhook receiver: its URL and what it received.
pub async fn webhook_receiver() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let received: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let keep = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

pub async fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A proxy in front of an HTTP API that passes every request on, or answers `500` to every
/// one while failing: a DNS provider's outage, as the control plane sees it.
pub struct FaultProxy {
    pub url: String,
    failing: Arc<AtomicBool>,
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (scheme, host and port) on 127.0.0.1.
    pub async fn start(upstream: String) -> Self {
        let failing = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::new();
        let flag = Arc::clone(&failing);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (client, flag, upstream) = (client.clone(), Arc::clone(&flag), upstream.clone());
            async move {
                use axum::response::IntoResponse as _;
                if flag.load(Ordering::SeqCst) {
                    let body = json!({"error": "injected failure"}).to_string();
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
                }
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut forward = client.request(parts.method, format!("{upstream}{path}"));
                for (name, value) in &parts.headers {
                    if name != axum::http::header::HOST {
                        forward = forward.header(name, value);
                    }
                }
                match forward.body(body).send().await {
                    Ok(answer) => {
                        let status = answer.status();
                        let kind = answer
                            .headers()
                            .get(axum::http::header::CONTENT_TYPE)
                            .cloned();
                        let bytes = answer.bytes().await.unwrap_or_default();
                        let mut response = (status, bytes).into_response();
                        if let Some(kind) = kind {
                            response
                                .headers_mut()
                                .insert(axum::http::header::CONTENT_TYPE, kind);
                        }
                        response
                    }
                    Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            failing,
            server,
        }
    }

    /// Fails every request from now on (`true`) or passes them on again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A control plane with its duties running, over SQLite in a temporary directory, served
/// on 127.0.0.1, and the PowerDNS zone `kokoa.test` it manages (through a [`FaultProxy`],
/// passing everything on unless told otherwise); stopped when dropped.
pub struct Plane {
    pub state: kokoa_control::AppState,
    pub base: String,
    pub pdns: LocalPowerDns,
    pub dns_api: FaultProxy,
    admin: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    duties: Option<JoinHandle<()>>,
    server: JoinHandle<()>,
    settings: kokoa_control::runtime::RuntimeSettings,
    master_key: String,
    dir: tempfile::TempDir,
}

impl Plane {
    /// Starts PowerDNS with the zone, the control plane with `settings`, `notifier` as its
    /// notification sinks if given, then the zone `kokoa.test` (TTL 1 s) and an origin
    /// `home` with the route `app.kokoa.test` (no certificate). Returns the plane and the
    /// origin's id.
    pub async fn start(
        settings: kokoa_control::runtime::RuntimeSettings,
        notifier: Option<kokoa_notify::Notifier>,
    ) -> (Self, String) {
        use kokoa_core::{Name, Role, SubnetPool};
        use kokoa_store::MasterKey;
        // The duties' logs, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::INFO)
            .try_init();
        let pdns = LocalPowerDns::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pdns.create_zone("kokoa.test").await.expect("zone");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = kokoa_control::open_store(&kokoa_control::config::Database::Sqlite(
            dir.path().join("kokoa.db"),
        ))
        .await
        .unwrap();
        let master_key = MasterKey::generate();
        let key_text = master_key.to_base64().to_string();
        let state = kokoa_control::AppState::with_settings(
            store,
            master_key,
            SubnetPool::default(),
            base.clone(),
            settings.clone(),
        );
        let (_, admin) =
            kokoa_control::api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
                .await
                .unwrap();
        if let Some(notifier) = notifier {
            state.events().forward_to(notifier);
        }
        let router = kokoa_control::api::router(state.clone());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let (stop, duties) = spawn_duties(state.clone());
        let dns_api = FaultProxy::start(pdns.api_url().to_owned()).await;
        let plane = Self {
            state,
            base,
            pdns,
            dns_api,
            admin: admin.to_string(),
            client: reqwest::Client::new(),
            stop: Some(stop),
            duties: Some(duties),
            server,
            settings,
            master_key: key_text,
            dir,
        };
        let origin = plane
            .call(
                reqwest::Method::POST,
                "/api/v1/origins",
                Some(json!({"name": "home", "services": [{"name": "web", "port": 8080}]})),
                201,
            )
            .await;
        let origin_id = origin["id"].as_str().unwrap().to_owned();
        plane
            .call(
                reqwest::Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.kokoa.test", "origin_id": origin_id,
                            "target_port": 8080, "certificate": "none"})),
                201,
            )
            .await;
        plane
            .call(
                reqwest::Method::POST,
                "/api/v1/dns/zones",
                Some(
                    json!({"name": "kokoa.test", "provider": "powerdns", "ttl": 1,
                            "settings": {"url": plane.dns_api.url},
                            "credentials": {"api_key": plane.pdns.api_key()}}),
                ),
                201,
            )
            .await;
        (plane, origin_id)
    }

    /// A request to the API with the admin token, to finish and send.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
    }

    /// An admin call, asserting the status; the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the API answers");
        let status = answer.status().as_u16();
        let json: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{method} {path}: {json}");
        json
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let answer = self
            .client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("the API answers");
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    }

    /// Trades an enrollment token for the node credential.
    pub async fn enroll(&self, token: &str) -> String {
        let enrolled: Value = self
            .client
            .post(format!("{}/api/v1/enroll", self.base))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        enrolled["credential"]
            .as_str()
            .expect("enrolled")
            .to_owned()
    }

    /// The A records of `app.kokoa.test` in PowerDNS.
    pub fn dig(&self) -> Vec<String> {
        dig(&self.pdns, "app.kokoa.test")
    }

    /// Stops the duties (as a crash of the control plane would, between two steps) and
    /// starts them again in a new control plane over the same database: nothing they need
    /// may live in memory. The API keeps being served by the old one, as by a second
    /// control plane that does not lead.
    pub async fn restart_duties(&mut self) {
        self.stop_duties().await;
        self.start_duties().await;
    }

    /// Stops the duties (the API keeps answering).
    pub async fn stop_duties(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(duties) = self.duties.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), duties).await;
        }
    }

    /// Starts the duties in a new control plane over the same database.
    pub async fn start_duties(&mut self) {
        let store = kokoa_control::open_store(&kokoa_control::config::Database::Sqlite(
            self.dir.path().join("kokoa.db"),
        ))
        .await
        .unwrap();
        let state = kokoa_control::AppState::with_settings(
            store,
            kokoa_store::MasterKey::from_base64(&self.master_key).unwrap(),
            kokoa_core::SubnetPool::default(),
            self.base.clone(),
            self.settings.clone(),
        );
        let (stop, duties) = spawn_duties(state);
        self.stop = Some(stop);
        self.duties = Some(duties);
    }

    /// Stops the duties and the server.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.begin_shutdown();
        if let Some(duties) = self.duties.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), duties).await;
        }
        self.server.abort();
    }
}

/// Runs the control plane's duties for `state` until the sender is used.
fn spawn_duties(
    state: kokoa_control::AppState,
) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(kokoa_control::runtime::run(state, async move {
        let _ = stopped.await;
    }));
    (stop, duties)
}
