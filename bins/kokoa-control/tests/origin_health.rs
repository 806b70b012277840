//! SPEC §8.4's origin table as the running control plane applies it: the application check
//! the edges run through their tunnels, and the origin's alerts.

mod common;

use std::time::Duration;

use common::{Backend, Server, settings};
use reqwest::Method;
use serde_json::{Value, json};

/// Edge `credential`'s configuration.
async fn config(s: &Server, credential: &str) -> Value {
    let (status, body) = s
        .call(
            Method::GET,
            "/api/v1/edge-nodes/me/config",
            Some(credential),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A heartbeat of edge `id` whose tunnel to `origin` is up and sees its application
/// `application` (`"up"`, `"down"`, or none).
async fn edge_beat(s: &Server, id: &str, credential: &str, origin: &str, application: &str) {
    let body = json!({"node_id": id, "status": "healthy", "tunnels": [
        {"origin_id": origin, "interface": "kk0", "status": "up", "application": application}]});
    s.heartbeat(credential, body).await;
}

async fn origin_beat(s: &Server, id: &str, credential: &str, disk_percent: u32) {
    let body = json!({"node_id": id, "status": "healthy", "application_port": 80,
        "metrics": {"disk_percent": disk_percent},
        "services": [{"name": "web", "port": 8001, "status": "up"}]});
    s.heartbeat(credential, body).await;
}

/// An origin with its web service published as `app.hoge.com`; its id.
async fn routed_origin(s: &Server) -> String {
    let origin = s.origin("home-server").await;
    let origin_id = origin["id"].as_str().unwrap().to_owned();
    s.admin(
        Method::POST,
        "/api/v1/routes",
        Some(json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 8001})),
        201,
    )
    .await;
    origin_id
}

async fn tick(s: &Server) {
    kokoa_control::runtime::tick(&s.state).await.unwrap();
}

async fn unavailable(s: &Server, credential: &str) -> Vec<Value> {
    config(s, credential).await["unavailable"]
        .as_array()
        .unwrap()
        .clone()
}

async fn events(s: &Server, kind: &str) -> Vec<Value> {
    let listed = s
        .admin(
            Method::GET,
            &format!("/api/v1/events?type={kind}&after=0"),
            None,
            200,
        )
        .await;
    listed["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_edges_application_checks_serve_503_only_when_no_edge_sees_it_answer() {
    let s = Server::start(&Backend::Sqlite).await;
    let origin_id = routed_origin(&s).await;
    let origin_id = origin_id.as_str();
    let (edge1, cred1) = s.enrolled_edge(None).await;
    let (edge2, cred2) = s.enrolled_edge(None).await;
    let origin_cred = s.enrolled_origin(origin_id).await;

    // No check is asked of the edges until the origin says it answers one.
    assert!(config(&s, &cred1).await["tunnels"][0]["application_check"].is_null());
    origin_beat(&s, origin_id, &origin_cred, 40).await;
    let check = &config(&s, &cred1).await["tunnels"][0]["application_check"];
    assert_eq!(
        check,
        &json!({"port": 80, "interval_secs": 30, "timeout_secs": 5, "failures": 3,
                "recoveries": 3}),
    );

    // One edge sees the application down, the other sees it answer: it is served.
    edge_beat(&s, &edge1, &cred1, origin_id, "down").await;
    edge_beat(&s, &edge2, &cred2, origin_id, "up").await;
    tick(&s).await;
    assert!(unavailable(&s, &cred1).await.is_empty());

    // Both see it down: 503 for its routes, at every edge.
    edge_beat(&s, &edge2, &cred2, origin_id, "down").await;
    tick(&s).await;
    for credential in [&cred1, &cred2] {
        assert_eq!(unavailable(&s, credential).await, [json!("app.hoge.com")]);
    }
    assert_eq!(events(&s, "origin.unavailable").await.len(), 1);

    // One sees it answer again: served again.
    edge_beat(&s, &edge1, &cred1, origin_id, "up").await;
    tick(&s).await;
    assert!(unavailable(&s, &cred2).await.is_empty());
    assert_eq!(events(&s, "origin.available").await.len(), 1);
}

#[tokio::test]
async fn a_nearly_full_disk_raises_a_critical_alert_and_serves_on() {
    let s = Server::start(&Backend::Sqlite).await;
    let origin = s.origin("home-server").await;
    let origin_id = origin["id"].as_str().unwrap();
    let origin_cred = s.enrolled_origin(origin_id).await;

    origin_beat(&s, origin_id, &origin_cred, 40).await;
    tick(&s).await;
    assert!(events(&s, "origin.alert").await.is_empty());
    origin_beat(&s, origin_id, &origin_cred, 95).await;
    tick(&s).await;
    let alerts = events(&s, "origin.alert").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical", "{alerts:?}");
    assert_eq!(alerts[0]["data"]["raised"], true, "{alerts:?}");
    origin_beat(&s, origin_id, &origin_cred, 50).await;
    tick(&s).await;
    let alerts = events(&s, "origin.alert").await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["data"]["raised"], false, "closed: {alerts:?}");
}

#[tokio::test]
async fn an_origin_without_heartbeat_for_the_timeout_raises_an_alert_and_serves_on() {
    let mut short = settings();
    // Heartbeats are stored to the second: 2 s, so that one just sent is never stale.
    short.health.origin_heartbeat_timeout = Duration::from_secs(2);
    let s = Server::start_with(&Backend::Sqlite, short).await;
    let origin_id = routed_origin(&s).await;
    let origin_id = origin_id.as_str();
    let (_, edge_cred) = s.enrolled_edge(None).await;
    let origin_cred = s.enrolled_origin(origin_id).await;

    // The judge leads from the first tick; heartbeats count from then.
    tick(&s).await;
    origin_beat(&s, origin_id, &origin_cred, 40).await;
    tick(&s).await;
    assert!(events(&s, "origin.alert").await.is_empty());
    tokio::time::sleep(Duration::from_millis(3200)).await;
    tick(&s).await;
    let alerts = events(&s, "origin.alert").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["data"]["condition"], "heartbeat_missing",
        "{alerts:?}"
    );
    assert_eq!(alerts[0]["data"]["raised"], true, "{alerts:?}");
    // An alert, not a verdict on its routes: the edges keep serving them.
    assert!(unavailable(&s, &edge_cred).await.is_empty());
    origin_beat(&s, origin_id, &origin_cred, 40).await;
    tick(&s).await;
    let alerts = events(&s, "origin.alert").await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["data"]["raised"], false, "closed: {alerts:?}");
}
