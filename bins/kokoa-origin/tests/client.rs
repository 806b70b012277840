//! The origin's control plane client against a tiny local server that checks what it is
//! sent: the heartbeat body, the bearer credential, `If-None-Match`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use kokoa_agent::{LinkState, Secret};
use kokoa_core::{Name, OriginId};
use kokoa_origin::{ControlPlane, Credential, FirewallState, Heartbeat, Metrics, ServiceReport};
use serde_json::{Value, json};

const CREDENTIAL: &str = "kk_node_test-credential";
/// A credential the server answers with a configuration whose content was altered after
/// its hash was computed.
const TAMPERED: &str = "kk_node_tampered";

/// The configuration the server gives, its hash computed as the control plane does.
fn served() -> Value {
    let mut config = json!({
        "config_hash": "",
        "origin_id": "org_1",
        "wg0_conf": "[Interface]\n",
        "nginx_conf": "",
        "routes": [{"hostname": "app.hoge.com", "target_port": 8080}],
        "services": [],
    });
    let typed: kokoa_core::OriginConfig = serde_json::from_value(config.clone()).unwrap();
    config["config_hash"] = typed.with_computed_hash().config_hash.into();
    config
}

/// A heartbeat as received: its `Authorization` header and its body.
type Received = (Option<String>, Value);

#[derive(Clone, Default)]
struct Seen {
    heartbeats: Arc<Mutex<Vec<Received>>>,
}

fn auth(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn heartbeat(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    seen.heartbeats.lock().unwrap().push((auth(&headers), body));
    Json(json!({"message": "Heartbeat received", "next_check_in": 30}))
}

async fn config(headers: HeaderMap) -> impl IntoResponse {
    let config = served();
    if auth(&headers).as_deref() == Some(&format!("Bearer {TAMPERED}")) {
        let mut altered = config;
        altered["routes"][0]["target_port"] = 22.into();
        return Json(altered).into_response();
    }
    if auth(&headers).as_deref() != Some(&format!("Bearer {CREDENTIAL}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "unauthorized", "message": "the bearer token is unknown"}})),
        )
            .into_response();
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(format!("\"{}\"", config["config_hash"].as_str().unwrap()).as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    Json(config).into_response()
}

async fn serve(seen: Seen) -> String {
    let app = Router::new()
        .route("/api/v1/heartbeat", post(heartbeat))
        .route("/api/v1/origins/me/config", get(config))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn client(base: &str, credential: &str) -> ControlPlane {
    ControlPlane::new(&Credential {
        control_plane_url: format!("{base}/"),
        node_id: OriginId::parse("org_1").unwrap(),
        credential: Secret::new(credential),
        ca_pin: None,
    })
    .unwrap()
}

#[tokio::test]
async fn heartbeat_carries_the_documented_body_and_the_credential() {
    let seen = Seen::default();
    let base = serve(seen.clone()).await;
    let body = Heartbeat::new(
        OriginId::parse("org_1").unwrap(),
        true,
        2,
        vec![
            ServiceReport {
                name: Name::parse("web").unwrap(),
                port: 8001,
                status: LinkState::Up,
            },
            ServiceReport {
                name: Name::parse("api").unwrap(),
                port: 8002,
                status: LinkState::Down,
            },
        ],
        Metrics {
            cpu_percent: 12.5,
            memory_percent: 45.25,
            disk_percent: 70.0,
            edges_connected: 2,
        },
        None,
        FirewallState::On,
    );
    client(&base, CREDENTIAL).heartbeat(&body).await.unwrap();
    let seen = seen.heartbeats.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (authorization, body) = &seen[0];
    assert_eq!(
        authorization.as_deref(),
        Some("Bearer kk_node_test-credential")
    );
    assert_eq!(
        body,
        &json!({
            "node_id": "org_1",
            "status": "degraded",
            "services": [
                {"name": "web", "port": 8001, "status": "up"},
                {"name": "api", "port": 8002, "status": "down"},
            ],
            "metrics": {
                "cpu_percent": 12.5,
                "memory_percent": 45.25,
                "disk_percent": 70.0,
                "edges_connected": 2,
            },
            "firewall": "on",
        })
    );
}

#[tokio::test]
async fn config_fetch_is_conditional_and_errors_carry_the_api_message() {
    let base = serve(Seen::default()).await;
    let plane = client(&base, CREDENTIAL);
    let config = plane
        .fetch_config(None, Some(Duration::from_secs(1)))
        .await
        .unwrap()
        .expect("a configuration");
    assert_eq!(config.config_hash, served()["config_hash"]);
    assert_eq!(config.routes[0].hostname.as_str(), "app.hoge.com");
    assert!(
        plane
            .fetch_config(Some(&config.config_hash), None)
            .await
            .unwrap()
            .is_none()
    );

    // Content that does not match its hash is refused, not applied.
    let err = client(&base, TAMPERED)
        .fetch_config(None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("configuration hash mismatch"), "{err}");

    let err = client(&base, "kk_node_wrong")
        .fetch_config(None, None)
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(
        err.to_string()
            .contains("unauthorized: the bearer token is unknown"),
        "{err}"
    );
}
