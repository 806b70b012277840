//! A fake control plane on 127.0.0.1 that speaks the edge side of the API, and a fake data
//! plane.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

pub(crate) mod netns;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use kokoa_core::{ContentHash, EdgeConfig};
use kokoa_edge::{DataPlane, Error, TunnelReport};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

pub(crate) const NODE_ID: &str = "edge_test";
pub(crate) const CREDENTIAL: &str = "node-credential-for-tests";
pub(crate) const ENROLL_TOKEN: &str = "enrollment-token-for-tests";

/// What the fake serves at `/api/v1/edge-nodes/me/config`.
#[derive(Debug, Clone)]
pub(crate) enum Served {
    /// A payload (possibly forged) with its ETag.
    Payload { hash: String, body: Vec<u8> },
    /// A bare status code.
    Status(u16),
}

impl Served {
    pub(crate) fn config(config: &EdgeConfig) -> Self {
        Self::Payload {
            hash: config.config_hash().to_string(),
            body: serde_json::to_vec(config).unwrap(),
        }
    }

    /// `config` with its content changed after hashing: a hash mismatch.
    pub(crate) fn forged(config: &EdgeConfig, other: &EdgeConfig) -> Self {
        let mut json = serde_json::to_value(other).unwrap();
        json["config_hash"] = Value::from(config.config_hash().to_string());
        Self::Payload {
            hash: config.config_hash().to_string(),
            body: serde_json::to_vec(&json).unwrap(),
        }
    }
}

/// One request to the config endpoint as the fake saw it; `status` is 0 while it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) at: Instant,
    pub(crate) authorization: Option<String>,
    pub(crate) if_none_match: Option<String>,
    pub(crate) wait: Option<u64>,
    pub(crate) status: u16,
}

struct Inner {
    served: watch::Sender<Served>,
    seen: Mutex<Vec<Seen>>,
    heartbeats: Mutex<Vec<Value>>,
    ready: Mutex<Vec<String>>,
    keys: Mutex<Vec<String>>,
}

/// The fake control plane; stops serving when dropped.
pub(crate) struct FakeControl {
    pub(crate) addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl FakeControl {
    pub(crate) async fn start(served: Served) -> Self {
        let inner = Arc::new(Inner {
            served: watch::channel(served).0,
            seen: Mutex::default(),
            heartbeats: Mutex::default(),
            ready: Mutex::default(),
            keys: Mutex::default(),
        });
        let app = Router::new()
            .route("/api/v1/enroll", post(enroll))
            .route("/api/v1/edge-nodes/me/config", get(config))
            .route("/api/v1/heartbeat", post(heartbeat))
            .route("/api/v1/wireguard-key", post(register_key))
            .route("/api/v1/edge-nodes/{id}/ready", post(ready))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inner, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what is served; waiting long polls answer at once.
    pub(crate) fn serve(&self, served: Served) {
        self.inner.served.send_replace(served);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub(crate) fn heartbeats(&self) -> Vec<Value> {
        self.inner.heartbeats.lock().unwrap().clone()
    }

    pub(crate) fn ready_calls(&self) -> Vec<String> {
        self.inner.ready.lock().unwrap().clone()
    }

    /// The public keys registered with `POST /api/v1/wireguard-key`.
    pub(crate) fn registered_keys(&self) -> Vec<String> {
        self.inner.keys.lock().unwrap().clone()
    }
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {CREDENTIAL}"))
}

#[derive(Deserialize)]
struct Token {
    token: String,
    wireguard_public_key: String,
}

async fn enroll(Json(body): Json<Token>) -> Response {
    if body.token != ENROLL_TOKEN {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // The node sends the public half of the key it made, nothing more.
    if kokoa_wg::PublicKey::from_base64(&body.wireguard_public_key).is_err() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    Json(json!({"node": {"kind": "edge", "id": NODE_ID}, "credential": CREDENTIAL})).into_response()
}

#[derive(Deserialize)]
struct Wait {
    wait: Option<u64>,
}

/// Answers like the real control plane: 401 without the credential, 304 while
/// `If-None-Match` names what is served (held up to `wait` seconds for a change), else the
/// payload with its ETag.
async fn config(
    State(inner): State<Arc<Inner>>,
    Query(Wait { wait }): Query<Wait>,
    headers: HeaderMap,
) -> Response {
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seen = Seen {
        at: Instant::now(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        if_none_match: if_none_match.clone(),
        wait,
        status: 0,
    };
    // Recorded on arrival, so a request still held is seen; its status follows.
    let index = {
        let mut all = inner.seen.lock().unwrap();
        all.push(seen);
        all.len() - 1
    };
    let response = if authorised(&headers) {
        let mut changes = inner.served.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unwrap_or(0).min(60));
        loop {
            let served = changes.borrow_and_update().clone();
            match served {
                Served::Status(code) => break StatusCode::from_u16(code).unwrap().into_response(),
                Served::Payload { hash, body } => {
                    let etag = format!("\"{hash}\"");
                    if if_none_match.as_deref() != Some(etag.as_str()) {
                        break (
                            [(header::ETAG, etag)],
                            [(header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                            .into_response();
                    }
                    let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        break StatusCode::NOT_MODIFIED.into_response();
                    }
                }
            }
        }
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    };
    inner.seen.lock().unwrap()[index].status = response.status().as_u16();
    response
}

async fn heartbeat(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    inner.heartbeats.lock().unwrap().push(body);
    Json(json!({"message": "Heartbeat received", "next_check_in": 5})).into_response()
}

async fn register_key(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(key) = body["public_key"].as_str() else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    inner.keys.lock().unwrap().push(key.to_owned());
    Json(json!({"status": "registered"})).into_response()
}

async fn ready(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id != NODE_ID {
        return StatusCode::FORBIDDEN.into_response();
    }
    inner.ready.lock().unwrap().push(id);
    Json(json!({"status": "active"})).into_response()
}

/// Polls `done` every 20 ms for up to `limit`.
pub(crate) async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A data plane that records what it applied and fails on request.
#[derive(Debug, Default)]
pub(crate) struct FakePlane {
    pub(crate) fail: Mutex<bool>,
    pub(crate) applied: Mutex<Vec<ContentHash>>,
}

impl DataPlane for FakePlane {
    fn apply(&self, config: &EdgeConfig, _: &kokoa_wg::PrivateKey) -> Result<(), Error> {
        if *self.fail.lock().unwrap() {
            return Err(Error::Certificate("injected failure".into()));
        }
        self.applied
            .lock()
            .unwrap()
            .push(config.config_hash().clone());
        Ok(())
    }
    fn tunnels(&self) -> Vec<TunnelReport> {
        Vec::new()
    }
    fn serving(&self) -> bool {
        true
    }
    fn set_health(&self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn stop(&self) -> Result<(), Error> {
        Ok(())
    }
}
